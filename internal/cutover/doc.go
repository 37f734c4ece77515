// Package cutover hands the writes from the source to the target: pgleap cutover.
//
// Run checks that the migration is ready (preflight.go), then freezes writes on the source
// (freeze.go: no new sessions but superusers' or pgleap's, every session read-only by
// default, the sessions already open ended), holds the apply at the source's position at the freeze once
// it has applied everything before it, copies sequence values and large objects, verifies,
// and opens the target. Each step is timed; the write pause is the time from the freeze to
// the open target.
//
// Until the target is open nothing is final: a step that fails (or a cancelled context)
// unfreezes the source, releases the apply, which goes on streaming, and records the cutover
// as undone. What undoes the freeze is recorded on the target before the source is frozen,
// so a cutover whose process died is undone by the next run.
package cutover
