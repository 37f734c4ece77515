package ddl

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tt := range []struct {
		name, sql string
		want      []string
	}{
		{"one", "ALTER TABLE t ADD c int", []string{"ALTER TABLE t ADD c int"}},
		{"several", "ALTER TABLE t ADD c int; UPDATE t SET c = 1;\nCREATE INDEX ON t (c);", []string{"ALTER TABLE t ADD c int", "UPDATE t SET c = 1", "CREATE INDEX ON t (c)"}},
		{"quotes", `INSERT INTO "a;b" VALUES ('x;y', 'it''s;'); SELECT 1`, []string{`INSERT INTO "a;b" VALUES ('x;y', 'it''s;')`, "SELECT 1"}},
		{"E string", `SELECT E'a\';b'; SELECT 2`, []string{`SELECT E'a\';b'`, "SELECT 2"}},
		{"dollar quotes", "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql; DO $$ BEGIN PERFORM 1; END $$",
			[]string{"CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql", "DO $$ BEGIN PERFORM 1; END $$"}},
		{"parameters are not dollar quotes", "SELECT $1; SELECT $2", []string{"SELECT $1", "SELECT $2"}},
		{"comments", "-- a; b\nSELECT 1 /* c; /* nested; */ d; */; -- trailing;", []string{"-- a; b\nSELECT 1 /* c; /* nested; */ d; */"}},
		{"empty", " ; ;\n", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Split(tt.sql); !slices.Equal(got, tt.want) {
				t.Errorf("Split(%q) = %q, want %q", tt.sql, got, tt.want)
			}
		})
	}
}

func TestStatement(t *testing.T) {
	for _, tt := range []struct {
		name, query, tag string
		objects          []string
		from             int
		want             string
		wantNext         int
	}{
		{"alone", "ALTER TABLE t ADD c int", "ALTER TABLE", []string{"t"}, 0, "ALTER TABLE t ADD c int", 1},
		{"after a write", "INSERT INTO t VALUES (1); ALTER TABLE t ADD c int", "ALTER TABLE", []string{"t"}, 0, "ALTER TABLE t ADD c int", 2},
		{"the second of two", "ALTER TABLE a ADD c int; ALTER TABLE b ADD c int", "ALTER TABLE", []string{"b"}, 1, "ALTER TABLE b ADD c int", 2},
		{"by its object", "ALTER TABLE a ADD c int; ALTER TABLE b ADD c int", "ALTER TABLE", []string{"b"}, 0, "ALTER TABLE b ADD c int", 2},
		{"unique index", "create unique index on t (c)", "CREATE INDEX", []string{"t_c_idx", "t"}, 0, "create unique index on t (c)", 1},
		{"or replace", "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", "CREATE FUNCTION", nil, 0, "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", 1},
		{"table as", "CREATE TABLE t2 AS SELECT * FROM t", "CREATE TABLE AS", []string{"t2"}, 0, "CREATE TABLE t2 AS SELECT * FROM t", 1},
		{"table as with columns", "CREATE TABLE t2 (a, b) AS SELECT 1, 2", "CREATE TABLE AS", []string{"t2"}, 0, "CREATE TABLE t2 (a, b) AS SELECT 1, 2", 1},
		{"a table named index", "CREATE TABLE index (id int); CREATE INDEX ON index (id)", "CREATE INDEX", []string{"index_id_idx", "index"}, 0, "CREATE INDEX ON index (id)", 2},
		{"a temporary table records nothing", "CREATE TEMP TABLE tmp (id int); CREATE TABLE real (id int)", "CREATE TABLE", []string{"real"}, 0, "CREATE TABLE real (id int)", 2},
		{"an IF EXISTS that found nothing", "DROP TABLE IF EXISTS gone; DROP TABLE keep", "DROP TABLE", []string{"keep", "keep_pkey"}, 0, "DROP TABLE keep", 2},
		{"a quoted name", `ALTER TABLE "Sales"."Order" ADD c int`, "ALTER TABLE", []string{"Order"}, 0, `ALTER TABLE "Sales"."Order" ADD c int`, 1},
		{"default privileges", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r", "ALTER DEFAULT PRIVILEGES", nil, 0, "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r", 1},
		{"comment first", "/* migration 42 */ ALTER TABLE t DROP c", "ALTER TABLE", []string{"t"}, 0, "/* migration 42 */ ALTER TABLE t DROP c", 1},
		{"inside a DO block", "DO $$ BEGIN EXECUTE 'ALTER TABLE t ADD c int'; END $$", "ALTER TABLE", []string{"t"}, 0, "", 0},
		{"inside a function", "SELECT add_column()", "ALTER TABLE", []string{"t"}, 0, "", 0},
		{"inside a function, before a statement of the same tag", "SELECT make_y(); CREATE TABLE x (id int)", "CREATE TABLE", []string{"y"}, 0, "", 0},
		{"materialized view is not a view", "CREATE MATERIALIZED VIEW v AS SELECT 1", "CREATE VIEW", []string{"v"}, 0, "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, next, ok := Statement(Split(tt.query), tt.tag, tt.objects, tt.from)
			if got != tt.want || next != tt.wantNext || ok != (tt.want != "") {
				t.Errorf("Statement(%q, %q, %q, %d) = %q, %d, %v; want %q, %d", tt.query, tt.tag, tt.objects, tt.from, got, next, ok, tt.want, tt.wantNext)
			}
		})
	}
}

