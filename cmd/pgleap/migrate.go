package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pgleap/pgleap/internal/assess"
	"github.com/pgleap/pgleap/internal/cdc"
	"github.com/pgleap/pgleap/internal/config"
	datacopy "github.com/pgleap/pgleap/internal/copy"
	"github.com/pgleap/pgleap/internal/ddl"
	"github.com/pgleap/pgleap/internal/monitor"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/schema"
	"github.com/pgleap/pgleap/internal/state"
)

func init() { commands = append(commands, newMigrateCommand) }

func newMigrateCommand(c *cli) *cobra.Command {
	var opts schema.Options
	copyOpts := datacopy.Options{Format: "auto"}
	var schemaOnly, noFollow, noTargetGuard bool
	var skipDDL []int64
	var splitLargerThan string
	var watch watchOptions
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Copy the source into the target, then keep it in sync until cutover",
		Long: `migrate copies the source database into the target:
  1. roles, from pg_dumpall (without passwords unless --copy-passwords);
  2. pre-data from pg_dump (types, functions, tables without indexes, views...);
  3. the rows of every selected table, at one consistent snapshot of the source taken with
     a logical replication slot, --jobs tables or chunks at a time, largest first; tables
     larger than --split-larger-than are copied in ranges in parallel;
  4. post-data (indexes, constraints, triggers, policies), each table's as soon as its rows
     are in, primary keys and unique constraints as index builds, foreign keys added NOT
     VALID and validated last; materialized views refreshed; then ANALYZE.
  5. then, unless --no-follow, it streams the changes made on the source since the copy's
     snapshot from a logical replication slot it created before the copy, applying them on
     the target in commit order, until Ctrl-C (or cutover). A second target session reads
     ahead the rows a backlog's changes will update or delete, so that the apply finds
     their pages in memory.
--schema-only stops before the rows. --no-follow makes a cold copy: it leaves no slot or
publication on the source, and cannot be followed afterwards.

Every step is recorded in the target's pgleap schema: run the same command again after a
failure, Ctrl-C or a crash and it resumes where it stopped, copying only what is missing and
streaming from the last change the target committed.`,
		Example: `  pgleap migrate --source 'host=old-db dbname=shop user=migrator' --target 'host=new-db dbname=shop user=migrator'
  pgleap migrate --no-follow --source 'host=old-db dbname=shop' --target 'host=new-db dbname=shop'
  pgleap migrate --schema-only --exclude 'archive.*' --index-jobs 4
  pgleap migrate --no-follow --jobs 4 --max-copy-rate 100MB`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if copyOpts.Format != "auto" && copyOpts.Format != "binary" && copyOpts.Format != "text" {
				return &usageError{fmt.Errorf("--copy-format %q: want auto, binary or text", copyOpts.Format)}
			}
			// The command line is checked before anything else, so its mistakes are named first.
			if copyOpts.SplitLargerThan, err = config.ParseBytes(splitLargerThan); err != nil {
				return &usageError{fmt.Errorf("--split-larger-than: %w", err)}
			}
			if err := watch.parse(); err != nil {
				return err
			}
			for flag, name := range map[string]string{"--slot-name": copyOpts.SlotName, "--publication-name": copyOpts.PublicationName} {
				if name != "" && !pg.ValidReplicationName(name) {
					return &usageError{fmt.Errorf("%s %q: use lower-case letters, digits and underscores, at most 63", flag, name)}
				}
			}
			// 0, the default: one per CPU of this machine (the reference pages stay the same
			// wherever they are generated).
			if copyOpts.Jobs <= 0 {
				copyOpts.Jobs = runtime.NumCPU()
			}
			if opts.IndexJobs <= 0 {
				opts.IndexJobs = runtime.NumCPU()
			}
			if c.perDB != nil { // one database of several: a share of the budget
				copyOpts.Jobs, opts.IndexJobs = max(1, copyOpts.Jobs/c.perDB.of), max(1, opts.IndexJobs/c.perDB.of)
			}
			resolved, err := c.connections("source", "target")
			if err != nil {
				return err
			}
			if resolved.MaxCopyRate == "" {
				resolved.MaxCopyRate = "0"
			}
			if copyOpts.MaxRate, err = config.ParseBytes(resolved.MaxCopyRate); err != nil {
				return &usageError{fmt.Errorf("--max-copy-rate (or max_copy_rate in pgleap.yaml): %w", err)}
			}
			opts.Source, opts.Target, opts.Logger = resolved.Source, resolved.Target, c.logger
			opts.Tables = resolved.Tables
			if err := opts.Tables.Validate(); err != nil {
				return &usageError{err}
			}
			ctx := cmd.Context()
			reverse, err := afterCutover(ctx, opts.Source, opts.Target)
			if err != nil {
				return err
			}
			release, err := c.lockMigration(ctx, opts.Source, opts.Target, reverse)
			if err != nil {
				return err
			}
			defer release()
			if !reverse {
				names := assess.StreamNames{Slot: copyOpts.SlotName, Publication: copyOpts.PublicationName}
				if err := c.refuseMigrate(ctx, opts.Source, opts.Target, opts.Tables, names); err != nil {
					return err
				}
			}
			if resolved.DDL && !reverse {
				if err := installDDLCapture(ctx, opts.Source); err != nil {
					return err
				}
			}
			tracker, stopTracking, err := c.track(ctx, watch, opts.Source, opts.Target)
			if err != nil {
				return err
			}
			defer func() {
				if err != nil && ctx.Err() == nil {
					c.events.Failed(err)
				}
				stopTracking()
			}()
			if reverse {
				tracker.StreamBack()
				return c.streamBack(ctx, opts.Source, opts.Target)
			}
			if !schemaOnly {
				copyOpts.Source, copyOpts.Target, copyOpts.Tables, copyOpts.Logger = opts.Source, opts.Target, opts.Tables, c.logger
				copyOpts.Follow = !noFollow
				progress := monitor.NewCopyProgress(c.stderr, c.logger, 10*time.Second)
				copyOpts.Progress = progressTee{progress, tracker}
				result, err := datacopy.FullLoad(ctx, opts, copyOpts)
				progress.Close()
				if err != nil {
					return err
				}
				if noFollow {
					if c.json {
						return writeJSON(c.stdout, result)
					}
					return writeFullLoadResult(c.stdout, result)
				}
				if err := guardTarget(ctx, opts.Target, !noTargetGuard); err != nil {
					return err
				}
				if !c.json {
					if err := writeFullLoadResult(c.stdout, result); err != nil {
						return err
					}
					if !noTargetGuard {
						fmt.Fprintln(c.stdout, "the target database is read-only for every session but pgleap's until cutover (--no-target-guard lifts this)")
					}
					fmt.Fprintf(c.stdout, "streaming changes from slot %s: Ctrl-C stops, pgleap migrate resumes\n", result.Copy.Slot)
				}
				stats, err := cdc.Stream(ctx, cdc.Options{Source: opts.Source, Target: opts.Target, Logger: c.logger, SkipDDL: skipDDL, DDLRoles: resolved.DDLRoles})
				if errors.Is(err, cdc.ErrCutOver) {
					fmt.Fprintln(c.stdout, "the target took over from the source (pgleap cutover): nothing streams from the source any more")
					reverse, err := afterCutover(ctx, opts.Source, opts.Target)
					if reverse {
						tracker.StreamBack()
						return c.streamBack(ctx, opts.Source, opts.Target)
					}
					// Without the way back, the migrate's work is over: afterCutover says so.
					var over *cutOverError
					if errors.As(err, &over) {
						return nil
					}
					return err
				}
				if err != nil {
					return err
				}
				if c.json {
					return writeJSON(c.stdout, struct {
						*datacopy.FullLoadResult
						Stream cdc.Stats
					}{result, stats})
				}
				_, err = fmt.Fprintf(c.stdout, "stopped streaming: %d transactions (%d changes) applied in %d target transactions (%s of target work, %d rows read ahead), %d reconnections\n",
					stats.Transactions, stats.Changes, stats.Groups, stats.TargetTime.Round(time.Millisecond), stats.Prefetched, stats.Reconnects)
				return err
			}
			stage, err := schema.Prepare(ctx, opts)
			if err != nil {
				return err
			}
			defer stage.Close()
			result, err := stage.Run(ctx)
			if err != nil {
				return err
			}
			if c.json {
				return writeJSON(c.stdout, result)
			}
			return writeSchemaResult(c.stdout, result)
		},
	}
	flags := cmd.Flags()
	flags.BoolVar(&schemaOnly, "schema-only", false, "copy roles and schema, not rows")
	flags.BoolVar(&noFollow, "no-follow", false, "stop after the copy and post-data (a cold copy: no slot is left on the source); do not stream changes")
	cmd.MarkFlagsMutuallyExclusive("schema-only", "no-follow")
	flags.BoolVar(&noTargetGuard, "no-target-guard", false, "leave the target database writable for other sessions while changes stream (default: read-only for all but pgleap, so nothing forks it)")
	flags.IntVar(&copyOpts.Jobs, "jobs", 0, "tables or chunks copied at once (0: one per CPU)")
	flags.BoolVar(&c.flags.DDL, "ddl", false, "carry schema changes made on the source during the migration: an event trigger records them, the apply runs each on the target at its place among the row changes (needs a superuser or rds_superuser on the source; pgleap.yaml: ddl: true)")
	flags.StringSliceVar(&c.flags.DDLRoles, "ddl-roles", nil, "roles besides superusers whose captured schema changes run on the target (pgleap.yaml: ddl_roles); another's stop the apply, since code a change calls would run in pgleap's session there")
	flags.Int64SliceVar(&skipDDL, "skip-ddl", nil, "captured schema changes (by the id the error names) not to run on the target, once their equivalent was run there by hand")
	flags.StringVar(&copyOpts.SlotName, "slot-name", "", "name of the replication slot to create on the source (default: pgleap_ and a random suffix); refused if it exists")
	flags.StringVar(&copyOpts.PublicationName, "publication-name", "", "name of the publication to create on the source (default: the slot's pgleap_ name); refused if it exists")
	flags.StringVar(&splitLargerThan, "split-larger-than", "1GB", "copy tables larger than this in parallel ranges (0: never)")
	flags.StringVar(&c.flags.MaxCopyRate, "max-copy-rate", "", "cap on bytes per second read from the source across all workers, such as 50MB (0: no cap; pgleap.yaml: max_copy_rate)")
	flags.StringVar(&copyOpts.Format, "copy-format", copyOpts.Format, "COPY format: auto (binary where exact between the majors, else text), binary or text")
	flags.StringVar(&opts.PgBin, "pg-bin", "", "directory holding pg_dump, pg_dumpall and pg_restore (default: $PATH, then the newest /usr/lib/postgresql/*/bin)")
	flags.IntVar(&opts.IndexJobs, "index-jobs", 0, "indexes and constraints built at once (0: one per CPU)")
	flags.BoolVar(&opts.CopyPasswords, "copy-passwords", false, "carry role password verifiers (the source role must read pg_authid: a self-managed superuser)")
	flags.BoolVar(&opts.KeepTablespaces, "keep-tablespaces", false, "keep tablespace clauses (the tablespaces must exist on the target); default: the target's default tablespace")
	watch.addFlags(flags)
	c.addTableFlags(cmd)
	return cmd
}

