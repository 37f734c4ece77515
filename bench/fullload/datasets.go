package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pgtest"
)

func datasetNames() []string { return []string{"pgbench", "multi"} }

// dataset is one source database and what a complete copy of it must hold.
type dataset struct {
	name   string
	detail string // how it was built, for the report
	size   int64  // bytes on the source
	want   snapshot
}

// buildDataset creates database name on the source, fills it, and vacuums and analyzes it so
// that every tool reads the same settled state (hint bits set, visibility map built).
func (b *bench) buildDataset(ctx context.Context, name string) (*dataset, error) {
	ds := &dataset{name: name}
	b.log.Info("build dataset", "name", name)
	err := createDatabase(ctx, b.source, name)
	if err == nil {
		switch name {
		case "pgbench":
			ds.detail, err = b.fillPgbench(ctx, name)
		case "multi":
			ds.detail, err = b.fillMulti(ctx, name)
		}
	}
	if err == nil {
		err = execSQL(ctx, b.source, name, stmt("VACUUM (ANALYZE)"))
	}
	if err == nil {
		ds.want, err = takeSnapshot(ctx, b.source, name, nil)
	}
	if err == nil {
		err = queryRow(ctx, b.source, name, stmt("SELECT pg_database_size(current_database())"), &ds.size)
	}
	if err != nil {
		return nil, fmt.Errorf("build dataset %s: %w", name, err)
	}
	b.log.Info("built dataset", "name", name, "mb", ds.size>>20, "tables", len(ds.want.rows))
	return ds, nil
}

