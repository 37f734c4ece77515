package main

import (
	"context"
	"strings"
	"testing"

	datacopy "github.com/pgleap/pgleap/internal/copy"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/schema"
)

// TestCleanupDropsSlotPublicationAndState: after cleanup nothing of the migration is left on
// the source to keep WAL, and the target holds no state; the copied rows stay.
func TestCleanupDropsSlotPublicationAndState(t *testing.T) {
	ctx := context.Background()
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, "CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept SELECT generate_series(1, 10)")
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	res, err := datacopy.FullLoad(ctx, schema.Options{Source: sourceConn, Target: targetConn},
		datacopy.Options{Source: sourceConn, Target: targetConn, Follow: true})
	if err != nil {
		t.Fatal(err)
	}

	sc, tc := source.Conn(t, sourceDB), target.Conn(t, targetDB)
	var slots, publications, states, rows int
	countFootprint := func() {
		t.Helper()
		if err := sc.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()), (SELECT count(*) FROM pg_publication)").
			Scan(&slots, &publications); err != nil {
			t.Fatal(err)
		}
		if err := tc.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgleap'), (SELECT count(*) FROM kept)").Scan(&states, &rows); err != nil {
			t.Fatal(err)
		}
	}
	countFootprint()
	if res.Copy.Slot == "" || slots != 1 || publications != 1 || states != 1 {
		t.Fatalf("before cleanup: slot %q, %d slots, %d publications, %d pgleap schemas; the test needs one of each", res.Copy.Slot, slots, publications, states)
	}

	code, stdout, stderr := pgleap(t, nil, "cleanup", "--source", sourceConn, "--target", targetConn)
	if code != exitOK {
		t.Fatalf("cleanup: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"replication slot " + res.Copy.Slot, "publication " + res.Copy.Publication, "schema pgleap"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("cleanup output does not name %q:\n%s", want, stdout)
		}
	}
	countFootprint()
	if slots+publications+states != 0 || rows != 10 {
		t.Errorf("after cleanup: %d slots, %d publications, %d pgleap schemas, %d rows kept; want 0, 0, 0, 10", slots, publications, states, rows)
	}

	code, stdout, _ = pgleap(t, nil, "cleanup", "--source", sourceConn, "--target", targetConn)
	if code != exitOK || !strings.Contains(stdout, "nothing to clean up") {
		t.Errorf("second cleanup: exit %d\n%s", code, stdout)
	}
}
