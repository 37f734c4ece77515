package copy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/pg"
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
// snapshot. The slot lives as long as the snapshot: Close, a crash or a kill drops it.
func OpenSnapshot(ctx context.Context, sourceConnString string) (*Snapshot, error) {
	cfg, err := pg.ParseConfig(pg.Source, sourceConnString)
	if err != nil {
		return nil, err
	}
	pgcfg := cfg.Config.Copy()
	pgcfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, pgcfg)
	if err != nil {
		return nil, &pg.ConnectError{Side: pg.Source, Address: fmt.Sprintf("%s:%d", pgcfg.Host, pgcfg.Port), Err: err}
	}
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	// Slot names reach the server unquoted: pgleap makes them of [a-z0-9_] only.
	slot := "pgleap_copy_" + hex.EncodeToString(suffix)
	created, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication,
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

// Close drops the slot and the snapshot with it.
func (s *Snapshot) Close() {
	s.conn.Close(context.Background())
}
