package demo

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pgtest"
)

//go:embed sample.sql
var sampleSQL string

// Options configure a demo.
type Options struct {
	// Dir holds everything the demo makes: the servers, PgBouncer, logs.
	Dir                      string
	SourceMajor, TargetMajor int
	// Ports on 127.0.0.1; 0 picks free ones.
	SourcePort, TargetPort, PgBouncerPort, StatusPort int
	// Scale sizes the sample: 1 is a few hundred thousand rows.
	Scale float64
	// Clients of the workload.
	Clients int
	// Keep leaves the servers and PgBouncer running at the end.
	Keep bool
	// InstallScript installs the PostgreSQL binaries (scripts/install-postgres.sh).
	InstallScript string
	// Out takes the story and the commands' output; Progress takes migrate's progress bars.
	Out, Progress io.Writer
	// Pgleap runs one pgleap command line, as the pgleap binary would, and returns its exit
	// status.
	Pgleap func(ctx context.Context, stdout, stderr io.Writer, args ...string) int
}

// Result is what the demo showed, for its test.
type Result struct {
	// The exit status of each command, by step name.
	Exit map[string]int
	// WritePause is the longest the workload waited for a write during the cutover;
	// FailedWrites how many of its writes failed meanwhile.
	WritePause   time.Duration
	FailedWrites int64
	// After the cutover, the purchases the workload added on each server in a few seconds.
	NewServerPurchases, OldServerPurchases int64
	SourceConn, TargetConn                 string
}

// demo is one run.
type demo struct {
	opts           Options
	out            io.Writer
	source, target *pgtest.Server
	bouncer        *pgtest.PgBouncer
	sourceConn     string
	targetConn     string
	appConn        string // through PgBouncer, as the application
	result         *Result
	migrateDone    chan int
	stopMigrate    context.CancelFunc
	migrateOut     *lockedWriter
	workload       *workload
}

// Clean stops what a demo left running under dir and removes dir.
func Clean(dir string) error {
	if err := pgtest.StopDetached(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// Run runs the demo from start to finish. Unless opts.Keep, it stops the servers at the end
// (their data stays in opts.Dir until Clean).
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, err
	}
	// migrate writes from the background among the demo's own lines.
	d := &demo{opts: opts, out: &lockedWriter{w: opts.Out}, result: &Result{Exit: map[string]int{}}}
	if err := Clean(opts.Dir); err != nil {
		return nil, fmt.Errorf("remove the previous demo in %s: %w", opts.Dir, err)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		d.stop(err == nil && opts.Keep)
	}()
	for _, step := range []func(context.Context) error{d.startServers, d.loadSample, d.startApplication, d.check,
		d.migrate, d.status, d.verify, d.cutover, d.afterCutover, d.verifyBack} {
		if err := step(ctx); err != nil {
			if ctx.Err() != nil {
				return d.result, fmt.Errorf("demo interrupted: %w", ctx.Err())
			}
			return d.result, err
		}
	}
	return d.result, nil
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n"+format+"\n", args...)
}

func (d *demo) heading(n int, title string) {
	fmt.Fprintf(d.out, "\n== %d. %s ==\n", n, title)
}

// pgleap runs a pgleap command, showing it first, and records its exit status.
func (d *demo) pgleap(ctx context.Context, step string, args ...string) int {
	fmt.Fprintf(d.out, "\n$ pgleap %s\n", showArgs(args))
	code := d.opts.Pgleap(ctx, d.out, d.out, args...)
	d.result.Exit[step] = code
	return code
}

// showArgs quotes the arguments that need it, as a shell would take them.
func showArgs(args []string) string {
	shown := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		shown[i] = a
	}
	return strings.Join(shown, " ")
}

