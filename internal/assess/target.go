package assess

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/pg"
)

func checkTargetVersion(_ context.Context, env *Env) ([]Finding, error) {
	return judgeTargetVersion(env.Source.Version, env.Target.Version), nil
}

func judgeTargetVersion(source, target pg.Version) []Finding {
	switch {
	case target.Major < source.Major:
		return []Finding{{
			Check: "target.version", Severity: Blocker, Object: target.String(),
			Why: fmt.Sprintf("the target runs PostgreSQL %s, older than the source's %s: this is a downgrade, and the schema may use what the target lacks; pgleap migrate refuses it.", target, source),
			Fix: "use a target of the same or a newer major",
		}}
	case target.Major == source.Major:
		return []Finding{{
			Check: "target.version", Severity: Info, Object: target.String(),
			Why: fmt.Sprintf("both servers run PostgreSQL %d: this moves the database without upgrading it.", source.Major),
			Fix: "none needed",
		}}
	}
	return nil
}

type targetContents struct {
	HasState bool
	Tables   []string
}

const targetRelationsSQL = `
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND ` + catalog.UserRelationFilter + `
ORDER BY 1, 2 LIMIT 6`

func checkTargetEmpty(ctx context.Context, env *Env) ([]Finding, error) {
	var c targetContents
	conn := env.Target.conn
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'pgleap')").Scan(&c.HasState); err != nil {
		return nil, err
	}
	var err error
	if c.Tables, err = queryNames(ctx, conn, targetRelationsSQL); err != nil {
		return nil, fmt.Errorf("list target relations: %w", err)
	}
	return judgeTargetEmpty(pg.QuoteIdent(env.Target.Database), c), nil
}

func judgeTargetEmpty(database string, c targetContents) []Finding {
	if c.HasState {
		return []Finding{{
			Check: "target.migration_state", Severity: Info, Object: database,
			Why: "the target holds pgleap's state (schema pgleap) from an earlier run: pgleap migrate resumes that migration.",
			Fix: "none needed to resume; to start over, run pgleap cleanup and empty the target database",
		}}
	}
	if len(c.Tables) == 0 {
		return nil
	}
	listed := c.Tables
	more := ""
	if len(listed) > 5 {
		listed, more = listed[:5], ", ..."
	}
	return []Finding{{
		Check: "target.not_empty", Severity: Blocker, Object: database,
		Why: fmt.Sprintf("the target database already holds relations (%s%s): the source's schema and rows would collide with them.", strings.Join(listed, ", "), more),
		Fix: fmt.Sprintf("point --target at a new, empty database (CREATE DATABASE ... on the target), or empty %s", database),
	}}
}

type targetPrivileges struct {
	CanCreateSchema, CanCreateRole bool
}

const targetPrivilegesSQL = `
SELECT pg_catalog.has_database_privilege(current_database(), 'CREATE'), r.rolsuper OR r.rolcreaterole
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`

func checkTargetPrivileges(ctx context.Context, env *Env) ([]Finding, error) {
	var p targetPrivileges
	if err := env.Target.conn.QueryRow(ctx, targetPrivilegesSQL).Scan(&p.CanCreateSchema, &p.CanCreateRole); err != nil {
		return nil, err
	}
	settings, err := pg.Settings(ctx, env.Target.conn, "wal_level")
	if err != nil {
		return nil, err
	}
	return judgeTargetPrivileges(env.Target, p, settings["wal_level"]), nil
}

func judgeTargetPrivileges(target Server, p targetPrivileges, walLevel string) []Finding {
	var findings []Finding
	user := pg.QuoteIdent(target.User)
	db := pg.QuoteIdent(target.Database)
	if !p.CanCreateSchema {
		findings = append(findings, Finding{
			Check: "target.create_schema", Severity: Blocker, Object: db,
			Why: "the role cannot create schemas in the target database, so neither the source's schema nor pgleap's state can be created.",
			Fix: fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", db, user),
		})
	}
	if !p.CanCreateRole {
		findings = append(findings, Finding{
			Check: "target.create_role", Severity: Warning, Object: user,
			Why: "the role cannot create roles: the source's roles, which own objects and hold grants, must already exist on the target.",
			Fix: fmt.Sprintf("ALTER ROLE %s CREATEROLE; or create the source's roles on the target beforehand", user),
		})
	}
	if walLevel != "logical" {
		findings = append(findings, Finding{
			Check: "target.wal_level", Severity: Warning, Object: "wal_level",
			Why: fmt.Sprintf("the target's wal_level is %s: rollback replicates changes back from the target after cutover, which needs wal_level = logical there.", walLevel),
			Fix: walLevelFix(target),
		})
	}
	return findings
}

