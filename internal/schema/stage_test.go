package schema

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
	"github.com/pgleap/pgleap/internal/state"
	"github.com/pgleap/pgleap/internal/verify"
)

// fixture is the source of TestSchemaStage: what a real application database holds.
const fixture = `
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE SCHEMA "Sales" AUTHORIZATION %[1]s;
CREATE SCHEMA archive;
CREATE TYPE "Sales".status AS ENUM ('new', 'paid', 'shipped');
CREATE DOMAIN "Sales".positive_amount AS numeric(12,2) CHECK (VALUE > 0);
CREATE TYPE "Sales".address AS (street text, city text, zip text);
SET ROLE %[1]s;
CREATE TABLE "Sales"."Customer" (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email citext NOT NULL UNIQUE,
  "select" text,
  home "Sales".address,
  attributes hstore
);
CREATE TABLE "Sales"."order" (
  id bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES "Sales"."Customer" ON DELETE CASCADE,
  status "Sales".status NOT NULL DEFAULT 'new',
  amount "Sales".positive_amount NOT NULL,
  tax numeric GENERATED ALWAYS AS (amount * 0.2) STORED,
  "From" timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_status ON "Sales"."order" (status) WHERE status <> 'shipped';
CREATE INDEX "Order_From" ON "Sales"."order" ("From" DESC);
COMMENT ON TABLE "Sales"."order" IS 'one row per order';
COMMENT ON COLUMN "Sales"."order".amount IS 'in the customer''s currency';
GRANT SELECT ON "Sales"."order", "Sales"."Customer" TO %[2]s;
GRANT USAGE ON SCHEMA "Sales" TO %[2]s;
ALTER TABLE "Sales"."order" ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_orders ON "Sales"."order" FOR SELECT TO %[2]s USING (customer_id > 0);
CREATE SEQUENCE "Sales".invoice_number OWNED BY "Sales"."order".id;
RESET ROLE;
CREATE TABLE public.events (id bigint NOT NULL, at date NOT NULL, payload jsonb, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.events_2027 PARTITION OF public.events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
CREATE INDEX events_payload ON public.events USING gin (payload);
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW."From" := now(); RETURN NEW; END $$;
CREATE TRIGGER order_touch BEFORE UPDATE ON "Sales"."order" FOR EACH ROW EXECUTE FUNCTION public.touch();
CREATE VIEW public.open_orders AS SELECT id, customer_id, amount FROM "Sales"."order" WHERE status <> 'shipped';
CREATE MATERIALIZED VIEW public.revenue AS SELECT status, sum(amount) AS total FROM "Sales"."order" GROUP BY status;
CREATE UNIQUE INDEX revenue_status ON public.revenue (status);
CREATE TABLE archive.old_orders (id bigint PRIMARY KEY, note text);
CREATE FUNCTION archive.purge() RETURNS void LANGUAGE sql AS 'DELETE FROM archive.old_orders';
CREATE VIEW public.all_orders AS SELECT id FROM "Sales"."order" UNION ALL SELECT id FROM archive.old_orders;
CREATE TABLE public.refunds (id int PRIMARY KEY, old_order bigint REFERENCES archive.old_orders);
INSERT INTO "Sales"."Customer" (email) VALUES ('a@example.com');
GRANT %[2]s TO %[1]s;
`

// roles creates the fixture's roles on s, dropped (with what they own) when the test ends.
func roles(t *testing.T, s *pgtest.Server, names ...string) {
	t.Helper()
	for _, name := range names {
		s.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw-%s'", name, name))
	}
	t.Cleanup(func() {
		for _, name := range names {
			s.Exec(t, "postgres", fmt.Sprintf("DROP ROLE IF EXISTS %s", name))
		}
	})
}

// dropRolesOnTarget removes the roles the stage created on the target when the test ends.
func dropRolesOnTarget(t *testing.T, s *pgtest.Server, names ...string) {
	t.Cleanup(func() {
		for _, name := range names {
			s.Exec(t, "postgres", fmt.Sprintf(`DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN
				EXECUTE 'DROP OWNED BY %[1]s'; EXECUTE 'DROP ROLE %[1]s'; END IF; END $$`, name))
		}
	})
}

