package cdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

func TestPrefetchStatement(t *testing.T) {
	tests := []struct {
		name       string
		rel        *Relation
		types      map[string]string
		keys       [][]Value // each row's values, key columns set
		wantSQL    string
		wantParams string
	}{
		{
			name:       "one key column",
			rel:        &Relation{Schema: "public", Name: "t", Columns: []Column{{Name: "id", Key: true}, {Name: "a"}}},
			types:      map[string]string{"id": "bigint", "a": "text"},
			keys:       [][]Value{textValues("1", ""), textValues("2", "")},
			wantSQL:    `SELECT count(t.ctid) FROM "public"."t" t WHERE t."id" = ANY (ARRAY(SELECT v.k0::bigint FROM unnest($1::text[]) AS v(k0)))`,
			wantParams: `{"1","2"}`,
		},
		{
			name: "a key of two columns, names that need quotes",
			rel: &Relation{Schema: "Sales", Name: "by region", Columns: []Column{
				{Name: "v"}, {Name: "Region", Key: true}, {Name: "id", Key: true}}},
			types:      map[string]string{"v": "integer", "Region": "text", "id": "integer"},
			keys:       [][]Value{textValues("", `east "1"`, "7")},
			wantSQL:    `SELECT count(t.ctid) FROM "Sales"."by region" t, unnest($1::text[], $2::text[]) AS v(k0, k1) WHERE t."Region" = v.k0::text AND t."id" = v.k1::integer`,
			wantParams: `{"east \"1\""} {"7"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := keysStatement(t, tt.rel, tt.types, tt.keys)
			if st.sql != tt.wantSQL {
				t.Errorf("sql:\n got %s\nwant %s", st.sql, tt.wantSQL)
			}
			if got := string(bytes.Join(st.params, []byte(" "))); got != tt.wantParams {
				t.Errorf("parameters: %s, want %s", got, tt.wantParams)
			}
			if st.rows != int64(len(tt.keys)) {
				t.Errorf("rows %d, want %d", st.rows, len(tt.keys))
			}
		})
	}
	rel := &Relation{Schema: "public", Name: "t", Columns: []Column{{Name: "id", Key: true}, {Name: "gone"}}}
	if _, err := prefetchStatement(rel, map[string]string{"id": "integer"}, nil); err == nil || !strings.Contains(err.Error(), `"gone"`) {
		t.Errorf("a column missing on the target: %v, want an error naming it", err)
	}
}

// TestPrefetchRead reads rows ahead on a real target: it counts the rows that exist, reads
// their heap pages (no index-only scan, even on a table whose pages are all visible), for
// keys of one column and of two, and gives up quietly on a table another session holds.
func TestPrefetchRead(t *testing.T) {
	target := pgtest.Shared(t, pgtest.TargetMajor())
	db := target.CreateDatabase(t)
	datatest.Exec(t, target.ConnString(db), `CREATE TABLE accounts (id int PRIMARY KEY, balance int, filler text);
		INSERT INTO accounts SELECT g, 0, repeat('x', 80) FROM generate_series(1, 100000) g;
		CREATE TABLE stock (shop text, item int, n int, PRIMARY KEY (shop, item));
		INSERT INTO stock SELECT 'shop ' || g % 7, g, 1 FROM generate_series(1, 100000) g`)
	datatest.Exec(t, target.ConnString(db), `VACUUM ANALYZE accounts, stock`) // every page all-visible
	ctx := context.Background()
	p := prefetchSession(t, target.Conn(t, db))
	prefetchConn := p.conn

	tests := []struct {
		name  string
		rel   *Relation
		types map[string]string
		keys  [][]Value
	}{
		{"a key of one column", &Relation{Schema: "public", Name: "accounts", Columns: []Column{{Name: "id", Key: true}, {Name: "balance"}, {Name: "filler"}}},
			map[string]string{"id": "integer", "balance": "integer", "filler": "text"},
			[][]Value{textValues("5", "", ""), textValues("50000", "", ""), textValues("99999", "", ""), textValues("100001", "", "")}},
		{"a key of two columns", &Relation{Schema: "public", Name: "stock", Columns: []Column{{Name: "shop", Key: true}, {Name: "item", Key: true}, {Name: "n"}}},
			map[string]string{"shop": "text", "item": "integer", "n": "integer"},
			[][]Value{textValues("shop 5", "5", ""), textValues("shop 0", "50001", ""), textValues("shop 4", "99999", ""), textValues("shop 1", "2", "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := keysStatement(t, tt.rel, tt.types, tt.keys)
			if got, err := p.read(ctx, st); err != nil || got != 3 {
				t.Fatalf("read = %d, %v; want the 3 rows that exist", got, err)
			}
			// The bitmap heap scan's buffers include its index scan's: more means heap pages read.
			heap, index := explainBuffers(t, prefetchConn, st)
			if heap <= index {
				t.Errorf("the prefetch must read the heap pages with a bitmap scan: heap scan %d buffers, index scan %d", heap, index)
			}

			// A TRUNCATE of the apply session, not committed yet, holds the table.
			holder, err := target.Conn(t, db).Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Rollback(ctx)
			if _, err := holder.Exec(ctx, "TRUNCATE "+tt.rel.QualifiedName()); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if got, err := p.read(ctx, st); err != nil || got != 0 {
				t.Errorf("read of a held table = %d, %v; want 0 and no error", got, err)
			}
			if waited := time.Since(start); waited > 5*time.Second {
				t.Errorf("read of a held table waited %s for its lock", waited)
			}
		})
	}
}

// TestPrefetchDrop: once the apply is about to lock what the prefetcher may read, the
// prefetcher takes nothing more for the group, and a statement it runs is cancelled.
func TestPrefetchDrop(t *testing.T) {
	target := pgtest.Shared(t, pgtest.TargetMajor())
	p := prefetchSession(t, target.Conn(t, "postgres"))
	conn := p.conn
	if !p.takes(3) {
		t.Fatal("a fresh prefetcher takes nothing")
	}
	p.drop(3)
	if p.takes(3) || p.takes(2) || !p.takes(4) {
		t.Errorf("after drop(3): takes(2) %v, takes(3) %v, takes(4) %v; want false, false, true", p.takes(2), p.takes(3), p.takes(4))
	}
	p.drop(1) // never back
	if p.takes(3) {
		t.Error("drop(1) after drop(3) lets group 3 be read again")
	}

	ctx := context.Background()
	if _, err := conn.Exec(ctx, "SET statement_timeout = 0"); err != nil {
		t.Fatal(err)
	}
	p.reading.Store(true)
	ended := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "SELECT pg_sleep(60)"); ended <- err }()
	waitRunning(t, target.ConnString("postgres"), "SELECT pg_sleep(60)")
	p.drop(5)
	select {
	case err := <-ended:
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "57014" {
			t.Errorf("the running statement ended with %v, want it cancelled (57014)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("drop did not cancel the running statement")
	}
}

// keysStatement is the prefetch statement of rows to update at keys.
func keysStatement(t *testing.T, rel *Relation, types map[string]string, keys [][]Value) statement {
	t.Helper()
	var rows []*netRow
	for _, k := range keys {
		rows = append(rows, &netRow{op: netUpdate, key: k})
	}
	st, err := prefetchStatement(rel, types, rows)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// prefetchSession starts a prefetcher on the database of conn, with nothing offered to it:
// the test runs its statements.
func prefetchSession(t *testing.T, conn *pgx.Conn) *prefetcher {
	t.Helper()
	ctx := context.Background()
	p, err := startPrefetcher(ctx, conn.Config(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(ctx) })
	return p
}

// explainBuffers runs a prefetch statement under EXPLAIN ANALYZE and returns the buffers
// its bitmap heap scan and the bitmap index scan under it touched (zero for a node the plan
// does not have).
func explainBuffers(t *testing.T, conn *pgx.Conn, st statement) (heap, index int64) {
	t.Helper()
	result := conn.PgConn().ExecParams(context.Background(), "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+st.sql, st.params, nil, nil, nil).Read()
	if result.Err != nil {
		t.Fatalf("explain %s: %v", st.sql, result.Err)
	}
	type node struct {
		NodeType string `json:"Node Type"`
		Hit      int64  `json:"Shared Hit Blocks"`
		Read     int64  `json:"Shared Read Blocks"`
		Plans    []node
	}
	var plans []struct{ Plan node }
	if err := json.Unmarshal(result.Rows[0][0], &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain: %v\n%s", err, result.Rows[0][0])
	}
	var walk func(n node)
	walk = func(n node) {
		switch n.NodeType {
		case "Bitmap Heap Scan":
			heap = n.Hit + n.Read
		case "Bitmap Index Scan":
			index = n.Hit + n.Read
		}
		for _, child := range n.Plans {
			walk(child)
		}
	}
	walk(plans[0].Plan)
	if heap == 0 {
		t.Errorf("the prefetch is not a bitmap heap scan, which reads ahead:\n%s", result.Rows[0][0])
	}
	return heap, index
}

// TestStreamReadsAhead: a transaction that updates and deletes many rows of a table keyed by
// one column, or by two, has their rows read ahead by the prefetch session, and the target
// ends with the source's rows.
func TestStreamReadsAhead(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	tests := []struct{ name, fixture, changes string }{
		{"a key of one column", `CREATE TABLE accounts (id int PRIMARY KEY, balance int, filler text);
			INSERT INTO accounts SELECT g, 0, repeat('x', 80) FROM generate_series(1, 50000) g`,
			`BEGIN; UPDATE accounts SET balance = balance + id % 13; DELETE FROM accounts WHERE id % 10 = 0; COMMIT`},
		{"a key of two columns", `CREATE TABLE stock (shop text, item int, n int, PRIMARY KEY (shop, item));
			INSERT INTO stock SELECT 'shop ' || g % 7, g, 1 FROM generate_series(1, 50000) g`,
			`BEGIN; UPDATE stock SET n = n + 1 WHERE item % 2 = 0; DELETE FROM stock WHERE item % 5 = 0; COMMIT`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sourceConn, targetConn := followedPair(t, source, target, tt.fixture+"; ANALYZE")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := startStream(t, ctx, sourceConn, targetConn)
			datatest.Exec(t, sourceConn, tt.changes)
			waitCaughtUp(t, sourceConn, targetConn, done)
			cancel()
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			datatest.RequireSameRows(t, sourceConn, targetConn, 1)
			if r.Prefetched == 0 {
				t.Errorf("no row was read ahead of the apply (%d changes applied)", r.Changes)
			}
		})
	}
}