func TestObjectNames(t *testing.T) {
	got := ObjectNames([]string{"sequence\tpublic\tpublic.t_id_seq", "table\tpublic\tpublic.t", "schema\t\textra", "function\tpublic\tpublic.f(integer)", "table\tpublic\tpublic.t", "\t\t"})
	if want := []string{"t_id_seq", "t", "extra"}; !slices.Equal(got, want) {
		t.Errorf("ObjectNames = %q, want %q", got, want)
	}
}

func TestConcurrent(t *testing.T) {
	for stmt, want := range map[string]bool{
		"CREATE INDEX CONCURRENTLY i ON t (c)":                      true,
		"create unique index concurrently if not exists i on t (c)": true,
		"DROP INDEX CONCURRENTLY i":                                 true,
		"ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY":            true,
		"CREATE INDEX i ON t (c)":                                   false,
		"ALTER TABLE t ADD COLUMN concurrently int":                 false,
		"COMMENT ON TABLE t IS 'built CONCURRENTLY on the source'":  false,
	} {
		if got := Concurrent(stmt); got != want {
			t.Errorf("Concurrent(%q) = %v, want %v", stmt, got, want)
		}
	}
}

func TestParseObject(t *testing.T) {
	for _, tt := range []struct{ object, kind, schema, name string }{
		{"table\tpublic\tpublic.orders", "table", "public", "orders"},
		{"table\tSales\t\"Sales\".\"order.lines\"", "table", "Sales", "order.lines"},
		{"index\tpublic\tpublic.orders_pkey", "index", "public", "orders_pkey"},
		{"schema\t\t\"Archive\"", "schema", "Archive", ""},
		{"function\tpublic\tpublic.total(integer, text)", "function", "public", ""},
		{"table column\tpublic\tpublic.orders.note", "table column", "public", "note"},
	} {
		kind, schema, name := ParseObject(tt.object)
		if kind != tt.kind || schema != tt.schema || name != tt.name {
			t.Errorf("ParseObject(%q) = %q, %q, %q; want %q, %q, %q", tt.object, kind, schema, name, tt.kind, tt.schema, tt.name)
		}
	}
}

func TestFillsRowsItsOwnWay(t *testing.T) {
	for stmt, want := range map[string]bool{
		"ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now()":           true,
		"alter table t add column at timestamptz not null default Now ()": true,
		"ALTER TABLE t ADD COLUMN id uuid DEFAULT gen_random_uuid()":      true,
		"ALTER TABLE t ADD COLUMN n bigserial":                            true,
		"ALTER TABLE t ADD COLUMN n int GENERATED ALWAYS AS IDENTITY":     true,
		"ALTER TABLE t ADD COLUMN total numeric DEFAULT 0":                false,
		"ALTER TABLE t ADD COLUMN note text":                              false,
		"ALTER TABLE t ALTER COLUMN at SET DEFAULT now()":                 false,
		"CREATE TABLE t (at timestamptz DEFAULT now())":                   false,
	} {
		if got := FillsRowsItsOwnWay(stmt); got != want {
			t.Errorf("FillsRowsItsOwnWay(%q) = %v, want %v", stmt, got, want)
		}
	}
}
