package assess

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
)

func TestTargetNotEmpty(t *testing.T) {
	p := newPair(t)
	requireNoFinding(t, p.check(t, Options{}), "target.not_empty", "")

	p.targetSQL(t, "CREATE TABLE leftover (id int)")
	r := p.check(t, Options{})
	f := requireFinding(t, r, "target.not_empty", Blocker, fmt.Sprintf("%q", p.targetDB))
	if !strings.Contains(f.Why, `"public"."leftover"`) {
		t.Errorf("not_empty finding does not name the relation: %s", f.Why)
	}

	// pgleap's own state marks a migration to resume, not a foreign database.
	p.targetSQL(t, "DROP TABLE leftover; CREATE SCHEMA pgleap; CREATE TABLE pgleap.phase (name text)")
	r = p.check(t, Options{})
	requireNoFinding(t, r, "target.not_empty", "")
	requireFinding(t, r, "target.migration_state", Info, fmt.Sprintf("%q", p.targetDB))
}

func TestTargetPrivileges(t *testing.T) {
	p := newPair(t)
	role := createRole(t, p.target, p.targetDB, "")
	r := runCheck(t, p.source.ConnString(p.sourceDB),
		strings.Replace(p.target.ConnString(p.targetDB), "user=postgres", "user="+role, 1), Options{})
	requireFinding(t, r, "target.create_schema", Blocker, fmt.Sprintf("%q", p.targetDB))
	requireFinding(t, r, "target.create_role", Warning, fmt.Sprintf("%q", role))

	r = p.check(t, Options{})
	requireNoFinding(t, r, "target.create_schema", "")
	requireNoFinding(t, r, "target.create_role", "")
}

func TestTargetVersion(t *testing.T) {
	if pgtest.SourceMajor() == pgtest.TargetMajor() {
		t.Skip("source and target majors are the same: the pair under test is the same-major case")
	}
	requireNoFinding(t, newPair(t).check(t, Options{}), "target.version", "")

	same := pairOn(t, pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.SourceMajor()))
	r := same.check(t, Options{})
	requireFinding(t, r, "target.version", Info, r.Target.Version)

	downgrade := pairOn(t, pgtest.Shared(t, pgtest.TargetMajor()), pgtest.Shared(t, pgtest.SourceMajor()))
	r = downgrade.check(t, Options{})
	requireFinding(t, r, "target.version", Blocker, r.Target.Version)
}

func TestExtensions(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, "CREATE EXTENSION hstore; CREATE EXTENSION citext")
	r := p.check(t, Options{})
	requireNoFinding(t, r, "target.extension_missing", "")
	requireNoFinding(t, r, "target.extension_version", "")

	// adminpack ships up to 16 and was removed in 17.
	if pgtest.SourceMajor() >= 17 || pgtest.TargetMajor() < 17 {
		t.Skipf("adminpack exists on both %d and %d", pgtest.SourceMajor(), pgtest.TargetMajor())
	}
	p.sourceSQL(t, "CREATE EXTENSION adminpack")
	r = p.check(t, Options{})
	requireFinding(t, r, "target.extension_missing", Blocker, `"adminpack"`)
}

func TestEncodingAndLocale(t *testing.T) {
	p := newPair(t)
	r := p.check(t, Options{})
	for _, check := range []string{"target.encoding", "target.locale", "target.locale_provider"} {
		requireNoFinding(t, r, check, "")
	}

	db := createDatabase(t, p.target, "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
	r = runCheck(t, p.source.ConnString(p.sourceDB), p.target.ConnString(db), Options{})
	requireFinding(t, r, "target.encoding", Warning, fmt.Sprintf("%q", db))

	db = createDatabase(t, p.target, "ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0")
	r = runCheck(t, p.source.ConnString(p.sourceDB), p.target.ConnString(db), Options{})
	requireFinding(t, r, "target.locale", Warning, fmt.Sprintf("%q", db))
	requireNoFinding(t, r, "target.encoding", "")

	if pgtest.TargetMajor() >= 15 {
		db = createDatabase(t, p.target, "ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C' TEMPLATE template0")
		r = runCheck(t, p.source.ConnString(p.sourceDB), p.target.ConnString(db), Options{})
		requireFinding(t, r, "target.locale_provider", Warning, fmt.Sprintf("%q", db))
	}
}

func TestCollationMissing(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, `CREATE TABLE names (id int PRIMARY KEY, name text COLLATE "de-x-icu", code text COLLATE "C");
		CREATE TABLE plain (id int PRIMARY KEY, note text);
		CREATE INDEX names_sorted ON names (code COLLATE "POSIX")`)
	requireNoFinding(t, p.check(t, Options{}), "target.collation_missing", "")

	// Collations are per database: take this one away from the target database alone.
	p.targetSQL(t, `DROP COLLATION pg_catalog."de-x-icu"`)
	r := p.check(t, Options{})
	requireFinding(t, r, "target.collation_missing", Blocker, `"pg_catalog"."de-x-icu"`)
	// A table excluded from the migration does not need its collations.
	r = p.check(t, Options{Tables: tablesExcluding("public.names")})
	requireNoFinding(t, r, "target.collation_missing", "")
}

var createdDatabases int

// createDatabase makes a database with the given options on s, dropped when the test ends.
func createDatabase(t *testing.T, s *pgtest.Server, options string) string {
	t.Helper()
	createdDatabases++
	name := fmt.Sprintf("custom_%d_%d", s.Port, createdDatabases)
	s.Exec(t, "postgres", fmt.Sprintf("CREATE DATABASE %s %s", name, options))
	t.Cleanup(func() { s.Exec(t, "postgres", "DROP DATABASE IF EXISTS "+name) })
	return name
}
