package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Replication is the slot and publication a following migration streams from.
type Replication struct {
	Slot, Publication string
	// StartLSN is the slot's consistent point, zero until the slot exists.
	StartLSN pglogrepl.LSN
}

// PlanReplication records the names of the slot and publication to create, unless names are
// recorded already, and returns the ones in force: a rerun reuses what the first run made.
func PlanReplication(ctx context.Context, conn *pgx.Conn, slot, publication string) (Replication, error) {
	var r Replication
	var start string
	err := conn.QueryRow(ctx, `
		INSERT INTO pgleap.replication (slot_name, publication_name) VALUES ($1, $2)
		ON CONFLICT (singleton) DO UPDATE SET singleton = true
		RETURNING slot_name, publication_name, coalesce(start_lsn::text, '0/0')`, slot, publication).Scan(&r.Slot, &r.Publication, &start)
	if err != nil {
		return Replication{}, fmt.Errorf("record the replication slot in pgleap state: %w", err)
	}
	if r.StartLSN, err = pglogrepl.ParseLSN(start); err != nil {
		return Replication{}, fmt.Errorf("read the replication slot's start from pgleap state: %w", err)
	}
	return r, nil
}

// LoadReplication returns the recorded slot and publication; ok is false when there are none
// (a cold copy, or nothing planned yet).
func LoadReplication(ctx context.Context, conn *pgx.Conn) (r Replication, ok bool, err error) {
	var start string
	err = conn.QueryRow(ctx, "SELECT slot_name, publication_name, coalesce(start_lsn::text, '0/0') FROM pgleap.replication").
		Scan(&r.Slot, &r.Publication, &start)
	if errors.Is(err, pgx.ErrNoRows) {
		return Replication{}, false, nil
	}
	if err != nil {
		return Replication{}, false, fmt.Errorf("read the replication slot from pgleap state: %w", err)
	}
	if r.StartLSN, err = pglogrepl.ParseLSN(start); err != nil {
		return Replication{}, false, fmt.Errorf("read the replication slot's start from pgleap state: %w", err)
	}
	return r, true, nil
}

// RecordStreamStart records the slot's consistent point once it exists.
func RecordStreamStart(ctx context.Context, conn *pgx.Conn, start pglogrepl.LSN) error {
	tag, err := conn.Exec(ctx, "UPDATE pgleap.replication SET start_lsn = $1::text::pg_lsn WHERE start_lsn IS NULL", start.String())
	if err != nil {
		return fmt.Errorf("record the start of streaming in pgleap state: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return errors.New("record the start of streaming in pgleap state: a start is recorded already or no slot is planned")
	}
	return nil
}

// Progress is how far the target has applied the source's changes.
type Progress struct {
	// AppliedLSN is the end of the last source transaction applied, or the start of
	// streaming when none is: streaming resumes there.
	AppliedLSN pglogrepl.LSN
	// CommitTime is the source's time the target is in step with: the commit time of that
	// transaction, or a later moment (a mark the idle stream took of the source) when the
	// WAL up to AppliedLSN held nothing more to apply; zero when none is applied.
	CommitTime time.Time
	AppliedAt  time.Time
	// Transactions and Changes count what was applied since streaming began.
	Transactions, Changes int64
	TargetGuard           bool
}

// LoadProgress returns where the apply stands.
func LoadProgress(ctx context.Context, conn *pgx.Conn) (Progress, error) {
	var p Progress
	var lsn string
	var commit, at *time.Time
	err := conn.QueryRow(ctx, `SELECT coalesce(applied_lsn, start_lsn, '0/0')::text, applied_commit_time, applied_at,
		applied_transactions, applied_changes, target_guard FROM pgleap.replication`).
		Scan(&lsn, &commit, &at, &p.Transactions, &p.Changes, &p.TargetGuard)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, errors.New("read the applied position: the target has no replication slot recorded: run pgleap migrate first")
	}
	if err != nil {
		return p, fmt.Errorf("read the applied position from pgleap state: %w", err)
	}
	if commit != nil {
		p.CommitTime = *commit
	}
	if at != nil {
		p.AppliedAt = *at
	}
	p.AppliedLSN, err = pglogrepl.ParseLSN(lsn)
	return p, err
}

