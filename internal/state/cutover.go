package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cutover is one recorded run of pgleap cutover.
type Cutover struct {
	ID         int64
	StartedAt  time.Time
	FinishedAt *time.Time
	Outcome    string          // "done", "undone", "" while it runs
	FreezeUndo json.RawMessage // what undoes the freeze of the source, nil before it
	Timeline   json.RawMessage
	WritePause time.Duration
	Reason     string
}

// Cutover outcomes.
const (
	CutoverDone   = "done"
	CutoverUndone = "undone"
)

// ErrCutoverRunning is returned when another pgleap cutover runs against the target.
var ErrCutoverRunning = errors.New("another pgleap cutover is running against this target")

// BeginCutover records the start of a cutover and sets the phase.
func BeginCutover(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var id int64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "INSERT INTO pgleap.cutover DEFAULT VALUES RETURNING id").Scan(&id); err != nil {
			var pgErr interface{ SQLState() string }
			if errors.As(err, &pgErr) && pgErr.SQLState() == "23505" {
				return ErrCutoverRunning
			}
			return fmt.Errorf("record the cutover in pgleap state: %w", err)
		}
		_, err := tx.Exec(ctx, "UPDATE pgleap.migration SET phase = $1, phase_since = now()", PhaseCutover)
		return err
	})
	return id, err
}

// UnfinishedCutover returns the cutover that started and never finished (its process died);
// ok is false when there is none.
func UnfinishedCutover(ctx context.Context, conn *pgx.Conn) (c Cutover, ok bool, err error) {
	err = conn.QueryRow(ctx, `SELECT id, started_at, freeze_undo, timeline FROM pgleap.cutover WHERE finished_at IS NULL`).
		Scan(&c.ID, &c.StartedAt, &c.FreezeUndo, &c.Timeline)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cutover{}, false, nil
	}
	if err != nil {
		return Cutover{}, false, fmt.Errorf("read the running cutover from pgleap state: %w", err)
	}
	return c, true, nil
}

// RecordFreezeUndo records, before the source is frozen, what undoes the freeze.
func RecordFreezeUndo(ctx context.Context, conn *pgx.Conn, id int64, undo any) error {
	if _, err := conn.Exec(ctx, "UPDATE pgleap.cutover SET freeze_undo = $2 WHERE id = $1", id, undo); err != nil {
		return fmt.Errorf("record how to undo the freeze in pgleap state: %w", err)
	}
	return nil
}

// RecordTimeline records the cutover's steps so far.
func RecordTimeline(ctx context.Context, conn *pgx.Conn, id int64, timeline any) error {
	if _, err := conn.Exec(ctx, "UPDATE pgleap.cutover SET timeline = $2 WHERE id = $1", id, timeline); err != nil {
		return fmt.Errorf("record the cutover's steps in pgleap state: %w", err)
	}
	return nil
}

// FinishCutover records how a cutover ended, and the phase that follows: phase when it was
// done, streaming again when it was undone.
func FinishCutover(ctx context.Context, conn *pgx.Conn, id int64, outcome, phase, reason string, writePause time.Duration, timeline any) error {
	if outcome == CutoverUndone {
		phase = PhaseStreaming
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE pgleap.cutover SET finished_at = now(), outcome = $2, reason = nullif($3, ''),
			write_pause_ms = $4, timeline = $5 WHERE id = $1`, id, outcome, reason, float64(writePause)/float64(time.Millisecond), timeline)
		if err != nil {
			return fmt.Errorf("record the end of the cutover in pgleap state: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE pgleap.migration SET phase = $1, phase_since = now()", phase); err != nil {
			return fmt.Errorf("record phase %s in pgleap state: %w", phase, err)
		}
		return nil
	})
}

// RecordReverse records the slot and publication on the target that the old server
// follows after the cutover; empty names clear them.
func RecordReverse(ctx context.Context, conn *pgx.Conn, slot, publication string) error {
	_, err := conn.Exec(ctx, "UPDATE pgleap.replication SET reverse_slot = nullif($1, ''), reverse_publication = nullif($2, '')", slot, publication)
	if err != nil {
		return fmt.Errorf("record the way back in pgleap state: %w", err)
	}
	return nil
}

// LoadReverse returns the recorded slot and publication of the way back; ok is false when
// there are none.
func LoadReverse(ctx context.Context, conn *pgx.Conn) (r Replication, ok bool, err error) {
	var slot, publication *string
	err = conn.QueryRow(ctx, "SELECT reverse_slot, reverse_publication FROM pgleap.replication").Scan(&slot, &publication)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && (slot == nil || publication == nil) {
		return Replication{}, false, nil
	}
	if err != nil {
		return Replication{}, false, fmt.Errorf("read the way back from pgleap state: %w", err)
	}
	return Replication{Slot: *slot, Publication: *publication}, true, nil
}

// LastDoneCutover returns the newest cutover that was done; ok is false when there is none.
func LastDoneCutover(ctx context.Context, conn *pgx.Conn) (c Cutover, ok bool, err error) {
	err = conn.QueryRow(ctx, `SELECT id, started_at, freeze_undo, timeline FROM pgleap.cutover WHERE outcome = $1 ORDER BY id DESC LIMIT 1`,
		CutoverDone).Scan(&c.ID, &c.StartedAt, &c.FreezeUndo, &c.Timeline)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cutover{}, false, nil
	}
	if err != nil {
		return Cutover{}, false, fmt.Errorf("read the last cutover from pgleap state: %w", err)
	}
	return c, true, nil
}

// LastFinishedCutover returns the newest cutover that finished, done or undone; ok is false
// when there is none (or the state predates version 4, which status reads without upgrading).
func LastFinishedCutover(ctx context.Context, conn *pgx.Conn) (c Cutover, ok bool, err error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('pgleap.cutover') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return Cutover{}, false, err
	}
	var pauseMS *float64
	var reason *string
	err = conn.QueryRow(ctx, `SELECT id, started_at, finished_at, outcome, write_pause_ms, reason FROM pgleap.cutover
		WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1`).Scan(&c.ID, &c.StartedAt, &c.FinishedAt, &c.Outcome, &pauseMS, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cutover{}, false, nil
	}
	if err != nil {
		return Cutover{}, false, fmt.Errorf("read the last cutover from pgleap state: %w", err)
	}
	if pauseMS != nil {
		c.WritePause = time.Duration(*pauseMS * float64(time.Millisecond))
	}
	if reason != nil {
		c.Reason = *reason
	}
	return c, true, nil
}
