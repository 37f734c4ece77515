package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// PhaseStarting is the phase shown before the target holds any pgleap state.
const PhaseStarting = "starting"

// TrackerOptions configure a Tracker.
type TrackerOptions struct {
	Source, Target string
	// Interval is how often the state is read; History how long the samples are kept.
	Interval, History time.Duration
	Alerts            AlertThresholds
	Logger            *slog.Logger
	// Events, when set, are stored in the target's state at every read.
	Events *EventLog
}

// Tracker follows a running migration for its status page and metrics: it reads the status
// from the state every interval (over connections of its own, so that it sees what pgleap
// status sees), keeps an hour of samples, raises alerts, stores logged problems in the
// state, and hears the copy's bytes as they pass. It is safe for concurrent use.
type Tracker struct {
	opts TrackerOptions

	mu             sync.Mutex
	source, target string // connection strings; swapped when the migration streams back
	status         *Status
	history        []Sample
	alerts         map[string]Alert     // holding now, by name
	alertLogged    map[string]time.Time // when each was last logged
	live           map[itemKey]*liveItem
	copiedBytes    int64
	errorsLogged   func() int64
	sourceConn     *pgx.Conn // only the Run goroutine uses the connections
	targetConn     *pgx.Conn
	exportedCounts map[string]float64 // see monotonic
	reconnect      bool               // the sides changed: the connections are to the old ones
}

// liveItem is a copy unit this process copies, or copied after the state was last read.
type liveItem struct {
	table      string
	bytes      int64
	finishedAt time.Time
}

// NewTracker returns a tracker; Run makes it read.
func NewTracker(opts TrackerOptions) *Tracker {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.History <= 0 {
		opts.History = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tracker{opts: opts, source: opts.Source, target: opts.Target,
		// ReadAt stays zero until a read succeeds: Healthy tells from it.
		status: &Status{Phase: PhaseStarting, Tables: []TableStatus{}, RecentErrors: []state.Event{}},
		alerts: map[string]Alert{}, alertLogged: map[string]time.Time{},
		live:         map[itemKey]*liveItem{},
		errorsLogged: func() int64 { return 0 }, exportedCounts: map[string]float64{}}
	if opts.Events != nil {
		t.errorsLogged = opts.Events.Errors
	}
	return t
}

// StreamBack makes the tracker follow the way back after a cutover: the old server's state,
// fed from the new server.
func (t *Tracker) StreamBack() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.source, t.target = t.opts.Target, t.opts.Source
	t.history = nil
	// The way back counts from zero: Prometheus takes a counter that drops for a restart.
	t.exportedCounts = map[string]float64{}
	t.reconnect = true
}