func (d *demo) startServers(ctx context.Context) error {
	d.heading(1, "Two servers and a connection pooler")
	d.say("The old production server runs PostgreSQL %d, its replacement PostgreSQL %d. Both start under %s,\n"+
		"with PgBouncer in front of the old one: the application connects only to PgBouncer, so that the\n"+
		"cutover can switch it to the new server without the application noticing more than a pause.",
		d.opts.SourceMajor, d.opts.TargetMajor, d.opts.Dir)
	for name, port := range map[string]int{"--source-port": d.opts.SourcePort, "--target-port": d.opts.TargetPort,
		"--pgbouncer-port": d.opts.PgBouncerPort, "--status-port": d.opts.StatusPort} {
		if err := portFree(port); err != nil {
			return fmt.Errorf("%s %d: %w: stop what listens there (pgleap demo --clean --dir for an earlier demo's), or choose another port (0: any free one)", name, port, err)
		}
	}
	install := exec.CommandContext(ctx, "bash", d.opts.InstallScript, strconv.Itoa(d.opts.SourceMajor), strconv.Itoa(d.opts.TargetMajor))
	install.Stdout, install.Stderr = d.opts.Progress, d.opts.Progress
	if err := install.Run(); err != nil {
		return fmt.Errorf("install PostgreSQL %d and %d with %s: %w", d.opts.SourceMajor, d.opts.TargetMajor, d.opts.InstallScript, err)
	}
	var err error
	settings := map[string]string{"max_connections": "200"}
	if d.source, err = pgtest.Launch(ctx, d.opts.SourceMajor, pgtest.Options{Dir: filepath.Join(d.opts.Dir, fmt.Sprintf("pg%d", d.opts.SourceMajor)),
		Port: d.opts.SourcePort, Detached: true, Settings: settings}); err != nil {
		return fmt.Errorf("start the old server: %w", err)
	}
	if d.target, err = pgtest.Launch(ctx, d.opts.TargetMajor, pgtest.Options{Dir: filepath.Join(d.opts.Dir, fmt.Sprintf("pg%d", d.opts.TargetMajor)),
		Port: d.opts.TargetPort, Detached: true, Settings: settings}); err != nil {
		return fmt.Errorf("start the new server: %w", err)
	}
	d.sourceConn, d.targetConn = d.source.ConnString("tickets"), d.target.ConnString("tickets")
	d.result.SourceConn, d.result.TargetConn = d.sourceConn, d.targetConn
	fmt.Fprintf(d.out, "PostgreSQL %d: %s\nPostgreSQL %d: %s\n", d.opts.SourceMajor, d.sourceConn, d.opts.TargetMajor, d.targetConn)
	return nil
}

func (d *demo) loadSample(ctx context.Context) error {
	d.heading(2, "The application's database")
	d.say("\"tickets\" is a sporting-events ticketing system: sports, leagues, teams, venues and their seats,\n" +
		"people, players, events, tickets and the purchase history, with foreign keys between them, two\n" +
		"tables without a primary key, unconstrained numerics, timestamptz columns, a sequence, a view, and\n" +
		"the functions the application calls to sell and transfer tickets. Its owner is the application's\n" +
		"role, ticketing_app.")
	admin := d.source.ConnString("postgres")
	for _, sql := range []string{"CREATE ROLE ticketing_app LOGIN", "CREATE DATABASE tickets OWNER ticketing_app"} {
		if err := execSQL(ctx, admin, sql); err != nil {
			return fmt.Errorf("prepare the old server: %w", err)
		}
	}
	if err := execSQL(ctx, d.target.ConnString("postgres"), "CREATE DATABASE tickets"); err != nil {
		return fmt.Errorf("prepare the new server: %w", err)
	}
	started := time.Now()
	app := strings.Replace(d.sourceConn, "user=postgres", "user=ticketing_app", 1)
	load := fmt.Sprintf("SET pgleap.demo_scale = '%g';\n%s", d.opts.Scale, sampleSQL)
	if err := execSQL(ctx, app, load); err != nil {
		return fmt.Errorf("load the sample database: %w", err)
	}
	var rows int64
	var size string
	err := queryRow(ctx, d.sourceConn, `SELECT sum(n_live_tup)::bigint, pg_size_pretty(pg_database_size(current_database()))
		FROM pg_stat_user_tables`, &rows, &size)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "loaded %d rows (%s) in %s\n", rows, size, time.Since(started).Round(100*time.Millisecond))
	return nil
}

