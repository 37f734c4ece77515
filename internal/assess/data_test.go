package assess

import (
	"fmt"
	"strings"
	"testing"
)

func TestReplicaIdentity(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, `
		CREATE TABLE no_key (a int, b text);
		CREATE TABLE unique_not_null (code text NOT NULL, note text);
		CREATE UNIQUE INDEX unique_not_null_code ON unique_not_null (code);
		CREATE TABLE unique_nullable (code text, note text);
		CREATE UNIQUE INDEX unique_nullable_code ON unique_nullable (code);
		CREATE TABLE with_key (id int PRIMARY KEY);
		CREATE TABLE full_identity (a int);
		ALTER TABLE full_identity REPLICA IDENTITY FULL;
		CREATE TABLE nothing_identity (id int PRIMARY KEY);
		ALTER TABLE nothing_identity REPLICA IDENTITY NOTHING;
		CREATE TABLE index_identity (code text NOT NULL);
		CREATE UNIQUE INDEX index_identity_code ON index_identity (code);
		ALTER TABLE index_identity REPLICA IDENTITY USING INDEX index_identity_code`)
	r := p.check(t, Options{})

	f := requireFinding(t, r, "data.no_replica_identity", Blocker, `"public"."no_key"`)
	if !strings.Contains(f.Fix, `ALTER TABLE "public"."no_key" REPLICA IDENTITY FULL`) {
		t.Errorf("fix for a table without any key = %q, want REPLICA IDENTITY FULL", f.Fix)
	}
	f = requireFinding(t, r, "data.no_replica_identity", Blocker, `"public"."unique_not_null"`)
	if !strings.Contains(f.Fix, `REPLICA IDENTITY USING INDEX "unique_not_null_code"`) {
		t.Errorf("fix with a usable unique index = %q, want it named", f.Fix)
	}
	f = requireFinding(t, r, "data.no_replica_identity", Blocker, `"public"."unique_nullable"`)
	if strings.Contains(f.Fix, "unique_nullable_code") {
		t.Errorf("a unique index on a nullable column cannot be the replica identity, yet the fix offers it: %q", f.Fix)
	}
	requireFinding(t, r, "data.no_replica_identity", Blocker, `"public"."nothing_identity"`)
	for _, fine := range []string{"with_key", "full_identity", "index_identity"} {
		requireNoFinding(t, r, "data.no_replica_identity", `"public".`+`"`+fine+`"`)
	}
}

func TestTableKinds(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, `
		CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
		CREATE EXTENSION file_fdw;
		CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
		CREATE FOREIGN TABLE imported (line text) SERVER files OPTIONS (filename '/dev/null');
		CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		CREATE TABLE boxes (id int PRIMARY KEY, w int, h int, area int GENERATED ALWAYS AS (w * h) STORED);
		CREATE TABLE plain (id int PRIMARY KEY)`)
	r := p.check(t, Options{})
	requireFinding(t, r, "data.unlogged_table", Warning, `"public"."scratch"`)
	requireNoFinding(t, r, "data.no_replica_identity", `"public"."scratch"`)
	requireFinding(t, r, "data.foreign_table", Warning, `"public"."imported"`)
	requireFinding(t, r, "data.partitioned_table", Info, `"public"."events"`)
	requireNoFinding(t, r, "data.partitioned_table", `"public"."events_2026"`)
	f := requireFinding(t, r, "data.generated_columns", Info, `"public"."boxes"`)
	if !strings.Contains(f.Why, `"area"`) {
		t.Errorf("generated column finding does not name the column: %s", f.Why)
	}
	for _, check := range []string{"data.unlogged_table", "data.foreign_table", "data.partitioned_table", "data.generated_columns"} {
		requireNoFinding(t, r, check, `"public"."plain"`)
	}
	// Partitions are counted in the summary; their parent holds no rows of its own.
	if r.Summary.Tables != 5 {
		t.Errorf("summary counts %d tables, want 5 (the parent left out):\n%+v", r.Summary.Tables, r.Summary.Largest)
	}
}

