package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestSchemaChangesDuringStreaming runs pgleap migrate --ddl while a script of schema
// changes interleaved with writes runs on the source: a column added and written in the
// same and in later transactions, a column dropped and one retyped, a table renamed, a new
// table created and filled in one query, indexes built (one concurrently), a view, a
// sequence, a type, a function and a schema created. A change made inside a DO block stops
// the apply, which goes on after the user runs it on the target and passes --skip-ddl; one
// that fails on the target stops it until the target is fixed. The schemas and rows are
// then the same on both sides, and cleanup removes the capture.
func TestSchemaChangesDuringStreaming(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	app := fmt.Sprintf("ddl_app_%d", source.Port)
	t.Cleanup(func() { // after the databases are gone
		source.Exec(t, "postgres", "DROP ROLE IF EXISTS "+app)
		target.Exec(t, "postgres", "DROP ROLE IF EXISTS "+app)
	})
	source.Exec(t, "postgres", "CREATE ROLE "+app+" LOGIN")
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	source.Exec(t, sourceDB, `GRANT CREATE ON SCHEMA public TO `+app+`;
		CREATE TABLE orders (id int PRIMARY KEY, note text);
		INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g`)
	conns := []string{"--source", sourceConn, "--target", targetConn}

	if code, stdout, _ := pgleap(t, nil, append([]string{"check"}, conns...)...); !strings.Contains(stdout, "source.ddl_capture") ||
		!strings.Contains(stdout, "are carried only with") {
		t.Errorf("check does not report source.ddl_capture (exit %d):\n%s", code, stdout)
	}
	var migrate *exec.Cmd
	var out *pgtest.LockedBuffer
	var exited chan error
	// streamWith starts pgleap migrate with these flags and waits until it streams.
	streamWith := func(flags ...string) {
		t.Helper()
		migrate, out = startCLI(t, append(append([]string{"migrate"}, flags...), conns...)...)
		exited = make(chan error, 1)
		go func() { exited <- migrate.Wait() }()
		for datatest.Scalar(t, sourceConn, streamingSQL) != "1" {
			select {
			case err := <-exited:
				t.Fatalf("migrate stopped: %v\n%s", err, out)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	streamWith("--ddl")
	for _, sql := range []string{
		"BEGIN; ALTER TABLE orders ADD COLUMN total numeric DEFAULT 0; INSERT INTO orders VALUES (101, 'with a total', 5); COMMIT",
		"UPDATE orders SET total = id * 2 WHERE id <= 50",
		"ALTER TABLE orders DROP COLUMN note",
		"INSERT INTO orders (id, total) VALUES (102, 7)",
		"ALTER TABLE orders RENAME TO purchases",
		"INSERT INTO purchases (id, total) VALUES (103, 9)",
		"CREATE TABLE customers (id int PRIMARY KEY, name text); INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g",
		"CREATE INDEX CONCURRENTLY customers_name ON customers (name)",
		"CREATE INDEX purchases_total ON purchases (total); UPDATE customers SET name = upper(name) WHERE id <= 10",
		"ALTER TABLE purchases ALTER COLUMN total TYPE bigint USING total::bigint, ALTER COLUMN total SET DEFAULT 1, ADD CONSTRAINT total_positive CHECK (total >= 0)",
		`CREATE SCHEMA extra;
		 CREATE TYPE extra.mood AS ENUM ('calm', 'busy');
		 CREATE SEQUENCE extra.tickets START 1000;
		 CREATE FUNCTION extra.double(n bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT n * 2; $$;
		 CREATE TABLE extra.shifts (id int PRIMARY KEY DEFAULT nextval('extra.tickets'), mood extra.mood NOT NULL);
		 INSERT INTO extra.shifts (mood) VALUES ('calm'), ('busy');
		 CREATE VIEW big_purchases AS SELECT id, extra.double(total) AS doubled FROM purchases WHERE total > 10`,
		"INSERT INTO purchases (id, total) VALUES (104, 11)", // prepared anew for the retyped column
		"ALTER TYPE extra.mood ADD VALUE 'tired'",
		"INSERT INTO extra.shifts (mood) VALUES ('tired')", // usable once the change committed, on the target too
		"CREATE VIEW scratch AS SELECT 1 AS one; DROP VIEW scratch",
		// Its rows are not streamed (the table joins the publication after they are
		// written): the target computes them from the same rows, at the same place.
		"CREATE TABLE purchases_copy AS SELECT * FROM purchases",
		// Keyless, it was given REPLICA IDENTITY FULL: the application's updates work.
		"UPDATE purchases_copy SET total = total + 1 WHERE id = 101; DELETE FROM purchases_copy WHERE id = 102",
	} {
		source.Exec(t, sourceDB, sql)
	}
	// Inside a DO block, the statement cannot be seen: the apply stops and says so.
	source.Exec(t, sourceDB, "DO $$ BEGIN EXECUTE 'ALTER TABLE customers ADD COLUMN vip boolean'; END $$")
	var err error
	select {
	case err = <-exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("migrate did not stop at the change made in a DO block\n%s", out)
	}
	m := regexp.MustCompile(`schema change (\d+) \(ALTER TABLE by "postgres"\) ran inside a function or a DO block.*pgleap migrate --skip-ddl (\d+)`).FindStringSubmatch(out.String())
	if err == nil || m == nil || m[1] != m[2] {
		t.Fatalf("migrate at the change made in a DO block: %v\n%s", err, out)
	}
	// The user runs its equivalent on the target (read-only for everyone but pgleap), then
	// skips it; the writes after it stream.
	target.Exec(t, targetDB, "BEGIN READ WRITE; ALTER TABLE customers ADD COLUMN vip boolean; COMMIT")
	source.Exec(t, sourceDB, "UPDATE customers SET vip = id % 2 = 0 WHERE id <= 20; INSERT INTO customers VALUES (101, 'last', true)")
	// An index built concurrently that a crashed run left invalid on the target (here
	// one that failed, under the name the source's takes) is dropped and built again.
	leftover := target.Conn(t, targetDB)
	if _, err := leftover.Exec(context.Background(), "SET default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	if _, err := leftover.Exec(context.Background(), "CREATE UNIQUE INDEX CONCURRENTLY customers_parity ON customers ((id % 2))"); err == nil {
		t.Fatal("the unique index on a column of duplicates was built")
	}
	if got := datatest.Scalar(t, targetConn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'customers_parity'::regclass"); got != "false" {
		t.Fatalf("the failed index on the target: valid %s, want an invalid one left", got)
	}
	source.Exec(t, sourceDB, "CREATE INDEX CONCURRENTLY customers_parity ON customers ((id % 2))")
	streamWith("--ddl", "--skip-ddl", m[1])
	// A change that fails on the target stops the apply too; fixed there, the next run runs it.
	target.Exec(t, targetDB, "BEGIN READ WRITE; CREATE TABLE invoices (id int); COMMIT")
	source.Exec(t, sourceDB, "CREATE TABLE invoices (id int PRIMARY KEY, amount numeric); INSERT INTO invoices VALUES (1, 10)")
	select {
	case err = <-exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("migrate did not stop at the change that fails on the target\n%s", out)
	}
	if err == nil || !regexp.MustCompile(`schema change \d+ \(CREATE TABLE by "postgres"\) failed on the target: CREATE TABLE invoices .*already exists.*fix the target so that it can run and run pgleap migrate again`).MatchString(out.String()) {
		t.Fatalf("migrate at the change that fails on the target: %v\n%s", err, out)
	}
	target.Exec(t, targetDB, "BEGIN READ WRITE; DROP TABLE invoices; COMMIT")
	streamWith()
	// A role that is not a superuser: its changes run only once it is trusted.
	source.Exec(t, sourceDB, "SET ROLE "+app+"; CREATE TABLE app_owned (id int PRIMARY KEY); INSERT INTO app_owned VALUES (1)")
	select {
	case err = <-exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("migrate did not stop at the change of a role that is not a superuser\n%s", out)
	}
	if err == nil || !strings.Contains(out.String(), "comes from a role that is not a superuser") || !strings.Contains(out.String(), "--ddl-roles "+app) {
		t.Fatalf("migrate at the change of a role that is not a superuser: %v\n%s", err, out)
	}
	streamWith("--ddl-roles", app)
	want := datatest.Scalar(t, sourceConn, "SELECT pg_current_wal_insert_lsn()::text")
	for deadline := time.Now().Add(90 * time.Second); !lsnAtLeast(t, datatest.Scalar(t, targetConn, "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want); {
		select {
		case err := <-exited:
			t.Fatalf("migrate stopped: %v\n%s", err, out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the changes did not reach the target in 90 s\n%s", out)
		}
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"verify", "--schema"}, conns...)...); code != exitOK {
		t.Errorf("verify --schema: exit %d\n%s%s\nmigrate:\n%s", code, stdout, stderr, out)
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"verify"}, conns...)...); code != exitOK {
		t.Errorf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	if got := datatest.Scalar(t, targetConn, "SELECT count(*) || ' ' || sum(total) FROM purchases"); got != datatest.Scalar(t, sourceConn, "SELECT count(*) || ' ' || sum(total) FROM purchases") {
		t.Errorf("purchases on the target: %s", got)
	}
	if got := datatest.Scalar(t, targetConn, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'app_owned'::regclass"); got != app {
		t.Errorf("the table the role created belongs to %s on the target", got)
	}
	if got := datatest.Scalar(t, targetConn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'customers_name'::regclass"); got != "true" {
		t.Errorf("the index built concurrently on the source is valid on the target: %s", got)
	}
	parity := "SELECT indisvalid || ' ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = 'customers_parity'::regclass"
	if got, want := datatest.Scalar(t, targetConn, parity), datatest.Scalar(t, sourceConn, parity); got != want {
		t.Errorf("the index left invalid on the target, built concurrently on the source: %s, want %s", got, want)
	}
	if got := datatest.Scalar(t, targetConn, "SELECT count(*) FROM pgleap.ddl WHERE skipped IS NOT NULL"); got != "1" {
		t.Errorf("%s schema changes recorded as skipped on the target, want 1", got)
	}
	if code, stdout, _ := pgleap(t, nil, append([]string{"status"}, conns...)...); code != exitOK ||
		!regexp.MustCompile(`schema changes from the source: \d\d run on the target, 1 skipped`).MatchString(stdout) {
		t.Errorf("status: exit %d\n%s", code, stdout)
	}
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 6)
	if code, stdout, stderr := pgleap(t, nil, append([]string{"cleanup"}, conns...)...); code != exitOK || !strings.Contains(stdout, "capture of schema changes") {
		t.Errorf("cleanup: exit %d\n%s%s", code, stdout, stderr)
	}
	if left := datatest.Scalar(t, sourceConn, "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgleap%'") +
		datatest.Scalar(t, sourceConn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgleap_ddl'"); left != "00" {
		t.Errorf("cleanup left the capture on the source (%s)", left)
	}
}
