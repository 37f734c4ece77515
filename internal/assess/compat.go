package assess

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/pg"
)

// catalogRemoval is a column of a system view or catalog, or a function, that a major
// removed or renamed. A view using it cannot be restored on that major or later; a function
// body using it fails when it runs.
type catalogRemoval struct {
	Relation    string // "" for a function
	Name        string // the column or function
	RemovedIn   int
	Replacement string
}

// catalogRemovals is pgleap's table of what each major took away from SQL that user views
// and functions commonly read. Majors before 12 are listed for completeness; such sources
// are refused by checkSourceVersion.
var catalogRemovals = []catalogRemoval{
	{"pg_class", "relhaspkey", 11, "EXISTS (SELECT FROM pg_index WHERE indrelid = ... AND indisprimary)"},
	{"pg_class", "relhasoids", 12, "nothing: tables WITH OIDS are gone"},
	{"pg_attrdef", "adsrc", 12, "pg_get_expr(adbin, adrelid)"},
	{"pg_constraint", "consrc", 12, "pg_get_constraintdef(oid)"},
	{"pg_stat_wal_receiver", "received_lsn", 13, "written_lsn or flushed_lsn"},
	{"pg_stat_statements", "total_time", 13, "total_exec_time + total_plan_time"},
	{"pg_stat_statements", "mean_time", 13, "mean_exec_time"},
	{"pg_stat_statements", "min_time", 13, "min_exec_time"},
	{"pg_stat_statements", "max_time", 13, "max_exec_time"},
	{"pg_stat_statements", "stddev_time", 13, "stddev_exec_time"},
	{"pg_database", "datlastsysoid", 15, "nothing: the column is gone"},
	{"", "pg_start_backup", 15, "pg_backup_start"},
	{"", "pg_stop_backup", 15, "pg_backup_stop"},
	{"", "pg_is_in_backup", 15, "nothing: exclusive backups are gone"},
	{"", "pg_backup_start_time", 15, "nothing: exclusive backups are gone"},
	{"pg_database", "daticulocale", 17, "datlocale"},
	{"pg_collation", "colliculocale", 17, "colllocale"},
	{"pg_stat_bgwriter", "checkpoints_timed", 17, "pg_stat_checkpointer.num_timed"},
	{"pg_stat_bgwriter", "checkpoints_req", 17, "pg_stat_checkpointer.num_requested"},
	{"pg_stat_bgwriter", "checkpoint_write_time", 17, "pg_stat_checkpointer.write_time"},
	{"pg_stat_bgwriter", "checkpoint_sync_time", 17, "pg_stat_checkpointer.sync_time"},
	{"pg_stat_bgwriter", "buffers_checkpoint", 17, "pg_stat_checkpointer.buffers_written"},
	{"pg_stat_bgwriter", "buffers_backend", 17, "pg_stat_io"},
	{"pg_stat_bgwriter", "buffers_backend_fsync", 17, "pg_stat_io"},
	{"pg_stat_progress_vacuum", "max_dead_tuples", 17, "max_dead_tuple_bytes"},
	{"pg_stat_progress_vacuum", "num_dead_tuples", 17, "num_dead_item_ids"},
	{"pg_stat_statements", "blk_read_time", 17, "shared_blk_read_time"},
	{"pg_stat_statements", "blk_write_time", 17, "shared_blk_write_time"},
	{"pg_stat_io", "op_bytes", 18, "nothing: byte counts are in read_bytes, write_bytes, extend_bytes"},
	{"pg_stat_wal", "wal_write", 18, "pg_stat_io (object 'wal')"},
	{"pg_stat_wal", "wal_sync", 18, "pg_stat_io (object 'wal')"},
	{"pg_stat_wal", "wal_write_time", 18, "pg_stat_io (object 'wal')"},
	{"pg_stat_wal", "wal_sync_time", 18, "pg_stat_io (object 'wal')"},
}

// removalPatterns holds, for each entry of catalogRemovals, the patterns that must all
// match lower-cased SQL text for it to use the removed column or function.
var removalPatterns = func() [][]*regexp.Regexp {
	patterns := make([][]*regexp.Regexp, len(catalogRemovals))
	for i, r := range catalogRemovals {
		if r.Relation == "" {
			patterns[i] = []*regexp.Regexp{regexp.MustCompile(`\b` + regexp.QuoteMeta(r.Name) + `\s*\(`)}
			continue
		}
		patterns[i] = []*regexp.Regexp{
			regexp.MustCompile(`\b` + regexp.QuoteMeta(r.Relation) + `\b`),
			regexp.MustCompile(`\b` + regexp.QuoteMeta(r.Name) + `\b`),
		}
	}
	return patterns
}()

