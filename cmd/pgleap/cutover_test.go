package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
)

// cutoverSetup is a source with an application role and tables an application writes,
// followed by a running pgleap migrate.
type cutoverSetup struct {
	source, target         *pgtest.Server
	sourceDB, targetDB     string
	sourceConn, targetConn string
	appRole                string
	migrate                *migrateProcess
}

type migrateProcess struct {
	wait func() error
	stop func()
	out  func() string
}

func setUpCutover(t *testing.T) *cutoverSetup {
	t.Helper()
	s := &cutoverSetup{source: pgtest.Shared(t, pgtest.SourceMajor()), target: pgtest.Shared(t, pgtest.TargetMajor())}
	s.sourceDB, s.targetDB = s.source.CreateDatabase(t), s.target.CreateDatabase(t)
	s.sourceConn, s.targetConn = s.source.ConnString(s.sourceDB), s.target.ConnString(s.targetDB)
	s.appRole = "app_" + s.sourceDB
	s.source.Exec(t, s.sourceDB, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN;
		CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL);
		CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
		INSERT INTO counters VALUES (1, 0);
		CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
		GRANT ALL ON ALL TABLES IN SCHEMA public TO %[1]s;
		GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO %[1]s;
		SELECT lo_from_bytea(0, 'before the cutover')`, s.appRole))
	t.Cleanup(func() {
		// The role outlives the test's databases on the shared servers; dropped once they
		// are gone, best effort.
		for _, srv := range []*pgtest.Server{s.source, s.target} {
			if conn, err := pg.Connect(context.Background(), pg.Source, srv.ConnString("postgres")); err == nil {
				conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pg.QuoteIdent(s.sourceDB)+" WITH (FORCE)")
				conn.Close(context.Background())
			}
		}
	})
	cmd, out := startCLI(t, "migrate", "--jobs", "2", "--source", s.sourceConn, "--target", s.targetConn)
	s.migrate = &migrateProcess{wait: cmd.Wait, stop: func() { cmd.Process.Signal(syscall.SIGINT) }, out: out.String}
	waitFor(t, "migrate to stream", func() bool { return scalar(t, s.sourceConn, streamingSQL) == "1" })
	return s
}

// appConn is a connection string as the application role.
func appConn(connString, role string) string { return connString + " user=" + role }

// writer is an application writing every 10 ms: an item with an id it chose, an update of
// one counter, an event with a sequence-made id. It remembers what was acknowledged.
type writer struct {
	mu                 sync.Mutex
	items              []int
	events             []int64
	counted            int64
	errors             []string
	switchedAt         int // items acknowledged before the switch
	eventsBeforeSwitch int
}

// run writes to the source until the switch file exists, then to the target, until ctx ends.
func (w *writer) run(ctx context.Context, source, target, switchFile string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	server := source
	for i := 1; ctx.Err() == nil; i++ {
		time.Sleep(10 * time.Millisecond)
		if server == source {
			if _, err := os.Stat(switchFile); err == nil {
				server = target
				if conn != nil {
					conn.Close(context.Background())
					conn = nil
				}
				w.mu.Lock()
				w.switchedAt, w.eventsBeforeSwitch = len(w.items), len(w.events)
				w.mu.Unlock()
			}
		}
		if conn == nil {
			var err error
			if conn, err = pgx.Connect(ctx, server); err != nil {
				w.fail(err)
				continue
			}
		}
		var event int64
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO items VALUES ($1, 'written to '||current_setting('server_version_num'))", i); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE counters SET n = n + 1 WHERE id = 1"); err != nil {
				return err
			}
			return tx.QueryRow(ctx, "INSERT INTO events DEFAULT VALUES RETURNING id").Scan(&event)
		})
		if err != nil {
			w.fail(err)
			if conn.IsClosed() {
				conn = nil
			}
			continue
		}
		w.mu.Lock()
		w.items, w.events = append(w.items, i), append(w.events, event)
		w.counted++
		w.mu.Unlock()
	}
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errors = append(w.errors, time.Now().Format("05.000")+" "+err.Error())
}

type cutoverJSON struct {
	Done         bool    `json:"done"`
	Undone       string  `json:"undone"`
	WritePauseMS float64 `json:"write_pause_ms"`
	Sequences    int     `json:"sequences"`
	LargeObjects int     `json:"large_objects_resynced"`
	Preflight    []struct {
		Name string
		OK   bool
	} `json:"preflight"`
	Steps []struct {
		Name, Error string
	} `json:"steps"`
}

// TestCutoverWithoutPooler cuts over while an application writes every 10 ms: its writes
// fail while the source is frozen, and every write it saw acknowledged, on either server, is
// on the target afterwards; sequence values go on from where the source left them.
func TestCutoverWithoutPooler(t *testing.T) {
	s := setUpCutover(t)
	switchFile := filepath.Join(t.TempDir(), "switched")
	w := &writer{}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, appConn(s.sourceConn, s.appRole), appConn(s.targetConn, s.appRole), switchFile)
	}()
	waitFor(t, "the application's writes to reach the target", func() bool {
		return scalar(t, s.targetConn, "SELECT count(*) >= 30 FROM items") == "true"
	})
	// A large object changed after the copy: logical replication does not carry it.
	s.source.Exec(t, s.sourceDB, "SELECT lo_from_bytea(0, 'after the copy')")

	code, stdout, stderr := pgleap(t, nil, "cutover", "--json", "--no-reverse", "--verify", "full",
		"--switch-command", "touch "+switchFile, "--source", s.sourceConn, "--target", s.targetConn)
	var r cutoverJSON
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != exitOK || !r.Done {
		t.Fatalf("cutover: exit %d, %v\n%s%s\nmigrate:\n%s", code, err, stdout, stderr, s.migrate.out())
	}
	if r.WritePauseMS <= 0 || r.WritePauseMS > 10000 || r.Sequences != 1 || r.LargeObjects != 1 || len(r.Steps) < 6 {
		t.Errorf("cutover result: %+v", r)
	}
	t.Logf("writes paused %.0f ms", r.WritePauseMS)
	if err := s.migrate.wait(); err != nil || !strings.Contains(s.migrate.out(), "the target took over") {
		t.Errorf("migrate after the cutover: %v\n%s", err, s.migrate.out())
	}
	waitFor(t, "the application to write to the target", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.switchedAt > 0 && len(w.items) >= w.switchedAt+30
	})
	stop()
	<-done

	w.mu.Lock()
	defer w.mu.Unlock()
	if got := scalar(t, s.targetConn, fmt.Sprintf("SELECT count(*) FROM items WHERE id = ANY('%s'::int[])", intArray(w.items))); got != fmt.Sprint(len(w.items)) {
		t.Errorf("of %d acknowledged items, %s are on the target", len(w.items), got)
	}
	if got := scalar(t, s.targetConn, "SELECT n FROM counters WHERE id = 1"); got != fmt.Sprint(w.counted) {
		t.Errorf("the counter on the target is %s, %d increments were acknowledged", got, w.counted)
	}
	for i := w.eventsBeforeSwitch; i < len(w.events); i++ {
		if w.events[i] <= w.events[w.eventsBeforeSwitch-1] {
			t.Fatalf("event id %d on the target after event %d on the source: the sequence went back", w.events[i], w.events[w.eventsBeforeSwitch-1])
		}
	}
	if got := scalar(t, s.targetConn, "SELECT count(*) FROM pg_largeobject_metadata"); got != "2" {
		t.Errorf("large objects on the target: %s, want 2", got)
	}
	// Every error the application saw came from the freeze, before it switched.
	for _, e := range w.errors {
		if !strings.Contains(e, "context canceled") && !strings.Contains(e, "read-only") && !strings.Contains(e, "terminat") && !strings.Contains(e, "too many connections") &&
			!strings.Contains(e, "closed") && !strings.Contains(e, "EOF") && !strings.Contains(e, "connection") {
			t.Errorf("the application saw an unexpected error: %s", e)
		}
	}
	t.Logf("%d writes acknowledged (%d on the target), %d failed during the freeze", len(w.items), len(w.items)-w.switchedAt, len(w.errors))

	// The old server stays frozen for the application.
	if conn, err := pgx.Connect(context.Background(), appConn(s.sourceConn, s.appRole)); err == nil {
		conn.Close(context.Background())
		t.Error("the application could still connect to the frozen source")
	}
	code, _, stderr = pgleap(t, nil, "migrate", "--source", s.sourceConn, "--target", s.targetConn)
	if code != exitCannotRun || !strings.Contains(stderr, "cut over") {
		t.Errorf("migrate after the cutover: exit %d, %s", code, stderr)
	}
	if phase := scalar(t, s.targetConn, "SELECT phase FROM pgleap.migration"); phase != "cutover-done" {
		t.Errorf("phase after the cutover: %s", phase)
	}
	// Unfrozen by hand, as the cutover's output says, so that the test's database can go.
	s.source.Exec(t, s.sourceDB, fmt.Sprintf("BEGIN READ WRITE; ALTER DATABASE %[1]s CONNECTION LIMIT -1; ALTER DATABASE %[1]s RESET default_transaction_read_only; COMMIT",
		pg.QuoteIdent(s.sourceDB)))
}

// TestCutoverUndone: a target that differs from the source fails the final verification;
// the cutover is undone, the source takes writes again and the migration streams on.
func TestCutoverUndone(t *testing.T) {
	s := setUpCutover(t)
	args := []string{"cutover", "--source", s.sourceConn, "--target", s.targetConn}

	code, stdout, _ := pgleap(t, nil, args...)
	if code != exitAnswerNo || !strings.Contains(stdout, "FAIL reverse replication") {
		t.Errorf("cutover without --no-reverse: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = pgleap(t, nil, append(args, "--no-reverse", "--dry-run")...)
	if code != exitOK || !strings.Contains(stdout, "dry run: nothing was changed") || strings.Contains(stdout, "FAIL") {
		t.Errorf("cutover --dry-run: exit %d\n%s", code, stdout)
	}

	s.source.Exec(t, s.sourceDB, "INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g")
	waitFor(t, "the rows to reach the target", func() bool { return scalar(t, s.targetConn, "SELECT count(*) FROM items") == "100" })
	s.target.Exec(t, s.targetDB, "BEGIN READ WRITE; UPDATE items SET note = 'forked' WHERE id = 7; COMMIT")

	code, stdout, stderr := pgleap(t, nil, append(args, "--no-reverse", "--verify", "full")...)
	if code != exitAnswerNo || !strings.Contains(stdout, "undone: verify (full)") || !strings.Contains(stdout, `"public"."items"`) {
		t.Fatalf("cutover onto a forked target: exit %d\n%s%s", code, stdout, stderr)
	}
	// The source takes the application's writes again, and they stream to the target.
	app, err := pgx.Connect(context.Background(), appConn(s.sourceConn, s.appRole))
	if err != nil {
		t.Fatalf("the application cannot connect to the source after the undone cutover: %v", err)
	}
	defer app.Close(context.Background())
	if _, err := app.Exec(context.Background(), "INSERT INTO items VALUES (1000, 'after the undone cutover')"); err != nil {
		t.Fatalf("the application cannot write to the source after the undone cutover: %v", err)
	}
	waitFor(t, "the write after the undone cutover to reach the target", func() bool {
		return scalar(t, s.targetConn, "SELECT count(*) FROM items WHERE id = 1000") == "1"
	})
	if got := scalar(t, s.targetConn, "SELECT phase || ' ' || (SELECT outcome FROM pgleap.cutover) FROM pgleap.migration"); got != "streaming undone" {
		t.Errorf("phase and cutover outcome: %s", got)
	}
	s.migrate.stop()
	if err := s.migrate.wait(); err != nil {
		t.Errorf("migrate after Ctrl-C: %v\n%s", err, s.migrate.out())
	}
}

func intArray(ids []int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	return "{" + strings.Join(parts, ",") + "}"
}
