package cdc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	datacopy "github.com/pgleap/pgleap/internal/copy"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
	"github.com/pgleap/pgleap/internal/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// streamFixture holds a table of every kind the apply treats differently, with values of
// the types whose text forms other tools bend.
const streamFixture = `
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE EXTENSION ltree;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN positive AS numeric CHECK (VALUE > 0);
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric, doc text, note text);
INSERT INTO accounts SELECT g, 'owner ' || g, g * 1.5, CASE WHEN g = 1 THEN repeat(md5('x'), 5000) END, 'n' FROM generate_series(1, 100) g;
CREATE TABLE texts (code text PRIMARY KEY, v citext UNIQUE);
INSERT INTO texts VALUES ('a', 'Alpha'), ('b', 'Beta');
CREATE TABLE bag (a int, b text);
ALTER TABLE bag REPLICA IDENTITY FULL;
INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, NULL), (2, NULL);
CREATE TABLE by_index (u int NOT NULL, v text);
CREATE UNIQUE INDEX by_index_u ON by_index (u);
ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_u;
INSERT INTO by_index SELECT g, 'v' || g FROM generate_series(1, 10) g;
CREATE TABLE measures (region text NOT NULL, id int NOT NULL, v int, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE measures_east PARTITION OF measures FOR VALUES IN ('east');
CREATE TABLE measures_west PARTITION OF measures FOR VALUES IN ('west');
INSERT INTO measures SELECT CASE WHEN g % 2 = 0 THEN 'east' ELSE 'west' END, g, g FROM generate_series(1, 20) g;
CREATE TABLE generated (id int PRIMARY KEY, x int, doubled int GENERATED ALWAYS AS (x * 2) STORED);
INSERT INTO generated (id, x) VALUES (1, 1);
CREATE TABLE counters (id serial PRIMARY KEY, v int);
INSERT INTO counters (v) SELECT generate_series(1, 5);
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
INSERT INTO parent VALUES (1), (2);
INSERT INTO child VALUES (1, 1);
CREATE TABLE typed (id int PRIMARY KEY, n numeric, f float8, r real, ts timestamptz, iv interval, m mood, p pair,
  d positive, rg int4range, arr text[], j json, jb jsonb, x xml, b bytea, h hstore, path ltree);
ANALYZE;
`