// Run reads the state every interval until ctx ends, then stores the events still pending.
func (t *Tracker) Run(ctx context.Context) {
	ticker := time.NewTicker(t.opts.Interval)
	defer ticker.Stop()
	defer func() {
		// What was logged while stopping (the reason migrate ended) is worth keeping.
		flush, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		t.storeEvents(flush)
		t.closeConns()
	}()
	for {
		t.read(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Status returns the newest status with the alerts and the bytes of the units under way.
func (t *Tracker) Status() *Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := *t.status
	st.Tables = slices.Clone(st.Tables)
	for _, item := range t.live {
		for i := range st.Tables {
			if st.Tables[i].Name == item.table {
				st.Tables[i].BytesCopied += item.bytes
			}
		}
	}
	st.Alerts = []Alert{}
	for _, name := range slices.Sorted(maps.Keys(t.alerts)) {
		st.Alerts = append(st.Alerts, t.alerts[name])
	}
	return &st
}

// History returns the samples taken after since, oldest first.
func (t *Tracker) History(since time.Time) []Sample {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, _ := slices.BinarySearchFunc(t.history, since, func(s Sample, at time.Time) int {
		if s.At.After(at) {
			return 1
		}
		return -1
	})
	return slices.Clone(t.history[i:])
}

// Healthy tells whether the state was read lately, and why not.
func (t *Tracker) Healthy() (bool, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	lastRead := t.status.ReadAt // a failed read keeps the last good status, and its time
	if time.Since(lastRead) <= max(5*t.opts.Interval, 30*time.Second) {
		return true, ""
	}
	if lastRead.IsZero() {
		return false, "the migration's state was not read yet: " + t.status.ReadError
	}
	return false, fmt.Sprintf("the migration's state was last read at %s: %s", lastRead.Format(time.RFC3339), t.status.ReadError)
}

// read reads the status once and derives the sample and the alerts from it.
func (t *Tracker) read(ctx context.Context) {
	started := time.Now()
	st, err := t.readStatus(ctx)
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		t.storeEvents(ctx)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.status.ReadError = err.Error()
		return
	}
	for key, item := range t.live {
		if !item.finishedAt.IsZero() && item.finishedAt.Before(started) {
			delete(t.live, key) // the state read counts it
		}
	}
	previous := t.status
	sample := Sample{At: st.ReadAt.Truncate(time.Millisecond), LagBytes: st.LagBytes, LagSeconds: st.LagSeconds, CopiedBytes: t.copiedBytes}
	if previous.Phase == st.Phase && st.AppliedLSN != "" && previous.AppliedLSN != "" && st.AppliedTransactions >= previous.AppliedTransactions {
		elapsed := st.ReadAt.Sub(previous.ReadAt).Seconds()
		tps := float64(st.AppliedTransactions-previous.AppliedTransactions) / elapsed
		cps := float64(st.AppliedChanges-previous.AppliedChanges) / elapsed
		st.TransactionsPerSecond, st.ChangesPerSecond = &tps, &cps
		sample.TransactionsPerSecond, sample.ChangesPerSecond = &tps, &cps
	}
	t.history = append(t.history, sample)
	if cut := slices.IndexFunc(t.history, func(s Sample) bool { return s.At.After(st.ReadAt.Add(-t.opts.History)) }); cut > 0 {
		t.history = slices.Delete(t.history, 0, cut)
	}
	t.status = st
	t.raiseAlerts(st)
}

// readStatus reads the status over the tracker's connections, opening those that are not.
// A source that cannot be reached leaves the lag unknown; a target, the status.
func (t *Tracker) readStatus(ctx context.Context) (*Status, error) {
	t.mu.Lock()
	sourceConnString, targetConnString, reconnect := t.source, t.target, t.reconnect
	t.reconnect = false
	t.mu.Unlock()
	if reconnect {
		t.closeConns()
	}
	var sourceErr error
	if t.targetConn == nil {
		conn, err := pg.Connect(ctx, pg.Target, targetConnString)
		if err != nil {
			return nil, err
		}
		t.targetConn = conn
	}
	if t.sourceConn == nil {
		t.sourceConn, sourceErr = pg.Connect(ctx, pg.Source, sourceConnString)
	}
	st, err := ReadStatus(ctx, t.targetConn, t.sourceConn, 0)
	if err != nil && t.sourceConn != nil && !t.targetConn.IsClosed() {
		// The source's part failed: show the rest.
		sourceErr = err
		t.sourceConn.Close(context.Background())
		t.sourceConn = nil
		st, err = ReadStatus(ctx, t.targetConn, nil, 0)
	}
	if errors.Is(err, ErrNoMigration) {
		st, err = &Status{Phase: PhaseStarting, Tables: []TableStatus{}, RecentErrors: []state.Event{}, ReadAt: time.Now()}, nil
	}
	if err != nil {
		if t.targetConn.IsClosed() {
			t.targetConn = nil
		}
		return nil, err
	}
	if sourceErr != nil {
		st.ReadError = "the lag is unknown: " + sourceErr.Error()
	}
	return st, nil
}

func (t *Tracker) storeEvents(ctx context.Context) {
	if t.opts.Events == nil || t.targetConn == nil {
		return
	}
	events := t.opts.Events.Take()
	if len(events) == 0 {
		return
	}
	exists, err := state.Exists(ctx, t.targetConn)
	if err == nil && exists {
		err = state.RecordEvents(ctx, t.targetConn, events)
	}
	if err != nil || !exists {
		t.opts.Events.Return(events)
	}
}

func (t *Tracker) closeConns() {
	for _, conn := range []*pgx.Conn{t.sourceConn, t.targetConn} {
		if conn != nil {
			conn.Close(context.Background())
		}
	}
	t.sourceConn, t.targetConn = nil, nil
}

// alertRepeat is how often an alert that still holds is logged again.
const alertRepeat = 15 * time.Minute

// raiseAlerts logs the alerts that begin (and every alertRepeat while they hold) as
// warnings, and those that end.
func (t *Tracker) raiseAlerts(st *Status) {
	now := st.ReadAt
	holding := map[string]bool{}
	for _, a := range alertsAt(now, st, t.history, t.opts.Alerts) {
		holding[a.Name] = true
		a.Since = now
		if earlier, ok := t.alerts[a.Name]; ok {
			a.Since = earlier.Since
		}
		t.alerts[a.Name] = a
		if now.Sub(t.alertLogged[a.Name]) >= alertRepeat {
			t.alertLogged[a.Name] = now
			t.opts.Logger.Warn(a.Message, "alert", a.Name, "since", a.Since.Format(time.RFC3339))
		}
	}
	for name, a := range t.alerts {
		if !holding[name] {
			t.opts.Logger.Info("alert over", "alert", name, "lasted", now.Sub(a.Since).Round(time.Second))
			delete(t.alerts, name)
			delete(t.alertLogged, name)
		}
	}
}

// The copy's progress (copy.Progress): the bytes of the units under way, which the state
// only counts once a unit is finished.

// Planned is told the plan; the state has it.
func (t *Tracker) Planned([]state.CopyItem) {}

// SourceWAL is told the WAL the copy's slot keeps; the state read measures it.
func (t *Tracker) SourceWAL(int64) {}

// Started is told a unit begins.
func (t *Tracker) Started(i state.CopyItem) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.live[itemKey{i.Schema, i.Table, i.Chunk}] = &liveItem{table: pg.QualifiedName(i.Schema, i.Table)}
}

// Copied is told bytes passed for a unit.
func (t *Tracker) Copied(i state.CopyItem, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.copiedBytes += int64(n)
	if item := t.live[itemKey{i.Schema, i.Table, i.Chunk}]; item != nil {
		item.bytes += int64(n)
	}
}

// Finished is told a unit committed: the next state read counts it.
func (t *Tracker) Finished(i state.CopyItem, _ int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if item := t.live[itemKey{i.Schema, i.Table, i.Chunk}]; item != nil {
		item.finishedAt = time.Now()
	}
}
