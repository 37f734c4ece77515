package cutover

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/cdc"
	"github.com/pgleap/pgleap/internal/config"
	datacopy "github.com/pgleap/pgleap/internal/copy"
	"github.com/pgleap/pgleap/internal/monitor"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
	"github.com/pgleap/pgleap/internal/verify"
)

// Options configure a cutover.
type Options struct {
	Source, Target string
	// MaxLag is the most the apply may be behind when the cutover starts.
	MaxLag time.Duration
	// LongTransaction is the age from which a source transaction blocks the cutover, unless
	// TerminateLong lets the freeze end it.
	LongTransaction time.Duration
	TerminateLong   bool
	// NoReverse cuts over without streaming the new server's changes back to the old one:
	// without a way back.
	NoReverse bool
	// Verify is the final verification: "counts", "full" (every row's hash) or "none".
	Verify          string
	RefreshMatviews bool
	// SwitchCommand, run with sh once the target is open, points the application at it.
	SwitchCommand string
	// Pooler, when set, is the PgBouncer the application goes through: paused during the
	// cutover and pointed at the target, instead of writes failing.
	Pooler *Pooler
	DryRun bool
	Jobs   int
	// DrainTimeout bounds the wait for the apply to catch up with the frozen source.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Coordinator, when set, makes this cutover one of several (one per database) that
	// freeze together and open together.
	Coordinator Coordinator
}

// Coordinator holds several cutovers at two points, so that they act as one: none changes
// anything until every preflight passed, and none opens its target until every freeze is
// confirmed. An error from either aborts the cutover (the second undoes it).
type Coordinator interface {
	// Ready is told whether this cutover's preflight passed, and waits for the others'.
	Ready(ctx context.Context, ok bool) error
	// Confirmed waits until every cutover has confirmed its freeze.
	Confirmed(ctx context.Context) error
}

