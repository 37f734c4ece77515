// Package chaos is pgleap's fault-injection suite. It runs whole migrations (schema, copy,
// index builds, streaming, cutover) between two real servers while an application writes,
// and breaks them at random points: it kills pgleap with SIGKILL, restarts the source and the
// target (fast and immediate shutdowns), terminates pgleap's backends and walsender, fills
// the source's connection slots, and freezes a server with SIGSTOP past the timeouts. After
// each fault pgleap is run again where it died, and must finish; once the application
// pauses, the target must hold exactly the source's rows (hashed on both sides), and its
// sequences after a cutover.
//
// make test runs a short run (PGLEAP_CHAOS_FAULTS, default 6 faults); make chaos a long one
// (200 faults), which ends with a report: rounds, faults by kind, recoveries, rows compared
// and differences, which must be 0.
package chaos
