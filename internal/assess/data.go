package assess

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/monitor"
	"github.com/pgleap/pgleap/internal/pg"
)

func checkReplicaIdentity(_ context.Context, env *Env) ([]Finding, error) {
	return judgeReplicaIdentity(env.Tables), nil
}

// judgeReplicaIdentity finds tables whose UPDATE and DELETE cannot be replicated: logical
// replication identifies a changed row by its replica identity, and once the table is in a
// publication PostgreSQL refuses UPDATE and DELETE on it if there is none.
func judgeReplicaIdentity(tables []catalog.Table) []Finding {
	var findings []Finding
	for _, t := range tables {
		if t.Kind != catalog.KindTable || t.Unlogged {
			continue // partitioned parents hold no rows; unlogged tables have their own finding
		}
		missing := t.ReplicaIdentity == catalog.IdentityNothing ||
			(t.ReplicaIdentity == catalog.IdentityDefault && t.PrimaryKey == "")
		if !missing {
			continue
		}
		name := t.QualifiedName()
		why := "the table has no primary key and no replica identity: UPDATE and DELETE would not replicate, and PostgreSQL refuses them on a published table."
		if t.ReplicaIdentity == catalog.IdentityNothing {
			why = "the table has REPLICA IDENTITY NOTHING: UPDATE and DELETE would not replicate, and PostgreSQL refuses them on a published table."
		}
		fix := fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL; (no unique index on NOT NULL columns exists: every UPDATE and DELETE then logs the whole old row, and the target finds rows by all their columns; better, add a primary key)", name)
		if t.CandidateKey != "" {
			fix = fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY USING INDEX %s; (a unique index on NOT NULL columns)", name, pg.QuoteIdent(t.CandidateKey))
			if t.ReplicaIdentity == catalog.IdentityDefault {
				fix = fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY USING INDEX %s; or %s", name, pg.QuoteIdent(t.CandidateKey), fix)
			}
		}
		findings = append(findings, Finding{Check: "data.no_replica_identity", Severity: Blocker, Object: name, Why: why, Fix: fix})
	}
	return findings
}

func checkTableKinds(_ context.Context, env *Env) ([]Finding, error) {
	return judgeTableKinds(env.Tables), nil
}

func judgeTableKinds(tables []catalog.Table) []Finding {
	var findings []Finding
	for _, t := range tables {
		name := t.QualifiedName()
		switch {
		case t.Unlogged:
			findings = append(findings, Finding{
				Check: "data.unlogged_table", Severity: Warning, Object: name,
				Why: "unlogged tables write no WAL, so logical replication cannot carry their changes: only the rows at copy time arrive.",
				Fix: fmt.Sprintf("ALTER TABLE %s SET LOGGED; (writes the table to WAL once), or exclude it (--exclude) and reload it after cutover", name),
			})
		case t.Kind == catalog.KindForeign:
			findings = append(findings, Finding{
				Check: "data.foreign_table", Severity: Warning, Object: name,
				Why: "a foreign table's rows live on another server: pgleap recreates its definition, not its data.",
				Fix: "make sure the foreign server is reachable from the target and recreate its user mappings there (passwords are not copied)",
			})
		case t.Kind == catalog.KindPartitioned && t.PartitionOf == "":
			findings = append(findings, Finding{
				Check: "data.partitioned_table", Severity: Info, Object: name,
				Why: "a partitioned table is published through its root, so changes keep flowing if partitions are attached or detached on either side.",
				Fix: "none needed: pgleap copies each partition and streams through the root",
			})
		}
		var generated []string
		for _, c := range t.Columns {
			if c.Generated {
				generated = append(generated, pg.QuoteIdent(c.Name))
			}
		}
		if len(generated) > 0 {
			findings = append(findings, Finding{
				Check: "data.generated_columns", Severity: Info, Object: name,
				Why: fmt.Sprintf("generated column %s is computed again by the target, not copied.", strings.Join(generated, ", ")),
				Fix: "none needed; the generation expression comes with the schema",
			})
		}
	}
	return findings
}

