package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
	"github.com/pgleap/pgleap/internal/state"
)

// cutoverSetup is a source with an application role and tables an application writes,
// followed by a running pgleap migrate.
type cutoverSetup struct {
	source, target         *pgtest.Server
	sourceDB, targetDB     string
	sourceConn, targetConn string
	appRole                string
	migrate                *migrateProcess
	// whileCutOver, when set, runs between the cutover and the rollback.
	whileCutOver func()
}

type migrateProcess struct {
	wait    func() error
	stop    func()
	out     func() string
	process *os.Process
}

// setUpCutover uses target, or the package's shared target server when nil.
func setUpCutover(t *testing.T, target *pgtest.Server) *cutoverSetup {
	t.Helper()
	if target == nil {
		target = pgtest.Shared(t, pgtest.TargetMajor())
	}
	return setUpCutoverAs(t, pgtest.Shared(t, pgtest.SourceMajor()), target, false)
}

// setUpCutoverAs runs pgleap as a superuser, or, with leastPrivileges, as a role that has
// only what docs/guide.md lists for the whole flow, cutover and rollback included.
func setUpCutoverAs(t *testing.T, source, target *pgtest.Server, leastPrivileges bool) *cutoverSetup {
	t.Helper()
	s := &cutoverSetup{source: source, target: target}
	s.sourceDB, s.targetDB = s.source.CreateDatabase(t), s.target.CreateDatabase(t)
	s.sourceConn, s.targetConn = s.source.ConnString(s.sourceDB), s.target.ConnString(s.targetDB)
	s.appRole = "app_" + s.sourceDB
	setRole := ""
	if leastPrivileges {
		migrator := "migrator_" + s.sourceDB
		servers := []*pgtest.Server{source, target}
		if source == target {
			servers = servers[:1]
		}
		for _, srv := range servers {
			sql := fmt.Sprintf("CREATE ROLE %[1]s LOGIN REPLICATION CREATEROLE; GRANT pg_signal_backend, pg_read_all_stats TO %[1]s", migrator)
			if srv.Major >= 15 {
				sql += "; GRANT SET ON PARAMETER session_replication_role TO " + migrator
			}
			srv.Exec(t, "postgres", sql)
		}
		source.Exec(t, "postgres", "ALTER DATABASE "+s.sourceDB+" OWNER TO "+migrator+"; CREATE ROLE "+s.appRole+" LOGIN; GRANT "+s.appRole+" TO "+migrator)
		target.Exec(t, "postgres", "ALTER DATABASE "+s.targetDB+" OWNER TO "+migrator)
		s.sourceConn, s.targetConn = s.sourceConn+" user="+migrator, s.targetConn+" user="+migrator
		setRole = "SET ROLE " + migrator + ";" // as the database's owner, it may create in schema public (15+)
	}
	if !leastPrivileges {
		s.source.Exec(t, "postgres", "CREATE ROLE "+s.appRole+" LOGIN")
	}
	s.source.Exec(t, s.sourceDB, fmt.Sprintf(`%[2]s
		CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL);
		CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
		INSERT INTO counters VALUES (1, 0);
		CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
		GRANT ALL ON ALL TABLES IN SCHEMA public TO %[1]s;
		GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO %[1]s;
		SELECT lo_from_bytea(0, 'before the cutover')`, s.appRole, setRole))
	t.Cleanup(func() {
		// The roles outlive the test's databases on the shared servers; dropped once they
		// are gone, best effort.
		for _, srv := range []*pgtest.Server{s.source, s.target} {
			if conn, err := pg.Connect(context.Background(), pg.Source, srv.ConnString("postgres")); err == nil {
				conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pg.QuoteIdent(s.sourceDB)+" WITH (FORCE)")
				conn.Close(context.Background())
			}
		}
	})
	cmd, out := startCLI(t, "migrate", "--jobs", "2", "--source", s.sourceConn, "--target", s.targetConn)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.migrate = &migrateProcess{wait: func() error { return <-exited }, stop: func() { cmd.Process.Signal(syscall.SIGINT) }, out: out.String, process: cmd.Process}
	waitFor(t, "migrate to stream", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("migrate stopped before it streamed: %v\n%s", err, out)
		default:
		}
		return datatest.Scalar(t, s.sourceConn, streamingSQL) == "1" && datatest.Scalar(t, s.targetConn, "SELECT coalesce(max(phase), '') FROM pgleap.migration") == "streaming"
	})
	return s
}

