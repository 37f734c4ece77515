// Package datatest proves, in tests, that two databases hold the same rows: it hashes every
// row of every table on each side (verify.DigestTables) over pgleap's exact-text sessions.
// It lives apart from pgtest because it needs verify, whose own dependencies' tests use
// pgtest.
package datatest

import (
	"context"
	"testing"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/verify"
)

// Digests hashes every row of every table of the database at connString.
func Digests(t testing.TB, connString string) map[string]verify.TableDigest {
	t.Helper()
	ctx := context.Background()
	conn, err := pg.Connect(ctx, pg.Source, connString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	d, err := verify.DigestTables(ctx, conn)
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
