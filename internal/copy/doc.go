// Package copy moves the rows of the selected tables from the source to the target: at one
// consistent snapshot, with parallel workers, and resumably.
//
// # Consistency
//
// A logical replication slot is created over the replication protocol with an exported
// snapshot; every worker imports that snapshot, so the rows copied are exactly the database
// at the slot's consistent point, which is recorded with each copied unit as its sync LSN.
//
// # Units and exactly-once
//
// A table is copied whole, or, when it is larger than Options.SplitLargerThan, in ranges of
// its integer primary key (or of heap blocks on sources of 14 and later). Each unit's rows
// and the record that it is done commit in one target transaction, so after any crash a
// unit is either entirely there and recorded, or absent; a rerun copies the absent ones. A
// whole table is truncated and loaded with COPY FREEZE in that transaction. A table split by
// blocks whose units were read at different snapshots is emptied and copied again, since
// updated rows move between blocks; ranges of a key do not move.
//
// # Speed
//
// Workers stream COPY ... TO STDOUT on the source straight into COPY ... FROM STDIN on the
// target without decoding rows, in binary where every column's type has the same binary
// form on both majors (built-in types), in text otherwise. Target sessions commit
// asynchronously; autovacuum is off on tables while they load.
//
// # Cancellation
//
// Cancelling ctx aborts the running COPYs; their transactions roll back and what finished
// stays recorded. The temporary slot disappears with its connection.
package copy