func matchesAll(patterns []*regexp.Regexp, text string) bool {
	for _, p := range patterns {
		if !p.MatchString(text) {
			return false
		}
	}
	return true
}

func (r catalogRemoval) String() string {
	if r.Relation == "" {
		return r.Name + "()"
	}
	return r.Relation + "." + r.Name
}

// sqlDefinition is a user object whose definition references other objects.
type sqlDefinition struct {
	Kind         string // view, materialized view, function, aggregate or operator
	Schema, Name string
	Args         string // "(bigint, NONE)" for functions and operators, "" otherwise
	Text         string // the definition, for views and functions
}

// Object names the definition as a user would write it in DROP.
func (d sqlDefinition) Object() string {
	if d.Kind == "operator" { // an operator's name is a symbol, not an identifier
		return pg.QuoteIdent(d.Schema) + "." + d.Name + d.Args
	}
	return pg.QualifiedName(d.Schema, d.Name) + d.Args
}

// User views and SQL or PL/pgSQL functions, with the text that references catalog objects.
const userDefinitionsSQL = `
SELECT CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END,
       n.nspname, c.relname, '', pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND ` + catalog.UserRelationFilter + `
UNION ALL
SELECT 'function', n.nspname, p.proname, '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', p.prosrc
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE l.lanname NOT IN ('c', 'internal')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', ` + catalog.OwnSchemas + `)
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')`

// Before 14, array functions took anyarray/anyelement; 14 changed them to anycompatible, and
// user aggregates and operators built on the old signatures no longer restore (the same
// list pg_upgrade checks).
const oldPolymorphicsSQL = `
WITH old(fn) AS (
  SELECT unnest(ARRAY['array_append(anyarray,anyelement)', 'array_cat(anyarray,anyarray)',
                      'array_prepend(anyelement,anyarray)', 'array_remove(anyarray,anyelement)',
                      'array_replace(anyarray,anyelement,anyelement)', 'array_position(anyarray,anyelement)',
                      'array_position(anyarray,anyelement,integer)', 'array_positions(anyarray,anyelement)',
                      'width_bucket(anyelement,anyarray)']::pg_catalog.regprocedure[])
)
SELECT 'aggregate', n.nspname, p.proname, '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', ''
FROM pg_catalog.pg_aggregate a
JOIN pg_catalog.pg_proc p ON p.oid = a.aggfnoid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE a.aggfnoid >= 16384 AND a.aggtranstype = ANY (ARRAY['anyarray', 'anyelement']::pg_catalog.regtype[])
  AND (a.aggtransfn IN (SELECT fn FROM old) OR a.aggfinalfn IN (SELECT fn FROM old))
UNION ALL
SELECT 'operator', n.nspname, o.oprname, ` + operatorArgs + `, ''
FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
WHERE o.oid >= 16384 AND o.oprcode IN (SELECT fn FROM old)
  AND (o.oprleft = ANY (ARRAY['anyarray', 'anyelement']::pg_catalog.regtype[])
       OR o.oprright = ANY (ARRAY['anyarray', 'anyelement']::pg_catalog.regtype[]))`

// Postfix operators (an operator with a left operand only) were removed in 14.
const postfixOperatorsSQL = `
SELECT 'operator', n.nspname, o.oprname, ` + operatorArgs + `, ''
FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
WHERE o.oid >= 16384 AND o.oprleft <> 0 AND o.oprright = 0`

// operatorArgs writes an operator's operand types as DROP OPERATOR takes them.
const operatorArgs = `'(' || CASE WHEN o.oprleft = 0 THEN 'NONE' ELSE pg_catalog.format_type(o.oprleft, NULL) END
       || ', ' || CASE WHEN o.oprright = 0 THEN 'NONE' ELSE pg_catalog.format_type(o.oprright, NULL) END || ')'`

