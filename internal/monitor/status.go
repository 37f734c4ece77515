package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// Status is where a migration stands, read from the target's pgleap state and, when a
// source connection is given, from the source.
type Status struct {
	Phase          string    `json:"phase"`
	PhaseSince     time.Time `json:"phase_since"`
	SourceDatabase string    `json:"source_database"`
	Slot           string    `json:"slot,omitempty"`
	TargetGuard    bool      `json:"target_guard"`
	AppliedLSN     string    `json:"applied_lsn,omitempty"`
	// AppliedCommitTime is the source's time the target is in step with: the commit time of
	// the last transaction applied, or a later moment when nothing more was left to apply.
	AppliedCommitTime *time.Time `json:"applied_commit_time,omitempty"`
	SourceLSN         string     `json:"source_lsn,omitempty"`
	// LagBytes is the source WAL not applied yet, LagSeconds how long ago the target was in
	// step with the source (AppliedCommitTime) when there is any (zero when caught up).
	// Both need the source.
	LagBytes   *int64   `json:"lag_bytes"`
	LagSeconds *float64 `json:"lag_seconds"`
	// SlotRetainedBytes is the WAL the source keeps for the slot.
	SlotRetainedBytes *int64 `json:"slot_retained_bytes,omitempty"`
	// MaxSlotWALKeepBytes is the source's max_slot_wal_keep_size, nil when unlimited (or
	// before PG 13): past it the source removes WAL the slot needs. SlotWALStatus is
	// pg_replication_slots.wal_status (reserved, extended, unreserved, lost; PG 13+).
	MaxSlotWALKeepBytes   *int64        `json:"max_slot_wal_keep_bytes,omitempty"`
	SlotWALStatus         string        `json:"slot_wal_status,omitempty"`
	AppliedTransactions   int64         `json:"applied_transactions"`
	AppliedChanges        int64         `json:"applied_changes"`
	TransactionsPerSecond *float64      `json:"transactions_per_second"`
	ChangesPerSecond      *float64      `json:"changes_per_second"`
	Tables                []TableStatus `json:"tables"`
	// LastVerification is the newest pgleap verify of the rows, if any.
	LastVerification *VerificationStatus `json:"last_verification,omitempty"`
	// LastCutover is the newest pgleap cutover or rollback that finished, if any.
	LastCutover *CutoverStatus `json:"last_cutover,omitempty"`
	// SchemaChanges counts the schema changes captured on the source (pgleap migrate --ddl)
	// the apply ran on the target, or skipped; nil when there were none.
	SchemaChanges *state.DDLCounts `json:"schema_changes,omitempty"`
	// RecentErrors are the newest warnings and errors a running pgleap migrate logged.
	RecentErrors []state.Event `json:"recent_errors"`
	// Alerts hold now; only a running pgleap migrate (its status page) knows them.
	Alerts []Alert `json:"alerts,omitempty"`
	// ReadAt is when this status was read; ReadError why the newest read failed, when it did
	// (the status page keeps showing the last good one).
	ReadAt    time.Time `json:"read_at"`
	ReadError string    `json:"read_error,omitempty"`
}

// recentErrorsShown is how many of the newest events status shows.
const recentErrorsShown = 10

// CutoverStatus is how a cutover ended.
type CutoverStatus struct {
	FinishedAt   time.Time `json:"finished_at"`
	Outcome      string    `json:"outcome"` // done or undone
	WritePauseMS float64   `json:"write_pause_ms,omitempty"`
	Reason       string    `json:"reason,omitempty"`
}

// VerificationStatus is the outcome of a pgleap verify.
type VerificationStatus struct {
	FinishedAt      time.Time `json:"finished_at"`
	Equal           bool      `json:"equal"`
	Tables          int       `json:"tables"`
	DifferingTables int       `json:"differing_tables"`
	RowsCompared    int64     `json:"rows_compared"`
	SourceLSN       string    `json:"source_lsn,omitempty"`
}