// writesStreamAgain proves, after an undone cutover, that the application writes to the
// source again and that its write streams to the target; it returns its connection.
func (s *cutoverSetup) writesStreamAgain(t *testing.T) *pgx.Conn {
	t.Helper()
	app, err := pgx.Connect(context.Background(), appConn(s.sourceConn, s.appRole))
	if err != nil {
		t.Fatalf("the application cannot connect to the source after the undone cutover: %v", err)
	}
	t.Cleanup(func() { app.Close(context.Background()) })
	if _, err := app.Exec(context.Background(), "INSERT INTO items VALUES (1000, 'after the undone cutover')"); err != nil {
		t.Fatalf("the application cannot write to the source after the undone cutover: %v", err)
	}
	waitFor(t, "the write after the undone cutover to reach the target", func() bool {
		return datatest.Scalar(t, s.targetConn, "SELECT count(*) FROM items WHERE id = 1000") == "1"
	})
	return app
}

// appConn is a connection string as the application role.
func appConn(connString, role string) string { return connString + " user=" + role }

// writer is an application writing every 10 ms: an item with an id it chose, an update of
// one counter, an event with a sequence-made id. It remembers what was acknowledged.
type writer struct {
	mu      sync.Mutex
	items   []int
	events  []int64
	counted int64
	errors  []string
	// switched[k] is how many items were acknowledged when it moved to servers[k+1].
	switched []int
	// simple: through PgBouncer in transaction pooling, no prepared statements.
	simple bool
	// longest is the longest a write took, from its start to its acknowledgement.
	longest time.Duration
}

// run writes to servers[0] until switchFiles[0] exists, then to servers[1] until
// switchFiles[1] exists, and so on, until ctx ends.
func (w *writer) run(ctx context.Context, servers, switchFiles []string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	at := 0
	for i := 1; ctx.Err() == nil; i++ {
		time.Sleep(10 * time.Millisecond)
		if at < len(switchFiles) {
			if _, err := os.Stat(switchFiles[at]); err == nil {
				at++
				if conn != nil {
					conn.Close(context.Background())
					conn = nil
				}
				w.mu.Lock()
				w.switched = append(w.switched, len(w.items))
				w.mu.Unlock()
			}
		}
		if conn == nil {
			cfg, err := pgx.ParseConfig(servers[at])
			if err != nil {
				w.fail(err)
				continue
			}
			if w.simple {
				cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
			}
			if conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
				w.fail(err)
				continue
			}
		}
		var event int64
		start := time.Now()
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
		w.longest = max(w.longest, time.Since(start))
		w.mu.Unlock()
	}
}

// wrote reports whether n items were acknowledged since from were.
func (w *writer) wrote(from, n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.items) >= from+n
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.items)
}

// moved reports whether the writer has moved k times and written n items since.
func (w *writer) moved(k, n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.switched) >= k && len(w.items) >= w.switched[k-1]+n
}

