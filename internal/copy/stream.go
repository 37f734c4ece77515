package copy

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/ddl"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// ErrColdCopy is returned when a following migration is asked of a target whose rows were
// copied without a slot (a --no-follow cold copy): the changes made on the source since are
// nowhere to be streamed from.
var ErrColdCopy = errors.New("the target holds a cold copy made without a replication slot")

// prepareStream makes sure the publication and the permanent slot that changes will stream
// from exist on the source, recorded in the target's state. The publication comes first:
// pgoutput reads it as of each change's LSN, so it must predate the slot's consistent point.
// When the slot is created now, its exported snapshot is returned for the copy to read at;
// on a rerun the slot exists and the snapshot is nil.
func prepareStream(ctx context.Context, opts Options, source, target *pgx.Conn, sourceMajor int, items []state.CopyItem, selected []catalog.Table) (state.Replication, *pg.Snapshot, error) {
	r, ok, err := state.LoadReplication(ctx, target)
	if err != nil {
		return r, nil, err
	}
	if !ok {
		for _, i := range items {
			if i.Finished() {
				return r, nil, fmt.Errorf("%w (pgleap migrate --no-follow): changes made on the source since cannot be streamed; "+
					"start again on an empty target database, or finish this one with pgleap migrate --no-follow", ErrColdCopy)
			}
		}
		suffix := make([]byte, 4)
		if _, err := rand.Read(suffix); err != nil {
			return r, nil, err
		}
		name := "pgleap_" + hex.EncodeToString(suffix)
		slot, publication := cmp.Or(opts.SlotName, name), cmp.Or(opts.PublicationName, name)
		if r, err = state.PlanReplication(ctx, target, slot, publication); err != nil {
			return r, nil, err
		}
	}
	if err := EnsurePublication(ctx, source, r.Publication, sourceMajor, selected); err != nil {
		return r, nil, err
	}
	// Captured schema changes stream with the rows (pgleap migrate --ddl).
	if installed, err := ddl.Installed(ctx, source); err != nil {
		return r, nil, err
	} else if installed {
		if err := ddl.Publish(ctx, source, r.Publication); err != nil {
			return r, nil, err
		}
	}
	if r.StartLSN != 0 {
		return r, nil, pg.CheckSlot(ctx, source, r.Slot)
	}
	// A slot without a recorded start is a leftover of a run that stopped between creating
	// it and recording it: nothing was copied at its snapshot, so it goes.
	if _, err := source.Exec(ctx, "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
		r.Slot); err != nil {
		return r, nil, fmt.Errorf("drop unrecorded replication slot %s on the source: %w: is another pgleap using it?", r.Slot, err)
	}
	snapshot, err := pg.OpenSlotSnapshot(ctx, opts.Source, r.Slot, false)
	if err != nil {
		return r, nil, err
	}
	if err := checkDDLWindow(ctx, source, target, snapshot); err != nil {
		snapshot.Close()
		_, dropErr := source.Exec(ctx, "SELECT pg_catalog.pg_drop_replication_slot($1)", r.Slot)
		return r, nil, errors.Join(err, dropErr)
	}
	if err := state.RecordStreamStart(ctx, target, snapshot.LSN); err != nil {
		snapshot.Close()
		return r, nil, err
	}
	r.StartLSN = snapshot.LSN
	return r, snapshot, nil
}

// checkDDLWindow refuses a slot whose snapshot sees schema changes captured after pg_dump
// read the schema: they are in neither the target's schema nor the stream, which starts at
// the snapshot.
func checkDDLWindow(ctx context.Context, source, target *pgx.Conn, snapshot *pg.Snapshot) error {
	atDump, err := state.ArchiveDDLCaptured(ctx, target)
	if err != nil || atDump == nil {
		return err
	}
	var atSnapshot *int64
	err = pgx.BeginTxFunc(ctx, source, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+pg.QuoteLiteral(snapshot.Name)); err != nil {
			return fmt.Errorf("import snapshot %s: %w", snapshot.Name, err)
		}
		atSnapshot, err = ddl.Captured(ctx, tx)
		return err
	})
	if err != nil {
		return err
	}
	if atSnapshot != nil && *atSnapshot > *atDump {
		return fmt.Errorf("%d schema changes were committed on the source between pg_dump and the creation of the replication slot: "+
			"the target's schema misses them, and they are not in the stream; start again: pgleap cleanup, drop and recreate the target database, pgleap migrate --ddl",
			*atSnapshot-*atDump)
	}
	return nil
}

