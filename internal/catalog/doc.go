// Package catalog reads what a source database holds that the later stages plan with:
// its user tables (kind, persistence, keys and replica identity, owner, size, row estimate,
// the connecting role's privileges on them) and their columns with their types.
//
// User tables are those outside pg_catalog, information_schema, the toast and temporary
// schemas and pgleap's own schema, and not members of an extension (an extension's tables
// come back with CREATE EXTENSION). Reading never writes.
//
// Every function takes a context.Context; cancelling it cancels the running query.
// Errors wrap the pgx error, so a *pgconn.PgError stays reachable.
package catalog