// installDDLCapture puts the capture of schema changes on the source (again: the same
// command resumes).
func installDDLCapture(ctx context.Context, source string) error {
	conn, err := pg.Connect(ctx, pg.Source, source)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return ddl.Install(ctx, conn)
}

// lockMigration makes this the only pgleap migrate writing to the side it applies to (the
// target; the old server when it streams back), until release.
func (c *cli) lockMigration(ctx context.Context, source, target string, reverse bool) (release func(), err error) {
	side, connString := pg.Target, target
	if reverse {
		side, connString = pg.Source, source
	}
	release, err = pg.Lock(ctx, side, connString, state.MigrateLock)
	if errors.Is(err, pg.ErrLocked) {
		return nil, fmt.Errorf("another pgleap migrate is running against the %s, %w: stop it first (Ctrl-C), or leave it to its work", side, err)
	}
	return release, err
}

// refuseMigrate reads both sides, changing nothing, and refuses a pair or a selection that
// would do damage or fail halfway (assess.RefuseMigrate).
func (c *cli) refuseMigrate(ctx context.Context, source, target string, tables config.TableFilter, names assess.StreamNames) error {
	sourceConn, targetConn, closeBoth, err := c.connectReadOnlyBoth(ctx, source, target)
	if err != nil {
		return err
	}
	defer closeBoth()
	return assess.RefuseMigrate(ctx, sourceConn, targetConn, tables, names)
}