func TestColumnTypes(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, `
		CREATE TYPE money_amount AS (currency char(3), amount numeric(20,4));
		CREATE DOMAIN any_number AS numeric;
		CREATE TABLE ledger (id int PRIMARY KEY, exact numeric, via_domain any_number, bounded numeric(10,2),
		                     amounts numeric[], at timestamptz, local_at timestamp, price money_amount,
		                     handler regproc, acl aclitem[], doc jsonb);
		CREATE TABLE typed (id int PRIMARY KEY, bounded numeric(10,2), local_at timestamp, doc jsonb);
		INSERT INTO ledger (id, doc) SELECT 1, jsonb_build_object('blob', string_agg(md5(g::text), '')) FROM generate_series(1, 2000) g;
		INSERT INTO typed (id, doc) VALUES (1, '{"small": true}')`)
	r := p.check(t, Options{})
	const ledger = `"public"."ledger"`
	f := requireFinding(t, r, "data.unconstrained_numeric", Info, ledger)
	for _, col := range []string{`"exact"`, `"via_domain"`, `"amounts"`} {
		if !strings.Contains(f.Why, col) {
			t.Errorf("unconstrained numeric finding misses %s: %s", col, f.Why)
		}
	}
	if strings.Contains(f.Why, `"bounded"`) {
		t.Errorf("numeric(10,2) reported as unconstrained: %s", f.Why)
	}
	requireFinding(t, r, "data.timestamptz", Info, ledger)
	requireFinding(t, r, "data.composite_type", Info, ledger)
	f = requireFinding(t, r, "data.oid_reference_type", Warning, ledger)
	if !strings.Contains(f.Why, `"handler"`) || !strings.Contains(f.Why, `"acl"`) {
		t.Errorf("oid reference finding misses a column: %s", f.Why)
	}
	requireFinding(t, r, "data.large_values", Info, ledger)
	// Every built-in type above exists on the target's major too.
	requireNoFinding(t, r, "compat.removed_type", "")
	for _, check := range []string{"data.unconstrained_numeric", "data.timestamptz", "data.composite_type", "data.oid_reference_type", "data.large_values"} {
		requireNoFinding(t, r, check, `"public"."typed"`)
	}
}

func TestDatabaseObjects(t *testing.T) {
	p := newPair(t)
	r := p.check(t, Options{})
	db := fmt.Sprintf("%q", p.sourceDB)
	requireNoFinding(t, r, "data.large_objects", "")
	requireNoFinding(t, r, "data.sequences", "")
	requireNoFinding(t, r, "data.materialized_view", "")

	p.sourceSQL(t, `
		CREATE TABLE t (id serial PRIMARY KEY, n int);
		CREATE SEQUENCE standalone;
		CREATE MATERIALIZED VIEW totals AS SELECT sum(n) FROM t;
		SELECT lo_from_bytea(0, 'invoice');`)
	r = p.check(t, Options{})
	f := requireFinding(t, r, "data.large_objects", Warning, db)
	if !strings.Contains(f.Why, "1 large objects") {
		t.Errorf("large object count missing: %s", f.Why)
	}
	f = requireFinding(t, r, "data.sequences", Info, db)
	if !strings.HasPrefix(f.Why, "2 sequences") {
		t.Errorf("sequence count wrong: %s", f.Why)
	}
	requireFinding(t, r, "data.materialized_view", Info, `"public"."totals"`)
	requireNoFinding(t, r, "source.large_object_privilege", "")

	// A role that is not a superuser reads the large objects of the roles it has the
	// privileges of, and those granted to it.
	role := createRole(t, p.source, p.sourceDB, "REPLICATION")
	owner := createRole(t, p.source, p.sourceDB, "")
	p.sourceSQL(t, fmt.Sprintf(`SET ROLE %[1]s; SELECT lo_from_bytea(0, 'one'), lo_from_bytea(0, 'two'); RESET ROLE;
		DO $$ BEGIN EXECUTE format('GRANT SELECT ON LARGE OBJECT %%s TO %[2]s', lo_from_bytea(0, 'granted')); END $$`, owner, role))
	asRole := strings.Replace(p.source.ConnString(p.sourceDB), "user=postgres", "user="+role, 1)
	r = runCheck(t, asRole, p.target.ConnString(p.targetDB), Options{})
	f = requireFinding(t, r, "source.large_object_privilege", Blocker, fmt.Sprintf("%q", owner))
	if !strings.Contains(f.Why, "the 2 large objects") || !strings.Contains(f.Fix, fmt.Sprintf("GRANT %q TO %q", owner, role)) {
		t.Errorf("source.large_object_privilege: %+v", f)
	}
	// The superuser's invoice is unreadable too; the one granted is not.
	if f := requireFinding(t, r, "source.large_object_privilege", Blocker, `"postgres"`); !strings.Contains(f.Why, "the 1 large objects") {
		t.Errorf("source.large_object_privilege: %+v", f)
	}
	p.sourceSQL(t, fmt.Sprintf("GRANT %s TO %s", owner, role))
	requireNoFinding(t, runCheck(t, asRole, p.target.ConnString(p.targetDB), Options{}), "source.large_object_privilege", fmt.Sprintf("%q", owner))
}
