package main

import (
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestMissingPrivilegeThenGrant: the source role lacks SELECT on one table. pgleap migrate
// stops naming the table and the privilege; once the DBA grants it, the same command
// finishes, and the copy is whole.
func TestMissingPrivilegeThenGrant(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	t.Cleanup(func() { datatest.Exec(t, source.ConnString("postgres"), "DROP ROLE IF EXISTS reader") })
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `CREATE ROLE reader LOGIN REPLICATION;
		CREATE TABLE open_a (id int PRIMARY KEY); INSERT INTO open_a SELECT generate_series(1, 500);
		CREATE TABLE open_b (id int PRIMARY KEY); INSERT INTO open_b SELECT generate_series(1, 500);
		CREATE TABLE secret (id int PRIMARY KEY, v text); INSERT INTO secret SELECT g, 's' || g FROM generate_series(1, 500) g;
		GRANT SELECT ON open_a, open_b TO reader`)
	t.Cleanup(func() { source.Exec(t, sourceDB, "DROP OWNED BY reader") })
	sourceConn, targetConn := source.ConnString(sourceDB)+" user=reader", target.ConnString(targetDB)
	args := []string{"migrate", "--no-follow", "--source", sourceConn, "--target", targetConn}

	code, stdout, stderr := pgleap(t, nil, args...)
	if code != exitCannotRun || !strings.Contains(stderr, "secret") || !strings.Contains(stderr, "permission denied") ||
		!strings.Contains(stderr, "run pgleap migrate again") {
		t.Fatalf("migrate without SELECT on secret: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("without the grant: %s", strings.TrimSpace(stderr))
	source.Exec(t, sourceDB, "GRANT SELECT ON secret TO reader")
	code, stdout, stderr = pgleap(t, nil, args...)
	if code != exitOK {
		t.Fatalf("migrate after the grant: exit %d\n%s%s", code, stdout, stderr)
	}
	datatest.RequireSameRows(t, source.ConnString(sourceDB), targetConn, 3)
}
