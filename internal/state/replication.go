package state

import (
	"context"
	"errors"
	"fmt"

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
