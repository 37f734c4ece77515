package verify

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
)

// TableDigest is a table's row count and a hash of all its rows that does not depend on
// where the rows are stored: the md5 of the sorted md5s of each row's text form. Over
// connections with pgleap's session settings the text form of a value is the same on every
// major, so equal digests mean equal rows.
type TableDigest struct {
	Rows int64
	Hash string
}

func (d TableDigest) String() string { return fmt.Sprintf("%d rows, %s", d.Rows, d.Hash) }

const tableDigestSQL = `SELECT count(*), coalesce(md5(string_agg(md5(r::text), '' ORDER BY md5(r::text))), '') FROM ONLY %s r`

// DigestTables reads every row of every user table (partitions, not their parents) and
// returns each table's digest by quoted name. It reads whole tables: for tests and small
// databases.
func DigestTables(ctx context.Context, conn *pgx.Conn) (map[string]TableDigest, error) {
	tables, err := catalog.Tables(ctx, conn)
	if err != nil {
		return nil, err
	}
	digests := map[string]TableDigest{}
	for _, t := range tables {
		if t.Kind != catalog.KindTable {
			continue
		}
		var d TableDigest
		if err := conn.QueryRow(ctx, fmt.Sprintf(tableDigestSQL, t.QualifiedName())).Scan(&d.Rows, &d.Hash); err != nil {
			return nil, fmt.Errorf("digest %s: %w", t.QualifiedName(), err)
		}
		digests[t.QualifiedName()] = d
	}
	return digests, nil
}
