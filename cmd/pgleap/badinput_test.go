package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
	"github.com/pgleap/pgleap/internal/state"
)

// TestMigrateRefusesBadInput: each mistake stops pgleap migrate with one line that says what
// to do, exit 2, and nothing changed on either server.
func TestMigrateRefusesBadInput(t *testing.T) {
	older, newer := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB := older.CreateDatabase(t)
	older.Exec(t, sourceDB, "CREATE TABLE orders (id int PRIMARY KEY, total numeric)")
	sourceConn := older.ConnString(sourceDB)
	// Another tool's slot and publication on the source, which pgleap must not take over.
	takenSlot, takenPublication := fmt.Sprintf("other_tool_%d", older.Port), "other_tool_publication"
	older.Exec(t, sourceDB, "SELECT pg_create_logical_replication_slot('"+takenSlot+"', 'pgoutput'); CREATE PUBLICATION "+takenPublication+" FOR TABLE orders")
	t.Cleanup(func() { older.Exec(t, sourceDB, "SELECT pg_drop_replication_slot('"+takenSlot+"')") })
	emptyTarget := newer.CreateDatabase(t)
	usedTarget := newer.CreateDatabase(t)
	newer.Exec(t, usedTarget, "CREATE TABLE invoices (id int PRIMARY KEY)")
	newerSource := newer.CreateDatabase(t)
	newer.Exec(t, newerSource, "CREATE TABLE orders (id int PRIMARY KEY)")
	olderTarget := older.CreateDatabase(t)
	badConfig := filepath.Join(t.TempDir(), "pgleap.yaml")
	if err := os.WriteFile(badConfig, []byte("source: host=a\ntarget: host=b\nbogus_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name           string
		source, target string
		args           []string
		hold           string // a connection string on which a running migrate's lock is held first
		want           []string
	}{
		{name: "same database", source: sourceConn, target: sourceConn, want: []string{"--source and --target are the same database", "point --target"}},
		{name: "target older than source", source: newer.ConnString(newerSource), target: older.ConnString(olderTarget),
			want: []string{"older than the source", "use a target of the same or a newer major"}},
		{name: "target not empty", source: sourceConn, target: newer.ConnString(usedTarget),
			want: []string{"already holds relations", `"public"."invoices"`, "new, empty database"}},
		{name: "selection matches nothing", source: sourceConn, target: newer.ConnString(emptyTarget), args: []string{"--include", "archive.*"},
			want: []string{"matches none of the source's 1 tables", "archive.*", "fix --include"}},
		{name: "a second migrate", source: sourceConn, target: newer.ConnString(emptyTarget), hold: newer.ConnString(emptyTarget),
			want: []string{"another pgleap migrate is running against the target", "server process", "stop it first"}},
		{name: "slot name in use", source: sourceConn, target: newer.ConnString(emptyTarget), args: []string{"--slot-name", takenSlot},
			want: []string{"replication slot " + takenSlot + " already exists on the source (inactive, keeping", "choose another --slot-name", "pg_drop_replication_slot('" + takenSlot + "')"}},
		{name: "publication name in use", source: sourceConn, target: newer.ConnString(emptyTarget), args: []string{"--publication-name", takenPublication},
			want: []string{"publication " + takenPublication + " already exists on the source", "choose another --publication-name", `DROP PUBLICATION "` + takenPublication + `"`}},
		{name: "invalid pgleap.yaml", args: []string{"--config", badConfig}, want: []string{"pgleap.yaml", "line 3", "bogus_key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.hold != "" {
				holder := datatest.Connect(t, tt.hold)
				if _, err := holder.Exec(context.Background(), "SELECT pg_advisory_lock($1)", state.MigrateLock); err != nil {
					t.Fatal(err)
				}
			}
			databases := []serverDB{{older, sourceDB}, {older, olderTarget}, {newer, emptyTarget}, {newer, usedTarget}, {newer, newerSource}}
			before := serversFingerprint(t, databases...)
			args := append([]string{"migrate"}, tt.args...)
			if tt.source != "" {
				args = append(args, "--source", tt.source, "--target", tt.target)
			}
			code, stdout, stderr := pgleap(t, nil, args...)
			if code != exitCannotRun || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, want %d, with one line on stderr:\n%s%s", code, exitCannotRun, stdout, stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not say %q: %s", want, stderr)
				}
			}
			if after := serversFingerprint(t, databases...); after != before {
				t.Errorf("a server changed: %s before, %s after", before, after)
			}
		})
	}
}

type serverDB struct {
	server *pgtest.Server
	db     string
}

// serversFingerprint is the catalog fingerprint of each database (which covers its server's
// slots, roles and settings too) and the list of each server's databases.
func serversFingerprint(t *testing.T, databases ...serverDB) string {
	t.Helper()
	var b strings.Builder
	for _, d := range databases {
		b.WriteString(fingerprint(t, d.server, d.db) + " " +
			datatest.Scalar(t, d.server.ConnString(d.db), "SELECT count(*) FROM pg_database") + "; ")
	}
	return b.String()
}
