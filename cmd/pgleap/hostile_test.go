package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// hostileSchema names its objects the way an attacker, or an unlucky application, would:
// quotes, semicolons, comments, spaces, capitals, non-ASCII, keywords. Every statement pgleap
// builds must quote them; a canary table proves no name was run as SQL.
const hostileSchema = `
CREATE ROLE "bad'role; --" NOLOGIN;
CREATE SCHEMA "we""ird; DROP TABLE canary; --" AUTHORIZATION "bad'role; --";
CREATE TABLE canary (id int PRIMARY KEY);
INSERT INTO canary VALUES (1);
CREATE TABLE "we""ird; DROP TABLE canary; --"."Order Items'); DROP TABLE canary; --" (
  "id; --" bigint PRIMARY KEY,
  "select" text,
  "Ünïcode ✓" numeric,
  "a""b" int
);
CREATE TABLE "we""ird; DROP TABLE canary; --"."no key $1" ("from" text, "to" text);
ALTER TABLE "we""ird; DROP TABLE canary; --"."no key $1" REPLICA IDENTITY FULL;
CREATE SEQUENCE "we""ird; DROP TABLE canary; --"."seq'quote";
INSERT INTO "we""ird; DROP TABLE canary; --"."Order Items'); DROP TABLE canary; --"
  SELECT g, 'row ' || g || ''''';--', g / 7.0, g FROM generate_series(1, 300) g;
INSERT INTO "we""ird; DROP TABLE canary; --"."no key $1" SELECT 'a''' || g, '"b' || g FROM generate_series(1, 50) g;
SELECT setval('"we""ird; DROP TABLE canary; --"."seq''quote"', 42);
`

// TestHostileNames migrates, streams and verifies objects with hostile names: the rows and
// their changes arrive, verify finds both sides equal, and the canary lives on both sides.
func TestHostileNames(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	// Registered first, this runs last: once the databases holding the role's objects are gone.
	t.Cleanup(func() {
		for _, s := range []*pgtest.Server{source, target} {
			datatest.Exec(t, s.ConnString("postgres"), `DROP ROLE IF EXISTS "bad'role; --"`)
		}
	})
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, hostileSchema)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	conns := []string{"--source", sourceConn, "--target", targetConn}

	if code, stdout, stderr := pgleap(t, nil, append([]string{"check"}, conns...)...); code != exitOK {
		t.Fatalf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	migrate, out := startCLI(t, append([]string{"migrate", "--jobs", "2"}, conns...)...)
	waitFor(t, "streaming", func() bool { return datatest.Scalar(t, sourceConn, streamingSQL) == "1" })
	datatest.Exec(t, sourceConn, `
		UPDATE "we""ird; DROP TABLE canary; --"."Order Items'); DROP TABLE canary; --" SET "select" = 'changed'';--', "a""b" = -1 WHERE "id; --" % 10 = 0;
		DELETE FROM "we""ird; DROP TABLE canary; --"."Order Items'); DROP TABLE canary; --" WHERE "id; --" > 290;
		INSERT INTO "we""ird; DROP TABLE canary; --"."Order Items'); DROP TABLE canary; --" VALUES (1000, 'new', 1.5, 1);
		UPDATE "we""ird; DROP TABLE canary; --"."no key $1" SET "to" = 'moved' WHERE "from" = 'a''7';
		DELETE FROM "we""ird; DROP TABLE canary; --"."no key $1" WHERE "from" = 'a''8'`)
	want := datatest.Scalar(t, sourceConn, "SELECT pg_current_wal_insert_lsn()::text")
	waitFor(t, "the changes to arrive", func() bool {
		return lsnAtLeast(t, datatest.Scalar(t, targetConn, "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want)
	})
	code, stdout, stderr := pgleap(t, nil, append([]string{"verify"}, conns...)...)
	if code != exitOK || !strings.Contains(stdout, "source and target hold the same data") {
		t.Errorf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"verify", "--schema"}, conns...)...); code != exitOK {
		t.Errorf("verify --schema: exit %d\n%s%s", code, stdout, stderr)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 3)
	for _, conn := range []string{sourceConn, targetConn} {
		if got := datatest.Scalar(t, conn, "SELECT count(*) FROM canary"); got != "1" {
			t.Errorf("the canary is gone from %s", conn)
		}
	}
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := migrate.Wait(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if code, stdout, stderr := pgleap(t, nil, append([]string{"cleanup"}, conns...)...); code != exitOK {
		t.Errorf("cleanup: exit %d\n%s%s", code, stdout, stderr)
	}
}
