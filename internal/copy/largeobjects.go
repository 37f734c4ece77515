package copy

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

const largeObjectPiece = 1 << 20 // read and written a piece at a time, so size never meets memory

type largeObject struct {
	OID   uint32
	Owner string
	ACL   []string // aclitems as text: grantee=privileges/grantor
}

// copyLargeObjects copies every large object with its OID, owner and grants, at the
// snapshot, in one target transaction that also records the step: logical replication does
// not carry large objects, so this copy is the only one.
func copyLargeObjects(ctx context.Context, opts Options, snapshot *pg.Snapshot) (int64, error) {
	w, err := newWorker(ctx, opts, snapshot, nil)
	if err != nil {
		return 0, err
	}
	defer w.close()
	rows, err := w.source.Query(ctx, `SELECT oid, pg_catalog.pg_get_userbyid(lomowner), coalesce(lomacl::text[], '{}')
		FROM pg_catalog.pg_largeobject_metadata ORDER BY oid`)
	if err != nil {
		return 0, fmt.Errorf("list large objects: %w", err)
	}
	objects, err := pgx.CollectRows(rows, pgx.RowToStructByPos[largeObject])
	if err != nil {
		return 0, fmt.Errorf("list large objects: %w", err)
	}
	err = pgx.BeginFunc(ctx, w.target, func(tx pgx.Tx) error {
		for _, lo := range objects {
			if err := copyLargeObject(ctx, w.source, tx, lo); err != nil {
				return fmt.Errorf("copy large object %d: %w", lo.OID, err)
			}
		}
		return state.RecordStep(ctx, tx, stepLargeObjects)
	})
	if err != nil {
		return 0, fmt.Errorf("%w: run pgleap migrate again to resume", err)
	}
	return int64(len(objects)), nil
}

func copyLargeObject(ctx context.Context, source *pgx.Conn, target pgx.Tx, lo largeObject) error {
	if _, err := target.Exec(ctx, "SELECT pg_catalog.lo_create($1)", lo.OID); err != nil {
		return err
	}
	for offset := int64(0); ; offset += largeObjectPiece {
		var piece []byte
		if err := source.QueryRow(ctx, "SELECT pg_catalog.lo_get($1, $2, $3)", lo.OID, offset, largeObjectPiece).Scan(&piece); err != nil {
			return fmt.Errorf("read at %d: %w", offset, err)
		}
		if len(piece) > 0 {
			if _, err := target.Exec(ctx, "SELECT pg_catalog.lo_put($1, $2, $3)", lo.OID, offset, piece); err != nil {
				return fmt.Errorf("write at %d: %w", offset, err)
			}
		}
		if len(piece) < largeObjectPiece {
			break
		}
	}
	if _, err := target.Exec(ctx, fmt.Sprintf("ALTER LARGE OBJECT %d OWNER TO %s", lo.OID, pg.QuoteIdent(lo.Owner))); err != nil {
		return err
	}
	for _, item := range lo.ACL {
		if grant := largeObjectGrant(lo.OID, item); grant != "" {
			if _, err := target.Exec(ctx, grant); err != nil {
				return err
			}
		}
	}
	return nil
}

// largeObjectGrant turns one aclitem of a large object ("grantee=rw/grantor", an empty
// grantee being PUBLIC) into the GRANT that recreates it.
func largeObjectGrant(oid uint32, aclitem string) string {
	grantee, rest, ok := strings.Cut(aclitem, "=")
	if !ok {
		return ""
	}
	privileges, _, _ := strings.Cut(rest, "/")
	var granted []string
	if strings.Contains(privileges, "r") {
		granted = append(granted, "SELECT")
	}
	if strings.Contains(privileges, "w") {
		granted = append(granted, "UPDATE")
	}
	if len(granted) == 0 {
		return ""
	}
	to := "PUBLIC"
	if grantee != "" {
		to = pg.QuoteIdent(strings.Trim(grantee, `"`))
	}
	return fmt.Sprintf("GRANT %s ON LARGE OBJECT %d TO %s", strings.Join(granted, ", "), oid, to)
}