type extension struct {
	Name, Version string
}

func checkExtensions(ctx context.Context, env *Env) ([]Finding, error) {
	installed, err := queryRows[extension](ctx, env.Source.conn,
		"SELECT extname, extversion FROM pg_catalog.pg_extension ORDER BY extname")
	if err != nil {
		return nil, fmt.Errorf("list source extensions: %w", err)
	}
	available, err := queryRows[extension](ctx, env.Target.conn,
		"SELECT name, version FROM pg_catalog.pg_available_extension_versions ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list target extensions: %w", err)
	}
	return judgeExtensions(installed, available), nil
}

func judgeExtensions(installed, available []extension) []Finding {
	versions := map[string][]string{}
	for _, e := range available {
		versions[e.Name] = append(versions[e.Name], e.Version)
	}
	var findings []Finding
	for _, e := range installed {
		offered := versions[e.Name]
		if len(offered) == 0 {
			findings = append(findings, Finding{
				Check: "target.extension_missing", Severity: Blocker, Object: pg.QuoteIdent(e.Name),
				Why: fmt.Sprintf("extension %s %s is installed on the source but not available on the target.", e.Name, e.Version),
				Fix: fmt.Sprintf("install %s's package on the target server (or enable it in the managed service), or drop it from the source if unused: DROP EXTENSION %s;", e.Name, pg.QuoteIdent(e.Name)),
			})
			continue
		}
		if !slices.ContainsFunc(offered, func(v string) bool { return compareVersions(v, e.Version) >= 0 }) {
			findings = append(findings, Finding{
				Check: "target.extension_version", Severity: Blocker, Object: pg.QuoteIdent(e.Name),
				Why: fmt.Sprintf("the source has %s %s; the target offers only %s, which may lack objects the source uses.", e.Name, e.Version, strings.Join(offered, ", ")),
				Fix: fmt.Sprintf("install %s %s or newer on the target", e.Name, e.Version),
			})
		}
	}
	return findings
}

// compareVersions orders extension versions: dotted numbers compare numerically (1.10 > 1.9);
// anything else falls back to comparing text.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y string
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xn, xerr := strconv.Atoi(nonEmpty(x))
		yn, yerr := strconv.Atoi(nonEmpty(y))
		if xerr != nil || yerr != nil {
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
			continue
		}
		if xn != yn {
			if xn < yn {
				return -1
			}
			return 1
		}
	}
	return 0
}

