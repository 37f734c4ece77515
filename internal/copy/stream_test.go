package copy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/ddl"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/schema"
	"github.com/pgleap/pgleap/internal/state"
)

const followFixture = `
CREATE TABLE orders (id bigint PRIMARY KEY, note text);
INSERT INTO orders SELECT g, repeat('o', 200) FROM generate_series(1, 20000) g;
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100) g;
CREATE TABLE measures (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE measures_2026 PARTITION OF measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measures SELECT date '2026-01-01' + g % 300, g FROM generate_series(1, 1000) g;
CREATE UNLOGGED TABLE scratch (id int);
ANALYZE;
`

// TestFollowCopy proves the start of a following migration: a publication of the selected
// tables and a permanent slot exist before the copy, the rows are read at the slot's
// snapshot and record its consistent point, a resumed copy reads at a later snapshot of its
// own and records that, and the slot holds every change made after its start.
func TestFollowCopy(t *testing.T) {
	ctx := context.Background()
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, followFixture)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	copyOpts := Options{Source: sourceConn, Target: targetConn, Jobs: 2, SplitLargerThan: 1 << 20, Follow: true}

	res, err := FullLoad(ctx, schema.Options{Source: sourceConn, Target: targetConn, IndexJobs: 2}, copyOpts)
	if err != nil {
		t.Fatal(err)
	}
	requireSameRows(t, sourceConn, targetConn, 4)
	first := res.Copy
	if first.Slot == "" || first.StreamStartLSN == "" || first.StreamStartLSN != first.SnapshotLSN {
		t.Fatalf("copy result = %+v: want a slot whose start is the copy's snapshot", first)
	}

	sc, tc := source.Conn(t, sourceDB), target.Conn(t, targetDB)
	var temporary bool
	var plugin string
	if err := sc.QueryRow(ctx, "SELECT temporary, plugin FROM pg_replication_slots WHERE slot_name = $1", first.Slot).Scan(&temporary, &plugin); err != nil {
		t.Fatalf("the slot %s is not on the source: %v", first.Slot, err)
	}
	if temporary || plugin != "pgoutput" {
		t.Errorf("slot %s: temporary %v, plugin %s; want a permanent pgoutput slot", first.Slot, temporary, plugin)
	}
	wantPublished := []string{"customers", "measures", "orders"} // through the root, no unlogged table
	if pgtest.SourceMajor() < 13 {
		wantPublished = []string{"customers", "measures_2026", "orders"}
	}
	published := queryStrings(t, sc, "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", first.Publication)
	if !slices.Equal(published, wantPublished) {
		t.Errorf("publication %s publishes %v, want %v", first.Publication, published, wantPublished)
	}
	items, err := state.CopyPlan(ctx, tc)
	if err != nil || len(items) < 4 {
		t.Fatalf("copy plan: %d items, %v; want at least one per table", len(items), err)
	}
	// The slot itself says where it starts: the copy's snapshot is its consistent point.
	var confirmed string
	if err := sc.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", first.Slot).Scan(&confirmed); err != nil ||
		confirmed != first.StreamStartLSN {
		t.Errorf("slot %s starts at %s (%v), the recorded start is %s", first.Slot, confirmed, err, first.StreamStartLSN)
	}
	for _, i := range items {
		if i.SyncLSN.String() != first.StreamStartLSN {
			t.Errorf("%s chunk %d was read at %s, not at the slot's start %s", i.Table, i.Chunk, i.SyncLSN, first.StreamStartLSN)
		}
	}

	// A change after the start: the slot keeps it for streaming.
	source.Exec(t, sourceDB, "INSERT INTO customers VALUES (1000, 'after the copy')")
	// A table to copy again, as after a crash: it is read at a later snapshot of its own.
	err = pgx.BeginFunc(ctx, tc, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "TRUNCATE customers"); err != nil {
			return err
		}
		return state.ResetTable(ctx, tx, "public", "customers")
	})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Run(ctx, copyOpts)
	if err != nil {
		t.Fatal(err)
	}
	if again.Slot != first.Slot || again.StreamStartLSN != first.StreamStartLSN || again.Items != 1 {
		t.Fatalf("resumed copy = %+v; want the same slot and start, one item copied", again)
	}
	requireSameRows(t, sourceConn, targetConn, 4)
	var resynced string
	if err := tc.QueryRow(ctx, "SELECT sync_lsn::text FROM pgleap.copy_item WHERE table_name = 'customers'").Scan(&resynced); err != nil {
		t.Fatal(err)
	}
	if resynced != again.SnapshotLSN || !(lsnAfter(t, sc, resynced, first.StreamStartLSN)) {
		t.Errorf("customers recopied at %s, snapshot %s; want a snapshot after the start %s", resynced, again.SnapshotLSN, first.StreamStartLSN)
	}
	var changes int
	err = sc.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)
		WHERE get_byte(data, 0) = ascii('I')`, first.Slot, first.Publication).Scan(&changes)
	if err != nil || changes != 1 {
		t.Errorf("the slot holds %d inserts after its start (%v), want the one made after the copy", changes, err)
	}

	// The slot gone: the changes since the start are lost, and pgleap says so.
	if _, err := sc.Exec(ctx, "SELECT pg_drop_replication_slot($1)", first.Slot); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, copyOpts); !errors.Is(err, pg.ErrSlotLost) {
		t.Errorf("copy after the slot was dropped = %v, want ErrSlotLost", err)
	}
}

// TestFollowAfterColdCopy: a target loaded without a slot cannot be followed, since the
// changes made in between are nowhere.
func TestFollowAfterColdCopy(t *testing.T) {
	ctx := context.Background()
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, followFixture)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	cold := Options{Source: sourceConn, Target: targetConn, Jobs: 2}
	res, err := FullLoad(ctx, schema.Options{Source: sourceConn, Target: targetConn}, cold)
	if err != nil {
		t.Fatal(err)
	}
	if res.Copy.Slot != "" {
		t.Errorf("a cold copy left slot %s", res.Copy.Slot)
	}
	sc := source.Conn(t, sourceDB)
	if left := queryStrings(t, sc, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"); len(left) > 0 {
		t.Errorf("a cold copy left slots %v on the source", left)
	}
	if left := queryStrings(t, sc, "SELECT pubname FROM pg_publication"); len(left) > 0 {
		t.Errorf("a cold copy left publications %v on the source", left)
	}
	follow := cold
	follow.Follow = true
	if _, err := Run(ctx, follow); !errors.Is(err, ErrColdCopy) {
		t.Errorf("following a cold copy = %v, want ErrColdCopy", err)
	}
}

func queryStrings(t *testing.T, conn *pgx.Conn, sql string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return got
}

func lsnAfter(t *testing.T, conn *pgx.Conn, a, b string) bool {
	t.Helper()
	var after bool
	if err := conn.QueryRow(context.Background(), "SELECT $1::pg_lsn > $2::pg_lsn", a, b).Scan(&after); err != nil {
		t.Fatal(err)
	}
	return after
}

// TestSchemaChangeBetweenDumpAndSlot: with the capture of schema changes, a change
// committed after pg_dump read the schema and before the slot's snapshot is in neither the
// target's schema nor the stream; the copy refuses such a slot.
func TestSchemaChangeBetweenDumpAndSlot(t *testing.T) {
	ctx := context.Background()
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	sourceConn := source.Conn(t, sourceDB)
	if err := ddl.Install(ctx, sourceConn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ddl.Uninstall(context.Background(), source.Conn(t, sourceDB)) })
	targetConn := target.Conn(t, targetDB)
	if err := state.Init(ctx, targetConn); err != nil {
		t.Fatal(err)
	}
	var none int64
	if _, err := state.SaveArchive(ctx, targetConn, []byte("archive"), "test", &none); err != nil {
		t.Fatal(err)
	}
	source.Exec(t, sourceDB, "CREATE TABLE added_after_the_dump (id int)")
	for _, tc := range []struct {
		name string
		want string
	}{{"a change after the dump", "1 schema changes were committed on the source between pg_dump and the creation of the replication slot"}, {"none", ""}} {
		snapshot, err := pg.OpenSlotSnapshot(ctx, source.ConnString(sourceDB), "pgleap_window_test", true)
		if err != nil {
			t.Fatal(err)
		}
		err = checkDDLWindow(ctx, sourceConn, targetConn, snapshot)
		snapshot.Close()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		// The dump is taken to have seen the change: the next slot is fine.
		if _, err := targetConn.Exec(ctx, "UPDATE pgleap.schema_archive SET ddl_captured = 1"); err != nil {
			t.Fatal(err)
		}
	}
}
