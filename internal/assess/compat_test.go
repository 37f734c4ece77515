package assess

import (
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
)

// TestRemovedFeatures builds, on the source, objects that the target's major no longer
// accepts, following pg_upgrade's checks and pgleap's table of catalog removals.
func TestRemovedFeatures(t *testing.T) {
	source, target := pgtest.SourceMajor(), pgtest.TargetMajor()
	p := newPair(t)
	p.sourceSQL(t, `
		CREATE VIEW harmless AS SELECT datname FROM pg_database;
		CREATE FUNCTION harmless_fn() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM pg_class'`)
	r := p.check(t, Options{})
	for _, check := range []string{"compat.postfix_operator", "compat.old_polymorphic", "compat.removed_catalog_reference", "compat.removed_type"} {
		requireNoFinding(t, r, check, "")
	}

	if source < 14 && target >= 14 {
		p.sourceSQL(t, `
			CREATE OPERATOR !!! (LEFTARG = bigint, PROCEDURE = numeric_fac);
			CREATE AGGREGATE array_accum (anyelement) (SFUNC = array_append, STYPE = anyarray, INITCOND = '{}')`)
	}
	if source < 17 && target >= 17 {
		p.sourceSQL(t, `CREATE VIEW checkpoints AS SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter`)
	}
	if source < 15 && target >= 15 {
		p.sourceSQL(t, `CREATE FUNCTION last_system_oid() RETURNS oid LANGUAGE plpgsql AS $$
			BEGIN RETURN (SELECT datlastsysoid FROM pg_database WHERE datname = current_database()); END $$`)
	}
	r = p.check(t, Options{})
	if source < 14 && target >= 14 {
		requireFinding(t, r, "compat.postfix_operator", Blocker, `"public".!!!(bigint, NONE)`)
		requireFinding(t, r, "compat.old_polymorphic", Blocker, `"public"."array_accum"(anyelement)`)
	}
	if source < 17 && target >= 17 {
		requireFinding(t, r, "compat.removed_catalog_reference", Blocker, `"public"."checkpoints"`)
	}
	if source < 15 && target >= 15 {
		requireFinding(t, r, "compat.removed_catalog_reference", Warning, `"public"."last_system_oid"()`)
	}
	requireNoFinding(t, r, "compat.removed_catalog_reference", `"public"."harmless"`)
	requireNoFinding(t, r, "compat.removed_catalog_reference", `"public"."harmless_fn"()`)
}