func nonEmpty(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

func checkEncodingAndLocale(ctx context.Context, env *Env) ([]Finding, error) {
	source, err := pg.ReadDatabaseLocale(ctx, env.Source.conn, env.Source.Version.Major, "")
	if err != nil {
		return nil, fmt.Errorf("read the source database's locale: %w", err)
	}
	target, err := pg.ReadDatabaseLocale(ctx, env.Target.conn, env.Target.Version.Major, "")
	if err != nil {
		return nil, fmt.Errorf("read the target database's locale: %w", err)
	}
	return judgeEncodingAndLocale(pg.QuoteIdent(env.Target.Database), source, target), nil
}

func judgeEncodingAndLocale(database string, source, target pg.DatabaseLocale) []Finding {
	var findings []Finding
	createHint := fmt.Sprintf("CREATE DATABASE ... ENCODING '%s' LC_COLLATE '%s' LC_CTYPE '%s' TEMPLATE template0; on the target, and point --target at it",
		source.Encoding, source.Collate, source.Ctype)
	if source.Encoding != target.Encoding {
		findings = append(findings, Finding{
			Check: "target.encoding", Severity: Warning, Object: database,
			Why: fmt.Sprintf("the source database is encoded %s, the target %s: text that the target's encoding cannot represent fails to copy.", source.Encoding, target.Encoding),
			Fix: createHint,
		})
	}
	if source.Collate != target.Collate || source.Ctype != target.Ctype {
		findings = append(findings, Finding{
			Check: "target.locale", Severity: Warning, Object: database,
			Why: fmt.Sprintf("the source sorts text with LC_COLLATE %s (LC_CTYPE %s), the target with %s (%s): ORDER BY results and case mapping change after cutover.",
				source.Collate, source.Ctype, target.Collate, target.Ctype),
			Fix: createHint,
		})
	}
	if source.Provider != target.Provider {
		findings = append(findings, Finding{
			Check: "target.locale_provider", Severity: Warning, Object: database,
			Why: fmt.Sprintf("the source database uses the %s locale provider, the target %s: text may sort differently after cutover.", source.Provider, target.Provider),
			Fix: fmt.Sprintf("CREATE DATABASE ... LOCALE_PROVIDER %s TEMPLATE template0; on the target, and point --target at it", source.Provider),
		})
	}
	return findings
}

// Collations that the selected tables' columns and indexes use, other than the database
// default; pg_dump recreates those defined in user schemas, so only PostgreSQL's own must
// already exist on the target.
const usedCollationsSQL = `
SELECT DISTINCT co.collname
FROM pg_catalog.pg_collation co
JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
WHERE cn.nspname = 'pg_catalog' AND co.collname <> 'default'
  AND (co.oid IN (SELECT a.attcollation FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = ANY ($1) AND a.attnum > 0 AND NOT a.attisdropped)
       OR co.oid IN (SELECT unnest(i.indcollation::oid[]) FROM pg_catalog.pg_index i WHERE i.indrelid = ANY ($1)))
ORDER BY 1`

func checkCollations(ctx context.Context, env *Env) ([]Finding, error) {
	oids := make([]uint32, len(env.Tables))
	for i, t := range env.Tables {
		oids[i] = t.OID
	}
	used, err := queryStrings(ctx, env.Source.conn, usedCollationsSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("list collations used on the source: %w", err)
	}
	present, err := queryStrings(ctx, env.Target.conn,
		"SELECT collname FROM pg_catalog.pg_collation WHERE collnamespace = 'pg_catalog'::regnamespace AND collname = ANY ($1)", used)
	if err != nil {
		return nil, fmt.Errorf("look up collations on the target: %w", err)
	}
	var findings []Finding
	for _, name := range used {
		if slices.Contains(present, name) {
			continue
		}
		findings = append(findings, Finding{
			Check: "target.collation_missing", Severity: Blocker, Object: pg.QualifiedName("pg_catalog", name),
			Why: "columns or indexes use this collation, which the target does not have: their definitions cannot be created there.",
			Fix: "install the locale or ICU version on the target's OS and run SELECT pg_import_system_collations('pg_catalog'); there, or change the columns to a collation the target has",
		})
	}
	return findings, nil
}

// checkCutoverPrivileges reads what the later steps need beyond the copy: the apply's
// session_replication_role on the target, the cutover's freeze of the source, and for the
// way back a slot on the target, the apply on the source, and rollback's freeze of the
// target.
func checkCutoverPrivileges(ctx context.Context, env *Env) ([]Finding, error) {
	source, err := pg.ReadRights(ctx, env.Source.conn)
	if err != nil {
		return nil, err
	}
	target, err := pg.ReadRights(ctx, env.Target.conn)
	if err != nil {
		return nil, err
	}
	return judgeCutoverPrivileges(source, target), nil
}

func judgeCutoverPrivileges(source, target pg.Rights) []Finding {
	var findings []Finding
	if !target.SetReplicationRole {
		findings = append(findings, Finding{
			Check: "target.replication_role", Severity: Blocker, Object: pg.QuoteIdent(target.Role),
			Why: "the role may not set session_replication_role, which the apply sets to replica so that the target's triggers and foreign keys do not fire twice.",
			Fix: target.ReplicationRoleFix(),
		})
	}
	if missing := source.FreezeMissing(); len(missing) > 0 {
		findings = append(findings, Finding{
			Check: "source.freeze_privilege", Severity: Warning, Object: pg.QuoteIdent(source.Database),
			Why: "pgleap cutover freezes writes on the source: as a role that is not a superuser, it revokes CONNECT on the database, sets it read-only and ends the other sessions, which needs what is missing here.",
			Fix: strings.Join(missing, " "),
		})
	}
	var wayBack []string
	if !target.Replication {
		wayBack = append(wayBack, fmt.Sprintf("on the target: ALTER ROLE %s REPLICATION;", pg.QuoteIdent(target.Role)))
	}
	if !source.SetReplicationRole {
		wayBack = append(wayBack, "on the source: "+source.ReplicationRoleFix())
	}
	for _, fix := range target.FreezeMissing() {
		wayBack = append(wayBack, "on the target: "+fix)
	}
	if len(wayBack) > 0 {
		findings = append(findings, Finding{
			Check: "target.way_back_privilege", Severity: Warning, Object: pg.QuoteIdent(target.Role),
			Why: "after the cutover, pgleap streams the target's changes back to the source, so that pgleap rollback loses nothing, and rollback freezes the target: without these, cut over with --no-reverse, which has no way back.",
			Fix: strings.Join(wayBack, " "),
		})
	}
	return findings
}