// streamChanges covers every change kind the apply must carry exactly.
var streamChanges = []string{
	`INSERT INTO accounts SELECT g, 'owner ' || g, g, NULL, 'new' FROM generate_series(101, 300) g`,
	`UPDATE accounts SET balance = balance + 1 WHERE id <= 50`,
	`UPDATE accounts SET note = 'doc untouched' WHERE id = 1`, // doc is TOASTed: sent as unchanged
	`UPDATE accounts SET id = 1001 WHERE id = 2`,              // a key change
	`DELETE FROM accounts WHERE id BETWEEN 10 AND 20`,
	`BEGIN; INSERT INTO accounts VALUES (5000, 'in one', 1, NULL, NULL); UPDATE accounts SET balance = 7 WHERE id = 5000; DELETE FROM accounts WHERE id = 3; COMMIT`,
	`UPDATE texts SET v = 'ALPHA' WHERE code = 'a'`,
	`UPDATE texts SET code = 'c' WHERE code = 'b'`,
	`UPDATE bag SET b = 'y' WHERE ctid = (SELECT ctid FROM bag WHERE a = 1 LIMIT 1)`, // one of three identical rows
	`DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE a = 2 LIMIT 1)`,        // one of two, with a NULL
	`UPDATE by_index SET v = 'changed' WHERE u = 3`,
	`UPDATE by_index SET u = 100 WHERE u = 4`,
	`DELETE FROM by_index WHERE u = 5`,
	`UPDATE measures SET region = 'east' WHERE id = 1`, // moves between partitions
	`UPDATE measures SET v = -v WHERE region = 'east'`,
	`DELETE FROM measures WHERE id = 3`,
	`UPDATE generated SET x = 21 WHERE id = 1`,
	`INSERT INTO generated (id, x) VALUES (2, 5)`,
	`TRUNCATE counters RESTART IDENTITY`,
	`INSERT INTO counters (v) VALUES (42)`,
	`DELETE FROM parent WHERE id = 2`,
	`INSERT INTO typed VALUES
	  (1, 'NaN', '-0', 'Infinity', '2026-03-29 01:30:00.123456+01', '1 year 2 mons -3 days 04:05:06.789', 'happy', ROW(1, 'a,b "c"'),
	   12.5, '[1,10)', ARRAY['x', NULL, 'q"uote'], '{ "spaced" :  [1, 2.50] }', '{"b": 1, "a": [true, null]}',
	   '<a b="c">t</a>', '\x00ff', 'k=>v, "x y"=>NULL', 'Top.Science.Astronomy'),
	  (2, 1e-30, 'NaN', '-Infinity', 'infinity', '-178000000 years', NULL, ROW(NULL, NULL), 0.000001, 'empty', '{}', 'null', '[]', '<x/>', '', '', ''),
	  (3, 123456789012345678901234567890.123456789012345678901234567890, 1.0000000000000002, 3.4028235e38, '1999-12-31 23:59:59.999999-12',
	   '0', 'sad', NULL, 1, NULL, ARRAY[NULL]::text[], '"\u00e9"', '"\u00e9"', NULL, '\xdeadbeef', NULL, NULL)`,
	`UPDATE typed SET f = 'Infinity', n = -0.0 WHERE id = 2`,
	// Two rows swap a unique value through a third: in net form the swap breaks the unique
	// constraint, and the group is applied again change by change.
	`BEGIN; UPDATE texts SET v = 'tmp' WHERE code = 'a'; UPDATE texts SET v = 'ALPHA' WHERE code = 'c'; UPDATE texts SET v = 'Beta' WHERE code = 'a'; COMMIT`,
	`INSERT INTO parent VALUES (3); INSERT INTO child VALUES (2, 3)`,
	`TRUNCATE parent CASCADE`, // the source lists child too
	`INSERT INTO parent VALUES (4)`,
}

// TestStreamAppliesEveryChange copies a database with a following slot, streams a change
// set that covers every change kind and many types, and proves both sides hold the same
// rows by hashing every row.
func TestStreamAppliesEveryChange(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target, streamFixture)

	ctx, cancel := context.WithCancel(context.Background())
	done := startStream(t, ctx, sourceConn, targetConn)
	for _, sql := range streamChanges {
		datatest.Exec(t, sourceConn, sql)
	}
	waitCaughtUp(t, sourceConn, targetConn, done)
	cancel()
	stats := <-done
	if stats.err != nil {
		t.Fatalf("stream: %v", stats.err)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 1)
	if stats.Transactions < int64(len(streamChanges)) {
		t.Errorf("stream applied %d transactions, want at least %d", stats.Transactions, len(streamChanges))
	}
}

// TestStreamConfirmsAtStop: a stream stopped cleanly tells the source everything the target
// applied, so the slot keeps no WAL for it, even with no status due before the stop.
func TestStreamConfirmsAtStop(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target, `CREATE TABLE ticks (id int PRIMARY KEY)`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Stream(ctx, Options{Source: sourceConn, Target: targetConn, StatusInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(testLog{t}, nil))})
		done <- err
	}()
	for i := range 20 {
		datatest.Exec(t, sourceConn, fmt.Sprintf("INSERT INTO ticks VALUES (%d)", i))
	}
	waitCaughtUp(t, sourceConn, targetConn, nil)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var applied pglogrepl.LSN
	if err := datatest.Connect(t, targetConn).QueryRow(context.Background(), "SELECT applied_lsn FROM pgleap.replication").Scan(&applied); err != nil {
		t.Fatal(err)
	}
	sc := datatest.Connect(t, sourceConn)
	var confirmed pglogrepl.LSN
	// The walsender takes in the last status before it sees the connection end.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var active bool
		err := sc.QueryRow(context.Background(), "SELECT active, confirmed_flush_lsn FROM pg_replication_slots WHERE database = current_database()").Scan(&active, &confirmed)
		if err != nil {
			t.Fatal(err)
		}
		if !active || time.Now().After(deadline) {
			break
		}
	}
	if confirmed != applied {
		t.Fatalf("the slot's confirmed position is %s after the stop, want the applied %s", confirmed, applied)
	}
}

