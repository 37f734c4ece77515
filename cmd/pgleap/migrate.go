package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/schema"
)

func init() { commands = append(commands, newMigrateCommand) }

func newMigrateCommand(c *cli) *cobra.Command {
	opts := schema.Options{IndexJobs: runtime.NumCPU()}
	var schemaOnly bool
	var tables config.TableFilter
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Copy the source's roles and schema into the target",
		Long: `migrate copies the source database into the target. With --schema-only it copies the
roles and the schema: roles from pg_dumpall (without passwords unless --copy-passwords),
then pg_dump's pre-data (types, functions, tables, views...), then post-data (indexes,
constraints, triggers, policies) built in parallel, primary keys and unique constraints as
index builds, foreign keys added NOT VALID and validated last.

Every step is recorded in the target's pgleap schema: run the same command again after a
failure or Ctrl-C and it resumes where it stopped. The data copy and streaming are not part
of this version of pgleap yet.`,
		Example: `  pgleap migrate --schema-only --source 'host=old-db dbname=shop' --target 'host=new-db dbname=shop'
  pgleap migrate --schema-only --exclude 'archive.*' --index-jobs 4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !schemaOnly {
				return &usageError{errors.New("this version of pgleap migrates the schema only: pass --schema-only")}
			}
			resolved, err := c.connections("source", "target")
			if err != nil {
				return err
			}
			opts.Source, opts.Target, opts.Logger = resolved.Source, resolved.Target, c.logger
			opts.Tables = mergeTables(tables, resolved.Tables)
			if err := opts.Tables.Validate(); err != nil {
				return &usageError{err}
			}
			ctx := cmd.Context()
			stage, err := schema.Prepare(ctx, opts)
			if err != nil {
				return err
			}
			defer stage.Close()
			result, err := stage.Run(ctx, nil)
			if err != nil {
				return err
			}
			if c.json {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(result)
			}
			return writeSchemaResult(c.stdout, result)
		},
	}
	flags := cmd.Flags()
	flags.BoolVar(&schemaOnly, "schema-only", false, "copy roles and schema, not rows")
	flags.StringVar(&opts.PgBin, "pg-bin", "", "directory holding pg_dump, pg_dumpall and pg_restore (default: $PATH, then the newest /usr/lib/postgresql/*/bin)")
	flags.IntVar(&opts.IndexJobs, "index-jobs", opts.IndexJobs, "indexes and constraints built at once")
	flags.BoolVar(&opts.CopyPasswords, "copy-passwords", false, "carry role password verifiers (the source role must read pg_authid: a self-managed superuser)")
	flags.BoolVar(&opts.KeepTablespaces, "keep-tablespaces", false, "keep tablespace clauses (the tablespaces must exist on the target); default: the target's default tablespace")
	c.addTableFlags(cmd, &tables.Include, &tables.Exclude)
	return cmd
}

// mergeTables takes the flags' table patterns, or the config file's when no flag sets any.
func mergeTables(flags, fromConfig config.TableFilter) config.TableFilter {
	if len(flags.Include) > 0 || len(flags.Exclude) > 0 {
		return flags
	}
	return fromConfig
}

func writeSchemaResult(w io.Writer, r *schema.Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "schema copied in %s with %s (%s)\n", r.Duration.Round(1e6), r.Tools.PgDump, r.Tools.Version)
	fmt.Fprintf(&b, "  roles: %d created, %d already on the target\n", len(r.Roles.Created), len(r.Roles.Existing))
	if r.PreDataRestored {
		fmt.Fprintf(&b, "  pre-data restored\n")
	} else {
		fmt.Fprintf(&b, "  pre-data: restored by an earlier run\n")
	}
	fmt.Fprintf(&b, "  post-data: %d steps built now, %d by an earlier run\n", r.PostDataTasks, r.PostDataResumed)
	for _, w := range r.RoleWarnings {
		fmt.Fprintf(&b, "  warning: %s\n", w)
	}
	if len(r.Roles.NeedLogin) > 0 {
		fmt.Fprintf(&b, "\nThese login roles have no password on the target yet (passwords are not copied without --copy-passwords):\n")
		for _, role := range r.Roles.NeedLogin {
			fmt.Fprintf(&b, "  ALTER ROLE %s PASSWORD '...';\n", pg.QuoteIdent(role))
		}
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(&b, "\nLeft out because they depend on excluded tables or schemas:\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(&b, "  %s %s: %s\n", s.Kind, s.Name, s.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