// check proves that every acknowledged write is on the server at connString.
func (w *writer) check(t *testing.T, connString string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := datatest.Scalar(t, connString, fmt.Sprintf("SELECT count(*) FROM items WHERE id = ANY('%s'::int[])", intArray(w.items))); got != fmt.Sprint(len(w.items)) {
		t.Errorf("of %d acknowledged items, %s are there", len(w.items), got)
	}
	// A transaction that failed (a freeze ended its session, the test ended) may have
	// committed all the same: the counter is at least what was acknowledged, and at most
	// that plus the failed attempts.
	var counter int64
	fmt.Sscan(datatest.Scalar(t, connString, "SELECT n FROM counters WHERE id = 1"), &counter)
	if counter < w.counted || counter > w.counted+int64(len(w.errors)) {
		t.Errorf("the counter is %d: %d increments were acknowledged, %d attempts failed", counter, w.counted, len(w.errors))
	}
	for i := 1; i < len(w.events); i++ {
		if w.events[i] <= w.events[i-1] {
			t.Fatalf("event id %d after event %d: a sequence went back", w.events[i], w.events[i-1])
		}
	}
	// Every error the application saw came from a freeze.
	for _, e := range w.errors {
		if !strings.Contains(e, "context canceled") && !strings.Contains(e, "read-only") && !strings.Contains(e, "terminat") &&
			!strings.Contains(e, "too many connections") && !strings.Contains(e, "permission denied for database") && !strings.Contains(e, "closed") && !strings.Contains(e, "EOF") {
			t.Errorf("the application saw an unexpected error: %s", e)
		}
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

// TestCutoverAndRollbackWithoutPooler cuts over while an application writes every 10 ms,
// then rolls back: its writes fail while a side is frozen, and every write it saw
// acknowledged, on either server, is where it must be afterwards; sequence values go on
// from where the other side left them.
func TestCutoverAndRollbackWithoutPooler(t *testing.T) {
	cutOverAndRollBack(t, setUpCutover(t, nil))
}

// TestCutoverAndRollbackWithLeastPrivileges runs the same as a role that is not a superuser,
// with only the grants docs/guide.md lists. The old server then applies the way back as
// that role, which may set session_replication_role only from PostgreSQL 15 on: a source
// older than that is replaced by a PostgreSQL 15 (make test installs it).
func TestCutoverAndRollbackWithLeastPrivileges(t *testing.T) {
	sourceMajor := max(pgtest.SourceMajor(), 15)
	if sourceMajor > pgtest.TargetMajor() {
		t.Skipf("the way back as a role that is not a superuser needs an old server of PostgreSQL 15 or later, and the target is %d", pgtest.TargetMajor())
	}
	s := setUpCutoverAs(t, pgtest.Shared(t, sourceMajor), pgtest.Shared(t, pgtest.TargetMajor()), true)
	// The freeze revokes CONNECT and grants it back as it was: with its grant option, and
	// to the roles still there (one is dropped while the old server is frozen).
	reporting, gone := "reporting_"+s.sourceDB, "gone_"+s.sourceDB
	s.source.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %[1]s LOGIN; CREATE ROLE %[2]s LOGIN; GRANT CONNECT ON DATABASE %[3]s TO %[1]s WITH GRANT OPTION; GRANT CONNECT ON DATABASE %[3]s TO %[2]s",
		reporting, gone, s.sourceDB))
	t.Cleanup(func() {
		s.source.Exec(t, "postgres", fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM %s; DROP ROLE %[2]s; DROP ROLE IF EXISTS %s", s.sourceDB, reporting, gone))
	})
	// The grants, one per line, in order, but gone's: it goes with gone.
	acl := func() string {
		return datatest.Scalar(t, s.source.ConnString("postgres"), fmt.Sprintf(`SELECT string_agg(a::text, E'\n' ORDER BY a::text)
			FROM pg_database, unnest(datacl) a WHERE datname = '%s' AND a::text NOT LIKE '%s=%%'`, s.sourceDB, gone))
	}
	want := acl()
	if !strings.Contains(want, reporting+"=c*/") || !strings.Contains(want, "\n=Tc/") && !strings.HasPrefix(want, "=Tc/") {
		t.Fatalf("the old server's grants before the cutover lack reporting's or PUBLIC's:\n%s", want)
	}
	s.whileCutOver = func() { s.source.Exec(t, "postgres", "DROP ROLE "+gone) }
	cutOverAndRollBack(t, s)
	if got := acl(); got != want {
		t.Errorf("the old server's grants after the rollback:\n%s\nwant (those before but the dropped role's):\n%s", got, want)
	}
}

func cutOverAndRollBack(t *testing.T, s *cutoverSetup) {
	dir := t.TempDir()
	switched, switchedBack := filepath.Join(dir, "switched"), filepath.Join(dir, "switched-back")
	w := &writer{}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, []string{appConn(s.sourceConn, s.appRole), appConn(s.targetConn, s.appRole), appConn(s.sourceConn, s.appRole)},
			[]string{switched, switchedBack})
	}()
	waitFor(t, "the application's writes to reach the target", func() bool {
		return datatest.Scalar(t, s.targetConn, "SELECT count(*) >= 30 FROM items") == "true"
	})
	// A large object changed after the copy: logical replication does not carry it. The
	// application makes it; pgleap's role, when not a superuser, has its privileges.
	s.source.Exec(t, s.sourceDB, "SET ROLE "+s.appRole+"; SELECT lo_from_bytea(0, 'after the copy')")
	conns := []string{"--source", s.sourceConn, "--target", s.targetConn}

	code, stdout, stderr := pgleap(t, nil, append([]string{"cutover", "--json", "--verify", "full", "--switch-command", "touch " + switched}, conns...)...)
	var r cutoverJSON
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != exitOK || !r.Done {
		_, schemaOut, _ := pgleap(t, nil, append([]string{"verify", "--schema"}, conns...)...)
		t.Fatalf("cutover: exit %d, %v\n%s%s\nschemas:\n%s\nmigrate:\n%s", code, err, stdout, stderr, schemaOut, s.migrate.out())
	}
	if r.WritePauseMS <= 0 || r.WritePauseMS > 10000 || r.Sequences != 1 || r.LargeObjects != 1 || len(r.Steps) < 7 {
		t.Errorf("cutover result: %+v", r)
	}
	t.Logf("cutover: writes paused %.0f ms", r.WritePauseMS)
	waitFor(t, "the application to write to the target", func() bool { return w.moved(1, 30) })
	if phase := datatest.Scalar(t, s.targetConn, "SELECT phase FROM pgleap.migration"); phase != "reverse-streaming" {
		t.Errorf("phase after the cutover: %s", phase)
	}
	if code, stdout, _ := pgleap(t, nil, append([]string{"status"}, conns...)...); code != exitOK ||
		!strings.Contains(stdout, "reverse-streaming") || !strings.Contains(stdout, "last cutover: ") || !strings.Contains(stdout, "done, writes paused") {
		t.Errorf("status after the cutover: exit %d\n%s", code, stdout)
	}
	// Stopped and started again, pgleap migrate resumes the way back, not the forward stream.
	s.migrate.stop()
	if err := s.migrate.wait(); err != nil || !strings.Contains(s.migrate.out(), "streaming the target's changes back") {
		t.Fatalf("migrate after the cutover, stopped: %v\n%s", err, s.migrate.out())
	}
	cmd, out := startCLI(t, "migrate", "--source", s.sourceConn, "--target", s.targetConn)
	s.migrate = &migrateProcess{wait: cmd.Wait, stop: func() { cmd.Process.Signal(syscall.SIGINT) }, out: out.String, process: cmd.Process}
	// The old server is frozen for the application, and follows the new one.
	if conn, err := pgx.Connect(context.Background(), appConn(s.sourceConn, s.appRole)); err == nil {
		conn.Close(context.Background())
		t.Error("the application could still connect to the frozen source")
	}
	onTarget := datatest.Scalar(t, s.targetConn, "SELECT max(id) FROM items")
	for deadline := time.Now().Add(30 * time.Second); datatest.Scalar(t, s.sourceConn, "SELECT count(*) FROM items WHERE id = "+onTarget) != "1"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the writes on the target did not stream back to the source\nmigrate:\n%s", s.migrate.out())
		}
	}

	if s.whileCutOver != nil {
		s.whileCutOver()
	}
	code, stdout, stderr = pgleap(t, nil, append([]string{"rollback", "--json", "--verify", "full", "--switch-command", "touch " + switchedBack}, conns...)...)
	r = cutoverJSON{}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != exitOK || !r.Done {
		_, schemaOut, _ := pgleap(t, nil, "verify", "--schema", "--source", s.targetConn, "--target", s.sourceConn)
		t.Fatalf("rollback: exit %d, %v\n%s%s\nschemas:\n%s\nmigrate:\n%s", code, err, stdout, stderr, schemaOut, s.migrate.out())
	}
	t.Logf("rollback: writes paused %.0f ms", r.WritePauseMS)
	// The rollback runs the cutover's steps the other way, and says which server each is on.
	var names []string
	for _, step := range r.Steps {
		names = append(names, step.Name)
	}
	for _, check := range r.Preflight {
		names = append(names, check.Name)
	}
	for _, want := range []string{"freeze writes on the new server", "open the old server", "pgleap may freeze writes on the new server"} {
		if !slices.Contains(names, want) {
			t.Errorf("rollback's checks and steps lack %q: %q", want, names)
		}
	}
	if err := s.migrate.wait(); err != nil || !strings.Contains(s.migrate.out(), "streaming the target's changes back") || !strings.Contains(s.migrate.out(), "rolled back") {
		t.Errorf("migrate streaming back through the rollback: %v\n%s", err, s.migrate.out())
	}
	waitFor(t, "the application to write to the source again", func() bool { return w.moved(2, 30) })
	stop()
	<-done

	w.check(t, s.sourceConn)
	if got := datatest.Scalar(t, s.sourceConn, "SELECT count(*) FROM pg_largeobject_metadata"); got != "2" {
		t.Errorf("large objects on the source: %s, want 2", got)
	}
	t.Logf("%d writes acknowledged (%d before the cutover, %d on the target), %d failed during the freezes",
		len(w.items), w.switched[0], w.switched[1]-w.switched[0], len(w.errors))
	if conn, err := pgx.Connect(context.Background(), appConn(s.targetConn, s.appRole)); err == nil {
		conn.Close(context.Background())
		t.Error("the application could still connect to the frozen target after the rollback")
	}
	code, _, stderr = pgleap(t, nil, append([]string{"migrate"}, conns...)...)
	if code != exitCannotRun || !strings.Contains(stderr, "rolled back") {
		t.Errorf("migrate after the rollback: exit %d, %s", code, stderr)
	}
	// Unfrozen by hand, as the rollback's output says, so that the test's database can go.
	s.target.Exec(t, s.targetDB, fmt.Sprintf("BEGIN READ WRITE; ALTER DATABASE %[1]s CONNECTION LIMIT -1; ALTER DATABASE %[1]s RESET default_transaction_read_only; COMMIT",
		pg.QuoteIdent(s.targetDB)))
}

