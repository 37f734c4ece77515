// Package monitor shows a migration as it runs: progress bars on a terminal, and plain
// periodic log lines when output goes to a file or a pipe.
//
// CopyProgress is told about the copy by internal/copy (from several goroutines) and
// renders it: a bar per running table or chunk and an overall bar with bytes, rate and ETA,
// or every interval one log line with the same figures and the WAL the source keeps for the
// copy's replication slot. Close stops the rendering; it never blocks the copy.
package monitor