func (b *bench) fillPgbench(ctx context.Context, db string) (string, error) {
	err := runCommand(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(b.cfg.scale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(b.source.Port), "-U", "postgres", db)
	return fmt.Sprintf("pgbench -i -s %d", b.cfg.scale), err
}

// fillMulti creates and loads the tables of multiTables, sized to -multi-mb.
func (b *bench) fillMulti(ctx context.Context, db string) (string, error) {
	total := int64(b.cfg.multiMB) << 20
	tables := multiTables()
	for _, t := range tables {
		stmts := make([]statement, 0, len(t.create)+1+len(t.after))
		for _, sql := range t.create {
			stmts = append(stmts, stmt(sql))
		}
		stmts = append(stmts, stmt(t.load, t.rows(total)))
		for _, sql := range t.after {
			stmts = append(stmts, stmt(sql))
		}
		if err := execSQL(ctx, b.source, db, stmts...); err != nil {
			return "", fmt.Errorf("table %s: %w", t.name, err)
		}
	}
	return fmt.Sprintf("%d tables (one partitioned in 4) generated for -multi-mb %d", len(tables), b.cfg.multiMB), nil
}

// tableSpec is one table of the multi dataset.
type tableSpec struct {
	name      string
	share     float64 // of -multi-mb
	rowBytes  int64   // what a row takes on disk, indexes and TOAST included (measured)
	fixedRows int64   // for the tiny tables, whose size does not follow -multi-mb
	create    []string
	load      string // INSERT ... SELECT over generate_series(1, $1::bigint) g, $1 = rows
	after     []string
}

func (t tableSpec) rows(totalBytes int64) int64 {
	if t.share == 0 {
		return t.fixedRows
	}
	return max(1, int64(t.share*float64(totalBytes))/t.rowBytes)
}

// multiTables is the multi dataset: a few large tables, several medium and some tiny, with
// the column types, keys and layouts a real application has (a partitioned table, a table
// without a primary key, foreign keys, TOASTed values, an identity column, a second
// schema). Tables are loaded in this order, so referenced tables come first; the larger
// tables' keys and indexes are built after their load, as a restore does. Values are functions of g only, so
// every run builds the same data.
func multiTables() []tableSpec {
	const ts = "timestamptz '2024-01-01 00:00+00'"
	return []tableSpec{
		{name: "countries", fixedRows: 250,
			create: []string{"CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL, population bigint)"},
			load:   "INSERT INTO countries SELECT 'C' || g, 'Country ' || g, g * 123457 FROM generate_series(1, $1::bigint) g"},
		{name: "currencies", fixedRows: 40,
			create: []string{"CREATE TABLE currencies (code text PRIMARY KEY, rate numeric NOT NULL, updated_at timestamptz)"},
			load:   "INSERT INTO currencies SELECT 'X' || g, g / 7.0, " + ts + " + g * interval '1 hour' FROM generate_series(1, $1::bigint) g"},
		{name: "settings", fixedRows: 20,
			create: []string{"CREATE TABLE settings (key text PRIMARY KEY, value jsonb NOT NULL)"},
			load:   "INSERT INTO settings SELECT 'setting.' || g, jsonb_build_object('v', g, 'on', g % 2 = 0) FROM generate_series(1, $1::bigint) g"},
		{name: "feature_flags", fixedRows: 10,
			create: []string{"CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL, rollout numeric)"},
			load:   "INSERT INTO feature_flags SELECT 'flag_' || g, g % 3 = 0, g / 10.0 FROM generate_series(1, $1::bigint) g"},
		{name: "archived_items", fixedRows: 0,
			create: []string{"CREATE TABLE archived_items (id bigint PRIMARY KEY, payload jsonb)"},
			load:   "INSERT INTO archived_items SELECT g, '{}' FROM generate_series(1, $1::bigint) g"},
		{name: "customers", share: 0.05, rowBytes: 190,
			create: []string{"CREATE TABLE customers (id int NOT NULL, email text NOT NULL, name text, created_at timestamptz NOT NULL, active boolean NOT NULL, score numeric)"},
			load: "INSERT INTO customers SELECT g, 'user' || g || '@example.com', 'Customer ' || md5(g::text), " + ts +
				" - g * interval '1 minute', g % 7 <> 0, (g % 100000) / 7.0 FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE customers ADD PRIMARY KEY (id)", "CREATE UNIQUE INDEX customers_email_key ON customers (email)"}},
		{name: "products", share: 0.02, rowBytes: 275,
			create: []string{"CREATE TABLE products (id int NOT NULL, sku text NOT NULL, title text, price numeric, tags text[], attrs jsonb)"},
			load: "INSERT INTO products SELECT g, 'SKU-' || lpad(g::text, 9, '0'), 'Product ' || md5(g::text), (g % 10000) / 3.0, " +
				"ARRAY['t' || g % 7, 't' || g % 11, 't' || g % 13], " +
				"jsonb_build_object('color', 'c' || g % 12, 'weight', g % 1000, 'dims', jsonb_build_array(g % 10, g % 20, g % 30)) " +
				"FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE products ADD PRIMARY KEY (id)"}},
		{name: "orders", share: 0.20, rowBytes: 138,
			create: []string{"CREATE TABLE orders (id bigint NOT NULL, customer_id int NOT NULL, amount numeric NOT NULL, status text NOT NULL, placed_at timestamptz NOT NULL, note text, paid boolean NOT NULL)"},
			load: "INSERT INTO orders SELECT g, 1 + g % (SELECT max(id) FROM customers), (g % 100000) / 3.0, " +
				"(ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4], " + ts + " + g * interval '1 second', " +
				"CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || md5(g::text) END, g % 3 = 0 FROM generate_series(1, $1::bigint) g",
			after: []string{
				"ALTER TABLE orders ADD PRIMARY KEY (id)",
				"ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id)",
				"CREATE INDEX orders_customer_id_idx ON orders (customer_id)"}},
		{name: "order_items", share: 0.06, rowBytes: 92,
			create: []string{"CREATE TABLE order_items (order_id bigint NOT NULL, line int NOT NULL, product_id int NOT NULL, qty int NOT NULL, price numeric NOT NULL)"},
			load: "INSERT INTO order_items SELECT 1 + (g / 3) % (SELECT max(id) FROM orders), g, 1 + g % (SELECT max(id) FROM products), " +
				"1 + g % 5, (g % 5000) / 4.0 FROM generate_series(1, $1::bigint) g",
			after: []string{
				"ALTER TABLE order_items ADD PRIMARY KEY (order_id, line)",
				"ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders (id)",
				"ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products (id)"}},
		{name: "events", share: 0.24, rowBytes: 230,
			create: []string{"CREATE TABLE events (id bigint NOT NULL, account_id int NOT NULL, kind text NOT NULL, payload jsonb, created_at timestamptz NOT NULL)"},
			load: "INSERT INTO events SELECT g, g % 5000, (ARRAY['click', 'view', 'buy', 'login', 'logout'])[1 + g % 5], " +
				"jsonb_build_object('ref', md5(g::text), 'n', g % 1000, 'ok', g % 2 = 0, 'items', jsonb_build_array(g % 7, g % 9)), " +
				ts + " + g * interval '1 second' FROM generate_series(1, $1::bigint) g",
			after: []string{
				"ALTER TABLE events ADD PRIMARY KEY (id)",
				"CREATE INDEX events_account_created_idx ON events (account_id, created_at)"}},
		{name: "measurements", share: 0.15, rowBytes: 140,
			create: []string{
				"CREATE TABLE measurements (device_id int NOT NULL, taken_at timestamptz NOT NULL, value double precision, reading numeric, tags text[]) PARTITION BY RANGE (taken_at)",
				"CREATE TABLE measurements_2024q1 PARTITION OF measurements FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2024-04-01 00:00+00')",
				"CREATE TABLE measurements_2024q2 PARTITION OF measurements FOR VALUES FROM ('2024-04-01 00:00+00') TO ('2024-07-01 00:00+00')",
				"CREATE TABLE measurements_2024q3 PARTITION OF measurements FOR VALUES FROM ('2024-07-01 00:00+00') TO ('2024-10-01 00:00+00')",
				"CREATE TABLE measurements_2024q4 PARTITION OF measurements FOR VALUES FROM ('2024-10-01 00:00+00') TO ('2025-01-01 00:00+00')"},
			// taken_at spreads the rows evenly over 2024 (366 days), one distinct instant each.
			load: "INSERT INTO measurements SELECT g % 500, " + ts + " + (g - 1) * (interval '366 days' / $1::bigint::float8), " +
				"(g % 1000) * 0.5, (g % 100000) / 9.0, ARRAY['d' || g % 10, 'z' || g % 3] FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE measurements ADD PRIMARY KEY (device_id, taken_at)"}},
		{name: "documents", share: 0.06, rowBytes: 450,
			create: []string{"CREATE TABLE documents (id bigint NOT NULL, doc_uuid text NOT NULL, title text, body text, digest bytea)"},
			load: "INSERT INTO documents SELECT g, md5(g::text)::uuid::text, 'Document ' || g, repeat('lorem ipsum ', (10 + g % 20)::int), " +
				"decode(md5(g::text) || md5((g + 1)::text), 'hex') FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE documents ADD PRIMARY KEY (id)", "CREATE UNIQUE INDEX documents_doc_uuid_key ON documents (doc_uuid)"}},
		// audit_log has no primary key and no index: tools must copy it without a key to split on.
		{name: "audit_log", share: 0.05, rowBytes: 126,
			create: []string{"CREATE TABLE audit_log (at timestamptz NOT NULL, actor text, action text, detail jsonb, ok boolean)"},
			load: "INSERT INTO audit_log SELECT " + ts + " + g * interval '10 seconds', 'user' || g % 1000, " +
				"(ARRAY['insert', 'update', 'delete'])[1 + g % 3], jsonb_build_object('row', g, 'diff', md5(g::text)), g % 10 <> 0 " +
				"FROM generate_series(1, $1::bigint) g"},
		{name: "sessions", share: 0.04, rowBytes: 165,
			create: []string{"CREATE TABLE sessions (token text NOT NULL, customer_id int, started_at timestamptz NOT NULL, ended_at timestamptz, ip text)"},
			load: "INSERT INTO sessions SELECT md5('s' || g)::uuid::text, g % 20000, " + ts + " + g * interval '1 minute', " +
				"CASE WHEN g % 4 = 0 THEN NULL ELSE " + ts + " + g * interval '1 minute' + interval '30 minutes' END, " +
				"'10.' || g % 256 || '.' || (g / 256) % 256 || '.' || (g / 65536) % 256 FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE sessions ADD PRIMARY KEY (token)"}},
		{name: "metrics_daily", share: 0.03, rowBytes: 125,
			create: []string{"CREATE TABLE metrics_daily (day date NOT NULL, metric text NOT NULL, value numeric, samples int[])"},
			load: "INSERT INTO metrics_daily SELECT date '2000-01-01' + (g / 50)::int, 'metric_' || g % 50, g / 13.0, " +
				"ARRAY[g % 10, g % 100, g % 1000, g % 10000]::int[] FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE metrics_daily ADD PRIMARY KEY (day, metric)"}},
		{name: "notes", share: 0.02, rowBytes: 350,
			create: []string{"CREATE TABLE notes (id int NOT NULL, author text, body text, created_at timestamptz)"},
			load: "INSERT INTO notes SELECT g, 'author ' || g % 300, repeat(md5(g::text) || ' ', 8), " + ts + " + g * interval '1 hour' " +
				"FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE notes ADD PRIMARY KEY (id)"}},
		{name: "tags", share: 0.01, rowBytes: 68,
			create: []string{"CREATE TABLE tags (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, label text NOT NULL)"},
			load:   "INSERT INTO tags (id, label) SELECT g, 'tag-' || g FROM generate_series(1, $1::bigint) g",
			after:  []string{"SELECT setval(pg_get_serial_sequence('tags', 'id'), (SELECT max(id) FROM tags))"}},
		// app.files holds 2.5 kB of incompressible bytes a row: stored out of line, in TOAST.
		{name: "app.files", share: 0.04, rowBytes: 2900,
			create: []string{"CREATE SCHEMA IF NOT EXISTS app", "CREATE TABLE app.files (id bigint NOT NULL, path text NOT NULL, content bytea)"},
			load: "INSERT INTO app.files SELECT g, '/data/' || g % 100 || '/' || g || '.bin', " +
				"decode((SELECT string_agg(md5(g::text || ':' || i), '') FROM generate_series(1, 160) i), 'hex') " +
				"FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE app.files ADD PRIMARY KEY (id)"}},
		{name: "app.accounts", share: 0.02, rowBytes: 108,
			create: []string{"CREATE SCHEMA IF NOT EXISTS app", "CREATE TABLE app.accounts (id bigint NOT NULL, owner text, balance numeric, flags boolean[], opened date)"},
			load: "INSERT INTO app.accounts SELECT g, 'owner ' || g, (g % 1000000) / 100.0, ARRAY[g % 2 = 0, g % 3 = 0], " +
				"date '2010-01-01' + (g % 5000)::int FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE app.accounts ADD PRIMARY KEY (id)"}},
		{name: "app.user_roles", share: 0.01, rowBytes: 85,
			create: []string{"CREATE SCHEMA IF NOT EXISTS app", "CREATE TABLE app.user_roles (user_id int NOT NULL, role text NOT NULL, granted_at timestamptz)"},
			load: "INSERT INTO app.user_roles SELECT g / 3, 'role_' || g % 3, " + ts + " + g * interval '1 minute' " +
				"FROM generate_series(1, $1::bigint) g",
			after: []string{"ALTER TABLE app.user_roles ADD PRIMARY KEY (user_id, role)"}},
	}
}

