package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
	"github.com/pgleap/pgleap/internal/verify"
)

func init() { commands = append(commands, newVerifyCommand) }

func newVerifyCommand(c *cli) *cobra.Command {
	var schemaOnly bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove that the target holds what the source holds",
		Long: `verify compares source and target. With --schema it compares their objects per schema and
kind (tables, columns, indexes, constraints by type, views, materialized views, sequences,
functions, triggers, types, policies, extensions, schemas and grants) and lists every name
found on one side only. The table selection and the objects left out with it are read from
the target's pgleap state; without state, --include/--exclude say what to expect.

Exit status: 0 identical, 1 different, 2 could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !schemaOnly {
				return &usageError{errors.New("this version of pgleap verifies the schema only: pass --schema")}
			}
			resolved, err := c.connections("source", "target")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			source, err := c.connectReadOnly(ctx, pg.Source, resolved.Source)
			if err != nil {
				return err
			}
			defer source.Close(ctx)
			target, err := c.connectReadOnly(ctx, pg.Target, resolved.Target)
			if err != nil {
				return err
			}
			defer target.Close(ctx)

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
			if c.json {
				err = writeJSON(c.stdout, report)
			} else {
				err = writeSchemaReport(c.stdout, report)
			}
			if err != nil {
				return err
			}
			if !report.Equal() {
				return &answerNoError{fmt.Sprintf("the schemas differ in %d schema/kind pairs", len(report.Differences))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&schemaOnly, "schema", false, "compare objects, not rows")
	c.addTableFlags(cmd)
	return cmd
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