// TestStreamQuietDatabaseKeepsInStep: while this database does not write, the target stays
// in step with the source, as of a mark the idle stream takes of it, instead of looking ever
// further behind since its last commit (which a cutover's --max-lag would refuse): when
// another database of the server writes, and when nothing is written at all (the applied
// position does not move, and each mark it has reached is recorded all the same).
func TestStreamQuietDatabaseKeepsInStep(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	busyDB := source.CreateDatabase(t)
	source.Exec(t, busyDB, "CREATE TABLE t (id serial PRIMARY KEY)")
	tests := []struct {
		name  string
		quiet func(t *testing.T, busy *pgx.Conn)
	}{
		{"another database writes", func(t *testing.T, busy *pgx.Conn) {
			for start := time.Now(); time.Since(start) < 4*time.Second; time.Sleep(20 * time.Millisecond) {
				if _, err := busy.Exec(context.Background(), "INSERT INTO t DEFAULT VALUES"); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"nothing is written", func(t *testing.T, busy *pgx.Conn) {
			time.Sleep(4 * time.Second)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sourceConn, targetConn := followedPair(t, source, target, `CREATE TABLE ticks (id int PRIMARY KEY); INSERT INTO ticks VALUES (1)`)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := startStream(t, ctx, sourceConn, targetConn)
			waitCaughtUp(t, sourceConn, targetConn, done)
			tt.quiet(t, datatest.Connect(t, source.ConnString(busyDB)))
			var inStep time.Time
			tc := datatest.Connect(t, targetConn)
			if err := tc.QueryRow(context.Background(), "SELECT applied_commit_time FROM pgleap.replication").Scan(&inStep); err != nil {
				t.Fatal(err)
			}
			if behind := time.Since(inStep); behind > 2*time.Second {
				t.Errorf("the target is in step with the source as of %s ago, with the database quiet and the stream idle: want at most a few status intervals", behind.Round(time.Millisecond))
			}
			cancel()
			if r := <-done; r.err != nil {
				t.Fatal(r.err)
			}
		})
	}
}

// TestStreamInStepNeverAhead: while the walsender works through WAL of another database,
// the target is never said to be in step with the source as of a moment after a
// transaction of its own database that it has not applied yet (a lag in seconds too small
// would let a cutover freeze writes with much still to apply).
func TestStreamInStepNeverAhead(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target, `CREATE TABLE ticks (id int PRIMARY KEY); INSERT INTO ticks VALUES (1)`)
	busyDB := source.CreateDatabase(t)
	source.Exec(t, busyDB, "CREATE TABLE t (id int, pad text)")
	catchUp(t, sourceConn, targetConn)
	// A backlog: much WAL of the other database, then one transaction of this one.
	source.Exec(t, busyDB, "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 1500000) g")
	var committed time.Time
	quiet := datatest.Connect(t, sourceConn)
	if err := quiet.QueryRow(context.Background(), "INSERT INTO ticks VALUES (2) RETURNING clock_timestamp()").Scan(&committed); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tc := datatest.Connect(t, targetConn)
	started := time.Now()
	done := startStream(t, ctx, sourceConn, targetConn)
	checked := 0
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var applied bool
		var inStep *time.Time
		err := tc.QueryRow(context.Background(), "SELECT EXISTS (SELECT FROM ticks WHERE id = 2), (SELECT applied_commit_time FROM pgleap.replication)").Scan(&applied, &inStep)
		if err != nil {
			t.Fatal(err)
		}
		if applied {
			break
		}
		if inStep != nil && inStep.After(committed) {
			t.Fatalf("the target is said to be in step with the source as of %s, after the transaction of %s it has not applied", inStep.Format(time.RFC3339Nano), committed.Format(time.RFC3339Nano))
		}
		checked++
		if time.Now().After(deadline) {
			t.Fatal("the transaction was not applied within a minute")
		}
	}
	// The stream must have stood behind for several status intervals (100 ms in tests),
	// each a chance to record a time too new; else the test proved nothing.
	if behind := time.Since(started); behind < 500*time.Millisecond {
		t.Fatalf("the transaction was applied %s after the stream started: the backlog before it is too small to test anything", behind.Round(time.Millisecond))
	}
	t.Logf("checked %d times before the transaction was applied", checked)
	cancel()
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}
}

