package copy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
	objects, err := listLargeObjects(ctx, w.source)
	if err != nil {
		return 0, err
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
		if advice := largeObjectAdvice(err); advice != "" {
			return 0, fmt.Errorf("%w: %s, then run pgleap migrate again to resume", err, advice)
		}
		return 0, fmt.Errorf("%w: run pgleap migrate again to resume", err)
	}
	return int64(len(objects)), nil
}

// largeObjectAdvice says what to grant when err is a large object pgleap's role may not read.
func largeObjectAdvice(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "large object") {
		return ""
	}
	return "give pgleap's role its owner's privileges (GRANT owner TO role) or SELECT on it; pgleap check lists them all (source.large_object_privilege)"
}

// listLargeObjects lists the large objects of conn's database with their owners and grants.
func listLargeObjects(ctx context.Context, conn *pgx.Conn) ([]largeObject, error) {
	rows, err := conn.Query(ctx, `SELECT oid, pg_catalog.pg_get_userbyid(lomowner), coalesce(lomacl::text[], '{}')
		FROM pg_catalog.pg_largeobject_metadata ORDER BY oid`)
	if err != nil {
		return nil, fmt.Errorf("list large objects: %w", err)
	}
	objects, err := pgx.CollectRows(rows, pgx.RowToStructByPos[largeObject])
	if err != nil {
		return nil, fmt.Errorf("list large objects: %w", err)
	}
	return objects, nil
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

// ResyncLargeObjects makes the target's large objects the source's again, in one target
// transaction: logical replication carries none of their changes, so at cutover those
// created, written or unlinked since the copy are found by hash and copied again. It
// returns how many it changed.
func ResyncLargeObjects(ctx context.Context, source, target *pgx.Conn) (int, error) {
	const hashes = `SELECT oid, md5(pg_catalog.lo_get(oid)) FROM pg_catalog.pg_largeobject_metadata`
	read := func(conn *pgx.Conn) (map[uint32]string, error) {
		rows, err := conn.Query(ctx, hashes)
		if err != nil {
			return nil, err
		}
		out := map[uint32]string{}
		var oid uint32
		var hash string
		_, err = pgx.ForEachRow(rows, []any{&oid, &hash}, func() error { out[oid] = hash; return nil })
		return out, err
	}
	onSource, err := read(source)
	if err != nil {
		if advice := largeObjectAdvice(err); advice != "" {
			return 0, fmt.Errorf("read the source's large objects: %w: %s", err, advice)
		}
		return 0, fmt.Errorf("read the source's large objects: %w", err)
	}
	onTarget, err := read(target)
	if err != nil {
		return 0, fmt.Errorf("read the target's large objects: %w", err)
	}
	objects, err := listLargeObjects(ctx, source)
	if err != nil {
		return 0, err
	}
	changed := 0
	err = pgx.BeginFunc(ctx, target, func(tx pgx.Tx) error {
		for oid := range onTarget {
			if _, ok := onSource[oid]; ok {
				continue
			}
			if _, err := tx.Exec(ctx, "SELECT pg_catalog.lo_unlink($1)", oid); err != nil {
				return fmt.Errorf("unlink large object %d: %w", oid, err)
			}
			changed++
		}
		for _, lo := range objects {
			hash, ok := onTarget[lo.OID]
			if ok && hash == onSource[lo.OID] {
				continue
			}
			if ok {
				if _, err := tx.Exec(ctx, "SELECT pg_catalog.lo_unlink($1)", lo.OID); err != nil {
					return fmt.Errorf("unlink large object %d: %w", lo.OID, err)
				}
			}
			if err := copyLargeObject(ctx, source, tx, lo); err != nil {
				return fmt.Errorf("copy large object %d: %w", lo.OID, err)
			}
			changed++
		}
		return nil
	})
	return changed, err
}