// EnsurePublication creates the publication of the selected tables unless it exists.
// Partitioned tables are published through their root from 13 on, so that rows arrive as
// the root's whatever partition they move to; 12 can publish only the partitions.
func EnsurePublication(ctx context.Context, source *pgx.Conn, name string, sourceMajor int, selected []catalog.Table) error {
	var exists bool
	if err := source.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look for publication %s on the source: %w", name, err)
	}
	if exists {
		return nil
	}
	sql := publicationSQL(name, sourceMajor, publishedTables(selected, sourceMajor))
	if _, err := source.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create publication %s on the source: %w: the role must own the selected tables (run pgleap check)", name, err)
	}
	return nil
}

// publishedTables are the selected tables logical replication can carry: not unlogged or
// foreign ones, and partitioned parents only where the major publishes through the root.
func publishedTables(selected []catalog.Table, sourceMajor int) []catalog.Table {
	var published []catalog.Table
	for _, t := range selected {
		if t.Unlogged || t.Kind == catalog.KindForeign || t.Kind == catalog.KindPartitioned && sourceMajor < 13 {
			continue
		}
		published = append(published, t)
	}
	return published
}

func publicationSQL(name string, sourceMajor int, tables []catalog.Table) string {
	var b strings.Builder
	b.WriteString("CREATE PUBLICATION " + pg.QuoteIdent(name))
	for i, t := range tables {
		if i == 0 {
			b.WriteString(" FOR TABLE ")
		} else {
			b.WriteString(", ")
		}
		// ONLY: a partitioned table's partitions come with it through the root, and a plain
		// table's inheritance children are selected, or not, on their own.
		b.WriteString("ONLY " + t.QualifiedName())
	}
	if sourceMajor >= 13 {
		b.WriteString(" WITH (publish_via_partition_root = true)")
	}
	return b.String()
}

// ErrSlotInUse is returned when the slot to drop is streaming to a running process.
var ErrSlotInUse = errors.New("the replication slot is in use")

// DropStream drops the slot and the publication of r from the source, those that are
// there; it reports which it dropped. A slot in use by a running pgleap is left alone.
func DropStream(ctx context.Context, source *pgx.Conn, r state.Replication) (dropped []string, err error) {
	var activePID *int32
	err = source.QueryRow(ctx, "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", r.Slot).Scan(&activePID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return dropped, fmt.Errorf("look for replication slot %s on the source: %w", r.Slot, err)
	case activePID != nil:
		return dropped, fmt.Errorf("drop replication slot %s: %w by process %d: stop the pgleap that streams from it first", r.Slot, ErrSlotInUse, *activePID)
	default:
		if _, err := source.Exec(ctx, "SELECT pg_catalog.pg_drop_replication_slot($1)", r.Slot); err != nil {
			return dropped, fmt.Errorf("drop replication slot %s on the source: %w", r.Slot, err)
		}
		dropped = append(dropped, "replication slot "+r.Slot)
	}
	var published bool
	if err := source.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $1)", r.Publication).Scan(&published); err != nil {
		return dropped, fmt.Errorf("look for publication %s on the source: %w", r.Publication, err)
	}
	if published {
		if _, err := source.Exec(ctx, "DROP PUBLICATION "+pg.QuoteIdent(r.Publication)); err != nil {
			return dropped, fmt.Errorf("drop publication %s on the source: %w", r.Publication, err)
		}
		dropped = append(dropped, "publication "+r.Publication)
	}
	return dropped, nil
}
