package copy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
	"github.com/pgleap/pgleap/internal/schema"
	"github.com/pgleap/pgleap/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// loadFixture fills a source with what a copy must carry exactly: tables of mixed sizes, one
// large enough to split by key and one without a key, every common column type, large
// TOASTed values, a partitioned table, generated columns and large objects.
const loadFixture = `
CREATE EXTENSION hstore;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE point3 AS (x float8, y float8, z float8);
CREATE TABLE big_keyed (id bigint PRIMARY KEY, payload text, n numeric);
INSERT INTO big_keyed SELECT g, repeat(md5(g::text), 3), g / 7.0 FROM generate_series(1, 40000) g;
CREATE TABLE big_keyless (a int, b text);
INSERT INTO big_keyless SELECT g % 100, md5(g::text) FROM generate_series(1, 30000) g;
CREATE TABLE every_type (
  id serial PRIMARY KEY, i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision,
  exact numeric, money_exact numeric(20,4), txt text, vc varchar(10), ch char(3), b boolean,
  d date, t time, tz timetz, ts timestamp, tstz timestamptz, iv interval,
  js json, jb jsonb, x xml, ba bytea, u uuid, ip inet, cidr_ cidr, mac macaddr,
  arr int[], tarr text[], rng int4range, tsr tstzrange, bits bit varying(16), m mood,
  p point3, h hstore, tsv tsvector, pt point, handler regproc, gen int GENERATED ALWAYS AS (i4 * 2) STORED
);
INSERT INTO every_type (i2, i4, i8, f4, f8, exact, money_exact, txt, vc, ch, b, d, t, tz, ts, tstz, iv, js, jb, x, ba, u, ip, cidr_, mac,
                        arr, tarr, rng, tsr, bits, m, p, h, tsv, pt, handler)
SELECT g, g * 1000, g * 1000000000::bigint, g / 3.0, pi() * g, 1e40::numeric / 7 + g, g / 3.0,
       'line ' || g || E'\nwith\ttabs and \\ backslashes and ''quotes''', 'v' || g, 'c' || (g % 10), g % 2 = 0,
       date '2026-01-01' + g, time '12:34:56.789', timetz '12:34:56+05:30', timestamp '2026-03-29 02:30:00' + g * interval '1 hour',
       timestamptz '2026-03-29 01:30:00+01' + g * interval '1 minute', interval '1 year 2 mons 3 days 04:05:06.789',
       '{"a": [1, 2.50, "x"]}', jsonb_build_object('g', g, 'nested', jsonb_build_object('k', 'v')), '<a b="c">text</a>',
       decode(md5(g::text), 'hex'), md5(g::text)::uuid, ('192.168.0.' || (g % 250))::inet, '10.0.0.0/8', '08:00:2b:01:02:03',
       ARRAY[g, NULL, -g], ARRAY['a', NULL, 'quote"d'], int4range(g, g + 10), tstzrange('2026-01-01', '2026-02-01'),
       B'1010', (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3], ROW(g, g / 2.0, -g)::point3, hstore('k', g::text),
       to_tsvector('english', 'the quick brown fox ' || g), point(g, -g), 'int4pl'::regproc
FROM generate_series(1, 300) g;
INSERT INTO every_type (id) VALUES (1000);  -- a row of NULLs
CREATE TABLE toasted (id int PRIMARY KEY, doc text, blob bytea, j jsonb);
INSERT INTO toasted SELECT g, string_agg(md5(g::text || s::text), '' ORDER BY s),
       decode(string_agg(md5(s::text || g::text), '' ORDER BY s), 'hex'), jsonb_build_object('big', string_agg(md5(s::text), ''))
FROM generate_series(1, 5) g, generate_series(1, 20000) s GROUP BY g;
CREATE TABLE events (id bigint, at date, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO events SELECT g, date '2026-01-01' + (g % 700), 'e' || g FROM generate_series(1, 5000) g;
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent);
INSERT INTO parent SELECT generate_series(1, 100);
INSERT INTO child SELECT g, 1 + g % 100 FROM generate_series(1, 1000) g;
CREATE INDEX child_parent ON child (parent_id);
ALTER TABLE child SET (autovacuum_enabled = false);
CREATE TABLE empty_table (id int PRIMARY KEY);
CREATE MATERIALIZED VIEW child_counts AS SELECT parent_id, count(*) FROM child GROUP BY parent_id;
CREATE ROLE {role};
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 200000), 'UTF8'));
SELECT lo_from_bytea(0, '\x00ff00ff'::bytea);
DO $$ DECLARE o oid; BEGIN SELECT max(oid) INTO o FROM pg_largeobject_metadata;
  EXECUTE format('ALTER LARGE OBJECT %s OWNER TO {role}', o); EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO PUBLIC', o); END $$;
ANALYZE;
`

