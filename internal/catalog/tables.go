package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
)

// Table kinds, as pg_class.relkind.
const (
	KindTable       = "r"
	KindPartitioned = "p"
	KindForeign     = "f"
)

// Replica identities, as pg_class.relreplident.
const (
	IdentityDefault = "d"
	IdentityNothing = "n"
)

// Table is one user table of the source database.
type Table struct {
	OID             uint32
	Schema, Name    string
	Kind            string // KindTable, KindPartitioned or KindForeign
	Unlogged        bool
	ReplicaIdentity string // pg_class.relreplident: IdentityDefault, IdentityNothing, f(ull) or i(ndex)
	Owner           string
	PrimaryKey      string // constraint name, "" when the table has none
	// CandidateKey is a unique, non-partial index on NOT NULL columns only, which could
	// become the replica identity of a table without a primary key.
	CandidateKey string
	PartitionOf  string // the parent's qualified name, for a partition
	// IntegerKey is the column of a single-column primary key of type smallint, integer or
	// bigint: a big table can be copied in ranges of it.
	IntegerKey    string
	Bytes         int64 // heap, indexes and TOAST
	DataBytes     int64 // heap and TOAST: what a copy reads
	ToastBytes    int64
	RowEstimate   int64 // from the last ANALYZE or VACUUM; -1 when never analyzed
	CanSelect     bool  // the connecting role may read it
	OwnedByCaller bool  // the connecting role owns it, directly or through a role it has
	Columns       []Column
}

// QualifiedName is the table's quoted name, "schema"."table".
func (t Table) QualifiedName() string { return pg.QualifiedName(t.Schema, t.Name) }

// Column is one column of a table.
type Column struct {
	Name string
	// Type is the column's declared type as SQL would write it: numeric(12,2), text[].
	Type string
	// BaseType is the name of the type underneath domains and arrays (numeric, timestamptz),
	// and BaseTypeKind its pg_type.typtype: b base, c composite, e enum, r range, m multirange.
	BaseType       string
	BaseTypeSchema string
	BaseTypeKind   string
	// Unconstrained is true for a numeric without precision and scale.
	Unconstrained bool
	Generated     bool
	Collation     string // qualified collation name when it differs from the type's default
}

// OwnSchemas lists, for SQL's IN, the schemas pgleap itself creates: its state, and on the
// source the capture of schema changes (pgleap migrate --ddl).
const OwnSchemas = `'pgleap', 'pgleap_ddl'`

// UserRelationFilter is an SQL condition on pg_class c joined to pg_namespace n that keeps the
// user's relations: not PostgreSQL's, not pgleap's, not an extension's.
const UserRelationFilter = `n.nspname NOT IN ('pg_catalog', 'information_schema', ` + OwnSchemas + `)
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`

const tablesSQL = `
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relpersistence = 'u', c.relreplident::text,
       pg_catalog.pg_get_userbyid(c.relowner),
       coalesce((SELECT con.conname FROM pg_catalog.pg_constraint con
                 WHERE con.conrelid = c.oid AND con.contype = 'p'), ''),
       coalesce((SELECT ic.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                 WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indimmediate
                   AND i.indpred IS NULL AND i.indexprs IS NULL
                   AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                   WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)
                 ORDER BY i.indnatts, ic.relname LIMIT 1), ''),
       coalesce((SELECT ARRAY[pn.nspname::text, pc.relname::text]
                 FROM pg_catalog.pg_inherits inh
                 JOIN pg_catalog.pg_class pc ON pc.oid = inh.inhparent
                 JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                 WHERE c.relispartition AND inh.inhrelid = c.oid), '{}'),
       coalesce((SELECT a.attname FROM pg_catalog.pg_constraint con
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
                 WHERE con.conrelid = c.oid AND con.contype = 'p' AND cardinality(con.conkey) = 1
                   AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)), ''),
       CASE WHEN c.relkind = 'r' THEN pg_catalog.pg_total_relation_size(c.oid) ELSE 0 END,
       CASE WHEN c.relkind = 'r' THEN pg_catalog.pg_table_size(c.oid) ELSE 0 END,
       CASE WHEN c.reltoastrelid <> 0 THEN pg_catalog.pg_relation_size(c.reltoastrelid) ELSE 0 END,
       CASE WHEN c.relkind = 'r' AND c.relpages = 0 AND c.reltuples <= 0 THEN -1 ELSE greatest(c.reltuples, 0) END::bigint,
       pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND pg_catalog.has_table_privilege(c.oid, 'SELECT'),
       pg_catalog.pg_has_role(c.relowner, 'USAGE')
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f') AND ` + UserRelationFilter + `
ORDER BY n.nspname, c.relname`