// TestCutoverAndRollbackThroughPgBouncer: the application writes every 10 ms through
// PgBouncer while pgleap cuts over and rolls back; it sees no error, only pauses, and every
// write it saw acknowledged is on the old server at the end.
func TestCutoverAndRollbackThroughPgBouncer(t *testing.T) {
	s := setUpCutover(t, nil)
	bouncer := pgtest.StartPgBouncer(t, "app", s.source, s.sourceDB, s.appRole)
	w := &writer{simple: true}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, []string{bouncer.ConnString("app", s.appRole)}, nil)
	}()
	waitFor(t, "the application's writes to reach the target", func() bool {
		return datatest.Scalar(t, s.targetConn, "SELECT count(*) >= 30 FROM items") == "true"
	})
	args := []string{"--json", "--source", s.sourceConn, "--target", s.targetConn, "--pgbouncer", bouncer.AdminConnString(),
		"--pgbouncer-database", "app", "--pgbouncer-databases-file", bouncer.DatabasesFile}
	for _, command := range []string{"cutover", "rollback"} {
		code, stdout, stderr := pgleap(t, nil, append([]string{command}, args...)...)
		var r cutoverJSON
		if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != exitOK || !r.Done {
			t.Fatalf("%s: exit %d, %v\n%s%s\nmigrate:\n%s", command, code, err, stdout, stderr, s.migrate.out())
		}
		t.Logf("%s: writes paused %.0f ms", command, r.WritePauseMS)
		n := w.count()
		waitFor(t, "the application to write after "+command, func() bool { return w.wrote(n, 30) })
		if command == "cutover" {
			onTarget := datatest.Scalar(t, s.targetConn, "SELECT max(id) FROM items")
			waitFor(t, "the writes on the target to stream back", func() bool {
				return datatest.Scalar(t, s.sourceConn, "SELECT count(*) FROM items WHERE id = "+onTarget) == "1"
			})
		}
	}
	stop()
	<-done
	if err := s.migrate.wait(); err != nil || !strings.Contains(s.migrate.out(), "rolled back") {
		t.Errorf("migrate through cutover and rollback: %v\n%s", err, s.migrate.out())
	}
	w.check(t, s.sourceConn)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.errors {
		if !strings.Contains(e, "context canceled") {
			t.Errorf("through PgBouncer the application saw an error: %s", e)
		}
	}
	if w.longest >= 2*time.Second {
		t.Errorf("the longest write took %s through PgBouncer, want under 2 s", w.longest)
	}
	t.Logf("%d writes acknowledged through PgBouncer; the longest took %s", len(w.items), w.longest.Round(time.Millisecond))
	code, stdout, stderr := pgleap(t, nil, "cleanup", "--source", s.sourceConn, "--target", s.targetConn)
	if code != exitOK || !strings.Contains(stdout, "replication slot pgleap_back_") || !strings.Contains(stdout, "dropped on the source: schema pgleap (the way back)") {
		t.Errorf("cleanup after the rollback: exit %d\n%s%s", code, stdout, stderr)
	}
	if n := datatest.Scalar(t, s.targetConn, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"); n != "0" {
		t.Errorf("cleanup left %s slots on the target", n)
	}
	s.target.Exec(t, s.targetDB, fmt.Sprintf("BEGIN READ WRITE; ALTER DATABASE %[1]s CONNECTION LIMIT -1; ALTER DATABASE %[1]s RESET default_transaction_read_only; COMMIT",
		pg.QuoteIdent(s.targetDB)))
}

