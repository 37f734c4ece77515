package catalog

import (
	"context"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestTables(t *testing.T) {
	s := pgtest.Shared(t, pgtest.SourceMajor())
	db := s.CreateDatabase(t)
	s.Exec(t, db, `
		CREATE EXTENSION hstore;
		CREATE SCHEMA "Sales";
		CREATE TABLE "Sales"."Orders" (id bigint PRIMARY KEY, amount numeric, tags hstore, at timestamptz[]);
		CREATE TABLE keyless (code text NOT NULL, note text COLLATE "C");
		CREATE UNIQUE INDEX keyless_code ON keyless (code);
		CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
		CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		INSERT INTO keyless SELECT g::text FROM generate_series(1, 1000) g;
		ANALYZE keyless`)
	conn := s.Conn(t, db)
	tables, err := Tables(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Table{}
	for _, tb := range tables {
		byName[tb.QualifiedName()] = tb
	}
	if len(tables) != 4 {
		t.Fatalf("got %d tables, want 4 (hstore owns none): %v", len(tables), byName)
	}
	orders := byName[`"Sales"."Orders"`]
	if orders.PrimaryKey != "Orders_pkey" || orders.IntegerKey != "id" || !orders.CanSelect || !orders.OwnedByCaller || orders.RowEstimate != -1 {
		t.Errorf("Orders = %+v", orders)
	}
	wantColumns := []Column{
		{Name: "id", Type: "bigint", BaseType: "int8", BaseTypeSchema: "pg_catalog", BaseTypeKind: "b"},
		{Name: "amount", Type: "numeric", BaseType: "numeric", BaseTypeSchema: "pg_catalog", BaseTypeKind: "b", Unconstrained: true},
		{Name: "tags", Type: "hstore", BaseType: "hstore", BaseTypeSchema: "public", BaseTypeKind: "b"},
		{Name: "at", Type: "timestamp with time zone[]", BaseType: "timestamptz", BaseTypeSchema: "pg_catalog", BaseTypeKind: "b"},
	}
	if len(orders.Columns) != len(wantColumns) {
		t.Fatalf("Orders columns = %+v", orders.Columns)
	}
	for i, want := range wantColumns {
		if orders.Columns[i] != want {
			t.Errorf("column %d = %+v, want %+v", i, orders.Columns[i], want)
		}
	}
	keyless := byName[`"public"."keyless"`]
	if keyless.PrimaryKey != "" || keyless.IntegerKey != "" || keyless.DataBytes == 0 || keyless.DataBytes >= keyless.Bytes || keyless.CandidateKey != "keyless_code" || keyless.RowEstimate != 1000 || keyless.Bytes == 0 {
		t.Errorf("keyless = %+v", keyless)
	}
	if keyless.Columns[1].Collation != `"pg_catalog"."C"` {
		t.Errorf("keyless.note collation = %q", keyless.Columns[1].Collation)
	}
	if p := byName[`"public"."events_2026"`]; p.PartitionOf != `"public"."events"` || p.Kind != KindTable {
		t.Errorf("partition = %+v", p)
	}
	if p := byName[`"public"."events"`]; p.Kind != KindPartitioned || p.PartitionOf != "" {
		t.Errorf("partitioned parent = %+v", p)
	}
}

func TestPartitionRoots(t *testing.T) {
	tables := []Table{
		{Schema: "public", Name: "m"},
		{Schema: "public", Name: "m_2026", PartitionOf: `"public"."m"`},
		{Schema: "public", Name: "m_2026_q1", PartitionOf: `"public"."m_2026"`},
		{Schema: "public", Name: "plain"},
	}
	got := PartitionRoots(tables)
	want := map[string]string{`"public"."m_2026"`: `"public"."m"`, `"public"."m_2026_q1"`: `"public"."m"`}
	if len(got) != len(want) {
		t.Fatalf("PartitionRoots = %v, want %v", got, want)
	}
	for leaf, root := range want {
		if got[leaf] != root {
			t.Errorf("root of %s = %q, want %q", leaf, got[leaf], root)
		}
	}
}
