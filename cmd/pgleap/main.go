// Command pgleap upgrades a PostgreSQL database to a newer major version with seconds of
// write downtime. This package parses flags and wires the stages of internal/ together;
// the decisions live in internal/.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