// watchOptions configure how a running migrate is watched: its status page and its alerts.
type watchOptions struct {
	http                    string
	interval                time.Duration
	slotWAL                 string
	lagGrowing, copyStalled time.Duration
	alerts                  monitor.AlertThresholds
}

func (w *watchOptions) addFlags(flags *pflag.FlagSet) {
	defaults := monitor.DefaultAlertThresholds
	flags.StringVar(&w.http, "http", "", "serve the status page (/), /status (JSON), /metrics (Prometheus) and /healthz on this address, such as 127.0.0.1:9187")
	flags.DurationVar(&w.interval, "status-interval", 2*time.Second, "how often the migration's state is read for the status page, the metrics and the alerts")
	flags.StringVar(&w.slotWAL, "alert-slot-wal", "10GB", "warn when the source keeps more WAL than this for the slot (also at 80% of max_slot_wal_keep_size; 0: only that)")
	flags.DurationVar(&w.lagGrowing, "alert-lag-growing", defaults.LagGrowing, "warn when the apply has fallen further behind for this long (0: never)")
	flags.DurationVar(&w.copyStalled, "alert-copy-stalled", defaults.CopyStalled, "warn when the copy has read nothing for this long (0: never)")
}

func (w *watchOptions) parse() error {
	if w.interval <= 0 {
		return &usageError{fmt.Errorf("--status-interval %s: want a positive duration", w.interval)}
	}
	w.alerts = monitor.DefaultAlertThresholds
	var err error
	if w.alerts.SlotWALBytes, err = config.ParseBytes(w.slotWAL); err != nil {
		return &usageError{fmt.Errorf("--alert-slot-wal: %w", err)}
	}
	w.alerts.LagGrowing, w.alerts.CopyStalled = w.lagGrowing, w.copyStalled
	return nil
}

