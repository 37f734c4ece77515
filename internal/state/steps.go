package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// DoneSteps returns the ids of every step recorded as done.
func DoneSteps(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	rows, err := conn.Query(ctx, "SELECT id FROM pgleap.step")
	if err != nil {
		return nil, fmt.Errorf("read finished steps: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read finished steps: %w", err)
	}
	done := make(map[string]bool, len(ids))
	for _, id := range ids {
		done[id] = true
	}
	return done, nil
}

// RecordStep marks step id done, inside tx: the caller commits it with the work itself.
func RecordStep(ctx context.Context, tx pgx.Tx, id string) error {
	if _, err := tx.Exec(ctx, "INSERT INTO pgleap.step (id) VALUES ($1)", id); err != nil {
		return fmt.Errorf("record step %s: %w", id, err)
	}
	return nil
}

// SaveArchive stores the schema archive unless one is stored already, and returns the one
// in force: a resumed migration keeps the archive it started with.
// ddlCaptured is the number of schema changes the source's capture held when pg_dump
// began, nil without one.
func SaveArchive(ctx context.Context, conn *pgx.Conn, archive []byte, dumpedBy string, ddlCaptured *int64) ([]byte, error) {
	var stored []byte
	err := conn.QueryRow(ctx, `
		INSERT INTO pgleap.schema_archive (archive, dumped_by, ddl_captured) VALUES ($1, $2, $3)
		ON CONFLICT (singleton) DO UPDATE SET singleton = true
		RETURNING archive`, archive, dumpedBy, ddlCaptured).Scan(&stored)
	if err != nil {
		return nil, fmt.Errorf("store the schema archive in pgleap state: %w", err)
	}
	return stored, nil
}

// ArchiveDDLCaptured returns how many schema changes the source's capture held when the
// stored archive was dumped; nil when it had none, or no archive is stored.
func ArchiveDDLCaptured(ctx context.Context, conn *pgx.Conn) (*int64, error) {
	var captured *int64
	err := conn.QueryRow(ctx, "SELECT ddl_captured FROM pgleap.schema_archive").Scan(&captured)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the schema archive from pgleap state: %w", err)
	}
	return captured, nil
}

// LoadArchive returns the stored schema archive, or nil when none is stored yet.
func LoadArchive(ctx context.Context, conn *pgx.Conn) ([]byte, error) {
	var archive []byte
	err := conn.QueryRow(ctx, "SELECT archive FROM pgleap.schema_archive").Scan(&archive)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the schema archive from pgleap state: %w", err)
	}
	return archive, nil
}

// SkippedObject is an object left out because it depends on an excluded table.
type SkippedObject struct {
	Kind, Name, Reason string
}

// RecordSkipped stores the objects left out, once; a rerun finds them already there.
func RecordSkipped(ctx context.Context, tx pgx.Tx, objects []SkippedObject) error {
	for _, o := range objects {
		_, err := tx.Exec(ctx, `INSERT INTO pgleap.skipped_object (kind, name, reason) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, o.Kind, o.Name, o.Reason)
		if err != nil {
			return fmt.Errorf("record skipped %s %s: %w", o.Kind, o.Name, err)
		}
	}
	return nil
}

// Skipped returns the objects recorded as left out.
func Skipped(ctx context.Context, conn *pgx.Conn) ([]SkippedObject, error) {
	rows, err := conn.Query(ctx, "SELECT kind, name, reason FROM pgleap.skipped_object ORDER BY kind, name")
	if err != nil {
		return nil, fmt.Errorf("read skipped objects: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[SkippedObject])
}