func TestSchemaStage(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	owner, reader := fmt.Sprintf("app_owner_%d", target.Port), fmt.Sprintf("app_reader_%d", target.Port)
	// Roles go after the databases holding their objects: register their cleanup first.
	dropRolesOnTarget(t, target, owner, reader)
	roles(t, source, owner, reader)
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, fmt.Sprintf(fixture, owner, reader))

	ctx := context.Background()
	opts := Options{
		Source: source.ConnString(sourceDB), Target: target.ConnString(targetDB),
		Tables: config.TableFilter{Exclude: []string{"archive.*"}}, IndexJobs: 2, CopyPasswords: true,
	}
	result := runStage(t, opts)
	if result.PostDataTasks == 0 || !result.PreDataRestored {
		t.Fatalf("result = %+v", result)
	}
	if !slices.Contains(result.Roles.Created, owner) || !slices.Contains(result.Roles.Created, reader) || !slices.Contains(result.Roles.Existing, "postgres") {
		t.Errorf("roles: %+v", result.Roles)
	}

	// Objects that need the excluded schema are reported, not silently dropped.
	skipped := map[string]string{}
	for _, s := range result.Skipped {
		skipped[s.Kind+" "+s.Name] = s.Reason
	}
	for _, want := range []string{"view public.all_orders", "fk constraint public.refunds refunds_old_order_fkey"} {
		if _, ok := skipped[want]; !ok {
			t.Errorf("%s not reported as skipped; skipped: %v", want, skipped)
		}
	}
	if len(skipped) != 2 {
		t.Errorf("skipped %d objects, want 2 (the view and the foreign key): %v", len(skipped), skipped)
	}

	sourceConn, targetConn := source.Conn(t, sourceDB), target.Conn(t, targetDB)
	requireSchemasEqual(t, sourceConn, targetConn, opts.Tables)

	checks := []struct {
		name, sql string
	}{
		{"the excluded schema is absent", "SELECT NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'archive')"},
		{"the owner owns its table", fmt.Sprintf(`SELECT pg_get_userbyid(relowner) = '%s' FROM pg_class WHERE oid = '"Sales"."order"'::regclass`, owner)},
		{"grants came along", fmt.Sprintf(`SELECT has_table_privilege('%s', '"Sales"."order"', 'SELECT') AND NOT has_table_privilege('%s', '"Sales"."order"', 'INSERT')`, reader, reader)},
		{"memberships came along", fmt.Sprintf(`SELECT pg_has_role('%s', '%s', 'MEMBER')`, owner, reader)},
		{"passwords came along with --copy-passwords", fmt.Sprintf(`SELECT rolpassword IS NOT NULL AND rolcanlogin FROM pg_authid WHERE rolname = '%s'`, owner)},
		{"primary keys and foreign keys are valid", `SELECT bool_and(convalidated) AND count(*) FILTER (WHERE contype = 'f') = 1 FROM pg_constraint WHERE connamespace = '"Sales"'::regnamespace AND contype IN ('p', 'u', 'f')`},
		{"the materialized view is populated", "SELECT relispopulated FROM pg_class WHERE oid = 'public.revenue'::regclass"},
		{"row level security is on", `SELECT relrowsecurity FROM pg_class WHERE oid = '"Sales"."order"'::regclass`},
		{"the owned sequence belongs to its column", `SELECT EXISTS (SELECT FROM pg_depend WHERE objid = '"Sales".invoice_number'::regclass AND refobjid = '"Sales"."order"'::regclass AND deptype = 'a')`},
		{"indexes are valid", "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid::regclass::text LIKE '%order%'"},
	}
	for _, c := range checks {
		var ok bool
		if err := targetConn.QueryRow(ctx, c.sql).Scan(&ok); err != nil || !ok {
			t.Errorf("%s: got %v, %v", c.name, ok, err)
		}
	}
	var sourcePassword, targetPassword string
	sourceConn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", owner).Scan(&sourcePassword)
	targetConn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", owner).Scan(&targetPassword)
	if sourcePassword == "" || sourcePassword != targetPassword {
		t.Errorf("password verifier not carried: source %q, target %q", sourcePassword, targetPassword)
	}

	// A rerun finds everything done and recreates nothing.
	again := runStage(t, opts)
	if again.PostDataTasks != 0 || again.PreDataRestored || again.PostDataResumed != result.PostDataTasks {
		t.Errorf("rerun = %+v, want nothing done again", again)
	}

	// A crash before some steps committed leaves neither the objects nor their records;
	// the rerun builds exactly those.
	_, err := targetConn.Exec(ctx, `
		DROP INDEX "Sales"."Order_From";
		ALTER TABLE "Sales"."order" DROP CONSTRAINT order_customer_id_fkey`)
	if err != nil {
		t.Fatal(err)
	}
	report, err := verify.CompareSchemas(ctx, sourceConn, targetConn, opts.Tables, result.Skipped)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, d := range report.Differences {
		missing = append(missing, d.OnlyOnSource...)
	}
	slices.Sort(missing)
	if want := []string{"order.Order_From", "order.order_customer_id_fkey"}; !slices.Equal(missing, want) {
		t.Fatalf("after dropping objects, the comparison reports %v missing, want %v", missing, want)
	}
	removeSteps(t, targetConn, opts, "Order_From", "order_customer_id_fkey")
	resumed := runStage(t, opts)
	if resumed.PostDataTasks != 3 { // the index, the foreign key and its validation
		t.Errorf("resumed run built %d steps, want 3", resumed.PostDataTasks)
	}
	requireSchemasEqual(t, sourceConn, targetConn, opts.Tables)
}