// valueFidelity lists the column types whose values other tools silently change, and why
// pgleap does not.
var valueFidelity = []struct {
	check string
	match func(catalog.Column) bool
	why   string
}{
	{"data.unconstrained_numeric", func(c catalog.Column) bool { return c.BaseType == "numeric" && c.Unconstrained },
		"numeric without precision holds up to 131072 digits, which tools that pass numbers through floats round; pgleap copies every digit."},
	{"data.timestamptz", func(c catalog.Column) bool { return c.BaseType == "timestamptz" },
		"timestamptz values are instants; tools that copy them through a session TimeZone can shift them. pgleap's sessions run in UTC and carry the exact instant."},
	{"data.composite_type", func(c catalog.Column) bool { return c.BaseTypeKind == "c" },
		"composite values are easily flattened or mangled by tools that do not know the type; pgleap copies their exact text form."},
	{"data.oid_reference_type", func(c catalog.Column) bool {
		return strings.HasPrefix(c.BaseType, "reg") || c.BaseType == "aclitem"
	}, "values of this type name catalog objects, whose OIDs differ on the target: pgleap copies them by name, so the named functions, types, roles or configurations must exist on the target."},
}

// largeValueTypes are the types whose values can be large enough to be TOASTed.
var largeValueTypes = map[string]bool{"json": true, "jsonb": true, "xml": true, "bytea": true}

func checkColumnTypes(_ context.Context, env *Env) ([]Finding, error) {
	return judgeColumnTypes(env.Tables), nil
}

func judgeColumnTypes(tables []catalog.Table) []Finding {
	var findings []Finding
	for _, t := range tables {
		if t.Kind == catalog.KindPartitioned {
			continue // its partitions carry the same columns and are reported themselves
		}
		for _, rule := range valueFidelity {
			var columns []string
			for _, c := range t.Columns {
				if rule.match(c) {
					columns = append(columns, pg.QuoteIdent(c.Name)+" "+c.Type)
				}
			}
			if len(columns) == 0 {
				continue
			}
			severity, fix := Info, "none needed"
			if rule.check == "data.oid_reference_type" {
				severity, fix = Warning, "make sure the referenced objects come with the schema (pgleap restores it before the data), or store names as text"
			}
			findings = append(findings, Finding{
				Check: rule.check, Severity: severity, Object: t.QualifiedName(),
				Why: fmt.Sprintf("%s: %s", strings.Join(columns, ", "), rule.why), Fix: fix,
			})
		}
		if t.ToastBytes == 0 {
			continue
		}
		var large []string
		for _, c := range t.Columns {
			if largeValueTypes[c.BaseType] {
				large = append(large, pg.QuoteIdent(c.Name)+" "+c.Type)
			}
		}
		if len(large) > 0 {
			findings = append(findings, Finding{
				Check: "data.large_values", Severity: Info, Object: t.QualifiedName(),
				Why: fmt.Sprintf("%s: %s of out-of-line (TOASTed) values; pgleap streams them without size limits and byte for byte.",
					strings.Join(large, ", "), monitor.HumanBytes(t.ToastBytes)),
				Fix: "none needed",
			})
		}
	}
	return findings
}

type databaseObjects struct {
	LargeObjects      int64
	LargeObjectBytes  int64
	Sequences         int64
	MaterializedViews []string // quoted names
	// UnreadableLargeObjects counts, by owner, the large objects pgleap's role may not read.
	UnreadableLargeObjects map[string]int64
}