// tableHashes digests every row of every user table and the large objects, over
// connections with pgleap's exact-text session settings.
func tableHashes(t *testing.T, connString string) map[string]string {
	t.Helper()
	conn := datatest.Connect(t, connString)
	defer conn.Close(context.Background())
	hashes := map[string]string{}
	for table, d := range datatest.Digests(t, connString) {
		hashes[table] = d.String()
	}
	hashes["large objects"] = queryString(t, conn, `SELECT coalesce(string_agg(oid::text || ' ' || pg_get_userbyid(lomowner) || ' ' ||
		coalesce(lomacl::text, '') || ' ' || md5(lo_get(oid)), ', ' ORDER BY oid), '') FROM pg_largeobject_metadata`)
	return hashes
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// requireSameRows proves the target's rows and large objects equal the source's, in at
// least minTables tables.
func requireSameRows(t *testing.T, source, target string, minTables int) {
	t.Helper()
	datatest.RequireSameDigests(t, tableHashes(t, source), tableHashes(t, target), minTables+1) // +1: the large objects' entry
}

func TestFullLoad(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	role := fmt.Sprintf("lo_owner_%d", source.Port)
	for _, s := range []*pgtest.Server{source, target} {
		t.Cleanup(func() { s.Exec(t, "postgres", "DROP ROLE IF EXISTS "+role) })
	}
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, strings.ReplaceAll(loadFixture, "{role}", role))
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)

	progress := &countingProgress{}
	res, err := FullLoad(context.Background(),
		schema.Options{Source: sourceConn, Target: targetConn, IndexJobs: 2},
		Options{Source: sourceConn, Target: targetConn, Jobs: 2, SplitLargerThan: 512 << 10, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	requireSameRows(t, sourceConn, targetConn, 9)

	if res.Copy.LargeObjects != 2 || res.Copy.ItemsDoneEarlier != 0 {
		t.Errorf("copy result = %+v", res.Copy)
	}
	splits := map[string]int{}
	for _, i := range progress.finished {
		if i.Chunks > 1 {
			splits[i.Table+" "+i.SplitBy]++
		}
	}
	if splits["big_keyed key"] < 2 {
		t.Errorf("big_keyed was not copied in key ranges: %v", splits)
	}
	if pgtest.SourceMajor() >= 14 && splits["big_keyless ctid"] < 2 {
		t.Errorf("big_keyless was not copied in block ranges on a %d source: %v", pgtest.SourceMajor(), splits)
	}

	tc := target.Conn(t, targetDB)
	for what, sql := range map[string]string{
		"every index is valid":            "SELECT bool_and(indisvalid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace",
		"every constraint is validated":   "SELECT bool_and(convalidated) FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
		"the foreign key is there":        "SELECT count(*) = 1 FROM pg_constraint WHERE conrelid = 'child'::regclass AND contype = 'f'",
		"the matview is filled":           "SELECT count(*) = 100 FROM child_counts",
		"statistics are fresh":            "SELECT bool_and(reltuples > 0) FROM pg_class WHERE relname IN ('big_keyed', 'child', 'events_2026')",
		"autovacuum is as on the source":  "SELECT reloptions = '{autovacuum_enabled=false}' FROM pg_class WHERE relname = 'child'",
		"autovacuum is back on elsewhere": "SELECT reloptions IS NULL FROM pg_class WHERE relname = 'big_keyed'",
	} {
		var ok bool
		if err := tc.QueryRow(context.Background(), sql).Scan(&ok); err != nil || !ok {
			t.Errorf("%s: %v, %v", what, ok, err)
		}
	}

	// COPY FREEZE marks whole tables' pages all-frozen (on targets of 14 and later), so no
	// vacuum has to visit them again; split tables load without it.
	if pgtest.TargetMajor() >= 14 {
		target.Exec(t, targetDB, "CREATE EXTENSION pg_visibility")
		var frozen bool
		err := tc.QueryRow(context.Background(), "SELECT bool_and(all_frozen) FROM pg_visibility_map('child')").Scan(&frozen)
		if err != nil || !frozen {
			t.Errorf("child was not loaded frozen: %v, %v", frozen, err)
		}
	}

	// Run again: everything is recorded done, nothing is copied twice.
	again, err := Run(context.Background(), Options{Source: sourceConn, Target: targetConn, Jobs: 2})
	if err != nil || again.Items != 0 || again.ItemsDoneEarlier != len(progress.finished) {
		t.Errorf("second run = %+v, %v; want nothing copied", again, err)
	}
	requireSameRows(t, sourceConn, targetConn, 9)
}

type countingProgress struct {
	finished []stateItem
}

type stateItem struct {
	Table, SplitBy string
	Chunks         int
}

func (p *countingProgress) Planned([]state.CopyItem)   {}
func (p *countingProgress) Started(state.CopyItem)     {}
func (p *countingProgress) Copied(state.CopyItem, int) {}
func (p *countingProgress) SourceWAL(int64)            {}
func (p *countingProgress) Finished(i state.CopyItem, _ int64) {
	progressMu.Lock()
	defer progressMu.Unlock()
	p.finished = append(p.finished, stateItem{i.Table, i.SplitBy, i.Chunks})
}

var progressMu sync.Mutex