// RecordApplied moves the applied position to end, inside the target transaction that
// applied the source transactions up to it. It refuses to move backwards: two apply
// processes on one target would otherwise interleave unnoticed.
// transactions and changes are what the transaction applies; commitTime is the source's
// time the target is now in step with, recorded only when later than the one recorded (a
// zero one, a move over WAL with nothing to apply, keeps it).
func RecordApplied(ctx context.Context, tx pgx.Tx, end pglogrepl.LSN, commitTime time.Time, transactions, changes int64) error {
	var commit *time.Time
	if !commitTime.IsZero() {
		commit = &commitTime
	}
	tag, err := tx.Exec(ctx, `UPDATE pgleap.replication SET applied_lsn = $1::text::pg_lsn,
		applied_commit_time = greatest(applied_commit_time, $2), applied_at = now(),
		applied_transactions = applied_transactions + $3, applied_changes = applied_changes + $4
		WHERE coalesce(applied_lsn, start_lsn) <= $1::text::pg_lsn`, end.String(), commit, transactions, changes)
	if err != nil {
		return fmt.Errorf("record applied position %s: %w", end, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("record applied position %s: %w", end, ErrAppliedAhead)
	}
	return nil
}

// ErrAppliedAhead is returned when the target records a later applied position than the
// one being recorded: another pgleap applies to this target.
var ErrAppliedAhead = errors.New("the target has applied further already: is another pgleap migrate running against it?")

// RecordTargetGuard records whether the target database is guarded.
func RecordTargetGuard(ctx context.Context, tx pgx.Tx, on bool) error {
	if _, err := tx.Exec(ctx, "UPDATE pgleap.replication SET target_guard = $1", on); err != nil {
		return fmt.Errorf("record the target guard in pgleap state: %w", err)
	}
	return nil
}

// RecordDDL records a captured schema change as run on the target, or skipped (skipped
// says why), in the target transaction that runs it.
func RecordDDL(ctx context.Context, tx pgx.Tx, id int64, tag, statement, skipped string) error {
	_, err := tx.Exec(ctx, "INSERT INTO pgleap.ddl (id, tag, statement, skipped) VALUES ($1, $2, $3, nullif($4, ''))", id, tag, statement, skipped)
	if err != nil {
		return fmt.Errorf("record schema change %d in pgleap state: %w", id, err)
	}
	return nil
}

// DDLDone reports whether a captured schema change was run on the target, or skipped.
func DDLDone(ctx context.Context, tx pgx.Tx, id int64) (bool, error) {
	var done bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pgleap.ddl WHERE id = $1)", id).Scan(&done); err != nil {
		return false, fmt.Errorf("read schema change %d from pgleap state: %w", id, err)
	}
	return done, nil
}

// DDLCounts say how many captured schema changes the apply ran on the target or skipped.
type DDLCounts struct {
	Run     int64     `json:"run"`
	Skipped int64     `json:"skipped"`
	LastAt  time.Time `json:"last_at"`
}

// CountDDL counts the captured schema changes the apply ran or skipped.
func CountDDL(ctx context.Context, conn *pgx.Conn) (DDLCounts, error) {
	var c DDLCounts
	err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE skipped IS NULL), count(*) FILTER (WHERE skipped IS NOT NULL),
		coalesce(max(applied_at), 'epoch') FROM pgleap.ddl`).Scan(&c.Run, &c.Skipped, &c.LastAt)
	if err != nil {
		return c, fmt.Errorf("count the schema changes in pgleap state: %w", err)
	}
	return c, nil
}