const columnsSQL = `
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
       bt.typname, btn.nspname, bt.typtype::text,
       bt.typname = 'numeric' AND coalesce(nullif(a.atttypmod, -1), nullif(t.typtypmod, -1), -1) = -1,
       a.attgenerated <> '',
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN ARRAY[cn.nspname::text, co.collname::text] ELSE '{}' END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
-- the type underneath one level of domain and one of array: enough for every check that
-- looks at base types (a domain over an array of a domain is rare and still named by Type)
JOIN pg_catalog.pg_type dt ON dt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN dt.typelem <> 0 AND dt.typlen = -1 AND dt.typcategory = 'A' THEN dt.typelem ELSE dt.oid END
JOIN pg_catalog.pg_namespace btn ON btn.oid = bt.typnamespace
LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
WHERE a.attrelid = ANY ($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum`

// Tables returns the database's user tables, with their columns, ordered by schema and name.
func Tables(ctx context.Context, conn *pgx.Conn) ([]Table, error) {
	rows, err := conn.Query(ctx, tablesSQL)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Table, error) {
		var t Table
		var parent []string
		err := row.Scan(&t.OID, &t.Schema, &t.Name, &t.Kind, &t.Unlogged, &t.ReplicaIdentity, &t.Owner,
			&t.PrimaryKey, &t.CandidateKey, &parent, &t.IntegerKey,
			&t.Bytes, &t.DataBytes, &t.ToastBytes, &t.RowEstimate, &t.CanSelect, &t.OwnedByCaller)
		t.PartitionOf = qualify(parent)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	byOID := make(map[uint32]*Table, len(tables))
	oids := make([]uint32, len(tables))
	for i := range tables {
		byOID[tables[i].OID] = &tables[i]
		oids[i] = tables[i].OID
	}
	rows, err = conn.Query(ctx, columnsSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	var tableOID uint32
	var col Column
	var collation []string
	_, err = pgx.ForEachRow(rows, []any{&tableOID, &col.Name, &col.Type, &col.BaseType, &col.BaseTypeSchema, &col.BaseTypeKind,
		&col.Unconstrained, &col.Generated, &collation}, func() error {
		col.Collation = qualify(collation)
		t := byOID[tableOID]
		t.Columns = append(t.Columns, col)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	return tables, nil
}

// qualify quotes a {schema, name} pair read from the catalog; SQL's quote_ident leaves
// lower-case names bare, and pgleap names every object the same way, always quoted.
func qualify(parts []string) string {
	if len(parts) != 2 {
		return ""
	}
	return pg.QualifiedName(parts[0], parts[1])
}

// PartitionRoots maps each partition's quoted name to the partitioned table at the top of
// its tree, through every level.
func PartitionRoots(tables []Table) map[string]string {
	parent := map[string]string{}
	for _, t := range tables {
		if t.PartitionOf != "" {
			parent[t.QualifiedName()] = t.PartitionOf
		}
	}
	roots := make(map[string]string, len(parent))
	for name := range parent {
		root := name
		for parent[root] != "" {
			root = parent[root]
		}
		roots[name] = root
	}
	return roots
}
