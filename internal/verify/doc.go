// Package verify proves that the target holds what the source holds.
//
// CompareSchemas lists the objects of both databases — tables, columns, indexes,
// constraints by type, views, materialized views, sequences, functions, triggers, types,
// policies, extensions and grants — per schema and kind, and reports every name found on
// one side only. Objects outside the migration's table selection, and those recorded as left
// out with it, are not expected on the target.
//
// Reading never writes. Every function takes a context.Context; cancelling it cancels the
// running query.
package verify