// TableStatus is one table's copy.
type TableStatus struct {
	Name          string `json:"name"` // quoted and qualified: "public"."orders"
	Schema, Table string `json:"-"`
	// State is pending (no unit copied), partial or copied.
	State     string `json:"state"`
	Units     int    `json:"units"`
	UnitsDone int    `json:"units_done"`
	// RowsCopied and BytesCopied count the finished units (a running pgleap migrate adds
	// the bytes of those under way); EstimatedBytes is the planner's size of the table.
	RowsCopied     int64  `json:"rows_copied"`
	BytesCopied    int64  `json:"bytes_copied"`
	EstimatedBytes int64  `json:"estimated_bytes"`
	SyncLSN        string `json:"sync_lsn,omitempty"`
}

// ErrNoMigration is returned for a target that holds no pgleap state.
var ErrNoMigration = errors.New("the target holds no pgleap migration: start one with pgleap migrate")

// ReadStatus reads the migration's status. source may be nil: then the lag is unknown.
// When the migration streams and sample is positive, the apply rates are measured over
// sample.
func ReadStatus(ctx context.Context, target, source *pgx.Conn, sample time.Duration) (*Status, error) {
	exists, err := state.Exists(ctx, target)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, ErrNoMigration
	}
	st := &Status{Tables: []TableStatus{}, RecentErrors: []state.Event{}, ReadAt: time.Now()}
	m, _, err := state.LoadMigration(ctx, target)
	if err != nil {
		return nil, err
	}
	st.SourceDatabase = m.SourceDatabase
	if st.Phase, st.PhaseSince, err = state.Phase(ctx, target); err != nil {
		return nil, err
	}
	if err := readTables(ctx, target, st); err != nil {
		return nil, err
	}
	if v, ok, err := state.LastVerification(ctx, target); err != nil {
		return nil, err
	} else if ok {
		st.LastVerification = &VerificationStatus{FinishedAt: v.FinishedAt, Equal: v.Equal, Tables: v.Tables,
			DifferingTables: v.DifferingTables, RowsCompared: v.RowsCompared}
		if v.SourceLSN != 0 {
			st.LastVerification.SourceLSN = v.SourceLSN.String()
		}
	}
	if c, ok, err := state.LastFinishedCutover(ctx, target); err != nil {
		return nil, err
	} else if ok {
		st.LastCutover = &CutoverStatus{FinishedAt: *c.FinishedAt, Outcome: c.Outcome,
			WritePauseMS: float64(c.WritePause) / float64(time.Millisecond), Reason: c.Reason}
	}
	if counts, err := state.CountDDL(ctx, target); err != nil {
		return nil, err
	} else if counts.Run+counts.Skipped > 0 {
		st.SchemaChanges = &counts
	}
	if recent, err := state.RecentEvents(ctx, target, recentErrorsShown); err != nil {
		return nil, err
	} else if recent != nil {
		st.RecentErrors = recent
	}
	repl, streams, err := state.LoadReplication(ctx, target)
	if err != nil || !streams || repl.StartLSN == 0 {
		return st, err
	}
	st.Slot = repl.Slot
	progress, err := state.LoadProgress(ctx, target)
	if err != nil {
		return nil, err
	}
	st.TargetGuard = progress.TargetGuard
	st.AppliedLSN = progress.AppliedLSN.String()
	st.AppliedTransactions, st.AppliedChanges = progress.Transactions, progress.Changes
	if !progress.CommitTime.IsZero() {
		st.AppliedCommitTime = &progress.CommitTime
	}
	if source != nil {
		if err := readLag(ctx, source, repl.Slot, progress, st); err != nil {
			return nil, err
		}
	}
	if sample > 0 && st.Phase == state.PhaseStreaming {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(sample):
		}
		later, err := state.LoadProgress(ctx, target)
		if err != nil {
			return nil, err
		}
		tps := float64(later.Transactions-progress.Transactions) / sample.Seconds()
		cps := float64(later.Changes-progress.Changes) / sample.Seconds()
		st.TransactionsPerSecond, st.ChangesPerSecond = &tps, &cps
	}
	return st, nil
}

