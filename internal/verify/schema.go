package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// schemaObject is one object as both sides list it. Name is unquoted and dotted below the
// schema (table.column, table.index); Table is the table it belongs to, if any, and
// Relation the table, view or sequence it belongs to or is.
type schemaObject struct {
	Kind, Schema, Table, Relation, Name string
}

// userObjectsSQL lists every user object with the table it belongs to. Objects of
// extensions and of pgleap itself are left out, and so are NOT NULL constraints, which 18
// keeps in pg_constraint but earlier majors as a column property (compared with columns).
const userObjectsSQL = `
WITH user_ns AS (
  SELECT oid, nspname FROM pg_catalog.pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema', ` + catalog.OwnSchemas + `)
    AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%'
),
ext AS (SELECT classid, objid FROM pg_catalog.pg_depend WHERE deptype = 'e'),
rel AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind, c.relacl
  FROM pg_catalog.pg_class c JOIN user_ns n ON n.oid = c.relnamespace
  WHERE (c.tableoid, c.oid) NOT IN (SELECT classid, objid FROM ext)
)
SELECT CASE relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'f' THEN 'foreign table' WHEN 'v' THEN 'view'
                    WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'c' THEN 'type' END,
       nspname, CASE WHEN relkind IN ('r', 'p', 'f') THEN relname ELSE '' END, relname, relname
FROM rel WHERE relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'c')
UNION ALL
SELECT 'column', r.nspname, CASE WHEN r.relkind IN ('r', 'p', 'f') THEN r.relname ELSE '' END, r.relname,
       r.relname || '.' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'index', r.nspname, CASE WHEN r.relkind IN ('r', 'p', 'f') THEN r.relname ELSE '' END, r.relname, r.relname || '.' || i.relname
FROM rel r JOIN pg_catalog.pg_index x ON x.indrelid = r.oid JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
UNION ALL
SELECT 'constraint ' || CASE c.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key'
                                       WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' WHEN 't' THEN 'trigger' END,
       r.nspname, r.relname, r.relname, r.relname || '.' || c.conname
FROM rel r JOIN pg_catalog.pg_constraint c ON c.conrelid = r.oid
WHERE c.contype IN ('p', 'u', 'f', 'c', 'x', 't')
UNION ALL
SELECT 'trigger', r.nspname, r.relname, r.relname, r.relname || '.' || t.tgname
FROM rel r JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.oid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'policy', r.nspname, r.relname, r.relname, r.relname || '.' || p.polname
FROM rel r JOIN pg_catalog.pg_policy p ON p.polrelid = r.oid
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function' ELSE 'function' END,
       n.nspname, '', '', p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_catalog.pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
WHERE ('pg_catalog.pg_proc'::regclass, p.oid) NOT IN (SELECT classid, objid FROM ext)
UNION ALL
SELECT CASE t.typtype WHEN 'e' THEN 'type (enum)' WHEN 'd' THEN 'type (domain)' WHEN 'r' THEN 'type (range)'
                      WHEN 'm' THEN 'type (multirange)' ELSE 'type' END,
       n.nspname, '', '', t.typname
FROM pg_catalog.pg_type t JOIN user_ns n ON n.oid = t.typnamespace
WHERE t.typtype IN ('b', 'd', 'e', 'r') AND t.typcategory <> 'A'
  AND ('pg_catalog.pg_type'::regclass, t.oid) NOT IN (SELECT classid, objid FROM ext)
UNION ALL
SELECT 'extension', '', '', '', extname FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'
UNION ALL
SELECT 'schema', nspname, '', '', nspname FROM user_ns
WHERE (('pg_catalog.pg_namespace'::regclass, oid) NOT IN (SELECT classid, objid FROM ext))
UNION ALL
SELECT 'grant', r.nspname, CASE WHEN r.relkind IN ('r', 'p', 'f') THEN r.relname ELSE '' END, r.relname,
       r.relname || ' ' || a.privilege_type || ' to ' || CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END
FROM rel r, LATERAL pg_catalog.aclexplode(r.relacl) a
WHERE r.relacl IS NOT NULL
UNION ALL
SELECT 'grant', n.nspname, '', '', 'schema ' || a.privilege_type || ' to ' || CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END
FROM user_ns n JOIN pg_catalog.pg_namespace ns ON ns.oid = n.oid, LATERAL pg_catalog.aclexplode(ns.nspacl) a
WHERE ns.nspacl IS NOT NULL`

// KindDifference is one schema and kind whose objects differ between the sides.
type KindDifference struct {
	Schema       string   `json:"schema"`
	Kind         string   `json:"kind"`
	Source       int      `json:"source"`
	Target       int      `json:"target"`
	OnlyOnSource []string `json:"only_on_source,omitempty"`
	OnlyOnTarget []string `json:"only_on_target,omitempty"`
}

