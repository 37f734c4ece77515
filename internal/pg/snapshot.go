package pg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Snapshot is an exported snapshot of the source taken with a logical replication slot: the
// rows it shows are the database at LSN. It stays importable while the Snapshot is open.
type Snapshot struct {
	Name string
	LSN  pglogrepl.LSN
	Slot string
	conn *pgconn.PgConn
}

// OpenSnapshot creates a temporary logical slot (pgoutput) on the source and exports its
// snapshot; purpose (copy, verify) names the slot. The slot lives as long as the snapshot:
// Close, a crash or a kill drops it.
func OpenSnapshot(ctx context.Context, sourceConnString, purpose string) (*Snapshot, error) {
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	return OpenSlotSnapshot(ctx, sourceConnString, "pgleap_"+purpose+"_"+hex.EncodeToString(suffix), true)
}

// OpenSlotSnapshot creates slot (temporary or permanent) with an exported snapshot. A
// permanent slot outlives the Snapshot: it keeps the WAL from its consistent point on.
func OpenSlotSnapshot(ctx context.Context, sourceConnString, slot string, temporary bool) (*Snapshot, error) {
	if !ValidReplicationName(slot) {
		return nil, fmt.Errorf("replication slot name %q: only a-z, 0-9 and _ are allowed", slot)
	}
	conn, err := ConnectReplication(ctx, sourceConnString, "")
	if err != nil {
		return nil, err
	}
	created, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: temporary, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication,
	})
	if err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("create replication slot %s on the source: %w: the role needs REPLICATION and a free slot (run pgleap check)", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("replication slot %s: consistent point %q: %w", slot, created.ConsistentPoint, err)
	}
	return &Snapshot{Name: created.SnapshotName, LSN: lsn, Slot: slot, conn: conn}, nil
}

// ValidReplicationName reports whether name is safe where pglogrepl interpolates it raw
// into a replication command: lower-case letters, digits and underscores only.
func ValidReplicationName(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// Close ends the snapshot, and drops the slot when it is temporary.
func (s *Snapshot) Close() {
	s.conn.Close(context.Background())
}

// SlotActive reports whether a process streams from replication slot name; false for a slot
// that is not there.
func SlotActive(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
	var active bool
	err := conn.QueryRow(ctx, "SELECT coalesce((SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1), false)", name).Scan(&active)
	if err != nil {
		return false, fmt.Errorf("read replication slot %s on the source: %w", name, err)
	}
	return active, nil
}

// ErrSlotLost is returned when the slot a migration streams from is gone from the source,
// or invalidated: the WAL it kept, and with it the changes since the copy, are lost.
var ErrSlotLost = errors.New("the migration's replication slot is lost")

// CheckSlot returns ErrSlotLost, with what happened and what to do, when replication slot
// name of the connection's database was dropped or invalidated (wal_status lost, PG 13+:
// the source removed WAL it still needed past max_slot_wal_keep_size).
func CheckSlot(ctx context.Context, conn *pgx.Conn, name string) error {
	var walStatus *string
	err := conn.QueryRow(ctx, `SELECT to_jsonb(s)->>'wal_status' FROM pg_catalog.pg_replication_slots s
		WHERE slot_name = $1 AND database = current_database()`, name).Scan(&walStatus)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%w: slot %s is gone from the source, and the changes it kept with it: start again: pgleap cleanup, drop and create the target database, then pgleap migrate", ErrSlotLost, name)
	case err != nil:
		return fmt.Errorf("read replication slot %s on the source: %w", name, err)
	case walStatus != nil && *walStatus == "lost":
		return fmt.Errorf("%w: the source removed WAL that slot %s still needed (it kept more than max_slot_wal_keep_size): start again: pgleap cleanup, drop and create the target database, then pgleap migrate; raise max_slot_wal_keep_size first", ErrSlotLost, name)
	}
	return nil
}