func readTables(ctx context.Context, target *pgx.Conn, st *Status) error {
	items, err := state.CopyPlan(ctx, target)
	if err != nil {
		return err
	}
	byName := map[string]*TableStatus{}
	syncLSN := map[string]pglogrepl.LSN{}
	for _, i := range items {
		name := pg.QualifiedName(i.Schema, i.Table)
		t := byName[name]
		if t == nil {
			st.Tables = append(st.Tables, TableStatus{Name: name, Schema: i.Schema, Table: i.Table})
			t = &st.Tables[len(st.Tables)-1]
			byName[name] = t
		}
		t.Units++
		t.EstimatedBytes += i.EstimatedBytes
		if i.Finished() {
			t.UnitsDone++
			t.RowsCopied += i.RowsCopied
			t.BytesCopied += i.BytesCopied
			if i.SyncLSN > syncLSN[name] { // as LSNs: as text, 0/9000000 sorts after 0/10000000
				syncLSN[name] = i.SyncLSN
				t.SyncLSN = i.SyncLSN.String()
			}
		}
	}
	// byName points into st.Tables: fill the states once the slice stops growing.
	for i := range st.Tables {
		t := &st.Tables[i]
		switch {
		case t.UnitsDone == t.Units:
			t.State = "copied"
		case t.UnitsDone > 0:
			t.State = "partial"
		default:
			t.State = "pending"
		}
	}
	return nil
}

func readLag(ctx context.Context, source *pgx.Conn, slot string, progress state.Progress, st *Status) error {
	var current pglogrepl.LSN
	var retained *int64
	var walStatus *string
	// wal_status and max_slot_wal_keep_size came in PG 13: read through to_jsonb and
	// pg_settings, so that a PG 12 source answers NULL instead of failing.
	err := source.QueryRow(ctx, `SELECT pg_catalog.pg_current_wal_lsn(),
		(SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_catalog.pg_replication_slots WHERE slot_name = $1),
		(SELECT to_jsonb(s)->>'wal_status' FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1),
		(SELECT setting::bigint * 1024 * 1024 FROM pg_catalog.pg_settings WHERE name = 'max_slot_wal_keep_size' AND setting::bigint >= 0)`,
		slot).Scan(&current, &retained, &walStatus, &st.MaxSlotWALKeepBytes)
	if err != nil {
		return fmt.Errorf("read the source's WAL position: %w", err)
	}
	st.SourceLSN, st.SlotRetainedBytes, st.SlotWALStatus = current.String(), retained, ptrValue(walStatus)
	lag := max(int64(current)-int64(progress.AppliedLSN), 0)
	seconds := 0.0
	if lag > 0 && !progress.CommitTime.IsZero() {
		seconds = time.Since(progress.CommitTime).Seconds()
	}
	st.LagBytes, st.LagSeconds = &lag, &seconds
	return nil
}

// eventDetail is an event's error, if it has one, as the log line showed it.
func eventDetail(e state.Event) string {
	if err, ok := e.Attrs["err"].(string); ok {
		return ": " + err
	}
	return ""
}