func (d *demo) startApplication(ctx context.Context) error {
	dir := filepath.Join(d.opts.Dir, "pgbouncer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	port, err := portOr(d.opts.PgBouncerPort)
	if err != nil {
		return err
	}
	if d.bouncer, err = pgtest.LaunchPgBouncer(ctx, pgtest.PgBouncerOptions{Dir: dir, Port: port, Detached: true, Users: []string{"ticketing_app"},
		Databases: map[string]string{"tickets": fmt.Sprintf("host=127.0.0.1 port=%d dbname=tickets", d.source.Port)}}); err != nil {
		return fmt.Errorf("start PgBouncer: %w", err)
	}
	d.appConn = d.bouncer.ConnString("tickets", "ticketing_app")
	var people int64
	if err := queryRow(ctx, d.sourceConn, "SELECT count(*) FROM people", &people); err != nil {
		return err
	}
	if d.workload, err = startWorkload(ctx, d.appConn, d.opts.Clients, people); err != nil {
		return err
	}
	d.say("The application starts: %d clients sell and transfer tickets through PgBouncer (%s),\n"+
		"calling sell_ticket() and transfer_ticket(), one transaction each, until the end of the demo.",
		d.opts.Clients, d.appConn)
	return nil
}

func (d *demo) check(ctx context.Context) error {
	d.heading(3, "pgleap check: is this pair ready?")
	d.say("Before touching anything, check reads both servers over read-only sessions and lists what\n" +
		"stops the migration (blockers), what needs a decision (warnings) and what pgleap takes care of.")
	conns := []string{"--source", d.sourceConn, "--target", d.targetConn}
	code := d.pgleap(ctx, "check", append([]string{"check"}, conns...)...)
	if code == 0 {
		return nil
	}
	if code != 1 {
		return fmt.Errorf("pgleap check could not run (exit %d)", code)
	}
	var report struct {
		Findings []struct {
			Severity, Object, Fix string
		} `json:"findings"`
	}
	var out strings.Builder
	d.opts.Pgleap(ctx, &out, io.Discard, append([]string{"check", "--json"}, conns...)...)
	if err := json.Unmarshal([]byte(out.String()), &report); err != nil {
		return fmt.Errorf("read pgleap check --json: %w", err)
	}
	var fixes []string
	for _, f := range report.Findings {
		// A fix is the SQL to run, then maybe a word on it: "ALTER TABLE ...; (why)".
		if sql, _, ok := strings.Cut(f.Fix, ";"); ok && f.Severity == "blocker" {
			fixes = append(fixes, sql+";")
		}
	}
	d.say("check found %d blockers. The demo applies the fixes check printed, then checks again:", len(fixes))
	for _, fix := range fixes {
		fmt.Fprintf(d.out, "  %s\n", fix)
		if err := execSQL(ctx, d.sourceConn, fix); err != nil {
			return fmt.Errorf("apply the fix %q: %w", fix, err)
		}
	}
	if code := d.pgleap(ctx, "check", append([]string{"check"}, conns...)...); code != 0 {
		return fmt.Errorf("pgleap check still finds blockers after their fixes (exit %d)", code)
	}
	return nil
}

func (d *demo) migrate(ctx context.Context) error {
	d.heading(4, "pgleap migrate: copy, then follow")
	statusPort, err := portOr(d.opts.StatusPort)
	if err != nil {
		return err
	}
	d.say("migrate copies the roles and the schema (with pg_dump), the rows of every table in parallel at one\n"+
		"consistent snapshot, then builds the indexes and constraints; then it streams every change the\n"+
		"application makes on the old server to the new one, until the cutover. It runs in the background\n"+
		"for the rest of the demo; its status page is on http://127.0.0.1:%d/ meanwhile.", statusPort)
	args := []string{"migrate", "--source", d.sourceConn, "--target", d.targetConn, "--http", fmt.Sprintf("127.0.0.1:%d", statusPort), "--log-level", "warn"}
	fmt.Fprintf(d.out, "\n$ pgleap %s &\n", showArgs(args))
	migrateCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	d.stopMigrate, d.migrateDone = stop, make(chan int, 1)
	go func() { d.migrateDone <- d.opts.Pgleap(migrateCtx, d.out, d.opts.Progress, args...) }()
	for {
		var phase string
		err := queryRow(ctx, d.targetConn, "SELECT phase FROM pgleap.migration", &phase)
		if err == nil && phase == "streaming" {
			return nil
		}
		select {
		case code := <-d.migrateDone:
			d.migrateDone <- code
			return fmt.Errorf("pgleap migrate stopped (exit %d) before it streamed", code)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (d *demo) status(ctx context.Context) error {
	d.heading(5, "pgleap status")
	time.Sleep(2 * time.Second) // a little history for the rates
	d.say("The new server now follows the old one while the application writes. status reads where the\n" +
		"migration stands from the new server's pgleap schema, from any machine:")
	if code := d.pgleap(ctx, "status", "status", "--source", d.sourceConn, "--target", d.targetConn); code != 0 {
		return fmt.Errorf("pgleap status failed (exit %d)", code)
	}
	return nil
}

func (d *demo) verify(ctx context.Context) error {
	d.heading(6, "pgleap verify, while the application writes")
	d.say("verify proves the new server holds exactly the old one's rows: it stops the apply for a moment at\n" +
		"one point of the old server's history, then each server hashes its own rows at that point, in\n" +
		"chunks, in parallel. The application does not wait for it.")
	switch code := d.pgleap(ctx, "verify", "verify", "--source", d.sourceConn, "--target", d.targetConn); code {
	case 0:
		return nil
	default:
		return fmt.Errorf("pgleap verify found differences or could not run (exit %d)", code)
	}
}

func (d *demo) cutover(ctx context.Context) error {
	d.heading(7, "pgleap cutover, through PgBouncer")
	d.say("cutover hands the writes to the new server. It pauses PgBouncer (the application's queries wait\n" +
		"instead of failing), freezes writes on the old server, waits until the new one has applied\n" +
		"everything, copies the sequences, counts the rows on both sides, opens the new server, and points\n" +
		"PgBouncer at it. It keeps the way back: from now on the old server follows the new one.")
	before := d.workload.openWindow()
	code := d.pgleap(ctx, "cutover", "cutover", "--source", d.sourceConn, "--target", d.targetConn,
		"--pgbouncer", d.bouncer.AdminConnString(), "--pgbouncer-database", "tickets", "--pgbouncer-databases-file", d.bouncer.DatabasesFile)
	time.Sleep(time.Second) // the writes PgBouncer held go through now
	pause, failed, lastErr := d.workload.closeWindow(before)
	d.result.WritePause, d.result.FailedWrites = pause, failed
	if code != 0 {
		return fmt.Errorf("pgleap cutover did not cut over (exit %d)", code)
	}
	fmt.Fprintf(d.out, "\nWhat the application saw: its longest wait for a write was %s, and %d of its writes failed.\n",
		pause.Round(time.Millisecond), failed)
	if failed > 0 {
		fmt.Fprintf(d.out, "The last failure: %v\n", lastErr)
	}
	return nil
}

func (d *demo) afterCutover(ctx context.Context) error {
	d.heading(8, "After the cutover")
	count := func(conn string) (int64, error) {
		var n int64
		err := queryRow(ctx, conn, "SELECT count(*) FROM purchases", &n)
		return n, err
	}
	newBefore, err := count(d.targetConn)
	if err != nil {
		return err
	}
	oldBefore, err := count(d.sourceConn)
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	newAfter, err := count(d.targetConn)
	if err != nil {
		return err
	}
	// The way back applies what the new server committed: wait until the old one has it all.
	var oldAfter int64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if oldAfter, err = count(d.sourceConn); err != nil {
			return err
		}
		if oldAfter >= newAfter || time.Now().After(deadline) {
			break
		}
	}
	d.result.NewServerPurchases, d.result.OldServerPurchases = newAfter-newBefore, oldAfter-oldBefore
	d.say("The application now writes to PostgreSQL %d through the same PgBouncer entry: %d new purchases in 3 s.\n"+
		"PostgreSQL %d receives them too, streamed back by the running pgleap migrate (%d purchases from\n"+
		"%d to %d meanwhile): pgleap rollback would give it the writes again without losing any.",
		d.opts.TargetMajor, d.result.NewServerPurchases, d.opts.SourceMajor, d.result.OldServerPurchases, oldBefore, oldAfter)
	return nil
}

func (d *demo) verifyBack(ctx context.Context) error {
	d.heading(9, "pgleap verify, the other way")
	d.say("The old server follows the new one now: verify compares them with the sides swapped.")
	if code := d.pgleap(ctx, "verify back", "verify", "--source", d.targetConn, "--target", d.sourceConn); code != 0 {
		return fmt.Errorf("pgleap verify of the way back found differences or could not run (exit %d)", code)
	}
	return nil
}

// stop ends the workload and pgleap migrate, and unless keep, the servers.
func (d *demo) stop(keep bool) {
	if d.workload != nil {
		writes, failures := d.workload.counts()
		d.workload.close()
		fmt.Fprintf(d.out, "\nThe application made %d writes in all; %d failed.\n", writes, failures)
	}
	if d.stopMigrate != nil {
		if d.result.Exit["cutover"] == 0 && d.workload != nil {
			d.waitForWayBack()
		}
		d.stopMigrate()
		<-d.migrateDone
	}
	if keep {
		fmt.Fprintf(d.out, `
Everything keeps running (pgleap demo --clean stops it and removes %[1]s):
  the new server, taking the writes:   psql '%[2]s'
  the old server, following it:        psql '%[3]s'
  the application's entry, PgBouncer:  psql '%[4]s'
  pgleap migrate is stopped: run pgleap migrate --source '%[3]s' --target '%[2]s' to stream back again
`, d.opts.Dir, d.targetConn, d.sourceConn, d.appConn)
		return
	}
	if err := pgtest.StopDetached(d.opts.Dir); err != nil {
		fmt.Fprintf(d.out, "stopping the demo's servers: %v\n", err)
	}
	fmt.Fprintf(d.out, "\nThe servers are stopped; their data and logs are in %s (pgleap demo --clean removes it;\npgleap demo --keep leaves them running).\n", d.opts.Dir)
}

// waitForWayBack waits until the old server has applied everything the new one committed,
// so that the two end equal.
func (d *demo) waitForWayBack() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var end string
	if err := queryRow(ctx, d.targetConn, "SELECT pg_current_wal_insert_lsn()::text", &end); err != nil {
		return
	}
	for ctx.Err() == nil {
		var caughtUp bool
		err := queryRowArgs(ctx, d.sourceConn, "SELECT applied_lsn >= $1::pg_lsn FROM pgleap.replication", []any{end}, &caughtUp)
		if err == nil && caughtUp {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func execSQL(ctx context.Context, connString, sql string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// queryRow reads one row of a query without parameters into dest.
func queryRow(ctx context.Context, connString, sql string, dest ...any) error {
	return queryRowArgs(ctx, connString, sql, nil, dest...)
}

func queryRowArgs(ctx context.Context, connString, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// portFree fails when something listens on port of 127.0.0.1 (0 needs nothing).
func portFree(port int) error {
	if port == 0 {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return errors.New("the port is in use")
	}
	return l.Close()
}

// portOr returns port, or a free one for 0.
func portOr(port int) (int, error) {
	if port != 0 {
		return port, nil
	}
	return pgtest.FreePort()
}

// lockedWriter lets a background command write among the demo's own lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