// Check is one preflight check.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Step is one timed step of the cutover.
type Step struct {
	Name  string    `json:"name"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Error string    `json:"error,omitempty"`
}

// Result says what a cutover did.
type Result struct {
	Preflight []Check `json:"preflight"`
	Steps     []Step  `json:"steps,omitempty"`
	// WritePauseMS is how long the source took no writes before the target was open.
	WritePauseMS float64 `json:"write_pause_ms,omitempty"`
	Done         bool    `json:"done"`
	// Undone is why the cutover was undone; the source is writable again and the migration
	// streams as before.
	Undone       string            `json:"undone,omitempty"`
	FreezeLSN    string            `json:"freeze_lsn,omitempty"`
	Sequences    int               `json:"sequences"`
	LargeObjects int               `json:"large_objects_resynced"`
	Verification *verify.RowReport `json:"verification,omitempty"`
	SwitchError  string            `json:"switch_error,omitempty"`
	// Switched is true when a switch command or the pooler pointed the application at the
	// side that took over.
	Switched bool               `json:"switched"`
	Earlier  *EarlierCutoverEnd `json:"earlier_cutover_undone,omitempty"`
}

// EarlierCutoverEnd tells of a cutover whose process died, undone before this one started.
type EarlierCutoverEnd struct {
	StartedAt time.Time `json:"started_at"`
}

// ErrNotReady is returned when a preflight check fails: nothing was changed.
var ErrNotReady = errors.New("the migration is not ready for cutover")

// ErrUndone is returned when a step failed and the cutover was undone.
var ErrUndone = errors.New("it failed and was undone: the frozen side takes writes again and streaming goes on as before")

// cutover is one run.
type cutover struct {
	opts           Options
	source, target *pgx.Conn
	repl           state.Replication
	selection      config.TableFilter
	id             int64
	result         *Result
	undo           *freezeUndo // set once the source may be frozen
	frozenAt       time.Time
	guardLifted    bool // the target may have been opened
	// reverse is the slot and publication on the target the old server follows after the
	// cutover, once recorded; reverseState is true once the old server has pgleap state.
	reverse      *state.Replication
	reverseState bool
	// open opens the target; rollback also unfreezes it (it was the frozen source).
	open func(ctx context.Context) error
	// donePhase is the target's phase once done.
	donePhase string
	pooler    *pooler
	// sides names the two servers in what the cutover reports.
	sides sides
}

// sides names the two servers of a cutover in its checks, steps and errors: the source and
// the target, or for a rollback, which runs the cutover the other way, the new server (the
// one frozen) and the old one (the one opened).
type sides struct{ source, target string }

var (
	cutoverSides  = sides{source: "the source", target: "the target"}
	rollbackSides = sides{source: "the new server", target: "the old server"}
)

// Run runs a cutover. It returns the result with ErrNotReady when a preflight check failed
// (nothing changed), with ErrUndone when a step failed (everything undone), or with another
// error when the migration could not be read or an undo itself failed.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	source, target, err := pg.ConnectBoth(ctx, opts.Source, opts.Target)
	if err != nil {
		return nil, err
	}
	c := &cutover{opts: opts, source: source, target: target, result: &Result{}, sides: cutoverSides}
	defer func() { // reconnect may have replaced them
		c.source.Close(context.Background())
		c.target.Close(context.Background())
	}()
	c.open, c.donePhase = c.liftGuard, state.PhaseCutoverDone
	if !opts.NoReverse {
		c.donePhase = state.PhaseReverseStreaming
	}
	return c.run(ctx)
}

func (c *cutover) run(ctx context.Context) (*Result, error) {
	opts := c.opts
	if err := c.load(ctx); err != nil {
		return nil, err
	}
	if opts.Pooler != nil {
		var err error
		if c.pooler, err = openPooler(ctx, *opts.Pooler); err != nil {
			return nil, err
		}
		defer c.pooler.close()
	}
	release, err := lockRun(ctx, c.opts.Target)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := c.undoEarlier(ctx); err != nil {
		return c.result, err
	}
	ready := c.preflight(ctx)
	if opts.Coordinator != nil {
		if err := opts.Coordinator.Ready(ctx, ready); err != nil && ready {
			c.result.Preflight = append(c.result.Preflight, Check{Name: "the cutovers of the other databases are ready", Detail: err.Error()})
			ready = false
		}
	}
	if !ready {
		return c.result, ErrNotReady
	}
	if opts.DryRun {
		return c.result, nil
	}
	if c.id, err = state.BeginCutover(ctx, c.target); err != nil {
		return c.result, err
	}
	if err := c.steps(ctx); err != nil {
		reason := err.Error()
		c.result.Undone = reason
		if undoErr := c.undoFrozen(context.WithoutCancel(ctx), reason); undoErr != nil {
			return c.result, fmt.Errorf("%w; undoing it failed too: %w", err, undoErr)
		}
		return c.result, fmt.Errorf("%w: %w", ErrUndone, err)
	}
	c.result.Done, c.result.Switched = true, c.pooler != nil && c.result.SwitchError == ""
	if opts.SwitchCommand != "" {
		c.step(ctx, "run the switch command", func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, "sh", "-c", opts.SwitchCommand)
			cmd.Env = append(os.Environ(), "PGLEAP_SOURCE="+opts.Source, "PGLEAP_TARGET="+opts.Target)
			if out, err := cmd.CombinedOutput(); err != nil {
				c.result.SwitchError = fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out)))
				return errors.New(c.result.SwitchError)
			}
			c.result.Switched = true
			return nil
		})
	}
	return c.result, nil
}

// load reads the migration from the target's state.
func (c *cutover) load(ctx context.Context) error {
	exists, err := state.Exists(ctx, c.target)
	if err != nil {
		return err
	}
	if !exists {
		return errors.New("the target holds no pgleap migration: run pgleap migrate first")
	}
	if err := state.Init(ctx, c.target); err != nil {
		return err
	}
	m, ok, err := state.LoadMigration(ctx, c.target)
	if err != nil {
		return err
	}
	if ok {
		c.selection = config.TableFilter{Include: m.Include, Exclude: m.Exclude}
	}
	c.repl, ok, err = state.LoadReplication(ctx, c.target)
	if err != nil {
		return err
	}
	if !ok || c.repl.StartLSN == 0 {
		return errors.New("the target does not follow the source (a cold copy): cutover needs pgleap migrate streaming changes")
	}
	return nil
}

// lockRun takes the run lock, so that a second cutover or rollback refuses instead of taking
// the unfinished record of the first for that of a dead process and undoing its freeze under
// it. release ends the run; a process that dies loses the lock, and the next run undoes what
// it left.
func lockRun(ctx context.Context, connString string) (release func(), err error) {
	release, err = pg.Lock(ctx, pg.Target, connString, state.CutoverLock)
	if errors.Is(err, pg.ErrLocked) {
		return nil, fmt.Errorf("%w (or rollback), %w: wait for it to finish, or stop it with Ctrl-C, which undoes it", state.ErrCutoverRunning, err)
	}
	return release, err
}

// undoEarlier undoes a cutover whose process died before it finished.
func (c *cutover) undoEarlier(ctx context.Context) error {
	earlier, ok, err := state.UnfinishedCutover(ctx, c.target)
	if err != nil || !ok {
		return err
	}
	c.opts.Logger.Warn("an earlier cutover stopped before it finished: undoing it", "started", earlier.StartedAt)
	c.id = earlier.ID
	if len(earlier.FreezeUndo) > 0 {
		var u freezeUndo
		if err := json.Unmarshal(earlier.FreezeUndo, &u); err != nil {
			return fmt.Errorf("read how to undo the earlier cutover's freeze: %w", err)
		}
		c.undo = &u
	}
	if c.pooler != nil {
		c.pooler.paused = true // it may have been left paused; RESUME says so if not
	}
	c.result.Steps = nil
	if err := json.Unmarshal(earlier.Timeline, &c.result.Steps); err != nil {
		return fmt.Errorf("read the earlier cutover's steps: %w", err)
	}
	for _, s := range c.result.Steps {
		c.guardLifted = c.guardLifted || s.Name == c.openStep() || s.Name == stepOpenUnnamed
		c.reverseState = c.reverseState || s.Name == stepReverse
	}
	if r, ok, err := state.LoadReverse(ctx, c.target); err != nil {
		return err
	} else if ok {
		c.reverse = &r
	}
	if err := c.undoFrozen(ctx, "its process stopped before it finished"); err != nil {
		return err
	}
	c.result.Earlier = &EarlierCutoverEnd{StartedAt: earlier.StartedAt}
	c.id, c.undo, c.guardLifted, c.result.Steps, c.reverse, c.reverseState = 0, nil, false, nil, nil, false
	return nil
}

// undoFrozen guards the target again if it was opened, lets the apply go on, unfreezes the
// source and records the cutover undone.
func (c *cutover) undoFrozen(ctx context.Context, reason string) error {
	// The source first, and the pooler: neither needs the target, which may be what failed.
	var unfreezeErr error
	if c.undo != nil {
		if unfreezeErr = c.reconnect(ctx, &c.source, pg.Source, c.opts.Source); unfreezeErr == nil {
			unfreezeErr = unfreeze(ctx, c.source, *c.undo)
		}
	}
	var poolerErr error
	if c.pooler != nil {
		// The clients it held go back to the source, which takes writes again.
		poolerErr = errors.Join(c.pooler.restore(ctx), c.pooler.resume(ctx))
		if poolerErr != nil && strings.Contains(poolerErr.Error(), "not paused") {
			poolerErr = nil
		}
	}
	if err := c.reconnect(ctx, &c.target, pg.Target, c.opts.Target); err != nil {
		return errors.Join(unfreezeErr, poolerErr, err)
	}
	var guardErr error
	if c.guardLifted {
		guardErr = cdc.SetTargetGuard(ctx, c.target, true)
	}
	_, releaseErr := state.ReleaseHold(ctx, c.target)
	reverseErr := c.dropReverse(ctx)
	if unfreezeErr != nil {
		// Left unfinished, the cutover is undone again by the next run, which reads what
		// the source's settings were from it.
		return errors.Join(unfreezeErr, poolerErr, guardErr, releaseErr, reverseErr)
	}
	finishErr := state.FinishCutover(ctx, c.target, c.id, state.CutoverUndone, "", reason, 0, c.result.Steps)
	return errors.Join(guardErr, releaseErr, reverseErr, poolerErr, finishErr)
}

// reconnect opens a new connection to a side when the cutover's broke (the server
// restarted, Ctrl-C cut a query short), waiting up to a minute for it to come back: the
// undo must reach both sides.
func (c *cutover) reconnect(ctx context.Context, conn **pgx.Conn, side pg.Side, connString string) error {
	if !(*conn).IsClosed() {
		return nil
	}
	deadline := time.Now().Add(time.Minute)
	for {
		fresh, err := pg.Connect(ctx, side, connString)
		if err == nil {
			*conn = fresh
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("undo on the %s: %w: once it is back, run pgleap cutover (or rollback) again: it finishes undoing this one first", side, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// preflight runs the checks; false when one failed.
func (c *cutover) preflight(ctx context.Context) bool {
	ok := true
	check := func(name string, pass bool, detail string) {
		c.result.Preflight = append(c.result.Preflight, Check{Name: name, OK: pass, Detail: detail})
		ok = ok && pass
	}
	st, err := monitor.ReadStatus(ctx, c.target, c.source, 0)
	if err != nil {
		check("read the migration's status", false, err.Error())
		return false
	}
	if active, err := pg.SlotActive(ctx, c.source, c.repl.Slot); err != nil {
		check("pgleap migrate streams", false, err.Error())
	} else {
		check("pgleap migrate streams", st.Phase == state.PhaseStreaming && active,
			fmt.Sprintf("phase %s, slot %s %s", st.Phase, c.repl.Slot, map[bool]string{true: "in use", false: "not in use: start pgleap migrate"}[active]))
	}
	if st.LagSeconds != nil {
		lag := time.Duration(*st.LagSeconds * float64(time.Second))
		check("lag under --max-lag", lag <= c.opts.MaxLag, fmt.Sprintf("%s behind (%d bytes), at most %s", lag.Round(time.Millisecond), *st.LagBytes, c.opts.MaxLag))
	}
	var copying []string
	for _, t := range st.Tables {
		if t.State != "copied" {
			copying = append(copying, t.Name)
		}
	}
	check("every table copied", len(copying) == 0, strings.Join(copying, ", "))
	if v := st.LastVerification; v != nil {
		check("the last verification was clean", v.Equal, fmt.Sprintf("at %s: %d of %d tables differed", v.FinishedAt.Format(time.RFC3339), v.DifferingTables, v.Tables))
	}
	skipped, err := state.Skipped(ctx, c.target)
	if err == nil {
		var report *verify.SchemaReport
		if report, err = verify.CompareSchemas(ctx, c.source, c.target, c.selection, skipped); err == nil {
			check("the schemas are the same", report.Equal(), fmt.Sprintf("%d schema/kind pairs differ: see pgleap verify --schema", len(report.Differences)))
		}
	}
	if err != nil {
		check("the schemas are the same", false, err.Error())
	}
	sourceRights, err := pg.ReadRights(ctx, c.source)
	if err != nil {
		check("pgleap may freeze writes on "+c.sides.source, false, err.Error())
	} else {
		missing := sourceRights.FreezeMissing()
		check("pgleap may freeze writes on "+c.sides.source, len(missing) == 0, strings.Join(missing, " "))
		if sessions := sourceRights.SuperuserSessions; !sourceRights.Superuser && len(sessions) > 0 {
			check("no superuser session on "+c.sides.source+", which only a superuser may end", false, strings.Join(sessions, ", ")+": end them, or cut over as a superuser")
		}
	}
	long, err := c.longTransactions(ctx)
	switch {
	case err != nil:
		check("no long transaction on "+c.sides.source, false, err.Error())
	case len(long) > 0 && c.opts.TerminateLong:
		check("no long transaction on "+c.sides.source, true, "the freeze will end: "+strings.Join(long, "; "))
	default:
		check("no long transaction on "+c.sides.source, len(long) == 0, strings.Join(long, "; ")+" (--terminate-long ends them)")
	}
	if !c.opts.NoReverse {
		var walLevel string
		if err := c.target.QueryRow(ctx, "SELECT current_setting('wal_level')").Scan(&walLevel); err != nil {
			check("the target can stream back (wal_level=logical)", false, err.Error())
		} else {
			check("the target can stream back (wal_level=logical)", walLevel == "logical",
				"wal_level is "+walLevel+" on the target: set wal_level=logical there and restart it, or pass --no-reverse to cut over without a way back")
		}
		exists, err := state.Exists(ctx, c.source)
		check("the source can follow the target", err == nil && !exists,
			fmt.Sprint(cmp.Or[any](err, "the source holds a pgleap schema already: drop it (DROP SCHEMA pgleap CASCADE) if no migration uses it, or pass --no-reverse")))
		if targetRights, err := pg.ReadRights(ctx, c.target); err != nil {
			check("pgleap may stream back", false, err.Error())
		} else if sourceRights.Role != "" {
			missing, detail := wayBackMissing(sourceRights, targetRights), ""
			if len(missing) > 0 {
				detail = strings.Join(missing, " ") + " (or pass --no-reverse)"
			}
			check("pgleap may stream back", len(missing) == 0, detail)
		}
	}
	return ok
}

// wayBackMissing lists what pgleap's roles lack for the way back: a slot on the new server,
// and on the old one its state and the apply, each as the statement that gives it.
func wayBackMissing(old, new pg.Rights) []string {
	var missing []string
	if !new.Replication {
		missing = append(missing, fmt.Sprintf("on the target: ALTER ROLE %s REPLICATION;", pg.QuoteIdent(new.Role)))
	}
	if !old.CreateInDatabase {
		missing = append(missing, fmt.Sprintf("on the source: GRANT CREATE ON DATABASE %s TO %s;", pg.QuoteIdent(old.Database), pg.QuoteIdent(old.Role)))
	}
	if !old.SetReplicationRole {
		missing = append(missing, "on the source: "+old.ReplicationRoleFix())
	}
	return missing
}

// longTransactions lists the source database's transactions older than LongTransaction.
func (c *cutover) longTransactions(ctx context.Context) ([]string, error) {
	rows, err := c.source.Query(ctx, `SELECT format('pid %s (%s, %s) open for %s', pid, usename, coalesce(nullif(application_name, ''), 'no application name'),
		date_trunc('second', now() - xact_start)) `+otherSessions+` AND xact_start < now() - $1::interval ORDER BY xact_start`,
		c.opts.LongTransaction.String())
	if err != nil {
		return nil, fmt.Errorf("list long transactions on %s: %w", c.sides.source, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

const (
	stepReverse = "prepare the way back (the old server follows the new one)"
	// stepOpenUnnamed is what rollbacks recorded as their opening step before steps named
	// the sides: a rollback resumed across an upgrade of pgleap still finds it.
	stepOpenUnnamed = "open the target"
)

// openStep names the step that opens the side taking over.
func (c *cutover) openStep() string { return "open " + c.sides.target }

// step runs one timed step and records the timeline.
func (c *cutover) step(ctx context.Context, name string, do func(context.Context) error) error {
	c.opts.Logger.Info("cutover: " + name)
	// Recorded before it runs too: a run that dies in it leaves the next one to know it began.
	c.result.Steps = append(c.result.Steps, Step{Name: name, Start: time.Now()})
	s := &c.result.Steps[len(c.result.Steps)-1]
	if c.id != 0 {
		if err := state.RecordTimeline(ctx, c.target, c.id, c.result.Steps); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	err := do(ctx)
	s.End = time.Now()
	if err != nil {
		s.Error = err.Error()
		err = fmt.Errorf("%s: %w", name, err)
	}
	if c.id != 0 {
		if recordErr := state.RecordTimeline(context.WithoutCancel(ctx), c.target, c.id, c.result.Steps); recordErr != nil && err == nil {
			err = recordErr
		}
	}
	return err
}

// steps freezes the source, drains, syncs what streaming does not carry, verifies and
// opens the target.
func (c *cutover) steps(ctx context.Context) error {
	var freezeLSN pglogrepl.LSN
	var changesAtFreeze int64 // row changes the apply had applied, ever, when it held at the freeze
	err := c.step(ctx, "freeze writes on "+c.sides.source, func(ctx context.Context) error {
		u, err := readFreezeUndo(ctx, c.source)
		if err != nil {
			return err
		}
		if err := state.RecordFreezeUndo(ctx, c.target, c.id, u); err != nil {
			return err
		}
		c.undo, c.frozenAt = &u, time.Now()
		if c.pooler != nil {
			if err := c.pooler.pause(ctx); err != nil {
				return err
			}
		}
		if err := freeze(ctx, c.source, u); err != nil {
			return err
		}
		freezeLSN, err = c.insertLSN(ctx)
		return err
	})
	if err != nil {
		return err
	}
	c.result.FreezeLSN = freezeLSN.String()
	err = c.step(ctx, "apply everything committed before the freeze", func(ctx context.Context) error {
		changesAtFreeze, err = c.holdApplyAt(ctx, freezeLSN)
		return err
	})
	if err != nil {
		return err
	}
	if err := c.step(ctx, "copy sequence values", c.copySequences); err != nil {
		return err
	}
	err = c.step(ctx, "copy large objects changed since the copy", func(ctx context.Context) (err error) {
		c.result.LargeObjects, err = datacopy.ResyncLargeObjects(ctx, c.source, c.target)
		return err
	})
	if err != nil {
		return err
	}
	if c.opts.RefreshMatviews {
		if err := c.step(ctx, "refresh materialized views", c.refreshMatviews); err != nil {
			return err
		}
	}
	if c.opts.Verify != "none" {
		if err := c.step(ctx, "verify ("+c.opts.Verify+")", c.verify); err != nil {
			return err
		}
	}
	if !c.opts.NoReverse {
		if err := c.step(ctx, stepReverse, c.prepareReverse); err != nil {
			return err
		}
	}
	err = c.step(ctx, "confirm the freeze held", func(ctx context.Context) error {
		return c.confirmFrozen(ctx, changesAtFreeze)
	})
	if err != nil {
		return err
	}
	if c.opts.Coordinator != nil {
		if err := c.step(ctx, "wait for the other databases' freezes", c.opts.Coordinator.Confirmed); err != nil {
			return err
		}
	}
	return c.step(ctx, c.openStep(), func(ctx context.Context) error {
		if err := c.open(ctx); err != nil {
			return err
		}
		if c.pooler != nil {
			// The other side is open: from here on a failure is reported, not undone.
			if err := errors.Join(c.pooler.pointAt(ctx, c.opts.Target), c.pooler.resume(ctx)); err != nil {
				c.result.SwitchError = "pgbouncer: " + err.Error()
				c.opts.Logger.Error("the other side is open, but pgbouncer could not be switched to it: do it by hand", "err", err)
			}
		}
		pause := time.Since(c.frozenAt)
		c.result.WritePauseMS = float64(pause) / float64(time.Millisecond)
		if err := state.FinishCutover(ctx, c.target, c.id, state.CutoverDone, c.donePhase, "", pause, c.result.Steps); err != nil {
			return err
		}
		// Released after the phase says cut over: the apply then ends instead of going on.
		// Done, the cutover is not undone any more: an apply left holding lets go by itself.
		if _, err := state.ReleaseHold(ctx, c.target); err != nil {
			c.opts.Logger.Warn("the apply could not be told to stop holding: it gives up on its own", "err", err)
		}
		return nil
	})
}

// insertLSN is the source's WAL insert position: every commit record of the transactions
// that ended before is below it, written to disk or not (asynchronous commits).
func (c *cutover) insertLSN(ctx context.Context) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	if err := c.source.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_insert_lsn()").Scan(&lsn); err != nil {
		return 0, fmt.Errorf("read the WAL position of %s: %w", c.sides.source, err)
	}
	return lsn, nil
}

// holdApplyAt holds the apply at the source's position lsn and returns how many row changes
// it has applied, ever, once it stands there.
func (c *cutover) holdApplyAt(ctx context.Context, lsn pglogrepl.LSN) (int64, error) {
	held, _, err := cdc.HoldAt(ctx, c.source, c.target, c.repl.Slot, lsn, c.opts.DrainTimeout)
	if err == nil && !held {
		err = fmt.Errorf("the apply met a transaction of %s that committed after %s: a session wrote past the freeze", c.sides.source, lsn)
	}
	if err != nil {
		return 0, err
	}
	progress, err := state.LoadProgress(ctx, c.target)
	return progress.Changes, err
}

// confirmFrozen proves that nothing wrote to the migrated tables since the freeze: the
// apply, held at the freeze, is let go on to the source's position now and must find no row
// change on the way. Only a session that turned read-only off could have written (every new
// session starts read-only, and only superusers, the owner or pgleap's own role may still
// connect); nobody but pgleap may even be connected.
func (c *cutover) confirmFrozen(ctx context.Context, changesAtFreeze int64) error {
	rows, err := c.source.Query(ctx, "SELECT format('pid %s (%s, %s)', pid, usename, coalesce(nullif(application_name, ''), 'no application name')) "+otherSessions)
	if err != nil {
		return err
	}
	sessions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(sessions) > 0 {
		return fmt.Errorf("sessions connected to %s, which is frozen: %s", c.sides.source, strings.Join(sessions, "; "))
	}
	now, err := c.insertLSN(ctx)
	if err != nil {
		return err
	}
	changes, err := c.holdApplyAt(ctx, now)
	if err != nil {
		return err
	}
	if n := changes - changesAtFreeze; n != 0 {
		return fmt.Errorf("%d row changes to the migrated tables were committed on %s after the freeze (by a session that turned read-only off): end those sessions and cut over again", n, c.sides.source)
	}
	return nil
}

// liftGuard opens the target: it lifts the guard pgleap migrate put on it, if any.
func (c *cutover) liftGuard(ctx context.Context) error {
	progress, err := state.LoadProgress(ctx, c.target)
	if err != nil || !progress.TargetGuard {
		return err
	}
	c.guardLifted = true
	return cdc.SetTargetGuard(ctx, c.target, false)
}

// prepareReverse makes the way back before the target takes its first write: a
// publication of the migrated tables and a slot on the target, and on the old server a
// pgleap schema that follows the target from the slot's consistent point, as the target
// followed it. pgleap migrate streams it (the running one, once the cutover is done).
func (c *cutover) prepareReverse(ctx context.Context) error {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	name := "pgleap_back_" + hex.EncodeToString(suffix)
	c.reverse = &state.Replication{Slot: name, Publication: name}
	if err := state.RecordReverse(ctx, c.target, name, name); err != nil {
		return err
	}
	version, err := pg.ServerVersion(ctx, c.target)
	if err != nil {
		return err
	}
	all, err := catalog.Tables(ctx, c.target)
	if err != nil {
		return fmt.Errorf("list the target's tables: %w", err)
	}
	var selected []catalog.Table
	for _, t := range all {
		if c.selection.Selects(t.Schema, t.Name) {
			selected = append(selected, t)
		}
	}
	if err := datacopy.EnsurePublication(ctx, c.target, name, version.Major, selected); err != nil {
		return err
	}
	slot, err := pg.OpenSlotSnapshot(ctx, c.opts.Target, name, false)
	if err != nil {
		return err
	}
	slot.Close() // the slot stays: only its consistent point is needed
	var database string
	if err := c.target.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		return err
	}
	c.reverseState = true
	if err := state.Init(ctx, c.source); err != nil {
		return fmt.Errorf("create pgleap state on the source: %w", err)
	}
	err = state.Begin(ctx, c.source, state.Migration{SourceDatabase: database, SourceMajor: version.Major, Include: c.selection.Include, Exclude: c.selection.Exclude})
	if err != nil {
		return err
	}
	if _, err := state.PlanReplication(ctx, c.source, name, name); err != nil {
		return err
	}
	if err := state.RecordStreamStart(ctx, c.source, slot.LSN); err != nil {
		return err
	}
	// The source stays frozen: read-only for every session but pgleap's, as a guarded target.
	return pgx.BeginFunc(ctx, c.source, func(tx pgx.Tx) error { return state.RecordTargetGuard(ctx, tx, true) })
}

// dropReverse drops what prepareReverse made.
func (c *cutover) dropReverse(ctx context.Context) error {
	var errs []error
	if c.reverse != nil {
		_, err := datacopy.DropStream(ctx, c.target, *c.reverse)
		errs = append(errs, err, state.RecordReverse(ctx, c.target, "", ""))
	}
	if c.reverseState {
		if _, err := c.source.Exec(ctx, "DROP SCHEMA IF EXISTS pgleap CASCADE"); err != nil {
			errs = append(errs, fmt.Errorf("drop the pgleap schema made on the source for the way back: %w", err))
		}
	}
	return errors.Join(errs...)
}

// copySequences sets every sequence of the selected schemas on the target to its value on
// the frozen source.
func (c *cutover) copySequences(ctx context.Context) error {
	rows, err := c.source.Query(ctx, `SELECT schemaname, format('%I.%I', schemaname, sequencename) FROM pg_catalog.pg_sequences
		WHERE schemaname NOT IN (`+catalog.OwnSchemas+`) ORDER BY 1, 2`)
	if err != nil {
		return fmt.Errorf("list the sequences of %s: %w", c.sides.source, err)
	}
	var names []string
	var schema, name string
	_, err = pgx.ForEachRow(rows, []any{&schema, &name}, func() error {
		if !c.selection.ExcludesSchema(schema) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list the sequences of %s: %w", c.sides.source, err)
	}
	return pgx.BeginFunc(ctx, c.target, func(tx pgx.Tx) error {
		for _, name := range names {
			var last int64
			var called bool
			if err := c.source.QueryRow(ctx, "SELECT last_value, is_called FROM "+name).Scan(&last, &called); err != nil {
				return fmt.Errorf("read sequence %s on %s: %w", name, c.sides.source, err)
			}
			if _, err := tx.Exec(ctx, "SELECT pg_catalog.setval($1::regclass, $2, $3)", name, last, called); err != nil {
				return fmt.Errorf("set sequence %s on %s: %w", name, c.sides.target, err)
			}
		}
		c.result.Sequences = len(names)
		return nil
	})
}

func (c *cutover) refreshMatviews(ctx context.Context) error {
	rows, err := c.target.Query(ctx, "SELECT format('%I.%I', schemaname, matviewname) FROM pg_catalog.pg_matviews WHERE schemaname NOT IN ("+catalog.OwnSchemas+")")
	if err != nil {
		return fmt.Errorf("list materialized views on %s: %w", c.sides.target, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list materialized views on %s: %w", c.sides.target, err)
	}
	for _, name := range names {
		if _, err := c.target.Exec(ctx, "REFRESH MATERIALIZED VIEW "+name); err != nil {
			return fmt.Errorf("refresh %s on %s: %w", name, c.sides.target, err)
		}
	}
	return nil
}

// verify compares both sides, which stand still: the source frozen, the apply held.
func (c *cutover) verify(ctx context.Context) error {
	report, err := verify.CompareRows(ctx, verify.RowOptions{
		Source: c.opts.Source, Target: c.opts.Target, Tables: c.selection, Jobs: c.opts.Jobs, ChunkRows: 100000, MaxKeys: 10,
		Frozen: true, CountsOnly: c.opts.Verify == "counts", Logger: c.opts.Logger,
	})
	if err != nil {
		return err
	}
	c.result.Verification = report
	if !report.Equal {
		var differing []string
		for _, t := range report.Tables {
			if !t.Equal {
				differing = append(differing, t.Table)
			}
		}
		for _, extra := range []*verify.TableResult{report.LargeObjects, report.Sequences} {
			if extra != nil && !extra.Equal {
				differing = append(differing, extra.Table)
			}
		}
		return fmt.Errorf("%s and %s differ in %s: see pgleap verify", c.sides.source, c.sides.target, strings.Join(differing, ", "))
	}
	return nil
}

// Rollback gives the writes back to the old server after a cutover that kept the way back.
// opts.Source is the old server and opts.Target the new one, as for the cutover. It is the
// cutover of the reverse migration, whose state is on the old server: freeze the new server,
// wait until the old one has applied everything, copy sequence values and large objects
// back, verify, and open the old server (put back the settings the cutover's freeze
// changed). The new server stays frozen.
func Rollback(ctx context.Context, opts Options) (*Result, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	oldServer, newServer, err := pg.ConnectBoth(ctx, opts.Source, opts.Target)
	if err != nil {
		return nil, err
	}
	defer oldServer.Close(context.Background())
	defer newServer.Close(context.Background())
	if exists, err := state.Exists(ctx, newServer); err != nil || !exists {
		return nil, cmp.Or(err, errors.New("the target holds no pgleap migration: nothing to roll back"))
	}
	if err := state.Init(ctx, newServer); err != nil {
		return nil, err
	}
	phase, _, err := state.Phase(ctx, newServer)
	if err != nil {
		return nil, err
	}
	if phase != state.PhaseReverseStreaming {
		return nil, fmt.Errorf("nothing to roll back: the migration's phase is %s; rollback follows a cutover that kept the way back (without --no-reverse)", phase)
	}
	forward, ok, err := state.LastDoneCutover(ctx, newServer)
	if err != nil {
		return nil, err
	}
	var forwardUndo freezeUndo
	if !ok || json.Unmarshal(forward.FreezeUndo, &forwardUndo) != nil {
		return nil, errors.New("the target records no finished cutover with the source's settings before its freeze: cannot roll back")
	}
	back := opts
	back.Source, back.Target, back.NoReverse = opts.Target, opts.Source, true
	c := &cutover{opts: back, source: newServer, target: oldServer, result: &Result{}, donePhase: state.PhaseCutoverDone, sides: rollbackSides}
	c.open = func(ctx context.Context) error {
		if err := state.SetPhase(ctx, newServer, state.PhaseRolledBack); err != nil {
			return err
		}
		err := pgx.BeginFunc(ctx, oldServer, func(tx pgx.Tx) error { return state.RecordTargetGuard(ctx, tx, false) })
		if err != nil {
			return err
		}
		return unfreeze(ctx, oldServer, forwardUndo)
	}
	return c.run(ctx)
}