// TestStreamSurvivesLostConnections ends the walsender and the apply session mid-stream:
// the stream reconnects, resumes from the recorded position, and nothing is lost or doubled.
func TestStreamSurvivesLostConnections(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target, `CREATE TABLE ticks (id int PRIMARY KEY, v int); INSERT INTO ticks VALUES (0, 0)`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startStream(t, ctx, sourceConn, targetConn)
	for round := range 6 {
		for i := range 50 {
			id := round*50 + i + 1
			datatest.Exec(t, sourceConn, fmt.Sprintf("BEGIN; INSERT INTO ticks VALUES (%d, %[1]d); UPDATE ticks SET v = v + 1 WHERE id = 0; COMMIT", id))
		}
		// Each time the session is found first: after the last kill the stream may still
		// be waiting to reconnect.
		conn, sql := sourceConn, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'pgleap_stream'"
		if round%2 == 1 {
			conn, sql = targetConn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgleap' AND pid <> pg_backend_pid()"
		}
		for deadline := time.Now().Add(20 * time.Second); countRows(t, conn, sql) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no stream session to end within 20 s", round)
			}
		}
	}
	waitCaughtUp(t, sourceConn, targetConn, done)
	cancel()
	// A killed target session goes unnoticed until its next use, which may come after the
	// next kill of the walsender (one reconnection for both) or after the stream is stopped.
	if stats := <-done; stats.err != nil || stats.Reconnects < 3 {
		t.Fatalf("stream: %+v, want no error after at least three reconnections", stats)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 1)
}

// TestStreamStopsOnSchemaChange: a column added on the source stops the apply with the
// DDL to run; once it runs on the target, streaming continues where it stopped.
func TestStreamStopsOnSchemaChange(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target, `CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a')`)
	datatest.Exec(t, sourceConn, "ALTER TABLE items ADD COLUMN price numeric(10,2)")
	datatest.Exec(t, sourceConn, "INSERT INTO items VALUES (2, 'b', 9.99)")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stats := <-startStream(t, ctx, sourceConn, targetConn)
	var mismatch *SchemaMismatchError
	if !errors.As(stats.err, &mismatch) || !strings.Contains(stats.err.Error(), `ALTER TABLE "public"."items" ADD COLUMN "price" numeric(10,2);`) {
		t.Fatalf("stream after a column was added on the source = %v, want the DDL to run", stats.err)
	}
	datatest.Exec(t, targetConn, "SET default_transaction_read_only = off; ALTER TABLE items ADD COLUMN price numeric(10,2)")
	catchUp(t, sourceConn, targetConn)

	// A column retyped, then one dropped, on the source: each stops the stream with its DDL.
	for _, change := range []struct{ source, ddl string }{
		{"ALTER TABLE items ALTER COLUMN name TYPE varchar(20); INSERT INTO items VALUES (3, 'c', 1)",
			`ALTER TABLE "public"."items" ALTER COLUMN "name" TYPE character varying(20);`},
		{"ALTER TABLE items DROP COLUMN price; INSERT INTO items VALUES (4, 'd')",
			`ALTER TABLE "public"."items" DROP COLUMN "price";`},
	} {
		datatest.Exec(t, sourceConn, change.source)
		done := startStream(t, ctx, sourceConn, targetConn)
		var stats streamResult
		select {
		case stats = <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("after %q the stream did not stop", change.source)
		}
		if !errors.As(stats.err, &mismatch) || !strings.Contains(stats.err.Error(), change.ddl) {
			t.Fatalf("stream after %q = %v, want the DDL %s", change.source, stats.err, change.ddl)
		}
		datatest.Exec(t, targetConn, "SET default_transaction_read_only = off; "+change.ddl)
		catchUp(t, sourceConn, targetConn)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 1)
}

