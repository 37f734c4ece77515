package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestLeastPrivileges runs check, migrate (schema, copy, streaming), verify, status and
// cleanup as roles that are not superusers, with only the grants docs/guide.md lists: on the
// source, LOGIN REPLICATION and ownership of the migrated tables (which a publication needs);
// on the target, CREATEROLE, ownership of the database, and (PostgreSQL 15 and later) the
// right to set session_replication_role. TestCutoverAndRollbackWithLeastPrivileges adds
// the cutover and the rollback.
func TestLeastPrivileges(t *testing.T) {
	if pgtest.TargetMajor() < 15 {
		t.Skip("before PostgreSQL 15 only a superuser may set session_replication_role, which the apply needs")
	}
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	// Registered first, this runs last: once the databases holding the role's objects are gone.
	t.Cleanup(func() {
		datatest.Exec(t, source.ConnString("postgres"), "DROP ROLE IF EXISTS lp_migrator")
		target.Exec(t, "postgres", "REVOKE SET ON PARAMETER session_replication_role FROM lp_migrator")
		datatest.Exec(t, target.ConnString("postgres"), "DROP ROLE IF EXISTS lp_migrator")
	})
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, "postgres", "CREATE ROLE lp_migrator LOGIN REPLICATION")
	source.Exec(t, sourceDB, `GRANT CREATE ON DATABASE `+sourceDB+` TO lp_migrator;
		GRANT CREATE ON SCHEMA public TO lp_migrator;
		SET ROLE lp_migrator;
		CREATE TABLE orders (id int PRIMARY KEY, total numeric, placed timestamptz DEFAULT now());
		INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 2000) g;
		CREATE TABLE lines (order_id int REFERENCES orders, n int, PRIMARY KEY (order_id, n));
		INSERT INTO lines SELECT g, 1 FROM generate_series(1, 2000) g`)
	target.Exec(t, "postgres", "CREATE ROLE lp_migrator LOGIN CREATEROLE")
	target.Exec(t, "postgres", "ALTER DATABASE "+targetDB+" OWNER TO lp_migrator")
	target.Exec(t, "postgres", "GRANT SET ON PARAMETER session_replication_role TO lp_migrator")
	sourceConn := source.ConnString(sourceDB) + " user=lp_migrator"
	targetConn := target.ConnString(targetDB) + " user=lp_migrator"
	conns := []string{"--source", sourceConn, "--target", targetConn}

	if code, stdout, stderr := pgleap(t, nil, append([]string{"check"}, conns...)...); code != exitOK {
		t.Errorf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	// Named by the user, the slot and the publication are pgleap's as any it names itself.
	slot := "lp_slot_" + sourceDB
	migrate, out := startCLI(t, append([]string{"migrate", "--slot-name", slot, "--publication-name", "lp_publication"}, conns...)...)
	exited := make(chan error, 1)
	go func() { exited <- migrate.Wait() }()
	for datatest.Scalar(t, source.ConnString(sourceDB), streamingSQL) != "1" {
		select {
		case err := <-exited:
			t.Fatalf("migrate stopped: %v\n%s", err, out)
		case <-time.After(100 * time.Millisecond):
		}
	}
	source.Exec(t, sourceDB, "UPDATE orders SET total = total + 1 WHERE id <= 100; INSERT INTO orders (id, total) VALUES (5000, 1)")
	want := datatest.Scalar(t, source.ConnString(sourceDB), "SELECT pg_current_wal_insert_lsn()::text")
	waitFor(t, "the changes", func() bool {
		return lsnAtLeast(t, datatest.Scalar(t, target.ConnString(targetDB), "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want)
	})
	if code, stdout, stderr := pgleap(t, nil, append([]string{"verify"}, conns...)...); code != exitOK {
		t.Errorf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"status"}, conns...)...); code != exitOK {
		t.Errorf("status: exit %d\n%s%s", code, stdout, stderr)
	}
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	datatest.RequireSameRows(t, source.ConnString(sourceDB), target.ConnString(targetDB), 2)
	if code, _, stderr := pgleap(t, nil, append([]string{"migrate", "--slot-name", "another_slot"}, conns...)...); code != exitCannotRun ||
		!strings.Contains(stderr, "streams from slot "+slot+", not another_slot") {
		t.Errorf("migrate resumed with another slot name: exit %d, %s", code, stderr)
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"cleanup"}, conns...)...); code != exitOK {
		t.Errorf("cleanup: exit %d\n%s%s", code, stdout, stderr)
	}
	if left := datatest.Scalar(t, source.ConnString(sourceDB), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"+slot+
		"'") + datatest.Scalar(t, source.ConnString(sourceDB), "SELECT count(*) FROM pg_publication WHERE pubname = 'lp_publication'"); left != "00" {
		t.Errorf("cleanup left the named slot or publication (%s)", left)
	}
}
