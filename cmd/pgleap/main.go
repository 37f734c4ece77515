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
// passes through three buffers at once (the connection's, the decoder's, the statement's);
// with the default pacing that peaked at 700 MB of resident memory, under this limit at
// 460 MB. It never refuses memory, and GOMEMLIMIT replaces it.
const defaultMemoryLimit = 256 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
