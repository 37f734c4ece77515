package state

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

//go:embed schema_v*.sql
var schemaFiles embed.FS

// Version is the state schema version this binary writes.
const Version = 6

// ErrNewerState is returned for a target whose state schema a newer pgleap wrote.
var ErrNewerState = errors.New("the target's pgleap state is newer than this pgleap")

// advisoryLockKey serializes state schema changes between pgleap processes ("pgleap" in ASCII).
const advisoryLockKey = 0x70676c656170

// Session advisory locks (pg.Lock) that pgleap processes hold for as long as they run, so
// that a second one refuses instead of working against the first.
const (
	// CutoverLock: pgleap cutover, on the target; pgleap rollback, on the old server.
	CutoverLock int64 = advisoryLockKey + 1
	// MigrateLock: pgleap migrate, on the target (the old server when streaming back).
	MigrateLock int64 = advisoryLockKey + 2
)

// Init creates or upgrades the state schema on the target connection conn.
func Init(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", advisoryLockKey); err != nil {
			return fmt.Errorf("lock pgleap state: %w", err)
		}
		current, err := installedVersion(ctx, tx)
		if err != nil {
			return err
		}
		if current > Version {
			return fmt.Errorf("%w: it is version %d, this pgleap writes version %d: run a pgleap at least as new as the one that started this migration",
				ErrNewerState, current, Version)
		}
		for v := current + 1; v <= Version; v++ {
			sql, err := schemaFiles.ReadFile("schema_v" + strconv.Itoa(v) + ".sql")
			if err != nil {
				return fmt.Errorf("read state schema version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return fmt.Errorf("create pgleap state schema version %d: %w", v, err)
			}
		}
		if current < Version {
			_, err = tx.Exec(ctx, `INSERT INTO pgleap.state_version (version) VALUES ($1)
				ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, updated_at = now()`, Version)
			if err != nil {
				return fmt.Errorf("record pgleap state version: %w", err)
			}
		}
		return nil
	})
}

func installedVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('pgleap.state_version') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("look for pgleap state: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := tx.QueryRow(ctx, "SELECT version FROM pgleap.state_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read pgleap state version: %w", err)
	}
	return v, nil
}

// Migration is what a target records about the migration it receives.
type Migration struct {
	SourceDatabase string
	SourceMajor    int
	Include        []string
	Exclude        []string
}

// ErrOtherMigration is returned when the target already receives a different migration.
var ErrOtherMigration = errors.New("the target already receives another migration")

// Begin records m as the target's migration, or checks that the recorded one is m: a rerun
// must resume the same migration, not mix two.
func Begin(ctx context.Context, conn *pgx.Conn, m Migration) error {
	var got Migration
	err := conn.QueryRow(ctx, `
		INSERT INTO pgleap.migration (source_database, source_major, include_patterns, exclude_patterns)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (singleton) DO UPDATE SET singleton = true
		RETURNING source_database, source_major, include_patterns, exclude_patterns`,
		m.SourceDatabase, m.SourceMajor, nonNil(m.Include), nonNil(m.Exclude)).Scan(
		&got.SourceDatabase, &got.SourceMajor, &got.Include, &got.Exclude)
	if err != nil {
		return fmt.Errorf("record the migration in pgleap state: %w", err)
	}
	if got.SourceDatabase != m.SourceDatabase || strings.Join(got.Include, "\x00") != strings.Join(nonNil(m.Include), "\x00") ||
		strings.Join(got.Exclude, "\x00") != strings.Join(nonNil(m.Exclude), "\x00") {
		return fmt.Errorf("%w: it copies database %q with --include %q --exclude %q; rerun with the same selection, or start over with pgleap cleanup",
			ErrOtherMigration, got.SourceDatabase, got.Include, got.Exclude)
	}
	return nil
}

// LoadMigration returns the recorded migration; ok is false when there is none.
func LoadMigration(ctx context.Context, conn *pgx.Conn) (m Migration, ok bool, err error) {
	err = conn.QueryRow(ctx, `SELECT source_database, source_major, include_patterns, exclude_patterns FROM pgleap.migration`).
		Scan(&m.SourceDatabase, &m.SourceMajor, &m.Include, &m.Exclude)
	if errors.Is(err, pgx.ErrNoRows) {
		return Migration{}, false, nil
	}
	if err != nil {
		return Migration{}, false, fmt.Errorf("read the migration from pgleap state: %w", err)
	}
	return m, true, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Exists reports whether conn's database holds pgleap state at all.
func Exists(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var exists bool
	err := conn.QueryRow(ctx, "SELECT to_regclass('pgleap.migration') IS NOT NULL").Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("look for pgleap state: %w", err)
	}
	return exists, nil
}

// Drop removes pgleap's state from the target: the migration is forgotten, its copied
// objects and rows stay.
func Drop(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", advisoryLockKey); err != nil {
			return fmt.Errorf("lock pgleap state: %w", err)
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS pgleap CASCADE"); err != nil {
			return fmt.Errorf("drop pgleap state: %w", err)
		}
		return nil
	})
}

// Phases of a migration, as pgleap status shows them.
const (
	PhaseSchema    = "schema"
	PhaseCopying   = "copying"
	PhaseIndexing  = "indexing"
	PhaseCopied    = "copied"
	PhaseStreaming = "streaming"
	// PhaseCutover: pgleap cutover runs; PhaseCutoverDone: the target took over;
	// PhaseReverseStreaming: it took over and the old server follows it; PhaseRolledBack:
	// pgleap rollback gave the writes back to the old server.
	PhaseCutover          = "cutover"
	PhaseCutoverDone      = "cutover-done"
	PhaseReverseStreaming = "reverse-streaming"
	PhaseRolledBack       = "rolled-back"
)

// Phases lists every phase, in the order a migration meets them.
var Phases = []string{PhaseSchema, PhaseCopying, PhaseIndexing, PhaseCopied, PhaseStreaming,
	PhaseCutover, PhaseCutoverDone, PhaseReverseStreaming, PhaseRolledBack}

// CutOver reports whether phase is one where the target has taken the writes.
func CutOver(phase string) bool {
	return phase == PhaseCutoverDone || phase == PhaseReverseStreaming || phase == PhaseRolledBack
}

// SetPhase records where the migration stands.
func SetPhase(ctx context.Context, conn *pgx.Conn, phase string) error {
	if _, err := conn.Exec(ctx, "UPDATE pgleap.migration SET phase = $1, phase_since = now() WHERE phase <> $1", phase); err != nil {
		return fmt.Errorf("record phase %s in pgleap state: %w", phase, err)
	}
	return nil
}

// Phase returns the recorded phase and since when it holds.
func Phase(ctx context.Context, conn *pgx.Conn) (phase string, since time.Time, err error) {
	err = conn.QueryRow(ctx, "SELECT phase, phase_since FROM pgleap.migration").Scan(&phase, &since)
	if errors.Is(err, pgx.ErrNoRows) {
		return PhaseSchema, time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("read the phase from pgleap state: %w", err)
	}
	return phase, since, nil
}