// track follows the migration for the alerts, the events in the state and, with --http,
// the status page, until stop is called.
func (c *cli) track(ctx context.Context, w watchOptions, source, target string) (tracker *monitor.Tracker, stop func(), err error) {
	tracker = monitor.NewTracker(monitor.TrackerOptions{Source: source, Target: target, Interval: w.interval,
		Alerts: w.alerts, Logger: c.logger, Events: c.events})
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if w.http != "" {
		addr, done, err := tracker.Serve(ctx, w.http, c.logger)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		c.logger.Info("serving the status page", "url", "http://"+addr.String()+"/")
		wg.Go(func() {
			if err := <-done; err != nil {
				c.logger.Error("the status page stopped", "err", err)
			}
		})
	}
	wg.Go(func() { tracker.Run(ctx) })
	return tracker, func() {
		cancel()
		wg.Wait()
	}, nil
}

// progressTee tells several listeners about the copy.
type progressTee []datacopy.Progress

func (t progressTee) Planned(items []state.CopyItem) {
	for _, p := range t {
		p.Planned(items)
	}
}

func (t progressTee) Started(item state.CopyItem) {
	for _, p := range t {
		p.Started(item)
	}
}

func (t progressTee) Copied(item state.CopyItem, bytes int) {
	for _, p := range t {
		p.Copied(item, bytes)
	}
}

func (t progressTee) Finished(item state.CopyItem, rows int64) {
	for _, p := range t {
		p.Finished(item, rows)
	}
}

func (t progressTee) SourceWAL(retained int64) {
	for _, p := range t {
		p.SourceWAL(retained)
	}
}

