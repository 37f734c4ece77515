package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fault is one kind of thing that goes wrong.
type fault string

const (
	killMigrate            fault = "kill pgleap migrate (SIGKILL)"
	restartSourceFast      fault = "restart the source (fast shutdown)"
	restartSourceImmediate fault = "restart the source (immediate shutdown)"
	restartTargetFast      fault = "restart the target (fast shutdown)"
	restartTargetImmediate fault = "restart the target (immediate shutdown)"
	terminateBackends      fault = "terminate pgleap's backends and walsender"
	fillConnections        fault = "fill the source's connection slots"
	freezeSource           fault = "freeze the source (SIGSTOP) past wal_sender_timeout"
	freezeTarget           fault = "freeze the target (SIGSTOP)"
	killCutover            fault = "kill pgleap cutover (SIGKILL)"
)

// migrationFaults strike while pgleap migrate copies or streams.
var migrationFaults = []fault{killMigrate, restartSourceFast, restartSourceImmediate, restartTargetFast,
	restartTargetImmediate, terminateBackends, fillConnections, freezeSource, freezeTarget}

// report is what a run did.
type report struct {
	rounds, recoveries int
	faults             map[fault]int
	rowsCompared       int64
	differences        int
}

func (r *report) String() string {
	var b strings.Builder
	total := 0
	for _, n := range r.faults {
		total += n
	}
	fmt.Fprintf(&b, "%d rounds, %d faults, %d recoveries (pgleap run again after it died or stopped), %d rows compared, %d differences\n",
		r.rounds, total, r.recoveries, r.rowsCompared, r.differences)
	for _, f := range slices.Sorted(maps.Keys(r.faults)) {
		fmt.Fprintf(&b, "  %3d × %s\n", r.faults[f], f)
	}
	return b.String()
}