func runStage(t *testing.T, opts Options) *Result {
	t.Helper()
	ctx := context.Background()
	stage, err := Prepare(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Close()
	result, err := stage.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return result
}

// removeSteps deletes the state records of the post-data entries tagged with these names,
// as if the transactions that built them had never committed.
func removeSteps(t *testing.T, target *pgx.Conn, opts Options, names ...string) {
	t.Helper()
	ctx := context.Background()
	raw, err := state.LoadArchive(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := ReadArchive(raw)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range archive.Entries {
		for _, name := range names {
			if e.Tag == name || strings.HasSuffix(e.Tag, " "+name) {
				base := fmt.Sprintf("post-data:%d", e.DumpID)
				ids = append(ids, base, base+":validate", base+":index")
			}
		}
	}
	tag, err := target.Exec(ctx, "DELETE FROM pgleap.step WHERE id = ANY ($1)", ids)
	if err != nil || tag.RowsAffected() != 3 {
		t.Fatalf("removed %d step records (%v), want 3", tag.RowsAffected(), err)
	}
}

func requireSchemasEqual(t *testing.T, source, target *pgx.Conn, selection config.TableFilter) {
	t.Helper()
	ctx := context.Background()
	skipped, err := state.Skipped(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	report, err := verify.CompareSchemas(ctx, source, target, selection, skipped)
	if err != nil {
		t.Fatal(err)
	}
	if !report.Equal() {
		t.Fatalf("schemas differ after the schema stage: %+v", report.Differences)
	}
	if report.Objects < 80 {
		t.Errorf("only %d objects compared: the comparison is not looking at the fixture", report.Objects)
	}
}

// TestPublicSchemaGrants: from PostgreSQL 15 on, schema public belongs to pg_database_owner
// and pg_dump writes its grants as an entry without a parent of its own, which pg_restore
// --section=pre-data leaves out.
func TestPublicSchemaGrants(t *testing.T) {
	sourceMajor := max(pgtest.SourceMajor(), 15)
	if sourceMajor > pgtest.TargetMajor() {
		t.Skipf("needs a source of PostgreSQL 15 or later, and the target is %d", pgtest.TargetMajor())
	}
	source, target := pgtest.Shared(t, sourceMajor), pgtest.Shared(t, pgtest.TargetMajor())
	role := fmt.Sprintf("public_creator_%d", target.Port)
	dropRolesOnTarget(t, target, role)
	roles(t, source, role)
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, "GRANT CREATE ON SCHEMA public TO "+role+"; CREATE TABLE t (id int PRIMARY KEY)")
	runStage(t, Options{Source: source.ConnString(sourceDB), Target: target.ConnString(targetDB)})
	const acl = "SELECT nspacl::text FROM pg_catalog.pg_namespace WHERE nspname = 'public'"
	if want, got := datatest.Scalar(t, source.ConnString(sourceDB), acl), datatest.Scalar(t, target.ConnString(targetDB), acl); got != want {
		t.Errorf("schema public's grants on the target: %s, want %s", got, want)
	}
}