// unreadableLargeObjectsSQL counts, by owner, the large objects the role may not read: it
// has neither its owner's privileges nor SELECT granted (has_largeobject_privilege is 17+).
const unreadableLargeObjectsSQL = `
SELECT r.rolname, count(*) FROM pg_catalog.pg_largeobject_metadata m JOIN pg_catalog.pg_roles r ON r.oid = m.lomowner
WHERE NOT current_setting('lo_compat_privileges')::bool
  AND NOT pg_catalog.pg_has_role(current_user, m.lomowner, 'USAGE')
  AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(m.lomacl) a
                  WHERE a.privilege_type = 'SELECT' AND (a.grantee = 0 OR pg_catalog.pg_has_role(current_user, a.grantee, 'USAGE')))
GROUP BY 1 ORDER BY 1`

const databaseObjectsSQL = `
SELECT (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata),
       pg_catalog.pg_relation_size('pg_catalog.pg_largeobject'),
       (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND ` + catalog.UserRelationFilter + `)`

const materializedViewsSQL = `
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND ` + catalog.UserRelationFilter + ` ORDER BY 1, 2`

func checkDatabaseObjects(ctx context.Context, env *Env) ([]Finding, error) {
	var o databaseObjects
	conn := env.Source.conn
	if err := conn.QueryRow(ctx, databaseObjectsSQL).Scan(&o.LargeObjects, &o.LargeObjectBytes, &o.Sequences); err != nil {
		return nil, err
	}
	var err error
	if o.MaterializedViews, err = queryNames(ctx, conn, materializedViewsSQL); err != nil {
		return nil, fmt.Errorf("list materialized views: %w", err)
	}
	if o.LargeObjects > 0 && !env.Source.Superuser {
		rows, err := conn.Query(ctx, unreadableLargeObjectsSQL)
		if err != nil {
			return nil, fmt.Errorf("read which large objects pgleap's role may read: %w", err)
		}
		o.UnreadableLargeObjects = map[string]int64{}
		var owner string
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&owner, &n}, func() error { o.UnreadableLargeObjects[owner] = n; return nil }); err != nil {
			return nil, fmt.Errorf("read which large objects pgleap's role may read: %w", err)
		}
	}
	return judgeDatabaseObjects(pg.QuoteIdent(env.Source.Database), pg.QuoteIdent(env.Source.User), o), nil
}

func judgeDatabaseObjects(database, user string, o databaseObjects) []Finding {
	var findings []Finding
	for _, owner := range slices.Sorted(maps.Keys(o.UnreadableLargeObjects)) {
		findings = append(findings, Finding{
			Check: "source.large_object_privilege", Severity: Blocker, Object: pg.QuoteIdent(owner),
			Why: fmt.Sprintf("pgleap's role may not read the %d large objects this role owns, so they cannot be copied.", o.UnreadableLargeObjects[owner]),
			Fix: fmt.Sprintf("GRANT %s TO %s; (its owner's privileges), or GRANT SELECT ON LARGE OBJECT ... TO %s; for each", pg.QuoteIdent(owner), user, user),
		})
	}
	if o.LargeObjects > 0 {
		findings = append(findings, Finding{
			Check: "data.large_objects", Severity: Warning, Object: database,
			Why: fmt.Sprintf("%d large objects (%s): logical replication does not carry large objects, so pgleap copies them separately and writes to them after the copy are not streamed.",
				o.LargeObjects, monitor.HumanBytes(o.LargeObjectBytes)),
			Fix: "avoid creating or changing large objects during the migration, or move them into bytea columns",
		})
	}
	if o.Sequences > 0 {
		findings = append(findings, Finding{
			Check: "data.sequences", Severity: Info, Object: database,
			Why: fmt.Sprintf("%d sequences: logical replication does not carry sequence values.", o.Sequences),
			Fix: "none needed: pgleap sets every sequence on the target at cutover, while writes are frozen",
		})
	}
	for _, mv := range o.MaterializedViews {
		findings = append(findings, Finding{
			Check: "data.materialized_view", Severity: Info, Object: mv,
			Why: "a materialized view's contents are not replicated.",
			Fix: "none needed: pgleap refreshes it on the target after the copy; pgleap cutover --refresh-matviews refreshes it again while writes are frozen",
		})
	}
	return findings
}