// TestCutoverUndone: a target that differs from the source fails the final verification;
// the cutover is undone, the source takes writes again and the migration streams on.
func TestCutoverUndone(t *testing.T) {
	s := setUpCutover(t, nil)
	args := []string{"cutover", "--source", s.sourceConn, "--target", s.targetConn}

	code, stdout, _ := pgleap(t, nil, append(args, "--dry-run")...)
	if code != exitOK || !strings.Contains(stdout, "dry run: nothing was changed") || strings.Contains(stdout, "FAIL") ||
		!strings.Contains(stdout, "the target can stream back") {
		t.Errorf("cutover --dry-run: exit %d\n%s", code, stdout)
	}
	// A cutover running (its lock held) makes a second one refuse, changing nothing.
	running := datatest.Connect(t, s.targetConn)
	if _, err := running.Exec(context.Background(), "SELECT pg_advisory_lock($1)", state.CutoverLock); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := pgleap(t, nil, args...)
	if code != exitCannotRun || !strings.Contains(stderr, "another pgleap cutover is running") {
		t.Errorf("cutover while another runs: exit %d, %s", code, stderr)
	}
	running.Close(context.Background())
	if phase := datatest.Scalar(t, s.targetConn, "SELECT phase FROM pgleap.migration"); phase != "streaming" {
		t.Errorf("phase after a refused cutover: %s", phase)
	}
	code, _, stderr = pgleap(t, nil, append([]string{"rollback"}, args[1:]...)...)
	if code != exitCannotRun || !strings.Contains(stderr, "nothing to roll back") {
		t.Errorf("rollback before any cutover: exit %d, %s", code, stderr)
	}

	s.source.Exec(t, s.sourceDB, "INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g")
	waitFor(t, "the rows to reach the target", func() bool { return datatest.Scalar(t, s.targetConn, "SELECT count(*) FROM items") == "100" })
	s.target.Exec(t, s.targetDB, "BEGIN READ WRITE; UPDATE items SET note = 'forked' WHERE id = 7; COMMIT")

	code, stdout, stderr = pgleap(t, nil, append(args, "--verify", "full")...)
	if code != exitAnswerNo || !strings.Contains(stdout, "undone: verify (full)") || !strings.Contains(stdout, `"public"."items"`) {
		t.Fatalf("cutover onto a forked target: exit %d\n%s%s", code, stdout, stderr)
	}
	if n := datatest.Scalar(t, s.sourceConn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgleap'"); n != "0" {
		t.Error("the undone cutover left a pgleap schema on the source")
	}
	app := s.writesStreamAgain(t)
	if got := datatest.Scalar(t, s.targetConn, "SELECT phase || ' ' || (SELECT outcome FROM pgleap.cutover) FROM pgleap.migration"); got != "streaming undone" {
		t.Errorf("phase and cutover outcome: %s", got)
	}

	// Mended on the source too, the two agree again: a cutover without the way back.
	if _, err := app.Exec(context.Background(), "UPDATE items SET note = 'forked' WHERE id = 7; INSERT INTO items VALUES (1001, 'marker')"); err != nil {
		t.Fatal(err)
	}
	app.Close(context.Background())
	waitFor(t, "the mend to reach the target", func() bool {
		return datatest.Scalar(t, s.targetConn, "SELECT count(*) FROM items WHERE id = 1001") == "1"
	})
	// The cutover refuses while the last verification differed: one that finds them equal first.
	if code, stdout, _ := pgleap(t, nil, "verify", "--source", s.sourceConn, "--target", s.targetConn); code != exitOK {
		t.Fatalf("verify after the mend: exit %d\n%s", code, stdout)
	}
	code, stdout, stderr = pgleap(t, nil, append(args, "--no-reverse", "--verify", "full")...)
	if code != exitOK || !strings.Contains(stdout, "done: the other side takes the writes") {
		t.Fatalf("cutover --no-reverse: exit %d\n%s%s", code, stdout, stderr)
	}
	if err := s.migrate.wait(); err != nil || !strings.Contains(s.migrate.out(), "the target took over") || strings.Contains(s.migrate.out(), "streaming the target's changes back") {
		t.Errorf("migrate after a cutover without the way back: %v\n%s", err, s.migrate.out())
	}
	code, _, stderr = pgleap(t, nil, "migrate", "--source", s.sourceConn, "--target", s.targetConn)
	if code != exitCannotRun || !strings.Contains(stderr, "was cut over") {
		t.Errorf("migrate after the cutover: exit %d, %s", code, stderr)
	}
	if phase := datatest.Scalar(t, s.targetConn, "SELECT phase FROM pgleap.migration"); phase != "cutover-done" {
		t.Errorf("phase after a cutover without the way back: %s", phase)
	}
	s.source.Exec(t, s.sourceDB, fmt.Sprintf("BEGIN READ WRITE; ALTER DATABASE %[1]s CONNECTION LIMIT -1; ALTER DATABASE %[1]s RESET default_transaction_read_only; COMMIT",
		pg.QuoteIdent(s.sourceDB)))
}

