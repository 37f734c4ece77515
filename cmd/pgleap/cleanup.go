package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/cdc"
	datacopy "github.com/pgleap/pgleap/internal/copy"
	"github.com/pgleap/pgleap/internal/ddl"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

func init() { commands = append(commands, newCleanupCommand) }

// cleanupResult says what cleanup removed.
type cleanupResult struct {
	Source []string `json:"source"`
	Target []string `json:"target"`
}

func newCleanupCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Destructive: drop the migration's replication slot, publication and pgleap state",
		Long: `Destructive: cleanup ends a migration's footprint. On the source it drops the replication
slot and the publication the migration streams from (so the source stops keeping WAL for
it) and the capture of schema changes that --ddl installed; on the target it lifts the read-only guard and drops the pgleap schema, where the
migration's progress is recorded. After a cutover that kept the way back, it also drops
that: the slot and publication on the target, the pgleap schema on the source. It does not
unfreeze a side a cutover or rollback froze: that is ALTER DATABASE ... CONNECTION LIMIT (or,
for a freeze made by a role that is not a superuser, GRANT CONNECT back to the roles it was
revoked from) and RESET default_transaction_read_only, by hand, once nothing points at it.
The copied objects and rows stay on the target: drop and recreate the target database to
start over from nothing.

After cleanup, pgleap migrate on the same target does not resume: it starts a new
migration, which needs an empty target database.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resolved, err := c.connections("source", "target")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			source, target, err := pg.ConnectBoth(ctx, resolved.Source, resolved.Target)
			if err != nil {
				return err
			}
			defer source.Close(ctx)
			defer target.Close(ctx)
			res := cleanupResult{Source: []string{}, Target: []string{}}
			exists, err := state.Exists(ctx, target)
			if err != nil {
				return err
			}
			if exists {
				// Brought to this binary's version first: a newer pgleap's state may hold more
				// than this one knows how to drop, and Init refuses it.
				if err := state.Init(ctx, target); err != nil {
					return err
				}
				r, streams, err := state.LoadReplication(ctx, target)
				if err != nil {
					return err
				}
				if streams {
					if res.Source, err = datacopy.DropStream(ctx, source, r); err != nil {
						return err
					}
					if removed, err := ddl.Uninstall(ctx, source); err != nil {
						return err
					} else if removed {
						res.Source = append(res.Source, "the capture of schema changes (event triggers pgleap_ddl_command_end and pgleap_ddl_sql_drop, schema pgleap_ddl)")
					}
					if err := cdc.SetTargetGuard(ctx, target, false); err != nil {
						return err
					}
					res.Target = append(res.Target, "the read-only guard of the target database")
				}
				// The way back of a cutover: its slot and publication on the target, the
				// pgleap schema that follows them on the source.
				if back, ok, err := state.LoadReverse(ctx, target); err != nil {
					return err
				} else if ok {
					dropped, err := datacopy.DropStream(ctx, target, back)
					res.Target = append(res.Target, dropped...)
					if err != nil {
						return err
					}
					if onSource, err := state.Exists(ctx, source); err != nil {
						return err
					} else if onSource {
						if err := state.Drop(ctx, source); err != nil {
							return err
						}
						res.Source = append(res.Source, "schema pgleap (the way back)")
					}
				}
				if err := state.Drop(ctx, target); err != nil {
					return err
				}
				res.Target = append(res.Target, "schema pgleap")
			}
			if c.json {
				return writeJSON(c.stdout, res)
			}
			if len(res.Source)+len(res.Target) == 0 {
				_, err := fmt.Fprintln(c.stdout, "nothing to clean up: the target holds no pgleap state")
				return err
			}
			var b strings.Builder
			for _, what := range res.Source {
				fmt.Fprintf(&b, "dropped on the source: %s\n", what)
			}
			for _, what := range res.Target {
				fmt.Fprintf(&b, "dropped on the target: %s\n", what)
			}
			_, err = fmt.Fprint(c.stdout, b.String())
			return err
		},
	}
}
