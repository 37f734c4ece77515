package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestSeveralDatabases migrates two of a cluster's three databases in one pgleap migrate
// --databases: of different sizes, one with a table without a key; the target databases
// are created with the source's encoding and locale. Writes go on in both while they
// stream; then verify, cutover (one freeze for both) and rollback run over both, and every
// row is where it must be. The third database is left alone.
func TestSeveralDatabases(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	shop, crm, logs := fmt.Sprintf("md_shop_%d", source.Port), fmt.Sprintf("md_crm_%d", source.Port), fmt.Sprintf("md_logs_%d", source.Port)
	t.Cleanup(func() {
		for _, srv := range []*pgtest.Server{source, target} {
			conn, err := pg.Connect(context.Background(), pg.Source, srv.ConnString("postgres"))
			if err != nil {
				continue
			}
			for _, db := range []string{shop, crm, logs} {
				conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
			}
			conn.Close(context.Background())
		}
	})
	// crm's encoding differs from the target's default (UTF8): a database created with
	// the target's defaults would show.
	for db, locale := range map[string]string{shop: "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'", crm: "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'", logs: ""} {
		source.Exec(t, "postgres", "CREATE DATABASE "+db+" TEMPLATE template0 "+locale)
	}
	source.Exec(t, shop, `CREATE TABLE orders (id int PRIMARY KEY, total numeric, placed timestamptz DEFAULT now());
		INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 20000) g;
		CREATE SEQUENCE invoice_number`)
	source.Exec(t, crm, `CREATE TABLE contacts (id int PRIMARY KEY, name text);
		INSERT INTO contacts SELECT g, 'contact ' || g FROM generate_series(1, 300) g;
		CREATE TABLE notes (contact_id int, body text);
		ALTER TABLE notes REPLICA IDENTITY FULL;
		INSERT INTO notes SELECT g % 300, 'note ' || g FROM generate_series(1, 500) g`)
	source.Exec(t, logs, "CREATE TABLE lines (id int PRIMARY KEY)")
	server := func(s *pgtest.Server) string {
		return strings.Replace(s.ConnString("postgres"), "dbname=postgres", "", 1)
	}
	conns := []string{"--source", server(source), "--target", server(target), "--databases", shop + "," + crm}

	if code, stdout, stderr := pgleap(t, nil, append([]string{"check"}, conns...)...); code == exitCannotRun ||
		!strings.Contains(stderr, shop+": not on the target yet: pgleap migrate creates it") {
		t.Fatalf("check before migrate: exit %d\n%s%s", code, stdout, stderr)
	}
	migrate, out := startCLI(t, append([]string{"migrate", "--jobs", "2"}, conns...)...)
	exited := make(chan error, 1)
	go func() { exited <- migrate.Wait() }()
	streaming := func(db string) bool {
		return datatest.Scalar(t, source.ConnString(db), "SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND active") == "1" &&
			datatest.Scalar(t, target.ConnString(db), "SELECT CASE WHEN to_regclass('pgleap.migration') IS NULL THEN '' ELSE (SELECT phase FROM pgleap.migration) END") == "streaming"
	}
	for deadline := time.Now().Add(90 * time.Second); !streaming(shop) || !streaming(crm); time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("migrate stopped: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two databases do not stream after 90 s\n%s", out)
		}
	}
	if got := datatest.Scalar(t, target.ConnString("postgres"), "SELECT string_agg(datname || ' ' || pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype, ', ' ORDER BY datname) FROM pg_database WHERE datname LIKE 'md\\_%'"); got != crm+" LATIN1 C C, "+shop+" UTF8 C C" {
		t.Errorf("databases created on the target: %s", got)
	}
	source.Exec(t, shop, "UPDATE orders SET total = total + 1 WHERE id <= 500; INSERT INTO orders (id, total) VALUES (30000, 1); SELECT nextval('invoice_number')")
	source.Exec(t, crm, "UPDATE notes SET body = body || '!' WHERE contact_id < 10; DELETE FROM contacts WHERE id = 7; INSERT INTO notes VALUES (1, 'late')")
	for _, db := range []string{shop, crm} {
		want := datatest.Scalar(t, source.ConnString(db), "SELECT pg_current_wal_insert_lsn()::text")
		waitFor(t, "the changes of "+db, func() bool {
			return lsnAtLeast(t, datatest.Scalar(t, target.ConnString(db), "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want)
		})
	}
	// Each database's check finds its own migration on the target.
	if code, stdout, stderr := pgleap(t, nil, append([]string{"check"}, conns...)...); code == exitCannotRun ||
		!regexp.MustCompile(`(?m)^`+shop+`: +target\.migration_state`).MatchString(stdout) || !regexp.MustCompile(`(?m)^`+crm+`: +target\.migration_state`).MatchString(stdout) {
		t.Errorf("check during the migration: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"verify"}, conns...)...); code != exitOK {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"status"}, conns...)...); code != exitOK || !strings.Contains(stdout, crm+": ") {
		t.Errorf("status: exit %d\n%s%s", code, stdout, stderr)
	}
	// One database not ready (a transaction open too long on crm): neither is cut over,
	// and shop, whatever step it had reached, takes writes on the old server again.
	long := source.Conn(t, crm)
	if _, err := long.Exec(context.Background(), "BEGIN; SELECT txid_current()"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	code, stdout, stderr := pgleap(t, nil, append([]string{"cutover", "--long-transaction", "1s"}, conns...)...)
	if _, err := long.Exec(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if code == exitOK {
		t.Fatalf("cutover with crm not ready: exit 0\n%s%s", stdout, stderr)
	}
	for _, db := range []string{shop, crm} {
		if phase := datatest.Scalar(t, target.ConnString(db), "SELECT phase FROM pgleap.migration"); phase != "streaming" {
			t.Errorf("%s after a cutover refused for crm: phase %s, want streaming\n%s%s", db, phase, stdout, stderr)
		}
	}
	source.Exec(t, shop, "INSERT INTO orders (id, total) VALUES (30002, 3)")

	code, stdout, stderr = pgleap(t, nil, append([]string{"cutover", "--verify", "full"}, conns...)...)
	if code != exitOK || strings.Count(stdout, "wait for the other databases' freezes") != 2 ||
		!regexp.MustCompile(`writes paused on the 2 databases together for \d+ ms`).MatchString(stdout) {
		t.Fatalf("cutover: exit %d\n%s%s\nmigrate:\n%s", code, stdout, stderr, out)
	}
	// The new servers take the writes, and stream them back.
	target.Exec(t, shop, "INSERT INTO orders (id, total) VALUES (30001, 2); SELECT setval('invoice_number', 500)")
	target.Exec(t, crm, "INSERT INTO notes VALUES (2, 'on the new server')")
	for _, db := range []string{shop, crm} {
		want := datatest.Scalar(t, target.ConnString(db), "SELECT pg_current_wal_insert_lsn()::text")
		waitFor(t, "the changes of "+db+" back", func() bool {
			return lsnAtLeast(t, datatest.Scalar(t, source.ConnString(db), "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want)
		})
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"rollback", "--verify", "full"}, conns...)...); code != exitOK {
		t.Fatalf("rollback: exit %d\n%s%s\nmigrate:\n%s", code, stdout, stderr, out)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("migrate: %v\n%s", err, out)
		}
	case <-time.After(60 * time.Second):
		migrate.Process.Signal(syscall.SIGINT)
		t.Errorf("migrate did not end after the rollback\n%s", out)
	}
	for _, db := range []string{shop, crm} {
		datatest.RequireSameRows(t, source.ConnString(db), target.ConnString(db), 1)
	}
	if got := datatest.Scalar(t, source.ConnString(shop), "SELECT last_value FROM invoice_number"); got != "500" {
		t.Errorf("the sequence on the old server after the rollback: %s, want 500", got)
	}
	if got := datatest.Scalar(t, target.ConnString("postgres"), "SELECT count(*) FROM pg_database WHERE datname = '"+logs+"'"); got != "0" {
		t.Errorf("the database left out reached the target")
	}
}
