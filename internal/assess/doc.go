// Package assess answers, before anything is touched, whether a pair of servers is ready
// for a pgleap migration, what will not survive a logical-replication upgrade, and the
// exact SQL or setting that fixes each problem.
//
// Each check reads facts with a constant query and turns them into findings with a pure
// function, so the verdicts are unit-tested without a server and the queries are tested on
// real ones. A finding is not an error: it has a stable check id, a severity (blocker,
// warning, info), the object it concerns as a quoted name, why it matters, and the fix.
// Blockers mean the migration must not start; the CLI exits 1 when there is one.
//
// # Read-only
//
// Run changes nothing on either server: its connections are opened by the caller with
// default_transaction_read_only=on (see ReadOnlySettings), so even a mistaken write fails.
//
// # Failure and cancellation
//
// A check whose query fails stops the run with an error naming the check; a partial report
// would look like a clean one. Cancelling ctx cancels the running query and returns ctx's
// error.
package assess
