package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// A hold stops the apply at a source position while pgleap verify takes its snapshot of
// the target (see schema_v4.sql).

// HoldState is what the target says about a requested hold.
type HoldState int

const (
	HoldNone    HoldState = iota // no hold is asked for
	HoldPending                  // asked for, the apply has not answered
	HoldHeld                     // the apply stands exactly at the position
	HoldMissed                   // the apply had passed the position already
)

// HoldNow, as the position of a hold, asks the apply to stop at the next boundary between
// source transactions, wherever that is.
const HoldNow pglogrepl.LSN = 0

// RequestHold asks the apply to stop at lsn (or HoldNow), replacing any earlier request,
// and returns how long the apply had stood still for the request it replaces.
func RequestHold(ctx context.Context, conn *pgx.Conn, lsn pglogrepl.LSN) (time.Duration, error) {
	var held *float64 // seconds
	err := conn.QueryRow(ctx, `UPDATE pgleap.replication SET hold_lsn = $1::text::pg_lsn, held_at = NULL, hold_missed = false
		FROM (SELECT held_at FROM pgleap.replication) old
		RETURNING extract(epoch FROM clock_timestamp() - old.held_at)::float8`, lsn.String()).Scan(&held)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errors.New("ask the apply to stop: the target records no replication: is this a following migration?")
	}
	if err != nil {
		return 0, fmt.Errorf("ask the apply to stop at %s: %w", lsn, err)
	}
	return seconds(held), nil
}

func seconds(s *float64) time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(*s * float64(time.Second))
}

// Hold reads the hold asked for: its position and how the apply answered.
func Hold(ctx context.Context, q *pgx.Conn) (pglogrepl.LSN, HoldState, error) {
	var lsn *string
	var held, missed bool
	err := q.QueryRow(ctx, "SELECT hold_lsn::text, held_at IS NOT NULL, hold_missed FROM pgleap.replication").Scan(&lsn, &held, &missed)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && lsn == nil {
		return 0, HoldNone, nil
	}
	if err != nil {
		return 0, HoldNone, fmt.Errorf("read the hold of the apply: %w", err)
	}
	pos, err := pglogrepl.ParseLSN(*lsn)
	if err != nil {
		return 0, HoldNone, fmt.Errorf("read the hold of the apply: %w", err)
	}
	switch {
	case held:
		return pos, HoldHeld, nil
	case missed:
		return pos, HoldMissed, nil
	}
	return pos, HoldPending, nil
}

// AnswerHold records the apply's answer to the hold at lsn: held (it stands exactly there)
// or missed. It does nothing when the request changed meanwhile.
func AnswerHold(ctx context.Context, conn *pgx.Conn, lsn pglogrepl.LSN, held bool) error {
	sql := "UPDATE pgleap.replication SET held_at = clock_timestamp() WHERE hold_lsn = $1::text::pg_lsn"
	if !held {
		sql = "UPDATE pgleap.replication SET hold_missed = true, held_at = NULL WHERE hold_lsn = $1::text::pg_lsn"
	}
	if _, err := conn.Exec(ctx, sql, lsn.String()); err != nil {
		return fmt.Errorf("answer the hold at %s: %w", lsn, err)
	}
	return nil
}

// ReleaseHold clears the hold, which lets the apply go on, and returns how long the apply
// stood still for it (zero when it never held).
func ReleaseHold(ctx context.Context, conn *pgx.Conn) (time.Duration, error) {
	var pause *float64 // seconds
	err := conn.QueryRow(ctx, `UPDATE pgleap.replication r SET hold_lsn = NULL, held_at = NULL, hold_missed = false
		FROM (SELECT held_at FROM pgleap.replication) old
		RETURNING extract(epoch FROM clock_timestamp() - old.held_at)::float8`).Scan(&pause)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("let the apply go on: %w", err)
	}
	return seconds(pause), nil
}

// ReleaseHoldAt clears the hold only if it is still the one at lsn: the apply gives up on a
// hold whose verify went away, without clearing a newer request.
func ReleaseHoldAt(ctx context.Context, conn *pgx.Conn, lsn pglogrepl.LSN) error {
	_, err := conn.Exec(ctx, `UPDATE pgleap.replication SET hold_lsn = NULL, held_at = NULL, hold_missed = false
		WHERE hold_lsn = $1::text::pg_lsn`, lsn.String())
	if err != nil {
		return fmt.Errorf("give up the hold at %s: %w", lsn, err)
	}
	return nil
}

// Verification is one recorded row verification.
type Verification struct {
	StartedAt, FinishedAt time.Time
	SourceLSN             pglogrepl.LSN // zero without a source snapshot
	Equal                 bool
	Tables                int
	DifferingTables       int
	RowsCompared          int64
	ApplyPause            time.Duration
	Report                json.RawMessage
}

// RecordVerification stores a verification's outcome.
func RecordVerification(ctx context.Context, conn *pgx.Conn, v Verification) error {
	var lsn *string
	if v.SourceLSN != 0 {
		s := v.SourceLSN.String()
		lsn = &s
	}
	_, err := conn.Exec(ctx, `INSERT INTO pgleap.verification (started_at, finished_at, source_lsn, equal, tables, differing_tables,
		rows_compared, apply_pause_ms, report) VALUES ($1, $2, $3::text::pg_lsn, $4, $5, $6, $7, $8, $9)`,
		v.StartedAt, v.FinishedAt, lsn, v.Equal, v.Tables, v.DifferingTables, v.RowsCompared,
		float64(v.ApplyPause)/float64(time.Millisecond), v.Report)
	if err != nil {
		return fmt.Errorf("record the verification in pgleap state: %w", err)
	}
	return nil
}

// LastVerification returns the newest recorded verification; ok is false when there is none.
func LastVerification(ctx context.Context, q *pgx.Conn) (v Verification, ok bool, err error) {
	var exists bool // not before state version 4, which status reads without upgrading
	if err := q.QueryRow(ctx, "SELECT to_regclass('pgleap.verification') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return Verification{}, false, err
	}
	var lsn *string
	var pauseMS *float64
	err = q.QueryRow(ctx, `SELECT started_at, finished_at, source_lsn::text, equal, tables, differing_tables, rows_compared,
		apply_pause_ms, report FROM pgleap.verification ORDER BY id DESC LIMIT 1`).
		Scan(&v.StartedAt, &v.FinishedAt, &lsn, &v.Equal, &v.Tables, &v.DifferingTables, &v.RowsCompared, &pauseMS, &v.Report)
	if errors.Is(err, pgx.ErrNoRows) {
		return Verification{}, false, nil
	}
	if err != nil {
		return Verification{}, false, fmt.Errorf("read the last verification from pgleap state: %w", err)
	}
	if lsn != nil {
		if v.SourceLSN, err = pglogrepl.ParseLSN(*lsn); err != nil {
			return Verification{}, false, err
		}
	}
	if pauseMS != nil {
		v.ApplyPause = time.Duration(*pauseMS * float64(time.Millisecond))
	}
	return v, true, nil
}
