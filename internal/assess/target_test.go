package assess

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/pg"
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

	requireFinding(t, r, "target.replication_role", Blocker, fmt.Sprintf("%q", role))
	requireFinding(t, r, "target.way_back_privilege", Warning, fmt.Sprintf("%q", role))

	r = p.check(t, Options{})
	for _, id := range []string{"target.create_schema", "target.create_role", "target.replication_role", "target.way_back_privilege", "source.freeze_privilege"} {
		requireNoFinding(t, r, id, "")
	}
	if pgtest.TargetMajor() < 15 {
		return // before 15, only a superuser sets session_replication_role
	}
	// Registered after createRole's cleanup, this runs before it: the role cannot be dropped
	// while it owns the database.
	t.Cleanup(func() { p.target.Exec(t, "postgres", "ALTER DATABASE "+p.targetDB+" OWNER TO postgres") })
	p.target.Exec(t, "postgres", fmt.Sprintf(`ALTER ROLE %[1]s REPLICATION; ALTER DATABASE %[2]s OWNER TO %[1]s;
		GRANT pg_signal_backend, pg_read_all_stats TO %[1]s; GRANT SET ON PARAMETER session_replication_role TO %[1]s`, role, p.targetDB))
	r = runCheck(t, p.source.ConnString(p.sourceDB),
		strings.Replace(p.target.ConnString(p.targetDB), "user=postgres", "user="+role, 1), Options{})
	for _, id := range []string{"target.create_schema", "target.replication_role", "target.way_back_privilege"} {
		requireNoFinding(t, r, id, "")
	}
}

func TestSourceFreezePrivilege(t *testing.T) {
	p := newPair(t)
	role := createRole(t, p.source, p.sourceDB, "REPLICATION")
	r := runCheck(t, strings.Replace(p.source.ConnString(p.sourceDB), "user=postgres", "user="+role, 1),
		p.target.ConnString(p.targetDB), Options{})
	f := requireFinding(t, r, "source.freeze_privilege", Warning, fmt.Sprintf("%q", p.sourceDB))
	quoted := fmt.Sprintf("%q", role)
	for _, want := range []string{"OWNER TO " + quoted, "GRANT pg_signal_backend TO " + quoted, "GRANT pg_read_all_stats TO " + quoted} {
		if !strings.Contains(f.Fix, want) {
			t.Errorf("source.freeze_privilege's fix lacks %q: %s", want, f.Fix)
		}
	}
	t.Cleanup(func() { p.source.Exec(t, "postgres", "ALTER DATABASE "+p.sourceDB+" OWNER TO postgres") })
	p.source.Exec(t, "postgres", fmt.Sprintf("ALTER DATABASE %[2]s OWNER TO %[1]s; GRANT pg_signal_backend, pg_read_all_stats TO %[1]s", role, p.sourceDB))
	r = runCheck(t, strings.Replace(p.source.ConnString(p.sourceDB), "user=postgres", "user="+role, 1),
		p.target.ConnString(p.targetDB), Options{})
	requireNoFinding(t, r, "source.freeze_privilege", "")
}

func TestJudgeCutoverPrivileges(t *testing.T) {
	all := pg.Rights{Role: "m", Database: "shop", Major: 17, OwnsDatabase: true, SignalBackend: true, ReadAllStats: true,
		SetReplicationRole: true, Replication: true, CreateInDatabase: true}
	old := all
	old.Major, old.SetReplicationRole = 13, false
	stranger := all
	stranger.OwnsDatabase, stranger.SignalBackend = false, false
	noReplication := all
	noReplication.Replication = false
	for _, tc := range []struct {
		name           string
		source, target pg.Rights
		want           map[string]string // check id: a part of its fix
	}{
		{"every right", all, all, nil},
		{"superusers", pg.Rights{Superuser: true, SetReplicationRole: true, Replication: true}, pg.Rights{Superuser: true, SetReplicationRole: true, Replication: true}, nil},
		{"a 13 source cannot apply the way back", old, all, map[string]string{"target.way_back_privilege": "before PostgreSQL 15 only a superuser"}},
		{"a 13 target cannot apply", all, old, map[string]string{"target.replication_role": "only a superuser"}},
		{"source not owned", stranger, all, map[string]string{"source.freeze_privilege": `ALTER DATABASE "shop" OWNER TO "m"; GRANT pg_signal_backend TO "m";`}},
		{"target not owned", all, stranger, map[string]string{"target.way_back_privilege": `on the target: ALTER DATABASE "shop" OWNER TO "m";`}},
		{"no slot on the target", all, noReplication, map[string]string{"target.way_back_privilege": `ALTER ROLE "m" REPLICATION`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judgeCutoverPrivileges(tc.source, tc.target)
			if len(got) != len(tc.want) {
				t.Fatalf("%d findings, want %d: %+v", len(got), len(tc.want), got)
			}
			for _, f := range got {
				part, ok := tc.want[f.Check]
				if !ok || !strings.Contains(f.Fix, part) {
					t.Errorf("finding %s with fix %q, want one whose fix holds %q", f.Check, f.Fix, part)
				}
			}
		})
	}
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

func TestJudgeDDLCapture(t *testing.T) {
	for _, tc := range []struct {
		name           string
		may, installed bool
		why, fix       string
	}{
		{"a superuser", true, false, "carried only with pgleap migrate --ddl", "pass --ddl"},
		{"another role", false, false, "only a superuser (or rds_superuser) may create", "freeze schema changes"},
		{"installed", false, true, "the source captures its schema changes", "pgleap cleanup removes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judgeDDLCapture(`"m"`, tc.may, tc.installed)
			if len(got) != 1 || got[0].Check != "source.ddl_capture" || got[0].Severity != Info ||
				!strings.Contains(got[0].Why, tc.why) || !strings.Contains(got[0].Fix, tc.fix) {
				t.Errorf("judgeDDLCapture = %+v", got)
			}
		})
	}
}