// TestChaos breaks migrations until PGLEAP_CHAOS_FAULTS faults (default 6) have struck,
// and requires the target to equal the source after each round.
func TestChaos(t *testing.T) {
	faults := 6
	if s := os.Getenv("PGLEAP_CHAOS_FAULTS"); s != "" {
		var err error
		if faults, err = strconv.Atoi(s); err != nil || faults < 1 {
			t.Fatalf("PGLEAP_CHAOS_FAULTS=%q: want a positive number", s)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PGLEAP_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (PGLEAP_CHAOS_SEED repeats the run's choices)", seed)
	h := newHarness(t, seed)
	for h.faultsSoFar() < faults {
		h.round()
	}
	t.Logf("chaos report:\n%s", &h.report)
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "chaos-report.txt"), []byte(h.report.String()), 0o644); err != nil {
		t.Error(err)
	}
	if h.report.differences != 0 {
		t.Errorf("%d differences between source and target", h.report.differences)
	}
}

type harness struct {
	t              *testing.T
	rng            *rand.Rand
	bin            string
	source, target *pgtest.Server
	report         report
	dir            string
}

func newHarness(t *testing.T, seed uint64) *harness {
	h := &harness{t: t, rng: rand.New(rand.NewPCG(seed, 1)), report: report{faults: map[fault]int{}}, dir: t.TempDir()}
	h.bin = filepath.Join(h.dir, "pgleap")
	if out, err := exec.Command("go", "build", "-o", h.bin, "github.com/pgleap/pgleap/cmd/pgleap").CombinedOutput(); err != nil {
		t.Fatalf("build pgleap: %v\n%s", err, out)
	}
	settings := map[string]string{"max_connections": "40", "wal_sender_timeout": "5s"}
	h.source = pgtest.Start(t, pgtest.SourceMajor(), pgtest.Options{Settings: settings})
	h.target = pgtest.Start(t, pgtest.TargetMajor(), pgtest.Options{Settings: settings})
	h.source.Exec(t, "postgres", "CREATE ROLE app LOGIN")
	h.source.Exec(t, "postgres", "CREATE DATABASE shop OWNER app")
	h.exec(h.appConn(), `
		CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
		INSERT INTO accounts SELECT g, 0, repeat('x', 80) FROM generate_series(1, 200000) g;
		CREATE TABLE history (id bigserial PRIMARY KEY, account int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE tags (account int, tag text);
		ALTER TABLE tags REPLICA IDENTITY FULL;
		INSERT INTO tags SELECT g % 1000, 't' || (g % 7) FROM generate_series(1, 20000) g`)
	return h
}

func (h *harness) faultsSoFar() int {
	n := 0
	for _, c := range h.report.faults {
		n += c
	}
	return n
}

func (h *harness) sourceConn() string { return h.source.ConnString("shop") }
func (h *harness) appConn() string    { return h.sourceConn() + " user=app" }
func (h *harness) targetConn(round int) string {
	return h.target.ConnString(fmt.Sprintf("shop_%d", round))
}

// round migrates the source into a new target database, breaking it at random points,
// checks the rows, cuts over (perhaps killing the cutover), checks again, and cleans up.
func (h *harness) round() {
	t := h.t
	h.report.rounds++
	n := h.report.rounds
	target := h.targetConn(n)
	h.target.Exec(t, "postgres", fmt.Sprintf("CREATE DATABASE shop_%d", n))
	app := startWriter(h.appConn())
	defer app.stop()
	migrate := h.start("migrate", "--jobs", "2", "--log-level", "warn", "--source", h.sourceConn(), "--target", target)
	defer func() { migrate.stop() }()

	// One fault anywhere from the schema to the streaming, then up to two while streaming.
	for i, faults := 0, 1+h.rng.IntN(3); i < faults; i++ {
		delay := time.Duration(h.rng.IntN(2500)) * time.Millisecond
		if i == 0 {
			delay = time.Duration(h.rng.IntN(5000)) * time.Millisecond
		}
		time.Sleep(delay)
		f := migrationFaults[h.rng.IntN(len(migrationFaults))]
		h.strike(f, migrate)
		migrate = h.recover(migrate, target)
		if i == 0 {
			h.waitStreaming(target, &migrate)
		}
	}
	h.waitStreaming(target, &migrate)
	app.pause()
	h.waitCaughtUp(target, &migrate)
	h.compare(h.sourceConn(), target, false)

	// The cutover, killed at a random point half the time, then run again until done.
	args := []string{"--source", h.sourceConn(), "--target", target, "--max-lag", "30s"}
	if h.rng.IntN(2) == 0 {
		cutover := h.start(append([]string{"cutover"}, args...)...)
		time.Sleep(time.Duration(h.rng.IntN(1500)) * time.Millisecond)
		h.strike(killCutover, cutover)
		h.report.recoveries++
	}
	for attempt := 1; ; attempt++ {
		// The killed cutover may have finished before it died.
		if phase, err := scalar(target, "SELECT phase FROM pgleap.migration"); err == nil && (phase == "reverse-streaming" || phase == "cutover-done") {
			break
		}
		out, err := exec.Command(h.bin, append([]string{"cutover"}, args...)...).CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 10 {
			t.Fatalf("round %d: cutover failed 10 times: %v\n%s\nmigrate:\n%s", n, err, out, migrate.output())
		}
		h.report.recoveries++
		time.Sleep(time.Second)
		migrate = h.recover(migrate, target)
	}
	h.compare(h.sourceConn(), target, true)

	// Clean up for the next round: the source takes writes again.
	migrate.stop()
	if out, err := exec.Command(h.bin, "cleanup", "--source", h.sourceConn(), "--target", target).CombinedOutput(); err != nil {
		t.Fatalf("round %d: cleanup: %v\n%s", n, err, out)
	}
	h.exec(h.sourceConn(), "BEGIN READ WRITE; ALTER DATABASE shop CONNECTION LIMIT -1; ALTER DATABASE shop RESET default_transaction_read_only; COMMIT")
	h.target.Exec(t, "postgres", fmt.Sprintf("DROP DATABASE shop_%d", n))
}

// strike makes fault f happen, and waits until the servers take connections again.
func (h *harness) strike(f fault, p *process) {
	h.report.faults[f]++
	h.t.Logf("round %d: %s", h.report.rounds, f)
	ctx := context.Background()
	var err error
	switch f {
	case killMigrate, killCutover:
		p.kill()
	case restartSourceFast:
		err = h.source.RestartFast(ctx)
	case restartSourceImmediate:
		err = h.source.Restart(ctx)
	case restartTargetFast:
		err = h.target.RestartFast(ctx)
	case restartTargetImmediate:
		err = h.target.Restart(ctx)
	case terminateBackends:
		for _, s := range []*pgtest.Server{h.source, h.target} {
			h.exec(s.ConnString("postgres"), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE application_name LIKE 'pgleap%' AND pid <> pg_backend_pid()`)
		}
	case fillConnections:
		var held []*pgx.Conn
		for range 60 {
			conn, err := pgx.Connect(ctx, h.source.ConnString("postgres"))
			if err != nil {
				break // full: every slot, the superusers' reserved ones too
			}
			held = append(held, conn)
		}
		time.Sleep(time.Duration(2000+h.rng.IntN(3000)) * time.Millisecond)
		for _, c := range held {
			c.Close(ctx)
		}
	case freezeSource, freezeTarget:
		s := h.source
		if f == freezeTarget {
			s = h.target
		}
		if err = s.Freeze(); err == nil {
			time.Sleep(time.Duration(6000+h.rng.IntN(4000)) * time.Millisecond)
			err = s.Thaw()
		}
	}
	if err != nil {
		h.t.Fatalf("%s: %v", f, err)
	}
}

// recover runs migrate again if it died or stopped.
func (h *harness) recover(p *process, target string) *process {
	if p.running() {
		return p
	}
	h.report.recoveries++
	h.t.Logf("round %d: pgleap migrate stopped (%v): running it again", h.report.rounds, p.lastLine())
	return h.start("migrate", "--jobs", "2", "--log-level", "warn", "--source", h.sourceConn(), "--target", target)
}

// waitStreaming waits until migrate streams, running it again whenever it stops.
func (h *harness) waitStreaming(target string, p **process) {
	h.waitUntil("pgleap migrate to stream", p, target, func() bool {
		phase, err := scalar(target, "SELECT phase FROM pgleap.migration")
		return err == nil && phase == "streaming"
	})
}

// waitCaughtUp waits until the target applied everything the source wrote.
func (h *harness) waitCaughtUp(target string, p **process) {
	end, err := scalar(h.sourceConn(), "SELECT pg_current_wal_insert_lsn()::text")
	if err != nil {
		h.t.Fatal(err)
	}
	want, _ := pglogrepl.ParseLSN(end)
	h.waitUntil("the target to catch up", p, target, func() bool {
		applied, err := scalar(target, "SELECT applied_lsn::text FROM pgleap.replication")
		got, perr := pglogrepl.ParseLSN(applied)
		return err == nil && perr == nil && got >= want
	})
}

func (h *harness) waitUntil(what string, p **process, target string, done func() bool) {
	for deadline := time.Now().Add(3 * time.Minute); !done(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatalf("round %d: waited 3 minutes for %s\nmigrate:\n%s", h.report.rounds, what, (*p).output())
		}
		*p = h.recover(*p, target)
	}
}

// compare hashes every row on both sides; after a cutover, the sequences too.
func (h *harness) compare(sourceConn, targetConn string, sequences bool) {
	t := h.t
	want, got := datatest.Digests(t, sourceConn), datatest.Digests(t, targetConn)
	if len(want) < 3 {
		t.Fatalf("only %d tables on the source", len(want))
	}
	for table, d := range want {
		h.report.rowsCompared += d.Rows
		if got[table] != d {
			h.report.differences++
			t.Errorf("round %d: %s: source %v, target %v", h.report.rounds, table, d, got[table])
		}
	}
	if sequences {
		s, err1 := scalar(sourceConn, "SELECT last_value FROM history_id_seq")
		g, err2 := scalar(targetConn, "SELECT last_value FROM history_id_seq")
		sv, _ := strconv.ParseInt(s, 10, 64)
		gv, _ := strconv.ParseInt(g, 10, 64)
		if err1 != nil || err2 != nil || gv < sv {
			h.report.differences++
			t.Errorf("round %d: history_id_seq after the cutover: source %s, target %s (%v, %v)", h.report.rounds, s, g, err1, err2)
		}
	}
}

func (h *harness) exec(connString, sql string) {
	h.t.Helper()
	datatest.Exec(h.t, connString, sql)
}

// scalar reads one value, with an error rather than a failed test: servers come and go.
func scalar(connString, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v any
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		return "", err
	}
	return fmt.Sprint(v), nil
}

// process is a pgleap command running in the background.
type process struct {
	cmd  *exec.Cmd
	out  *os.File
	done chan struct{}
	err  error
}

func (h *harness) start(args ...string) *process {
	h.t.Helper()
	out, err := os.CreateTemp(h.dir, args[0]+"-*.log")
	if err != nil {
		h.t.Fatal(err)
	}
	cmd := exec.Command(h.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stop ends the process as Ctrl-C does.
func (p *process) stop() {
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.kill()
		}
	}
	p.out.Close()
}

func (p *process) output() string {
	raw, _ := os.ReadFile(p.out.Name())
	return string(raw)
}

func (p *process) lastLine() string {
	lines := strings.Split(strings.TrimSpace(p.output()), "\n")
	return fmt.Sprintf("%v: %s", p.err, lines[len(lines)-1])
}

// writer is the application: transfers between accounts, each one transaction, and tags
// moved about, until stopped. It rides out lost connections, as applications do.
type writer struct {
	mu      sync.Mutex // held while a transaction runs; pause takes it
	stopped chan struct{}
	done    chan struct{}
	paused  bool
}

func startWriter(connString string) *writer {
	w := &writer{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		for i := 0; ; i++ {
			select {
			case <-w.stopped:
				if conn != nil {
					conn.Close(context.Background())
				}
				return
			default:
			}
			if conn == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				c, err := pgx.Connect(ctx, connString)
				cancel()
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				conn = c
			}
			w.mu.Lock()
			if w.paused {
				w.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				continue
			}
			from, to := 1+i%200000, 1+(i*7919)%200000
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := conn.Exec(ctx, fmt.Sprintf(`BEGIN;
				UPDATE accounts SET balance = balance - 3 WHERE id = %d;
				UPDATE accounts SET balance = balance + 3 WHERE id = %d;
				INSERT INTO history (account, delta) VALUES (%[1]d, -3), (%[2]d, 3);
				UPDATE tags SET tag = tag || '.' WHERE ctid = (SELECT ctid FROM tags WHERE account = %[3]d LIMIT 1);
				COMMIT`, from, to, i%1000))
			cancel()
			w.mu.Unlock()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
			}
		}
	}()
	return w
}

// pause waits for the transaction in flight, then holds the writes.
func (w *writer) pause() {
	w.mu.Lock()
	w.paused = true
	w.mu.Unlock()
}

func (w *writer) stop() {
	close(w.stopped)
	<-w.done
}