// guardTarget makes the target read-only for other sessions, or lifts that.
func guardTarget(ctx context.Context, connString string, on bool) error {
	target, err := pg.Connect(ctx, pg.Target, connString)
	if err != nil {
		return err
	}
	defer target.Close(context.WithoutCancel(ctx))
	return cdc.SetTargetGuard(ctx, target, on)
}

// afterCutover tells whether the migration was cut over with the way back kept (reverse:
// the old server follows the new one), and refuses a migrate of one cut over without it,
// or rolled back: copying or streaming into the target again would overwrite what the
// application wrote there since.
func afterCutover(ctx context.Context, source, target string) (reverse bool, err error) {
	// Both, the source first, as every stage after this connects.
	sourceConn, conn, err := pg.ConnectBoth(ctx, source, target)
	if err != nil {
		return false, err
	}
	sourceConn.Close(context.Background())
	defer conn.Close(context.Background())
	if exists, err := state.Exists(ctx, conn); err != nil || !exists {
		return false, err
	}
	phase, since, err := state.Phase(ctx, conn)
	switch {
	case err != nil:
		return false, err
	case phase == state.PhaseReverseStreaming:
		return true, nil
	case phase == state.PhaseCutoverDone:
		return false, &cutOverError{fmt.Sprintf("the migration was cut over at %s: the target takes the writes now and there is nothing to migrate; pgleap cleanup ends the migration",
			since.Format(time.RFC3339))}
	case phase == state.PhaseRolledBack:
		return false, &cutOverError{fmt.Sprintf("the migration was rolled back at %s: the source takes the writes again; pgleap cleanup ends the migration",
			since.Format(time.RFC3339))}
	}
	return false, nil
}

// cutOverError refuses a migrate after the target took over, or gave the writes back.
type cutOverError struct{ message string }

func (e *cutOverError) Error() string { return e.message }

// streamBack streams the new server's changes to the old one after a cutover, until
// Ctrl-C or a rollback.
func (c *cli) streamBack(ctx context.Context, source, target string) error {
	fmt.Fprintln(c.stdout, "streaming the target's changes back to the source (the way back): Ctrl-C stops, pgleap migrate resumes")
	stats, err := cdc.Stream(ctx, cdc.Options{Source: target, Target: source, Logger: c.logger})
	if errors.Is(err, cdc.ErrCutOver) {
		fmt.Fprintln(c.stdout, "rolled back: the source takes the writes again, nothing streams back any more")
		return nil
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "stopped streaming back: %d transactions (%d changes) applied to the source, %d reconnections\n",
		stats.Transactions, stats.Changes, stats.Reconnects)
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// output prints v as JSON with --json, or else as writeText writes it.
func (c *cli) output(v any, writeText func(io.Writer) error) error {
	if c.json {
		return writeJSON(c.stdout, v)
	}
	return writeText(c.stdout)
}

func writeFullLoadResult(w io.Writer, r *datacopy.FullLoadResult) error {
	c := r.Copy
	if r.CompletedEarlier {
		_, err := fmt.Fprintln(w, "full load: completed by an earlier run")
		return err
	}
	if _, err := fmt.Fprintf(w, "full load done in %s: %d rows, %s in %d units (%d done by an earlier run), %d large objects; %d tables analyzed\n",
		r.Duration.Round(time.Millisecond), c.Rows, monitor.HumanBytes(c.Bytes), c.Items, c.ItemsDoneEarlier, c.LargeObjects, r.Analyzed); err != nil {
		return err
	}
	return writeSchemaResult(w, r.Schema)
}

func writeSchemaResult(w io.Writer, r *schema.Result) error {
	var b strings.Builder
	if r.Duration > 0 {
		fmt.Fprintf(&b, "schema copied in %s with %s (%s)\n", r.Duration.Round(time.Millisecond), r.Tools.PgDump, r.Tools.Version)
	} else {
		fmt.Fprintf(&b, "schema copied with %s (%s)\n", r.Tools.PgDump, r.Tools.Version)
	}
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