func intArray(ids []int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// TestCutoverUndoneWhenTheTargetCrashes crashes the target while the cutover waits for the
// apply: the cutover is undone, the source takes writes again and the migration streams on.
func TestCutoverUndoneWhenTheTargetCrashes(t *testing.T) {
	target := pgtest.Start(t, pgtest.TargetMajor(), pgtest.Options{Durable: true})
	s := setUpCutover(t, target)
	s.source.Exec(t, s.sourceDB, "INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g")
	waitFor(t, "the rows to reach the target", func() bool { return datatest.Scalar(t, s.targetConn, "SELECT count(*) FROM items") == "100" })
	// The apply stands still, so the cutover waits for it in its third step.
	if err := s.migrate.process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		code           int
		stdout, stderr string
	}
	finished := make(chan outcome, 1)
	go func() {
		code, stdout, stderr := pgleap(t, nil, "cutover", "--source", s.sourceConn, "--target", s.targetConn, "--drain-timeout", "2m")
		finished <- outcome{code, stdout, stderr}
	}()
	waitFor(t, "the cutover to wait for the apply", func() bool {
		return datatest.Scalar(t, s.targetConn, "SELECT count(*) FROM pgleap.cutover WHERE finished_at IS NULL AND timeline::text LIKE '%freeze writes%'") == "1"
	})
	if err := target.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.migrate.process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	o := <-finished
	if o.code != exitAnswerNo || !strings.Contains(o.stdout, "undone:") {
		t.Fatalf("cutover with the target crashing: exit %d\n%s%s", o.code, o.stdout, o.stderr)
	}
	s.writesStreamAgain(t).Close(context.Background())
	s.migrate.stop()
	if err := s.migrate.wait(); err != nil {
		t.Errorf("migrate after Ctrl-C: %v\n%s", err, s.migrate.out())
	}
}

