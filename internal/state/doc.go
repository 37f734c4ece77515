// Package state keeps a migration's state on the target, in schema pgleap, so that any
// pgleap process pointed at the same target sees the same migration and a run that stopped
// anywhere resumes from what was committed. Nothing lives only in memory or on local disk.
//
// The schema comes from the embedded, versioned files schema_v*.sql, applied in order
// under a transaction-scoped advisory lock so that two processes cannot apply them twice.
// A target whose state schema is newer than this binary is refused: an older pgleap must
// not write state it does not understand.
//
// A step of the migration is recorded with Tx.RecordStep in the same transaction as the
// work it stands for, so a step is either done and recorded or neither.
//
// Every function takes a context.Context; cancelling it cancels the running statement and
// the surrounding transaction rolls back.
package state
