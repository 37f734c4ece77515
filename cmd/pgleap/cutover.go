package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/cutover"
	"github.com/pgleap/pgleap/internal/pg"
)

func init() { commands = append(commands, newCutoverCommand, newRollbackCommand) }

func defaultCutoverOptions() cutover.Options {
	return cutover.Options{MaxLag: 5 * time.Second, LongTransaction: time.Minute, Verify: "counts", Jobs: 4, DrainTimeout: time.Minute}
}

func newCutoverCommand(c *cli) *cobra.Command {
	opts := defaultCutoverOptions()
	var pooler poolerFlags
	cmd := &cobra.Command{
		Use:   "cutover",
		Short: "Hand the writes from the source to the target, with seconds of write downtime",
		Long: `cutover makes the target the database the application writes to.

It first checks, changing nothing, that the migration is ready: pgleap migrate streams, the
lag is under --max-lag, every table is copied, the last pgleap verify (if any) was clean, the
schemas are the same, and no transaction on the source is older than --long-transaction
(--terminate-long lets the freeze end them). --dry-run stops there.

Then it freezes writes on the source database: every session starts read-only, the
sessions open are ended (never pgleap's, never replication), and new sessions are refused:
as a superuser, to every role but superusers (connection limit 0); otherwise CONNECT is
revoked from PUBLIC and every role but the database's owner and pgleap's own. A role that is not a superuser
needs ownership of the database (or its owner's privileges), pg_signal_backend and
pg_read_all_stats; the preflight names what is missing. With --pgbouncer it first pauses the PgBouncer
entry the application goes through (PAUSE: clients wait instead of failing; pool_mode must
be transaction), and once the target is open points the entry at it in
--pgbouncer-databases-file, reloads and resumes: the application sees a pause, not an error.
It waits until pgleap migrate has applied everything committed before the freeze and holds
it there, copies every sequence's value and the large objects changed since the copy,
refreshes materialized views with --refresh-matviews, verifies (--verify counts, full or
none), confirms the freeze held (no session but pgleap's on the source, and no row change to
a migrated table since the freeze: a session that turns read-only off can get past it), and opens the target (lifts
its guard). pgleap migrate stops streaming from the source. --switch-command runs
last (with sh; PGLEAP_SOURCE and PGLEAP_TARGET set) to point the application at the target.

It prints each step's time and the write pause: from the freeze to the open target. If a
step fails, or Ctrl-C, everything is undone: the source takes writes again and the migration
streams as before. A cutover whose process died is undone by the next run.

Unless --no-reverse, it first makes the way back: a publication and a slot on the target,
before the target takes its first write, and a pgleap schema on the source that follows
them. The running pgleap migrate then streams the target's changes to the source (phase
reverse-streaming; started again, pgleap migrate resumes that, never the forward stream),
so that pgleap rollback loses nothing. The target needs wal_level=logical and a role with
REPLICATION for it, the source CREATE on the database and the right to set
session_replication_role (a superuser before PostgreSQL 15).

The source stays frozen after the cutover, so that nothing writes to it by mistake.

Exit status: 0 cut over, 1 not ready or undone (the reason is printed), 2 could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.runCutover(cmd, opts, pooler, cutover.Run) },
	}
	addCutoverFlags(cmd, &opts, &pooler)
	cmd.Flags().BoolVar(&opts.NoReverse, "no-reverse", false, "cut over without streaming the new server's changes back to the old one")
	cmd.Flags().StringVar(&opts.SwitchCommand, "switch-command", "", "run with sh once the target is open, to point the application at it")
	return cmd
}

func newRollbackCommand(c *cli) *cobra.Command {
	opts := defaultCutoverOptions()
	var pooler poolerFlags
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Give the writes back to the old server after a cutover, losing nothing",
		Long: `rollback undoes a cutover that kept the way back: the source (--source, the old server)
takes the writes again, with every change made on the target (--target, the new server)
since the cutover, which pgleap migrate streamed back.

It is the cutover in reverse: the same checks, then it freezes the target, waits until the
source has applied everything committed on the target before the freeze, copies sequence
values and large objects back, verifies (--verify), and opens the source (puts back the
settings the cutover's freeze changed). The running pgleap migrate then stops.
--switch-command points the application back at the source. The target stays frozen.
Any failure, or Ctrl-C, undoes it: the target takes writes again and the way back streams on.

Exit status: 0 rolled back, 1 not ready or undone (the reason is printed), 2 could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.runCutover(cmd, opts, pooler, cutover.Rollback) },
	}
	addCutoverFlags(cmd, &opts, &pooler)
	cmd.Flags().StringVar(&opts.SwitchCommand, "switch-command", "", "run with sh once the source is open again, to point the application at it")
	return cmd
}

// poolerFlags are the flags of a PgBouncer in front of the application.
type poolerFlags struct{ admin, database, databasesFile string }