// WriteStatus prints a status for people.
func WriteStatus(w io.Writer, st *Status) error {
	var b strings.Builder
	fmt.Fprintf(&b, "migration of database %s: %s since %s\n", st.SourceDatabase, st.Phase, st.PhaseSince.Format(time.RFC3339))
	if st.Slot != "" {
		fmt.Fprintf(&b, "  slot %s, applied up to %s", st.Slot, st.AppliedLSN)
		if st.AppliedCommitTime != nil {
			fmt.Fprintf(&b, " (in step with the source as of %s)", st.AppliedCommitTime.Format(time.RFC3339))
		}
		b.WriteString("\n")
		if st.LagBytes != nil {
			fmt.Fprintf(&b, "  lag: %s, %.1f s behind the source at %s", HumanBytes(*st.LagBytes), *st.LagSeconds, st.SourceLSN)
			if st.SlotRetainedBytes != nil {
				fmt.Fprintf(&b, "; the source keeps %s of WAL for the slot", HumanBytes(*st.SlotRetainedBytes))
				if st.MaxSlotWALKeepBytes != nil {
					fmt.Fprintf(&b, " (%.0f%% of max_slot_wal_keep_size)", 100*float64(*st.SlotRetainedBytes)/float64(max(*st.MaxSlotWALKeepBytes, 1)))
				}
				if st.SlotWALStatus == "unreserved" || st.SlotWALStatus == "lost" {
					fmt.Fprintf(&b, ", slot WAL %s", st.SlotWALStatus)
				}
			}
			b.WriteString("\n")
		} else {
			b.WriteString("  lag: unknown (pass --source to measure it)\n")
		}
		fmt.Fprintf(&b, "  applied: %d transactions, %d changes", st.AppliedTransactions, st.AppliedChanges)
		if st.TransactionsPerSecond != nil {
			fmt.Fprintf(&b, "; now %.0f transactions/s, %.0f changes/s", *st.TransactionsPerSecond, *st.ChangesPerSecond)
		}
		b.WriteString("\n")
		if st.TargetGuard {
			b.WriteString("  target guard: on (the target database is read-only for every session but pgleap's)\n")
		} else {
			b.WriteString("  target guard: off (other sessions may write to the target)\n")
		}
	}
	if d := st.SchemaChanges; d != nil {
		fmt.Fprintf(&b, "  schema changes from the source: %d run on the target, %d skipped; the last at %s\n", d.Run, d.Skipped, d.LastAt.Format(time.RFC3339))
	}
	if v := st.LastVerification; v != nil {
		verdict := "source and target held the same data"
		if !v.Equal {
			verdict = fmt.Sprintf("the data differed in %d of %d tables", v.DifferingTables, v.Tables)
		}
		fmt.Fprintf(&b, "  last verification: %s, %s (%d rows compared)\n", v.FinishedAt.Format(time.RFC3339), verdict, v.RowsCompared)
	}
	if c := st.LastCutover; c != nil {
		if c.Outcome == state.CutoverDone {
			fmt.Fprintf(&b, "  last cutover: %s, done, writes paused %.0f ms\n", c.FinishedAt.Format(time.RFC3339), c.WritePauseMS)
		} else {
			fmt.Fprintf(&b, "  last cutover: %s, undone: %s\n", c.FinishedAt.Format(time.RFC3339), c.Reason)
		}
	}
	counts := map[string]int{}
	for _, t := range st.Tables {
		counts[t.State]++
	}
	fmt.Fprintf(&b, "  tables: %d copied, %d partly copied, %d pending\n", counts["copied"], counts["partial"], counts["pending"])
	for _, t := range st.Tables {
		if t.State != "copied" {
			fmt.Fprintf(&b, "    %s: %s, %d of %d units, %s of about %s, %d rows\n", t.Name, t.State, t.UnitsDone, t.Units,
				HumanBytes(t.BytesCopied), HumanBytes(t.EstimatedBytes), t.RowsCopied)
		}
	}
	for _, a := range st.Alerts {
		fmt.Fprintf(&b, "  ALERT %s since %s: %s\n", a.Name, a.Since.Format(time.RFC3339), a.Message)
	}
	if len(st.RecentErrors) > 0 {
		b.WriteString("  recent problems (newest first):\n")
		for _, e := range st.RecentErrors {
			fmt.Fprintf(&b, "    %s %s: %s%s\n", e.At.Format(time.RFC3339), e.Level, e.Message, eventDetail(e))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
