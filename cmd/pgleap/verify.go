package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/state"
	"github.com/pgleap/pgleap/internal/verify"
)

func init() { commands = append(commands, newVerifyCommand) }

func newVerifyCommand(c *cli) *cobra.Command {
	var schemaOnly bool
	rowOpts := verify.RowOptions{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove that the target holds what the source holds",
		Long: `verify compares the rows of every selected table of source and target. Each server
hashes its own rows (a 128-bit hash of each row's text form) per chunk of key range, or per
bucket of key hash; only digests travel, and a chunk that differs is read row by row, which
names the rows: up to --max-keys per table, with their values on both sides with
--show-rows.

While pgleap migrate streams changes, verify is exact without stopping the application: it
reads the source at a temporary replication slot's snapshot, asks the apply to stop at
exactly that slot's position, takes a snapshot of the target there, and lets the apply go
on at once; it reports how long the apply stood still. Large objects are compared by hash,
and sequences with --sequences (they differ while changes stream: cutover copies them).
The result is recorded in the target's pgleap state for pgleap status and cutover.

With --schema it compares objects instead of rows: per schema and kind (tables, columns,
indexes, constraints by type, views, materialized views, sequences, functions, triggers,
types, policies, extensions, schemas and grants) it lists every name found on one side
only.

The table selection is read from the target's pgleap state; without state,
--include/--exclude say what to compare.

Exit status: 0 identical, 1 different, 2 could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !schemaOnly {
				return c.verifyRows(cmd, rowOpts)
			}
			resolved, err := c.connections("source", "target")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			source, target, closeBoth, err := c.connectReadOnlyBoth(ctx, resolved.Source, resolved.Target)
			if err != nil {
				return err
			}
			defer closeBoth()

			selection := resolved.Tables
			var skipped []state.SkippedObject
			if exists, err := state.Exists(ctx, target); err != nil {
				return err
			} else if exists {
				m, ok, err := state.LoadMigration(ctx, target)
				if err != nil {
					return err
				}
				if ok {
					selection = config.TableFilter{Include: m.Include, Exclude: m.Exclude}
				}
				if skipped, err = state.Skipped(ctx, target); err != nil {
					return err
				}
			}
			report, err := verify.CompareSchemas(ctx, source, target, selection, skipped)
			if err != nil {
				return err
			}
			if err := c.output(report, func(w io.Writer) error { return writeSchemaReport(w, report) }); err != nil {
				return err
			}
			if !report.Equal() {
				return &answerNoError{fmt.Sprintf("the schemas differ in %d schema/kind pairs", len(report.Differences))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&schemaOnly, "schema", false, "compare objects, not rows")
	cmd.Flags().IntVar(&rowOpts.Jobs, "jobs", 4, "chunks compared at once, each with a connection to either side")
	cmd.Flags().Int64Var(&rowOpts.ChunkRows, "chunk-rows", 100000, "rows per chunk, about")
	cmd.Flags().IntVar(&rowOpts.MaxKeys, "max-keys", 10, "differing rows listed per table")
	cmd.Flags().BoolVar(&rowOpts.ShowValues, "show-rows", false, "print each differing row's values on both sides")
	cmd.Flags().BoolVar(&rowOpts.Sequences, "sequences", false, "compare sequence values too")
	cmd.Flags().DurationVar(&rowOpts.HoldTimeout, "hold-timeout", time.Minute, "how long to wait for the apply to reach the source snapshot's position")
	c.addTableFlags(cmd)
	return cmd
}

func (c *cli) verifyRows(cmd *cobra.Command, opts verify.RowOptions) error {
	if opts.Jobs < 1 || opts.MaxKeys < 0 || opts.ChunkRows < 1 || opts.HoldTimeout <= 0 {
		return &usageError{errors.New("--jobs, --chunk-rows and --hold-timeout must be positive, --max-keys at least 0")}
	}
	resolved, err := c.connections("source", "target")
	if err != nil {
		return err
	}
	opts.Source, opts.Target, opts.Tables, opts.Logger = resolved.Source, resolved.Target, resolved.Tables, c.logger
	report, err := verify.CompareRows(cmd.Context(), opts)
	if err != nil {
		return err
	}
	if err := c.output(report, func(w io.Writer) error { return writeRowReport(w, report) }); err != nil {
		return err
	}
	if !report.Equal {
		return &answerNoError{fmt.Sprintf("the data differs in %d of %d tables", report.Differing, len(report.Tables))}
	}
	return nil
}

func writeRowReport(w io.Writer, r *verify.RowReport) error {
	var b strings.Builder
	results := r.Tables
	for _, extra := range []*verify.TableResult{r.LargeObjects, r.Sequences} {
		if extra != nil {
			results = append(results, *extra)
		}
	}
	for _, t := range results {
		switch {
		case t.Problem != "":
			fmt.Fprintf(&b, "%s: DIFFERS: %s\n", t.Table, t.Problem)
			continue
		case t.Equal:
			fmt.Fprintf(&b, "%s: equal, %d rows\n", t.Table, t.SourceRows)
			continue
		}
		fmt.Fprintf(&b, "%s: DIFFERS: %d rows on the source, %d on the target; %d of %d chunks differ\n",
			t.Table, t.SourceRows, t.TargetRows, t.DifferingChunks, t.Chunks)
		for _, d := range t.Differences {
			fmt.Fprintf(&b, "    %s: %s\n", d.Key, d.What)
			if d.Source != "" {
				fmt.Fprintf(&b, "        source: %s\n", d.Source)
			}
			if d.Target != "" {
				fmt.Fprintf(&b, "        target: %s\n", d.Target)
			}
		}
		if t.MoreDifferences > 0 {
			fmt.Fprintf(&b, "    and %d more (--max-keys lists more)\n", t.MoreDifferences)
		}
	}
	fmt.Fprintf(&b, "compared %d rows of %d tables in %.1f s (%.0f rows/s)", r.RowsCompared, len(r.Tables), r.Seconds, r.RowsPerSec)
	if r.SourceLSN != "" {
		fmt.Fprintf(&b, " at source LSN %s; the apply stood still for %.0f ms", r.SourceLSN, r.ApplyPauseMS)
	}
	b.WriteString("\n")
	if r.Equal {
		b.WriteString("source and target hold the same data\n")
	} else {
		fmt.Fprintf(&b, "the data differs in %d of %d tables\n", r.Differing, len(r.Tables))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSchemaReport(w io.Writer, r *verify.SchemaReport) error {
	var b strings.Builder
	if r.Equal() {
		fmt.Fprintf(&b, "schema identical: %d objects compared\n", r.Objects)
	} else {
		fmt.Fprintf(&b, "schema differs (%d objects on the source compared):\n", r.Objects)
		for _, d := range r.Differences {
			schema := d.Schema
			if schema == "" {
				schema = "(database)"
			}
			fmt.Fprintf(&b, "  %s %s: %d on the source, %d on the target\n", schema, d.Kind, d.Source, d.Target)
			for _, name := range d.OnlyOnSource {
				fmt.Fprintf(&b, "    only on the source: %s\n", name)
			}
			for _, name := range d.OnlyOnTarget {
				fmt.Fprintf(&b, "    only on the target: %s\n", name)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