func addCutoverFlags(cmd *cobra.Command, opts *cutover.Options, pooler *poolerFlags) {
	f := cmd.Flags()
	f.StringVar(&pooler.admin, "pgbouncer", "", "connection string of the admin console of the PgBouncer the application goes through: it is paused and switched instead of writes failing")
	f.StringVar(&pooler.database, "pgbouncer-database", "", "the PgBouncer [databases] entry the application uses (default: the source's database name)")
	f.StringVar(&pooler.databasesFile, "pgbouncer-databases-file", "", "the file holding that entry, which pgleap rewrites and PgBouncer reloads")
	f.DurationVar(&opts.MaxLag, "max-lag", opts.MaxLag, "refuse when the apply is further behind than this")
	f.DurationVar(&opts.LongTransaction, "long-transaction", opts.LongTransaction, "a transaction open longer than this on the side to freeze blocks it")
	f.BoolVar(&opts.TerminateLong, "terminate-long", false, "let the freeze end long transactions instead of refusing")
	f.StringVar(&opts.Verify, "verify", opts.Verify, "final verification: counts, full or none")
	f.BoolVar(&opts.RefreshMatviews, "refresh-matviews", false, "refresh materialized views on the side that takes over")
	f.BoolVar(&opts.DryRun, "dry-run", false, "run the preflight checks and change nothing")
	f.IntVar(&opts.Jobs, "jobs", opts.Jobs, "tables compared at once by the final verification")
	f.DurationVar(&opts.DrainTimeout, "drain-timeout", opts.DrainTimeout, "undo when the apply has not caught up with the frozen side after this long")
}

func (c *cli) runCutover(cmd *cobra.Command, opts cutover.Options, pooler poolerFlags, run func(context.Context, cutover.Options) (*cutover.Result, error)) error {
	switch {
	case (pooler.admin == "") != (pooler.databasesFile == ""):
		return &usageError{errors.New("--pgbouncer and --pgbouncer-databases-file go together")}
	case opts.Verify != "counts" && opts.Verify != "full" && opts.Verify != "none":
		return &usageError{fmt.Errorf("--verify %q: want counts, full or none", opts.Verify)}
	case opts.MaxLag <= 0 || opts.LongTransaction <= 0 || opts.DrainTimeout <= 0 || opts.Jobs < 1:
		return &usageError{errors.New("--max-lag, --long-transaction, --drain-timeout and --jobs must be positive")}
	}
	resolved, err := c.connections("source", "target")
	if err != nil {
		return err
	}
	opts.Source, opts.Target, opts.Logger = resolved.Source, resolved.Target, c.logger
	if c.perDB != nil && c.perDB.coordinator != nil {
		opts.Coordinator = c.perDB.coordinator
	}
	if pooler.admin != "" {
		if pooler.database == "" {
			cfg, err := pg.ParseConfig(pg.Source, resolved.Source)
			if err != nil {
				return &usageError{err}
			}
			pooler.database = cfg.Database
		}
		opts.Pooler = &cutover.Pooler{Admin: pooler.admin, Database: pooler.database, DatabasesFile: pooler.databasesFile}
	}
	result, err := run(cmd.Context(), opts)
	if result != nil {
		if writeErr := c.output(result, func(w io.Writer) error { return writeCutoverResult(w, result, opts.DryRun) }); writeErr != nil {
			return writeErr
		}
	}
	switch {
	case errors.Is(err, cutover.ErrNotReady):
		return &answerNoError{"not ready: nothing was changed"}
	case errors.Is(err, cutover.ErrUndone):
		return &answerNoError{err.Error()}
	case err != nil:
		return err
	case result.SwitchError != "":
		return &answerNoError{"the writes moved but the switch command failed: point the application at the new side by hand"}
	}
	return nil
}

func writeCutoverResult(w io.Writer, r *cutover.Result, dryRun bool) error {
	var b strings.Builder
	if r.Earlier != nil {
		fmt.Fprintf(&b, "undid a cutover that started at %s and never finished\n", r.Earlier.StartedAt.Format(time.RFC3339))
	}
	b.WriteString("preflight:\n")
	for _, check := range r.Preflight {
		mark := "ok  "
		if !check.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %s", mark, check.Name)
		if check.Detail != "" && (!check.OK || strings.HasPrefix(check.Detail, "the freeze will end")) {
			fmt.Fprintf(&b, ": %s", check.Detail)
		}
		b.WriteString("\n")
	}
	if dryRun {
		b.WriteString("dry run: nothing was changed\n")
	}
	if len(r.Steps) > 0 {
		b.WriteString("steps:\n")
		first := r.Steps[0].Start
		for _, s := range r.Steps {
			fmt.Fprintf(&b, "  %7.3f s  %-45s %s", s.Start.Sub(first).Seconds(), s.Name, s.End.Sub(s.Start).Round(time.Millisecond))
			if s.Error != "" {
				fmt.Fprintf(&b, "  FAILED: %s", s.Error)
			}
			b.WriteString("\n")
		}
	}
	switch {
	case r.Done:
		fmt.Fprintf(&b, "done: the other side takes the writes; writes paused for %.0f ms (%d sequences copied, %d large objects copied again)\n",
			r.WritePauseMS, r.Sequences, r.LargeObjects)
		switch {
		case r.SwitchError != "":
			fmt.Fprintf(&b, "the switch command failed: %s\n", r.SwitchError)
		case !r.Switched:
			b.WriteString("now point the application at the other side: its connection string, DNS name or service entry (--switch-command or --pgbouncer do it next time)\n")
		}
		b.WriteString("the side that gave up the writes stays frozen (new sessions kept out, read-only)\n")
	case r.Undone != "":
		fmt.Fprintf(&b, "undone: %s\nthe frozen side takes writes again and streaming goes on as before\n", r.Undone)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