// catchUp streams until the target has applied everything the source wrote, then stops.
func catchUp(t *testing.T, sourceConn, targetConn string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startStream(t, ctx, sourceConn, targetConn)
	waitCaughtUp(t, sourceConn, targetConn, done)
	cancel()
	if stats := <-done; stats.err != nil {
		t.Fatal(stats.err)
	}
}

// followedPair creates a source database from fixture and copies it into a target database
// with a following slot; it returns both connection strings.
func followedPair(t *testing.T, source, target *pgtest.Server, fixture string) (sourceConn, targetConn string) {
	t.Helper()
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, fixture)
	sourceConn, targetConn = source.ConnString(sourceDB), target.ConnString(targetDB)
	_, err := datacopy.FullLoad(context.Background(), schema.Options{Source: sourceConn, Target: targetConn, IndexJobs: 2},
		datacopy.Options{Source: sourceConn, Target: targetConn, Jobs: 2, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	return sourceConn, targetConn
}

type streamResult struct {
	Stats
	err error
}

// startStream streams in the background until ctx ends; its log goes to the test's output
// and to alsoLog, if given.
func startStream(t *testing.T, ctx context.Context, sourceConn, targetConn string, alsoLog ...io.Writer) <-chan streamResult {
	t.Helper()
	logTo := io.MultiWriter(append([]io.Writer{testLog{t}}, alsoLog...)...)
	done := make(chan streamResult, 1)
	go func() {
		stats, err := Stream(ctx, Options{Source: sourceConn, Target: targetConn, StatusInterval: 100 * time.Millisecond, MaxRetryDelay: time.Second,
			Logger: slog.New(slog.NewTextHandler(logTo, nil))})
		done <- streamResult{stats, err}
	}()
	return done
}

// waitRunning waits until a statement runs on the server of connString.
func waitRunning(t *testing.T, connString, statement string) {
	t.Helper()
	running := fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'", pg.QuoteLiteral(statement))
	for deadline := time.Now().Add(30 * time.Second); datatest.Scalar(t, connString, running) == "0"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s does not run", statement)
		}
	}
}

// countRows runs a query and counts the rows it returns.
func countRows(t *testing.T, connString, sql string) int {
	t.Helper()
	ctx := context.Background()
	conn := datatest.Connect(t, connString)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitCaughtUp waits until the target has applied everything the source wrote so far: up
// to the WAL insert position (the write position lags behind it on a server that commits
// asynchronously, as test servers do).
func waitCaughtUp(t *testing.T, sourceConn, targetConn string, done <-chan streamResult) {
	t.Helper()
	ctx := context.Background()
	sc, err := pg.Connect(ctx, pg.Source, sourceConn)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(ctx)
	var want pglogrepl.LSN
	if err := sc.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&want); err != nil {
		t.Fatal(err)
	}
	tc, err := pg.Connect(ctx, pg.Target, targetConn)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(ctx)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var applied pglogrepl.LSN
		if err := tc.QueryRow(ctx, "SELECT coalesce(applied_lsn, start_lsn) FROM pgleap.replication").Scan(&applied); err != nil {
			t.Fatal(err)
		}
		if applied >= want {
			return
		}
		select {
		case r := <-done:
			t.Fatalf("the stream stopped at %s before reaching %s: %+v: %v", applied, want, r.Stats, r.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the target applied up to %s, not %s, within a minute", applied, want)
		}
	}
}

