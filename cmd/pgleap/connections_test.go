package main

import (
	"context"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestConnectionsStayBounded counts pgleap's sessions on each side, many times a second,
// through a whole migrate (schema, a copy in ranges, index builds, streaming, a verify):
// never more than --jobs and --index-jobs allow, plus a few of its own.
func TestConnectionsStayBounded(t *testing.T) {
	const jobs, indexJobs = 2, 2
	// Index builds overlap the copy, so both kinds of workers run at once. Besides them the
	// target has: the migration lock's, the tracker's, and three that coordinate (the schema
	// stage's, the full load's and the copy's; one could do), and one more while a finished
	// worker's session ends as its successor's begins; the source fewer.
	const bound = jobs + indexJobs + 6
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `
		CREATE TABLE big (id int PRIMARY KEY, pad text);
		INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g;
		CREATE INDEX ON big (pad);
		CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); CREATE TABLE c (id int PRIMARY KEY);
		INSERT INTO a SELECT generate_series(1, 1000); INSERT INTO b SELECT generate_series(1, 1000); INSERT INTO c SELECT generate_series(1, 1000)`)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)

	const count = `SELECT count(*), string_agg(state || ': ' || left(regexp_replace(query, '\s+', ' ', 'g'), 50), E'\n  ') FROM pg_stat_activity
		WHERE application_name LIKE 'pgleap%' AND datname = $1 AND pid <> pg_backend_pid()
		  AND backend_type IN ('client backend', 'walsender')` // not the parallel workers of an index build
	var mu sync.Mutex
	peak := map[string]int{}
	peakSessions := map[string]string{}
	ctx, stopCounting := context.WithCancel(context.Background())
	var counting sync.WaitGroup
	for side, conn := range map[string]string{"source": sourceConn, "target": targetConn} {
		db := map[string]string{"source": sourceDB, "target": targetDB}[side]
		counter := datatest.Connect(t, conn)
		counting.Go(func() {
			for ctx.Err() == nil {
				var n int
				var sessions string
				if err := counter.QueryRow(ctx, count, db).Scan(&n, &sessions); err == nil {
					mu.Lock()
					if n > peak[side] {
						peak[side], peakSessions[side] = n, sessions
					}
					mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	migrate, out := startCLI(t, "migrate", "--jobs", strconv.Itoa(jobs), "--index-jobs", strconv.Itoa(indexJobs),
		"--split-larger-than", "2MB", "--http", "127.0.0.1:0", "--source", sourceConn, "--target", targetConn)
	waitFor(t, "streaming", func() bool { return datatest.Scalar(t, sourceConn, streamingSQL) == "1" })
	if code, stdout, stderr := pgleap(t, nil, "verify", "--jobs", strconv.Itoa(jobs), "--source", sourceConn, "--target", targetConn); code != exitOK {
		t.Errorf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := migrate.Wait(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	stopCounting()
	counting.Wait()
	t.Logf("most pgleap sessions at once: %v (bound %d per side)", peak, bound)
	for _, side := range []string{"source", "target"} {
		if n := peak[side]; n > bound || n == 0 {
			t.Errorf("the %s saw %d pgleap sessions at once, want 1 to %d:\n  %s", side, n, bound, peakSessions[side])
		}
	}
}