// SchemaReport compares the objects of both databases.
type SchemaReport struct {
	Objects     int              `json:"objects_compared"`
	Differences []KindDifference `json:"differences"`
}

// Equal reports whether the target holds exactly the source's objects.
func (r *SchemaReport) Equal() bool { return len(r.Differences) == 0 }

// CompareSchemas lists both sides' objects and reports where they differ. selection and
// skipped (the migration's recorded table selection and left-out objects) say what the
// target is not expected to hold.
func CompareSchemas(ctx context.Context, source, target *pgx.Conn, selection config.TableFilter, skipped []state.SkippedObject) (*SchemaReport, error) {
	sourceObjects, err := listObjects(ctx, source)
	if err != nil {
		return nil, fmt.Errorf("list source objects: %w", err)
	}
	targetObjects, err := listObjects(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("list target objects: %w", err)
	}
	sourceVersion, err := pg.ServerVersion(ctx, source)
	if err != nil {
		return nil, err
	}
	targetVersion, err := pg.ServerVersion(ctx, target)
	if err != nil {
		return nil, err
	}
	// Either way: after a cutover the new server is the source of the way back.
	older := min(sourceVersion.Major, targetVersion.Major)
	newerGrant := func(o schemaObject) bool { return o.Kind == "grant" && privilegeNewerThan(o.Name, older) }
	targetObjects = slices.DeleteFunc(targetObjects, newerGrant)
	sourceObjects = slices.DeleteFunc(sourceObjects, newerGrant)
	expected := sourceObjects[:0:0]
	for _, o := range sourceObjects {
		if inMigration(o, selection, skipped) {
			expected = append(expected, o)
		}
	}
	return diffObjects(expected, targetObjects), nil
}

// privilegesAdded are privileges a major introduced; an owner's full privileges on the
// newer server include them although the older one cannot hold them.
var privilegesAdded = map[string]int{"MAINTAIN": 17}

func privilegeNewerThan(grant string, olderMajor int) bool {
	for privilege, major := range privilegesAdded {
		if olderMajor < major && strings.Contains(grant, " "+privilege+" to ") {
			return true
		}
	}
	return false
}

func listObjects(ctx context.Context, conn *pgx.Conn) ([]schemaObject, error) {
	rows, err := conn.Query(ctx, userObjectsSQL)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[schemaObject])
}

// inMigration reports whether the target is expected to hold o.
func inMigration(o schemaObject, selection config.TableFilter, skipped []state.SkippedObject) bool {
	if o.Schema != "" && selection.ExcludesSchema(o.Schema) {
		return false
	}
	if o.Table != "" && !selection.Selects(o.Schema, o.Table) {
		return false
	}
	for _, s := range skipped {
		// Skipped objects are named as pg_restore -l names them: schema, then the tag, which
		// for objects of a table is "table name". What belongs to a skipped view goes with it.
		if s.Name == o.Schema+"."+o.Name || s.Name == o.Schema+"."+strings.Replace(o.Name, ".", " ", 1) ||
			(o.Relation != "" && o.Relation != o.Table && s.Name == o.Schema+"."+o.Relation) {
			return false
		}
	}
	return true
}

func diffObjects(source, target []schemaObject) *SchemaReport {
	type key struct{ schema, kind string }
	names := func(objects []schemaObject) map[key]map[string]bool {
		m := map[key]map[string]bool{}
		for _, o := range objects {
			k := key{o.Schema, o.Kind}
			if m[k] == nil {
				m[k] = map[string]bool{}
			}
			m[k][o.Name] = true
		}
		return m
	}
	src, tgt := names(source), names(target)
	keys := map[key]bool{}
	for k := range src {
		keys[k] = true
	}
	for k := range tgt {
		keys[k] = true
	}
	report := &SchemaReport{Objects: len(source), Differences: []KindDifference{}}
	for k := range keys {
		d := KindDifference{Schema: k.schema, Kind: k.kind, Source: len(src[k]), Target: len(tgt[k])}
		for name := range src[k] {
			if !tgt[k][name] {
				d.OnlyOnSource = append(d.OnlyOnSource, name)
			}
		}
		for name := range tgt[k] {
			if !src[k][name] {
				d.OnlyOnTarget = append(d.OnlyOnTarget, name)
			}
		}
		if len(d.OnlyOnSource)+len(d.OnlyOnTarget) > 0 {
			slices.Sort(d.OnlyOnSource)
			slices.Sort(d.OnlyOnTarget)
			report.Differences = append(report.Differences, d)
		}
	}
	slices.SortFunc(report.Differences, func(a, b KindDifference) int {
		return cmp.Or(cmp.Compare(a.Schema, b.Schema), cmp.Compare(a.Kind, b.Kind))
	})
	return report
}