// testLog sends the stream's log lines to the test's output, shown when it fails or -v.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestStreamSurvivesTargetCrash crashes the target (immediate shutdown, then crash
// recovery) while changes stream: the target comes back with the applied position of its
// last committed transaction, and the stream resumes from there.
func TestStreamSurvivesTargetCrash(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Start(t, pgtest.TargetMajor(), pgtest.Options{Durable: true})
	sourceConn, targetConn := followedPair(t, source, target, `CREATE TABLE ticks (id int PRIMARY KEY, v int); INSERT INTO ticks VALUES (0, 0)`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startStream(t, ctx, sourceConn, targetConn)
	for i := 1; i <= 600; i++ {
		datatest.Exec(t, sourceConn, fmt.Sprintf("BEGIN; INSERT INTO ticks VALUES (%d, %[1]d); UPDATE ticks SET v = v + 1 WHERE id = 0; COMMIT", i))
		if i == 300 {
			if err := target.Restart(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitCaughtUp(t, sourceConn, targetConn, done)
	cancel()
	if stats := <-done; stats.err != nil || stats.Reconnects == 0 {
		t.Fatalf("stream: %+v, want no error after a reconnection", stats)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 1)
}

// TestStreamLargeTransactions: transactions larger than logical_decoding_work_mem, one with
// a subtransaction rolled back, one rolled back whole, one interleaved with small ones. On
// sources of 14 and later they arrive streamed while they run (protocol version 2).
func TestStreamLargeTransactions(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target,
		`CREATE TABLE big (id int PRIMARY KEY, pad text); CREATE TABLE small (id int PRIMARY KEY); CREATE TABLE later (id int PRIMARY KEY, pad text)`)
	// The walsender reads the database's settings: a small budget makes pgoutput stream
	// (the setting exists from 13 on).
	if pgtest.SourceMajor() >= 13 {
		datatest.Exec(t, sourceConn, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = ''64kB''', current_database()); END $$")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startStream(t, ctx, sourceConn, targetConn)

	datatest.Exec(t, sourceConn, `BEGIN; INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
		UPDATE big SET pad = 'updated' WHERE id % 3 = 0; COMMIT`)
	datatest.Exec(t, sourceConn, `BEGIN; INSERT INTO big SELECT g, 'kept' FROM generate_series(20001, 25000) g;
		SAVEPOINT s; INSERT INTO big SELECT g, 'rolled back' FROM generate_series(25001, 30000) g; DELETE FROM big WHERE id <= 100;
		ROLLBACK TO s; INSERT INTO big SELECT g, 'after' FROM generate_series(30001, 31000) g; COMMIT`)
	datatest.Exec(t, sourceConn, `BEGIN; INSERT INTO big SELECT g, 'never' FROM generate_series(40001, 50000) g; ROLLBACK`)
	// "later" is first touched inside a subtransaction that rolls back: pgoutput describes
	// it there, once, and the changes after the rollback still need that description.
	datatest.Exec(t, sourceConn, `BEGIN; SAVEPOINT s; INSERT INTO later SELECT g, repeat('y', 100) FROM generate_series(1, 5000) g;
		ROLLBACK TO s; INSERT INTO later SELECT g, 'kept' FROM generate_series(1, 5000) g; COMMIT`)

	long, err := pg.Connect(ctx, pg.Source, sourceConn)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close(ctx)
	if _, err := long.Exec(ctx, "BEGIN; INSERT INTO big SELECT g, 'long' FROM generate_series(50001, 60000) g"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		datatest.Exec(t, sourceConn, fmt.Sprintf("INSERT INTO small VALUES (%d)", i))
	}
	if _, err := long.Exec(ctx, "UPDATE big SET pad = 'long, updated' WHERE id > 59000; COMMIT"); err != nil {
		t.Fatal(err)
	}

	waitCaughtUp(t, sourceConn, targetConn, done)
	cancel()
	if stats := <-done; stats.err != nil {
		t.Fatal(stats.err)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 1)
	if pgtest.SourceMajor() >= 14 {
		var streamed int64
		sc, err := pg.Connect(context.Background(), pg.Source, sourceConn)
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close(context.Background())
		err = sc.QueryRow(context.Background(), `SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots s
			JOIN pg_replication_slots r USING (slot_name) WHERE r.database = current_database()`).Scan(&streamed)
		if err != nil || streamed == 0 {
			t.Errorf("no transaction was streamed (%d, %v): the test did not exercise protocol version 2", streamed, err)
		}
	}
}

// TestStreamTorture: many tiny commits with idle gaps (so keepalives arrive between them),
// while the stream is stopped and started again, and its walsender killed, at random
// points. Every commit increments a counter: once caught up, the target's counter equals
// the number of commits, so nothing was applied twice or skipped.
func TestStreamTorture(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target,
		`CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO counter VALUES (1, 0);
		 CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())`)

	writer, err := pg.Connect(context.Background(), pg.Source, sourceConn)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(context.Background())
	commits := 0
	writeUntil := time.Now().Add(6 * time.Second)
	var stream <-chan streamResult
	var stop context.CancelFunc = func() {}
	for time.Now().Before(writeUntil) {
		switch r := rng.IntN(10); {
		case r == 0 && stream != nil: // stop the stream mid-flow, as Ctrl-C or a crash would
			stop()
			if res := <-stream; res.err != nil {
				t.Fatalf("stream stopped with %v", res.err)
			}
			stream = nil
		case r == 1 && stream == nil:
			var ctx context.Context
			ctx, stop = context.WithCancel(context.Background())
			stream = startStream(t, ctx, sourceConn, targetConn)
		case r == 2:
			datatest.Exec(t, sourceConn, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'pgleap_stream'")
		}
		for range rng.IntN(20) {
			commits++
			_, err := writer.Exec(context.Background(), fmt.Sprintf(
				"BEGIN; UPDATE counter SET n = n + 1 WHERE id = 1; INSERT INTO events (id) VALUES (%d); COMMIT", commits))
			if err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond) // idle: keepalives come now
	}
	if stream == nil {
		var ctx context.Context
		ctx, stop = context.WithCancel(context.Background())
		stream = startStream(t, ctx, sourceConn, targetConn)
	}
	waitCaughtUp(t, sourceConn, targetConn, stream)
	stop()
	if res := <-stream; res.err != nil {
		t.Fatal(res.err)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 1)
	tc, err := pg.Connect(context.Background(), pg.Target, targetConn)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(context.Background())
	var n int64
	if err := tc.QueryRow(context.Background(), "SELECT n FROM counter").Scan(&n); err != nil || n != int64(commits) {
		t.Fatalf("target counter = %d (%v), want %d commits", n, err, commits)
	}
}

// TestReceiveMessages: what the replication connection may bring besides the stream's data.
// A notice (a source shutting down sent one) is logged and the stream goes on; the end of
// the stream is told apart from a message the stream has no use for.
func TestReceiveMessages(t *testing.T) {
	tests := []struct {
		name string
		msg  pgproto3.BackendMessage
		want error // nil: the stream goes on
	}{
		{"a notice", &pgproto3.NoticeResponse{Severity: "WARNING", Message: "something"}, nil},
		{"a setting changed", &pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"}, nil},
		{"the end of the stream", &pgproto3.CopyDone{}, errSourceEndedStream},
		{"an error", &pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "terminating connection"}, errors.New("stream from the source: FATAL: terminating connection (SQLSTATE 57P01)")},
		{"a message of no use", &pgproto3.DataRow{}, errors.New("stream from the source: unexpected message *pgproto3.DataRow")},
	}
	s := &session{opts: Options{Logger: slog.New(slog.DiscardHandler)}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.receive(context.Background(), tt.msg)
			if (err == nil) != (tt.want == nil) || err != nil && err.Error() != tt.want.Error() {
				t.Errorf("receive(%T) = %v, want %v", tt.msg, err, tt.want)
			}
		})
	}
}

// TestStreamAnswersSourceWhileTargetWaits: while the target keeps the apply waiting (a lock
// held on a table it writes) for several times the source's wal_sender_timeout, the stream
// still tells the source where it stands, so the walsender never gives up on it, and says
// which session holds it up; once the lock goes, the changes held up are applied.
func TestStreamAnswersSourceWhileTargetWaits(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceConn, targetConn := followedPair(t, source, target, `CREATE TABLE items (id int PRIMARY KEY, v int);
		INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g`)
	// The walsender of this stream gives up after 1 s without a word from it.
	streamSource := sourceConn + " wal_sender_timeout=1s"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logged pgtest.LockedBuffer
	done := startStream(t, ctx, streamSource, targetConn, &logged)
	datatest.Exec(t, sourceConn, "UPDATE items SET v = 1 WHERE id = 1")
	waitCaughtUp(t, sourceConn, targetConn, done)

	holder, err := datatest.Connect(t, targetConn).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	if _, err := holder.Exec(ctx, "SET TRANSACTION READ WRITE; LOCK TABLE items IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	// Changes keep coming while the first group waits for the lock: the next groups wait
	// for it in turn.
	for i := range 40 {
		datatest.Exec(t, sourceConn, fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", i%100+1))
		time.Sleep(100 * time.Millisecond)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, sourceConn, targetConn, done)
	cancel()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.Reconnects > 0 {
		t.Errorf("the stream reconnected %d times while the target waited: the source gave up on it", r.Reconnects)
	}
	// The wait (40 status intervals) is said, with the session that held it up.
	if warning := logged.String(); !strings.Contains(warning, "the apply is waiting for the target") || !strings.Contains(warning, "LOCK TABLE items IN SHARE MODE") {
		t.Errorf("the wait was not said with what held it up; the log:\n%s", warning)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 1)
}

// TestTargetBlockers: the warning of an apply kept waiting names what holds it up on the
// target: a session holding a lock, a prepared transaction, or nothing but the apply's own
// statement.
func TestTargetBlockers(t *testing.T) {
	target := pgtest.Start(t, pgtest.TargetMajor(), pgtest.Options{Settings: map[string]string{"max_prepared_transactions": "2"}})
	db := target.CreateDatabase(t)
	targetConn := target.ConnString(db)
	datatest.Exec(t, targetConn, `CREATE TABLE held (id int PRIMARY KEY); CREATE TABLE prepared (id int PRIMARY KEY)`)
	ctx := context.Background()
	holder := datatest.Connect(t, targetConn)
	if _, err := holder.Exec(ctx, "BEGIN; LOCK TABLE held IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	defer holder.Exec(ctx, "ROLLBACK")
	datatest.Exec(t, targetConn, "BEGIN; LOCK TABLE prepared IN SHARE MODE; PREPARE TRANSACTION 'pgleap_test_blockers'")
	defer datatest.Exec(t, targetConn, "ROLLBACK PREPARED 'pgleap_test_blockers'")

	s := &session{opts: Options{Target: targetConn}}
	tests := []struct{ name, waiting, want string }{
		{"a session holds a lock", "INSERT INTO held VALUES (1)", "LOCK TABLE held IN SHARE MODE"},
		{"a prepared transaction holds a lock", "INSERT INTO prepared VALUES (1)", "a prepared transaction"},
		{"nothing but its own statement", "SELECT pg_sleep(30)", "no other session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apply := datatest.Connect(t, targetConn)
			applyPID := apply.PgConn().PID()
			waitCtx, stopWaiting := context.WithCancel(ctx)
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				apply.Exec(waitCtx, tt.waiting)
			}()
			defer func() { stopWaiting(); <-ended }()
			waitRunning(t, targetConn, tt.waiting)
			if got := s.targetBlockers(ctx, applyPID); !strings.Contains(got, tt.want) {
				t.Errorf("held up by %q, want it to say %q", got, tt.want)
			}
		})
	}
}
