// Package cdc keeps the target in step with the source after the copy: it streams the
// migration's slot with pgoutput, applies each source transaction on the target in commit
// order, and tells the source which WAL it may release.
//
// # Files
//
// decode.go turns pgoutput messages into changes against known relations; apply.go writes
// them on the target, net.go folds a group's changes to one per row and writes them with
// set-based statements; spill.go keeps streamed transactions (protocol version 2, sources
// of 14 and later) on disk until they commit; stream.go owns the replication connection,
// its keepalives and feedback, and reconnects; prefetch.go reads the rows a group will
// change on a second target session, ahead of the apply; guard.go keeps other sessions from
// writing to the target; hold.go stops the apply at the source position pgleap verify
// compares at.
//
// # Exactly once
//
// Source transactions are applied in commit order on one target session with
// session_replication_role = replica (no triggers, no foreign-key checks). Several may share
// one target transaction; a target transaction always ends on a source commit and records,
// in pgleap.replication, the end LSN of the last source transaction it holds. Streaming
// (re)starts from that recorded position, so a crash of pgleap, the source or the target
// neither repeats nor skips a transaction. The source is told as flushed only positions the
// target has committed, or, when every transaction received is applied and none is in
// flight, the position of a keepalive: WAL before it holds nothing still to apply. A clean
// stop tells the source everything applied.
//
// A table copied at a later snapshot than the slot's start (a resumed copy) records that
// snapshot's LSN; changes to it from transactions that committed before that LSN are in
// its copy already and are skipped.
//
// # Failures
//
// A change that finds no row to update or delete, or a relation whose columns differ from
// the target's table, stops the apply with an error naming the table; the transaction is
// rolled back and the next run starts again from the recorded position. A lost connection
// to either side is retried with backoff. While the target keeps the apply waiting (a lock
// another session holds, a long statement), the source is still told where the stream
// stands, so that its walsender does not end the stream for silence. Cancelling ctx stops the stream after rolling
// back the open target transaction.
package cdc
