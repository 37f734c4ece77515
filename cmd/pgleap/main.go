// Command pgleap upgrades a PostgreSQL database to a newer major version with seconds of
// write downtime. This package parses flags and wires the stages of internal/ together;
// the decisions live in internal/.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultMemoryLimit is a soft limit on the heap: past it the garbage collector runs more
// often rather than letting the heap grow to twice what is live. Streamed, a 100 MB value
// passes through three buffers at once (the connection's, pglogrepl's, the statement's);
// with the default pacing that peaked at 700 MB of resident memory, under this limit at
// 460 MB. It never refuses memory, and GOMEMLIMIT replaces it.
const defaultMemoryLimit = 256 << 20

// defaultGCPercent lets the heap grow to three times what is live before a collection
// instead of twice. A stream allocates for every message it decodes while little of it
// stays live, so collections came often: draining 60,000 pgbench transactions took pgleap
// 0.75 CPU seconds with the default and 0.58 with four times the headroom, which however
// doubled its resident memory (34 MB to 59 MB); three times is between the two. The memory
// limit above still caps the heap, and GOGC replaces this.
const defaultGCPercent = 200

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