// snapshot is what a load must reproduce: the row count of every table of the dataset's
// schemas and how many valid indexes and validated constraints they hold.
type snapshot struct {
	schemas     []string
	rows        map[string]int64 // by quoted schema.table
	indexes     int64
	constraints int64
}

const (
	userSchemasSQL = `SELECT coalesce(array_agg(nspname ORDER BY nspname), '{}') FROM pg_namespace
		WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_%'`
	// The count of every table in one query: query_to_xml runs a query built per row, which
	// a plain SELECT cannot. Partitioned parents are left out, their partitions are counted.
	rowCountsSQL = `SELECT format('%I.%I', n.nspname, c.relname),
		(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname = ANY($1)`
	structureSQL = `SELECT
		(SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = ANY($1) AND i.indisvalid),
		(SELECT count(*) FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
			WHERE n.nspname = ANY($1) AND co.convalidated AND co.contype IN ('p', 'u', 'f', 'c', 'x'))`
)

// takeSnapshot reads database db of s. schemas nil means every user schema (the source);
// the target is read in the source's schemas, so a tool's own state schema is not counted.
func takeSnapshot(ctx context.Context, s *pgtest.Server, db string, schemas []string) (snapshot, error) {
	snap := snapshot{schemas: schemas, rows: map[string]int64{}}
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		return snap, fmt.Errorf("connect to %s on PostgreSQL %d: %w", db, s.Major, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if snap.schemas == nil {
		if err := conn.QueryRow(ctx, userSchemasSQL).Scan(&snap.schemas); err != nil {
			return snap, fmt.Errorf("list schemas of %s: %w", db, err)
		}
	}
	rows, err := conn.Query(ctx, rowCountsSQL, snap.schemas)
	if err != nil {
		return snap, fmt.Errorf("count rows of %s: %w", db, err)
	}
	var table string
	var count int64
	_, err = pgx.ForEachRow(rows, []any{&table, &count}, func() error {
		snap.rows[table] = count
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("count rows of %s: %w", db, err)
	}
	if err := conn.QueryRow(ctx, structureSQL, snap.schemas).Scan(&snap.indexes, &snap.constraints); err != nil {
		return snap, fmt.Errorf("count indexes and constraints of %s: %w", db, err)
	}
	return snap, nil
}

// differences lists how got falls short of want; nothing means the copy is complete.
func (want snapshot) differences(got snapshot) []string {
	var diffs []string
	for _, table := range slices.Sorted(maps.Keys(want.rows)) {
		n, ok := got.rows[table]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("table %s is missing", table))
		case n != want.rows[table]:
			diffs = append(diffs, fmt.Sprintf("table %s has %d rows, the source %d", table, n, want.rows[table]))
		}
	}
	if got.indexes != want.indexes {
		diffs = append(diffs, fmt.Sprintf("%d valid indexes, the source %d", got.indexes, want.indexes))
	}
	if got.constraints != want.constraints {
		diffs = append(diffs, fmt.Sprintf("%d validated constraints, the source %d", got.constraints, want.constraints))
	}
	return diffs
}

// check compares the copy in targetDB with the source's snapshot.
func (b *bench) check(ctx context.Context, ds *dataset, targetDB string) ([]string, error) {
	got, err := takeSnapshot(ctx, b.target, targetDB, ds.want.schemas)
	if err != nil {
		return nil, err
	}
	return ds.want.differences(got), nil
}