// TestCutoverUndoneWhenTheFreezeIsBroken: a superuser, whom the freeze cannot keep out,
// writes to the source while the cutover waits for the apply; the cutover finds the change
// and is undone.
func TestCutoverUndoneWhenTheFreezeIsBroken(t *testing.T) {
	s := setUpCutover(t, nil)
	if err := s.migrate.process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	finished := make(chan string, 1)
	go func() {
		code, stdout, stderr := pgleap(t, nil, "cutover", "--verify", "none", "--source", s.sourceConn, "--target", s.targetConn)
		finished <- fmt.Sprintf("exit %d\n%s%s", code, stdout, stderr)
	}()
	waitFor(t, "the cutover to wait for the apply", func() bool {
		select {
		case out := <-finished:
			t.Fatalf("the cutover ended before the apply could go on:\n%s", out)
		default:
		}
		return datatest.Scalar(t, s.targetConn, "SELECT count(*) FROM pgleap.cutover WHERE finished_at IS NULL AND timeline::text LIKE '%apply everything%'") == "1"
	})
	s.source.Exec(t, s.sourceDB, "BEGIN READ WRITE; INSERT INTO items VALUES (500, 'past the freeze'); COMMIT")
	if err := s.migrate.process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	out := <-finished
	if !strings.HasPrefix(out, "exit 1") || !strings.Contains(out, "undone: confirm the freeze held: 1 row changes") {
		t.Fatalf("cutover with a write past the freeze:\n%s", out)
	}
	s.writesStreamAgain(t)
	s.migrate.stop()
	if err := s.migrate.wait(); err != nil {
		t.Errorf("migrate after Ctrl-C: %v\n%s", err, s.migrate.out())
	}
}
