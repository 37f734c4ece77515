package state

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Split methods of a copy item.
const (
	SplitNone = "none" // the whole table
	SplitKey  = "key"  // a range of an integer primary key
	SplitCTID = "ctid" // a range of heap blocks
)

// CopyItem is one unit of the data copy.
type CopyItem struct {
	Schema, Table  string
	Chunk, Chunks  int
	SplitBy        string
	KeyColumn      string
	Lower, Upper   *int64
	EstimatedBytes int64
	RowsCopied     int64
	BytesCopied    int64         // read from the source; zero until finished, and for state before version 5
	SyncLSN        pglogrepl.LSN // zero until finished
	FinishedAt     *time.Time
}

// Finished reports whether the item's rows are on the target.
func (i CopyItem) Finished() bool { return i.FinishedAt != nil }

// CopyPlan returns the recorded copy items, in table and chunk order.
func CopyPlan(ctx context.Context, conn *pgx.Conn) ([]CopyItem, error) {
	// bytes_copied through to_jsonb: status reads a state of version 4 too, without upgrading it.
	rows, err := conn.Query(ctx, `
		SELECT table_schema, table_name, chunk, chunks, split_by, coalesce(key_column, ''), lower_bound, upper_bound,
		       estimated_bytes, coalesce(rows_copied, 0), coalesce((to_jsonb(c)->>'bytes_copied')::bigint, 0),
		       coalesce(sync_lsn::text, '0/0'), finished_at
		FROM pgleap.copy_item c ORDER BY table_schema, table_name, chunk`)
	if err != nil {
		return nil, fmt.Errorf("read the copy plan: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (CopyItem, error) {
		var i CopyItem
		var lsn string
		err := row.Scan(&i.Schema, &i.Table, &i.Chunk, &i.Chunks, &i.SplitBy, &i.KeyColumn, &i.Lower, &i.Upper,
			&i.EstimatedBytes, &i.RowsCopied, &i.BytesCopied, &lsn, &i.FinishedAt)
		if err == nil {
			i.SyncLSN, err = pglogrepl.ParseLSN(lsn)
		}
		return i, err
	})
}

// SaveCopyPlan records the items of a first run; a plan already recorded is kept, so a
// resumed run copies the same ranges.
func SaveCopyPlan(ctx context.Context, conn *pgx.Conn, items []CopyItem) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var planned bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pgleap.copy_item)").Scan(&planned); err != nil {
			return fmt.Errorf("read the copy plan: %w", err)
		}
		if planned {
			return nil
		}
		for _, i := range items {
			var key *string
			if i.KeyColumn != "" {
				key = &i.KeyColumn
			}
			_, err := tx.Exec(ctx, `INSERT INTO pgleap.copy_item
				(table_schema, table_name, chunk, chunks, split_by, key_column, lower_bound, upper_bound, estimated_bytes)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				i.Schema, i.Table, i.Chunk, i.Chunks, i.SplitBy, key, i.Lower, i.Upper, i.EstimatedBytes)
			if err != nil {
				return fmt.Errorf("record copy item %s.%s chunk %d: %w", i.Schema, i.Table, i.Chunk, err)
			}
		}
		return nil
	})
}

// FinishCopyItem marks an item copied, inside the transaction that copied its rows.
func FinishCopyItem(ctx context.Context, tx pgx.Tx, i CopyItem, rows, bytes int64, syncLSN pglogrepl.LSN) error {
	tag, err := tx.Exec(ctx, `UPDATE pgleap.copy_item SET rows_copied = $4, bytes_copied = $5, sync_lsn = $6::text::pg_lsn, finished_at = now()
		WHERE table_schema = $1 AND table_name = $2 AND chunk = $3 AND finished_at IS NULL`,
		i.Schema, i.Table, i.Chunk, rows, bytes, syncLSN.String())
	if err != nil {
		return fmt.Errorf("record copy of %s.%s chunk %d: %w", i.Schema, i.Table, i.Chunk, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("record copy of %s.%s chunk %d: it is not an unfinished item of the plan", i.Schema, i.Table, i.Chunk)
	}
	return nil
}

// ResetTable marks every item of a table unfinished again, inside the transaction that
// empties the table on the target.
func ResetTable(ctx context.Context, tx pgx.Tx, schema, table string) error {
	_, err := tx.Exec(ctx, `UPDATE pgleap.copy_item SET rows_copied = NULL, bytes_copied = NULL, sync_lsn = NULL, finished_at = NULL
		WHERE table_schema = $1 AND table_name = $2`, schema, table)
	if err != nil {
		return fmt.Errorf("reset copy of %s.%s: %w", schema, table, err)
	}
	return nil
}
