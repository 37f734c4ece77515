// Package verify proves that the target holds what the source holds.
//
// CompareRows compares the rows of every selected table: chunks.go cuts each table into
// chunks (integer key ranges, or buckets of key hashes) and writes the SQL with which each
// server digests its own rows; compare.go takes the two snapshots compared and runs the
// chunks on both sides at once; extras.go compares large objects and sequences. While
// pgleap migrate streams, the target snapshot is taken with the apply held at exactly the
// source snapshot's position (cdc.HoldAt), so
// changes in flight never show as differences.
//
// CompareSchemas lists the objects of both databases — tables, columns, indexes,
// constraints by type, views, materialized views, sequences, functions, triggers, types,
// policies, extensions and grants — per schema and kind, and reports every name found on
// one side only. Objects outside the migration's table selection, and those recorded as left
// out with it, are not expected on the target.
//
// Nothing here writes to the user's tables: CompareRows writes only pgleap's own state on
// the target (the hold it asks of the apply, its outcome). Every function takes a
// context.Context; cancelling it cancels the running queries and lets the apply go on.
package verify
