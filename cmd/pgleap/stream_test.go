package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestKilledMidStreamResumes kills a following pgleap migrate (SIGKILL) while the source
// keeps writing, starts it again, and proves that once it has caught up the target holds
// exactly the source's rows: nothing applied twice, nothing lost. Ctrl-C then stops it
// cleanly.
func TestKilledMidStreamResumes(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
		INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 1000) g;
		CREATE TABLE history (id bigserial PRIMARY KEY, account int NOT NULL, delta int NOT NULL)`)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	args := []string{"migrate", "--source", sourceConn, "--target", targetConn, "--jobs", "2"}

	var written atomic.Int64
	writerCtx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan error, 1)
	go func() { writerDone <- writeTransfers(writerCtx, sourceConn, &written) }()

	first, firstOut := startCLI(t, args...)
	waitFor(t, "the first run to stream", func() bool { return datatest.Scalar(t, sourceConn, streamingSQL) == "1" })
	// The kill must come after the first run applied transfers, so the rerun has some to not repeat.
	waitFor(t, "the first run to apply", func() bool {
		return datatest.Scalar(t, targetConn, "SELECT count(*) FROM pgleap.replication WHERE applied_transactions > 0") == "1"
	})
	for n := written.Load(); written.Load() < n+200; time.Sleep(10 * time.Millisecond) {
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	for n := written.Load(); written.Load() < n+200; time.Sleep(10 * time.Millisecond) {
	}

	second, secondOut := startCLI(t, args...)
	// The target is guarded: a session other than pgleap's reads but cannot write.
	other := target.Conn(t, targetDB)
	if _, err := other.Exec(context.Background(), "INSERT INTO accounts VALUES (-1, 0)"); !isSQLState(err, "25006") {
		t.Errorf("a write by another session on the guarded target = %v, want read-only transaction (25006)", err)
	}
	if _, err := other.Exec(context.Background(), "SELECT count(*) FROM accounts"); err != nil {
		t.Errorf("a read on the guarded target: %v", err)
	}
	for n := written.Load(); written.Load() < n+200; time.Sleep(10 * time.Millisecond) {
	}
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	want := datatest.Scalar(t, sourceConn, "SELECT pg_current_wal_insert_lsn()::text")
	waitFor(t, "the second run to catch up", func() bool {
		return lsnAtLeast(t, datatest.Scalar(t, targetConn, "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want)
	})
	code, stdout, stderr := pgleap(t, nil, "status", "--json", "--source", sourceConn, "--target", targetConn, "--sample", "200ms")
	var st struct {
		Phase       string   `json:"phase"`
		LagBytes    *int64   `json:"lag_bytes"`
		LagSeconds  *float64 `json:"lag_seconds"`
		AppliedLSN  string   `json:"applied_lsn"`
		TargetGuard bool     `json:"target_guard"`
		TPS         *float64 `json:"transactions_per_second"`
		Tables      []struct {
			Name, State string
		} `json:"tables"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); code != exitOK || err != nil {
		t.Fatalf("status: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if st.Phase != "streaming" || st.LagBytes == nil || st.LagSeconds == nil || st.AppliedLSN == "" || !st.TargetGuard || st.TPS == nil ||
		len(st.Tables) != 2 || st.Tables[0].State != "copied" {
		t.Errorf("status while streaming = %+v\n%s", st, stdout)
	}
	if err := second.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second run after Ctrl-C: %v\nfirst run:\n%s\nsecond run:\n%s", err, firstOut, secondOut)
	}
	// The rerun went straight to the stream: the copy was complete, and it said so.
	for _, want := range []string{"full load: completed by an earlier run", "stopped streaming"} {
		if !strings.Contains(secondOut.String(), want) {
			t.Errorf("second run's output lacks %q:\n%s", want, secondOut)
		}
	}
	// Going straight to the stream still checks the rerun resumes this migration.
	if code, _, stderr := pgleap(t, nil, append(args, "--exclude", "public.history")...); code != exitCannotRun || !strings.Contains(stderr, "another migration") {
		t.Errorf("rerun with another selection: exit %d, %s", code, stderr)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 2)
	// Each transfer writes two history rows: one applied twice or in part shows here too.
	if sum, rows := datatest.Scalar(t, targetConn, "SELECT sum(balance) FROM accounts"), datatest.Scalar(t, targetConn, "SELECT count(*) FROM history"); sum != "0" ||
		rows != fmt.Sprint(2*written.Load()) {
		t.Errorf("on the target balances sum to %s and history holds %s rows; want 0 and %d", sum, rows, 2*written.Load())
	}
	t.Logf("%d transfers written while pgleap was killed and restarted", written.Load())
}

const streamingSQL = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgleap_stream'"

// writeTransfers moves money between accounts, one transaction per transfer, until ctx ends.
func writeTransfers(ctx context.Context, connString string, written *atomic.Int64) error {
	conn, err := pg.Connect(context.Background(), pg.Source, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for i := 0; ctx.Err() == nil; i++ {
		from, to := 1+i%1000, 1+(i*7+3)%1000
		_, err := conn.Exec(context.Background(), fmt.Sprintf(`BEGIN;
			UPDATE accounts SET balance = balance - 5 WHERE id = %d;
			UPDATE accounts SET balance = balance + 5 WHERE id = %d;
			INSERT INTO history (account, delta) VALUES (%[1]d, -5), (%[2]d, 5);
			COMMIT`, from, to))
		if err != nil {
			return err
		}
		written.Add(1)
	}
	return nil
}

// startCLI runs pgleap as a process of its own, so that it can be killed.
func startCLI(t *testing.T, args ...string) (*exec.Cmd, *pgtest.LockedBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	out := &pgtest.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, out
}

func waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); !done(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 90 s for %s", what)
		}
	}
}

func lsnAtLeast(t *testing.T, got, want string) bool {
	t.Helper()
	g, err := pglogrepl.ParseLSN(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := pglogrepl.ParseLSN(want)
	if err != nil {
		t.Fatal(err)
	}
	return g >= w
}

func isSQLState(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
