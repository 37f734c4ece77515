package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
)

// statement is one SQL statement and its parameters.
type statement struct {
	sql  string
	args []any
}

func stmt(sql string, args ...any) statement { return statement{sql, args} }

// execSQL runs statements one by one on database db of s, each in its own transaction, as
// CREATE SUBSCRIPTION, VACUUM and CREATE DATABASE need.
func execSQL(ctx context.Context, s *pgtest.Server, db string, stmts ...statement) error {
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		return fmt.Errorf("connect to %s on PostgreSQL %d: %w", db, s.Major, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, st := range stmts {
		if _, err := conn.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("%s: %w", shortSQL(st.sql), err)
		}
	}
	return nil
}

// queryRow runs a query that returns one row on database db of s.
func queryRow(ctx context.Context, s *pgtest.Server, db string, st statement, dest ...any) error {
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		return fmt.Errorf("connect to %s on PostgreSQL %d: %w", db, s.Major, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, st.sql, st.args...).Scan(dest...); err != nil {
		return fmt.Errorf("%s: %w", shortSQL(st.sql), err)
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// shortSQL names a statement in an error: its first line, cut short.
func shortSQL(sql string) string {
	const keep = 60
	line := firstLine(sql)
	if len(line) > keep {
		return line[:keep] + "..."
	}
	return line
}

func createDatabase(ctx context.Context, s *pgtest.Server, db string) error {
	if err := execSQL(ctx, s, "postgres", stmt("CREATE DATABASE "+pg.QuoteIdent(db))); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return nil
}

// dropDatabase drops db, ending the sessions still in it (autovacuum, a tool's stragglers).
func dropDatabase(ctx context.Context, s *pgtest.Server, db string) error {
	if err := execSQL(ctx, s, "postgres", stmt("DROP DATABASE IF EXISTS "+pg.QuoteIdent(db)+" WITH (FORCE)")); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	return nil
}

func checkpoint(ctx context.Context, s *pgtest.Server) error {
	if err := execSQL(ctx, s, "postgres", stmt("CHECKPOINT")); err != nil {
		return fmt.Errorf("checkpoint PostgreSQL %d: %w", s.Major, err)
	}
	return nil
}

// dropSlots drops the replication slots of database db, ending the walsenders still using
// them, and returns their names.
func dropSlots(ctx context.Context, s *pgtest.Server, db string) ([]string, error) {
	conn, err := pgx.Connect(ctx, s.ConnString("postgres"))
	if err != nil {
		return nil, fmt.Errorf("connect to the source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT slot_name FROM pg_replication_slots WHERE database = $1", db)
	if err != nil {
		return nil, fmt.Errorf("list replication slots of %s: %w", db, err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list replication slots of %s: %w", db, err)
	}
	for _, slot := range slots {
		if err := dropSlot(ctx, conn, slot); err != nil {
			return nil, err
		}
	}
	return slots, nil
}

// dropPublications drops the publications of database db and returns their names.
func dropPublications(ctx context.Context, s *pgtest.Server, db string) ([]string, error) {
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		return nil, fmt.Errorf("connect to %s on the source: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT pubname FROM pg_publication")
	if err != nil {
		return nil, fmt.Errorf("list publications of %s: %w", db, err)
	}
	publications, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list publications of %s: %w", db, err)
	}
	for _, publication := range publications {
		if _, err := conn.Exec(ctx, "DROP PUBLICATION "+pg.QuoteIdent(publication)); err != nil {
			return nil, fmt.Errorf("drop publication %s: %w", publication, err)
		}
	}
	return publications, nil
}

// dropSlot drops one slot. A walsender may hold it for a moment after its subscriber went
// away, so it is ended and the drop retried for up to 30 seconds.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	const terminate = `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
		WHERE slot_name = $1 AND active_pid IS NOT NULL`
	const drop = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1"
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := conn.Exec(ctx, terminate, slot)
		if err == nil {
			if _, err = conn.Exec(ctx, drop, slot); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop replication slot %s: %w", slot, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("drop replication slot %s: %w", slot, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// command is exec.CommandContext that interrupts rather than kills when ctx ends, so that
// pg_dump, psql and pgcopydb close their sessions and stop their own children first.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func runCommand(ctx context.Context, name string, args ...string) error {
	return runCmd(command(ctx, name, args...))
}

// runCmd runs cmd and, when it fails, returns the end of its output with the error: that is
// where every one of these tools says what went wrong.
func runCmd(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w%s", filepath.Base(cmd.Path), err, outputTail(out.String()))
	}
	return nil
}

// outputTail is the last lines of a command's output, indented under the error.
func outputTail(out string) string {
	const keep = 12
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) > keep {
		lines = lines[len(lines)-keep:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	return "\n    " + strings.Join(lines, "\n    ")
}
