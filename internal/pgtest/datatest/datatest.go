// Package datatest proves, in tests and benchmarks, that two databases hold the same rows:
// it hashes every row of every table on each side (DigestTables) over pgleap's exact-text
// sessions, independently of pgleap verify. It lives apart from pgtest because it needs
// catalog, whose tests use pgtest.
package datatest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/pg"
)

// Connect opens a connection with pgleap's session settings to the database at connString,
// closed when the test ends.
func Connect(t testing.TB, connString string) *pgx.Conn {
	t.Helper()
	conn, err := pg.Connect(context.Background(), pg.Source, connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs sql on the database at connString, and fails the test if it fails.
func Exec(t testing.TB, connString, sql string, args ...any) {
	t.Helper()
	conn := Connect(t, connString)
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// Scalar runs a query that returns one value and returns it as text ("" for NULL).
func Scalar(t testing.TB, connString, sql string) string {
	t.Helper()
	conn := Connect(t, connString)
	defer conn.Close(context.Background())
	var v *string
	if err := conn.QueryRow(context.Background(), "SELECT ("+sql+")::text").Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if v == nil {
		return ""
	}
	return *v
}

// Digests hashes every row of every table of the database at connString.
func Digests(t testing.TB, connString string) map[string]TableDigest {
	t.Helper()
	ctx := context.Background()
	conn := Connect(t, connString)
	defer conn.Close(ctx)
	d, err := DigestTables(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// RequireSameRows fails the test unless both databases hold the same tables with the same
// rows, and the source at least minTables tables (so that an empty listing cannot pass).
func RequireSameRows(t testing.TB, sourceConn, targetConn string, minTables int) {
	t.Helper()
	RequireSameDigests(t, Digests(t, sourceConn), Digests(t, targetConn), minTables)
}

// RequireSameDigests compares digests taken by the caller (who may add entries of its own,
// such as large objects).
func RequireSameDigests[D comparable](t testing.TB, want, got map[string]D, minTables int) {
	t.Helper()
	if len(want) < minTables {
		t.Fatalf("only %d tables on the source, want at least %d: %v", len(want), minTables, want)
	}
	for table, d := range want {
		if g, ok := got[table]; !ok {
			t.Errorf("%s: on the source only", table)
		} else if g != d {
			t.Errorf("%s: source %v, target %v", table, d, g)
		}
	}
	for table := range got {
		if _, ok := want[table]; !ok {
			t.Errorf("%s: on the target only", table)
		}
	}
}

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