func checkRemovedFeatures(ctx context.Context, env *Env) ([]Finding, error) {
	source, target := env.Source.Version.Major, env.Target.Version.Major
	conn := env.Source.conn
	var findings []Finding
	if source < 14 && target >= 14 {
		postfix, err := queryRows[sqlDefinition](ctx, conn, postfixOperatorsSQL)
		if err != nil {
			return nil, fmt.Errorf("list postfix operators: %w", err)
		}
		for _, op := range postfix {
			findings = append(findings, Finding{
				Check: "compat.postfix_operator", Severity: Blocker, Object: op.Object(),
				Why: fmt.Sprintf("PostgreSQL 14 removed postfix operators; the target (%d) cannot create this one.", target),
				Fix: fmt.Sprintf("replace it with a prefix operator or a function call, then DROP OPERATOR %s;", op.Object()),
			})
		}
		old, err := queryRows[sqlDefinition](ctx, conn, oldPolymorphicsSQL)
		if err != nil {
			return nil, fmt.Errorf("list aggregates and operators over old polymorphic functions: %w", err)
		}
		for _, obj := range old {
			findings = append(findings, Finding{
				Check: "compat.old_polymorphic", Severity: Blocker, Object: obj.Object(),
				Why: fmt.Sprintf("this %s is built on an array function whose anyarray/anyelement signature PostgreSQL 14 replaced with anycompatible: the target (%d) cannot create it.", obj.Kind, target),
				Fix: fmt.Sprintf("drop the %s and recreate it with anycompatiblearray/anycompatible argument and state types", obj.Kind),
			})
		}
	}
	builtIn := builtInTypesUsed(env.Tables)
	present, err := queryStrings(ctx, env.Target.conn,
		"SELECT typname FROM pg_catalog.pg_type WHERE typnamespace = 'pg_catalog'::regnamespace AND typname = ANY ($1)", keys(builtIn))
	if err != nil {
		return nil, fmt.Errorf("look up built-in types on the target: %w", err)
	}
	findings = append(findings, judgeRemovedTypes(target, builtIn, present)...)

	definitions, err := queryRows[sqlDefinition](ctx, conn, userDefinitionsSQL)
	if err != nil {
		return nil, fmt.Errorf("list views and functions: %w", err)
	}
	return append(findings, judgeCatalogReferences(source, target, definitions)...), nil
}

func judgeCatalogReferences(source, target int, definitions []sqlDefinition) []Finding {
	var findings []Finding
	for _, def := range definitions {
		lower := strings.ToLower(def.Text)
		for i, r := range catalogRemovals {
			if r.RemovedIn <= source || r.RemovedIn > target || !matchesAll(removalPatterns[i], lower) {
				continue
			}
			severity, consequence := Blocker, "it cannot be created on the target"
			if def.Kind == "function" {
				severity, consequence = Warning, "it is created, but fails when it runs"
			}
			findings = append(findings, Finding{
				Check: "compat.removed_catalog_reference", Severity: severity, Object: def.Object(),
				Why: fmt.Sprintf("this %s uses %s, which PostgreSQL %d removed: %s.", def.Kind, r, r.RemovedIn, consequence),
				Fix: fmt.Sprintf("rewrite it to use %s (CREATE OR REPLACE on the source)", r.Replacement),
			})
		}
	}
	return findings
}

// builtInTypesUsed maps each of PostgreSQL's own types that a selected column uses to the
// columns using it.
func builtInTypesUsed(tables []catalog.Table) map[string][]string {
	used := map[string][]string{}
	for _, t := range tables {
		for _, c := range t.Columns {
			if c.BaseTypeSchema == "pg_catalog" {
				used[c.BaseType] = append(used[c.BaseType], t.QualifiedName()+"."+pg.QuoteIdent(c.Name))
			}
		}
	}
	return used
}

// judgeRemovedTypes finds built-in types that the target's major no longer has (abstime,
// reltime and tinterval went in 12): a column of such a type cannot be created there.
func judgeRemovedTypes(target int, used map[string][]string, presentOnTarget []string) []Finding {
	var findings []Finding
	for _, typ := range slices.Sorted(maps.Keys(used)) {
		if slices.Contains(presentOnTarget, typ) {
			continue
		}
		columns := used[typ]
		findings = append(findings, Finding{
			Check: "compat.removed_type", Severity: Blocker, Object: pg.QualifiedName("pg_catalog", typ),
			Why: fmt.Sprintf("PostgreSQL %d has no type %s, used by %s: these columns cannot be created on the target.", target, typ, strings.Join(columns, ", ")),
			Fix: "ALTER TABLE ... ALTER COLUMN ... TYPE to a type the target has (for the old time types: timestamptz, interval or tstzrange)",
		})
	}
	return findings
}

func keys[V any](m map[string]V) []string {
	return slices.Collect(maps.Keys(m))
}
