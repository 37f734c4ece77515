// Command cdc times how pgleap keeps a target in step with a busy source, against
// PostgreSQL's own logical replication, on the same servers and the same WAL, in one run.
//
// It starts a source and a target, fills the source with pgbench, and sets up two copies of
// it on the target: one followed by a native subscription, one by pgleap migrate. Then:
//
//   - backlog: with both stopped, pgbench writes -transactions transactions on the source;
//     each follower is started in turn and timed until it has applied the last of them
//     (a marker row written after pgbench is seen on its target);
//   - steady: pgleap follows pgbench at -rate (by default half the rate pgbench reached alone
//     writing the backlog) for -steady, while a probe row is written on the source every 100 ms; a target-side trigger stamps each probe as it is
//     applied, which gives the lag from source commit to target commit, p50 and p99.
//
// Every copy is checked against the source by hashing every row. It prints the times, the
// ratio (goal: pgleap at most 0.5 of native) and the lag (goal: p99 under 1 s).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

const (
	drainGoal = 0.5         // pgleap's backlog drain time over native's, at most
	lagGoal   = time.Second // pgleap's steady-state lag p99, under
	sourceDB  = "bench"
	nativeDB  = "native"
	pgleapDB  = "pgleap"
)

type config struct {
	sourceMajor, targetMajor int
	scale, transactions      int
	clients, rounds          int
	steady, wait             time.Duration
	rate                     int
	pgleapBin                string
	compareBin               string
	profileDir               string
	cold                     bool
}

func main() {
	var cfg config
	fs := flag.NewFlagSet("cdc", flag.ContinueOnError)
	fs.IntVar(&cfg.sourceMajor, "source-major", pgtest.DefaultSourceMajor, "PostgreSQL major of the source")
	fs.IntVar(&cfg.targetMajor, "target-major", pgtest.DefaultTargetMajor, "PostgreSQL major of the target")
	fs.IntVar(&cfg.scale, "scale", 100, "pgbench scale of the source")
	fs.IntVar(&cfg.transactions, "transactions", 60000, "pgbench transactions in the backlog")
	fs.IntVar(&cfg.clients, "clients", 4, "pgbench clients")
	fs.IntVar(&cfg.rounds, "rounds", 1, "backlogs to drain; the order of the two followers alternates")
	fs.DurationVar(&cfg.steady, "steady", 30*time.Second, "length of the steady-state run (0: none)")
	fs.IntVar(&cfg.rate, "rate", 0, "pgbench transactions per second in the steady run (0: half the rate pgbench reached writing the backlog)")
	fs.DurationVar(&cfg.wait, "wait", 10*time.Minute, "give up on a follower that has not caught up after this long")
	fs.StringVar(&cfg.pgleapBin, "pgleap", "", "pgleap binary (default: build ./cmd/pgleap into bin/pgleap)")
	fs.StringVar(&cfg.compareBin, "compare", "", "a second pgleap binary: rounds alternate between the two, and each gets its own median")
	fs.StringVar(&cfg.profileDir, "profile", "", "write a CPU profile of each pgleap drain into this directory")
	fs.BoolVar(&cfg.cold, "cold", false, "before each drain, restart the target and empty the kernel's page cache (root only): the target reads what it changes from disk")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if cfg.scale < 1 || cfg.transactions < cfg.clients || cfg.clients < 1 || cfg.rounds < 1 {
		fmt.Fprintln(os.Stderr, "cdc: -scale, -clients and -rounds must be positive, -transactions at least -clients")
		os.Exit(2)
	}
	if cfg.compareBin != "" {
		if _, err := os.Stat(cfg.compareBin); err != nil {
			fmt.Fprintln(os.Stderr, "cdc: -compare:", err)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	b := &bench{cfg: cfg, log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	err := b.run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cdc:", err)
		os.Exit(1)
	}
}

type bench struct {
	cfg            config
	log            *slog.Logger
	source, target *pgtest.Server
	pgleapBin      string
	backlogTPS     float64   // pgbench's rate writing the backlog, nothing following
	follower       *exec.Cmd // the running pgleap migrate, if any
	followerOut    pgtest.LockedBuffer
	followerExit   chan error // receives the follower's exit
	peakRSS        int64
}

type drain struct {
	native, pgleap time.Duration
	compared       bool // drained by the -compare binary
	// CPU each drain took from the source's walsender, the target's applying backends and,
	// for pgleap, its own process: where the time goes.
	nativeCPU, pgleapCPU cpuUse
	// WAL each follower's walsender decodes again before it reaches the backlog: from its
	// slot's restart_lsn to its confirmed_flush_lsn, where the drain starts.
	nativeReread, pgleapReread int64
	// The machine's busy cores in each step of each drain (busy.go).
	nativeBusy, pgleapBusy busyResult
}

func (b *bench) run(ctx context.Context) (err error) {
	started := time.Now()
	if b.pgleapBin, err = buildPgleap(ctx, b.cfg.pgleapBin); err != nil {
		return err
	}
	settings := map[string]string{
		"shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min", "wal_level": "logical",
		"max_replication_slots": "10", "max_wal_senders": "10", "max_worker_processes": "16",
		"max_logical_replication_workers": "4", "synchronous_commit": "on",
	}
	opts := pgtest.Options{Durable: true, Settings: settings}
	if b.source, err = pgtest.Launch(ctx, b.cfg.sourceMajor, opts); err != nil {
		return fmt.Errorf("start the source: %w", err)
	}
	defer b.source.Stop()
	if b.target, err = pgtest.Launch(ctx, b.cfg.targetMajor, opts); err != nil {
		return fmt.Errorf("start the target: %w", err)
	}
	defer b.target.Stop()
	defer b.stopPgleap()

	if err := b.setUp(ctx); err != nil {
		return err
	}
	var drains []drain
	for round := range b.cfg.rounds {
		d, err := b.backlogRound(ctx, round)
		if err != nil {
			return err
		}
		drains = append(drains, d)
	}
	if err := b.checkCopies(ctx); err != nil {
		return err
	}
	var steady *steadyResult
	if b.cfg.steady > 0 {
		if steady, err = b.steadyRun(ctx); err != nil {
			return err
		}
	}
	b.report(drains, steady, time.Since(started))
	return nil
}

// setUp fills the source and starts both followers once, so that each has copied the data
// and streams; then stops both.
func (b *bench) setUp(ctx context.Context) error {
	b.log.Info("build the source", "scale", b.cfg.scale)
	if err := b.exec(ctx, b.source, "postgres", "CREATE DATABASE "+sourceDB); err != nil {
		return err
	}
	if err := run(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(b.cfg.scale), b.source.ConnString(sourceDB)); err != nil {
		return err
	}
	err := b.exec(ctx, b.source, sourceDB,
		"CREATE TABLE bench_marker (id int PRIMARY KEY, round int NOT NULL)",
		"INSERT INTO bench_marker VALUES (1, -1)",
		"CREATE TABLE bench_probe (id bigserial PRIMARY KEY, sent timestamptz NOT NULL)",
		"VACUUM ANALYZE")
	if err != nil {
		return err
	}

	b.log.Info("set up the native subscription")
	for _, db := range []string{nativeDB, pgleapDB} {
		if err := b.exec(ctx, b.target, "postgres", "CREATE DATABASE "+db); err != nil {
			return err
		}
	}
	dump := exec.CommandContext(ctx, "sh", "-c", "pg_dump --schema-only \"$1\" | psql -X -q -v ON_ERROR_STOP=1 \"$2\"", "sh",
		b.source.ConnString(sourceDB), b.target.ConnString(nativeDB))
	if out, err := dump.CombinedOutput(); err != nil {
		return fmt.Errorf("copy the schema for the subscription: %w\n%s", err, out)
	}
	if err := b.exec(ctx, b.source, sourceDB, "CREATE PUBLICATION bench_pub FOR ALL TABLES"); err != nil {
		return err
	}
	err = b.exec(ctx, b.target, nativeDB, fmt.Sprintf("CREATE SUBSCRIPTION bench_sub CONNECTION %s PUBLICATION bench_pub",
		pg.QuoteLiteral(b.source.ConnString(sourceDB))))
	if err != nil {
		return err
	}
	err = b.waitUntil(ctx, "the subscription's copy", b.target, nativeDB,
		"SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 FROM pg_subscription_rel")
	if err != nil {
		return err
	}
	if err := b.disableNative(ctx); err != nil {
		return err
	}

	b.log.Info("set up pgleap")
	if err := b.startPgleap(ctx, b.pgleapBin, ""); err != nil {
		return err
	}
	if err := b.waitUntil(ctx, "pgleap's copy", b.source, sourceDB,
		"SELECT count(*) > 0 FROM pg_stat_replication WHERE application_name = 'pgleap_stream'"); err != nil {
		return err
	}
	// The probe's lag stamp: a trigger that fires for pgleap's apply session too. The
	// target is guarded (read-only for all but pgleap), which a session can lift for itself.
	err = b.exec(ctx, b.target, pgleapDB,
		"SET default_transaction_read_only = off",
		"CREATE TABLE probe_seen (id bigint PRIMARY KEY, sent timestamptz, applied timestamptz NOT NULL DEFAULT clock_timestamp())",
		`CREATE FUNCTION stamp_probe() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO public.probe_seen (id, sent) VALUES (NEW.id, NEW.sent); RETURN NEW; END $$`,
		"CREATE TRIGGER stamp AFTER INSERT ON bench_probe FOR EACH ROW EXECUTE FUNCTION stamp_probe()",
		"ALTER TABLE bench_probe ENABLE ALWAYS TRIGGER stamp")
	if err != nil {
		return err
	}
	return b.stopPgleap()
}

// backlogRound writes a backlog with both followers stopped, then times each draining it.
func (b *bench) backlogRound(ctx context.Context, round int) (drain, error) {
	d := drain{compared: b.cfg.compareBin != "" && round%2 == 1}
	b.log.Info("write the backlog", "round", round+1, "transactions", b.cfg.transactions)
	perClient := b.cfg.transactions / b.cfg.clients
	out, err := exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(b.cfg.clients), "-j", "2", "-t", strconv.Itoa(perClient),
		b.source.ConnString(sourceDB)).CombinedOutput()
	if err != nil {
		return d, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	b.backlogTPS = max(b.backlogTPS, pgbenchTPS(out))
	if err := b.exec(ctx, b.source, sourceDB, fmt.Sprintf("UPDATE bench_marker SET round = %d", round)); err != nil {
		return d, err
	}
	markerSeen := fmt.Sprintf("SELECT round = %d FROM bench_marker", round)
	// Each slot's positions move only while its own follower runs: read both before either.
	if d.nativeReread, d.pgleapReread, err = b.reread(ctx); err != nil {
		return d, err
	}
	drainNative := func() error {
		if err := b.coldTarget(ctx); err != nil {
			return err
		}
		b.log.Info("drain with the native subscription", "round", round+1)
		start, busy := time.Now(), sampleBusy()
		if err := b.exec(ctx, b.target, nativeDB, "ALTER SUBSCRIPTION bench_sub ENABLE"); err != nil {
			busy.finish()
			return err
		}
		err := b.waitUntil(ctx, "the native subscription", b.target, nativeDB, markerSeen)
		d.native, d.nativeBusy = time.Since(start), busy.finish()
		if err != nil {
			return err
		}
		d.nativeCPU, err = b.cpuUse(ctx, "bench_sub", nativeDB,
			"SELECT pid FROM pg_stat_subscription WHERE subname = 'bench_sub' AND pid IS NOT NULL", 0)
		if err != nil {
			return err
		}
		return b.disableNative(ctx)
	}
	drainPgleap := func() error {
		if err := b.coldTarget(ctx); err != nil {
			return err
		}
		b.log.Info("drain with pgleap", "round", round+1)
		bin := b.pgleapBin
		if d.compared {
			bin = b.cfg.compareBin
		}
		start, busy := time.Now(), sampleBusy()
		if err := b.startPgleap(ctx, bin, fmt.Sprintf("pgleap-drain-%d.pprof", round+1)); err != nil {
			busy.finish()
			return err
		}
		err := b.waitUntil(ctx, "pgleap", b.target, pgleapDB, markerSeen)
		d.pgleap, d.pgleapBusy = time.Since(start), busy.finish()
		if err != nil {
			return err
		}
		d.pgleapCPU, err = b.cpuUse(ctx, "pgleap_stream", pgleapDB,
			"SELECT pid FROM pg_stat_activity WHERE datname = 'pgleap' AND application_name = 'pgleap'", b.follower.Process.Pid)
		if err != nil {
			return err
		}
		err = b.stopPgleap()
		b.log.Info("pgleap", "said", lastLine(b.followerOut.String()))
		return err
	}
	// Which follower goes first alternates; with -compare, every two rounds, so that each
	// binary drains first as often as second.
	order := []func() error{drainNative, drainPgleap}
	if b.cfg.compareBin == "" && round%2 == 1 || b.cfg.compareBin != "" && round/2%2 == 1 {
		slices.Reverse(order)
	}
	for _, f := range order {
		if err := f(); err != nil {
			return d, err
		}
	}
	b.log.Info("drained", "round", round+1, "native", d.native.Round(time.Millisecond), "pgleap", d.pgleap.Round(time.Millisecond))
	return d, nil
}

// coldTarget, with -cold, empties the target's shared buffers (a restart with a checkpoint)
// and the kernel's page cache, so that the drain after it reads the pages it changes from
// disk, as on a server whose data is larger than its memory.
func (b *bench) coldTarget(ctx context.Context) error {
	if !b.cfg.cold {
		return nil
	}
	if err := b.target.RestartFast(ctx); err != nil {
		return fmt.Errorf("restart the target: %w", err)
	}
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("empty the page cache (-cold needs root): %w", err)
	}
	return nil
}

// checkCopies proves both followers hold the source's rows.
func (b *bench) checkCopies(ctx context.Context) error {
	want, err := b.digests(ctx, b.source, sourceDB)
	if err != nil {
		return err
	}
	for _, db := range []string{nativeDB, pgleapDB} {
		got, err := b.digests(ctx, b.target, db)
		if err != nil {
			return err
		}
		for table, d := range want {
			if got[table] != d {
				return fmt.Errorf("%s copy differs from the source in %s: source %s, target %s", db, table, d, got[table])
			}
		}
	}
	return nil
}

type steadyResult struct {
	tps           float64
	probes        int
	p50, p99, max time.Duration
}

// steadyRun has pgleap follow pgbench running flat out, with a probe every 100 ms.
func (b *bench) steadyRun(ctx context.Context) (*steadyResult, error) {
	b.log.Info("steady state", "for", b.cfg.steady)
	if err := b.startPgleap(ctx, b.pgleapBin, ""); err != nil {
		return nil, err
	}
	if err := b.waitUntil(ctx, "pgleap to stream", b.source, sourceDB,
		"SELECT count(*) > 0 FROM pg_stat_replication WHERE application_name = 'pgleap_stream'"); err != nil {
		return nil, err
	}
	probeCtx, stopProbes := context.WithCancel(ctx)
	probesDone := make(chan error, 1)
	go func() { probesDone <- b.probe(probeCtx) }()
	rate := b.cfg.rate
	if rate == 0 {
		rate = int(b.backlogTPS / 2)
	}
	out, err := exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(b.cfg.clients), "-j", "2", "-R", strconv.Itoa(max(rate, 1)),
		"-T", strconv.Itoa(int(b.cfg.steady.Seconds())), b.source.ConnString(sourceDB)).CombinedOutput()
	stopProbes()
	if perr := <-probesDone; perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return nil, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	res := &steadyResult{tps: pgbenchTPS(out)}
	var last int64
	if err := b.queryRow(ctx, b.source, sourceDB, "SELECT max(id) FROM bench_probe", &last); err != nil {
		return nil, err
	}
	if err := b.waitUntil(ctx, "the last probe", b.target, pgleapDB, fmt.Sprintf("SELECT count(*) > 0 FROM probe_seen WHERE id = %d", last)); err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, b.target.ConnString(pgleapDB))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT extract(epoch FROM applied - sent)::float8 FROM probe_seen ORDER BY 1")
	if err != nil {
		return nil, err
	}
	lags, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	if err != nil || len(lags) == 0 {
		return nil, fmt.Errorf("read probe lags: %d probes, %v", len(lags), err)
	}
	at := func(q float64) time.Duration {
		return time.Duration(lags[min(len(lags)-1, int(q*float64(len(lags))))] * float64(time.Second))
	}
	res.probes, res.p50, res.p99, res.max = len(lags), at(0.5), at(0.99), at(1)
	return res, b.stopPgleap()
}

// probe writes a probe row on the source every 100 ms until ctx ends.
func (b *bench) probe(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.source.ConnString(sourceDB))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		if _, err := conn.Exec(ctx, "INSERT INTO bench_probe (sent) VALUES (clock_timestamp())"); err != nil && ctx.Err() == nil {
			return fmt.Errorf("probe: %w", err)
		}
	}
}

func (b *bench) report(drains []drain, steady *steadyResult, total time.Duration) {
	fmt.Printf("\nChange streaming benchmark, PostgreSQL %d -> %d, finished in %s\n", b.cfg.sourceMajor, b.cfg.targetMajor, total.Round(time.Second))
	fmt.Printf("source: pgbench scale %d; backlog: %d transactions from %d clients\n\n", b.cfg.scale, b.cfg.transactions, b.cfg.clients)
	fmt.Println("backlog drain, seconds until the last transaction is applied:")
	for i, d := range drains {
		fmt.Printf("  round %d: native subscription %.2f, %s %.2f, ratio %.2f\n",
			i+1, d.native.Seconds(), b.pgleapLabel(d.compared), d.pgleap.Seconds(), d.pgleap.Seconds()/d.native.Seconds())
		fmt.Printf("    CPU seconds: native: walsender %.2f, apply worker %.2f; pgleap: walsender %.2f, target sessions %.2f, pgleap %.2f\n",
			d.nativeCPU.walsender.Seconds(), d.nativeCPU.target.Seconds(),
			d.pgleapCPU.walsender.Seconds(), d.pgleapCPU.target.Seconds(), d.pgleapCPU.follower.Seconds())
		fmt.Printf("    WAL decoded again before the backlog (restart_lsn to confirmed_flush_lsn): native %d MB, pgleap %d MB\n",
			d.nativeReread>>20, d.pgleapReread>>20)
		for _, f := range []struct {
			name string
			busy busyResult
		}{{"native", d.nativeBusy}, {"pgleap", d.pgleapBusy}} {
			if f.busy.err != nil {
				fmt.Printf("    busy cores, %s: not sampled: %v\n", f.name, f.busy.err)
				continue
			}
			line, idle := f.busy.timeline()
			fmt.Printf("    busy cores per %s, %s: |%s| %.2f core-seconds idle\n", busyInterval, f.name, line, idle.Seconds())
		}
	}
	b.reportMedians(drains, false)
	if b.cfg.compareBin != "" {
		b.reportMedians(drains, true)
	}
	if steady != nil {
		verdict := "goal met"
		if steady.p99 >= lagGoal {
			verdict = "goal NOT met"
		}
		fmt.Printf("\nsteady state, pgbench for %s at %.0f tps (flat out, nothing following: %.0f tps), %d probes:\n",
			b.cfg.steady, steady.tps, b.backlogTPS, steady.probes)
		fmt.Printf("  pgleap lag from source commit to target commit: p50 %s, p99 %s, max %s (goal: p99 under %s), %s\n",
			steady.p50.Round(time.Millisecond), steady.p99.Round(time.Millisecond), steady.max.Round(time.Millisecond), lagGoal, verdict)
	}
	fmt.Printf("\npgleap's peak RSS: %d MB\n", b.peakRSS>>20)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func pgbenchTPS(out []byte) float64 {
	var tps float64
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "tps = ") {
			fmt.Sscanf(line, "tps = %f", &tps)
		}
	}
	return tps
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// pgleapLabel names the binary that drained a round: with -compare, the two by path.
func (b *bench) pgleapLabel(compared bool) string {
	switch {
	case b.cfg.compareBin == "":
		return "pgleap"
	case compared:
		return "pgleap " + b.cfg.compareBin
	}
	return "pgleap " + b.pgleapBin
}

// reportMedians prints the medians of the rounds one binary drained.
func (b *bench) reportMedians(drains []drain, compared bool) {
	var native, leap, work, own []time.Duration
	for _, d := range drains {
		if d.compared != compared {
			continue
		}
		native, leap = append(native, d.native), append(leap, d.pgleap)
		work = append(work, d.pgleapCPU.walsender+d.pgleapCPU.target+d.pgleapCPU.follower)
		own = append(own, d.pgleapCPU.follower)
	}
	if len(leap) == 0 {
		return
	}
	label := b.pgleapLabel(compared)
	mn, ml := median(native), median(leap)
	verdict := "goal met"
	if ml.Seconds()/mn.Seconds() > drainGoal {
		verdict = "goal NOT met"
	}
	fmt.Printf("  median: native %.2f s, %s %.2f s: %.2f (goal: at most %.2f), %s\n", mn.Seconds(), label, ml.Seconds(), ml.Seconds()/mn.Seconds(), drainGoal, verdict)
	// Everything runs on this machine: the CPU the drain needs, spread over every core,
	// is a floor under its time that no overlap can beat.
	cores := runtime.NumCPU()
	floor := median(work) / time.Duration(cores)
	fmt.Printf("  %s's drain takes %.2f CPU seconds (walsender, target sessions, pgleap %.2f): on %d cores no less than %.2f s, %.2f of native\n",
		label, median(work).Seconds(), median(own).Seconds(), cores, floor.Seconds(), floor.Seconds()/mn.Seconds())
}

// startPgleap starts pgleap migrate; profile, if not empty, names its CPU profile.
func (b *bench) startPgleap(ctx context.Context, bin, profile string) error {
	b.followerOut.Reset()
	args := []string{"migrate", "--jobs", "2", "--source", b.source.ConnString(sourceDB), "--target", b.target.ConnString(pgleapDB)}
	if profile != "" && b.cfg.profileDir != "" {
		args = append(args, "--cpu-profile", filepath.Join(b.cfg.profileDir, profile))
	}
	b.follower = exec.CommandContext(ctx, bin, args...)
	b.follower.Stdout, b.follower.Stderr = &b.followerOut, &b.followerOut
	if err := b.follower.Start(); err != nil {
		return fmt.Errorf("start pgleap: %w", err)
	}
	b.followerExit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan<- error) { exit <- cmd.Wait() }(b.follower, b.followerExit)
	return nil
}

// stopPgleap stops the running pgleap with Ctrl-C, as a user would.
func (b *bench) stopPgleap() error {
	if b.follower == nil {
		return nil
	}
	cmd := b.follower
	b.follower = nil
	cmd.Process.Signal(os.Interrupt)
	err := <-b.followerExit
	if usage, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		b.peakRSS = max(b.peakRSS, usage.Maxrss<<10)
	}
	if err != nil {
		return fmt.Errorf("pgleap migrate: %w\n%s", err, b.followerOut.String())
	}
	return nil
}

// reread is how much WAL the walsender of each follower's slot decodes before it reaches
// what the follower has not confirmed: a slot restarts from its restart_lsn, which moves
// only when the follower confirms past a point the walsender chose while decoding.
func (b *bench) reread(ctx context.Context) (native, pgleap int64, err error) {
	err = b.queryRow(ctx, b.source, sourceDB, `SELECT
		coalesce(sum(pg_catalog.pg_wal_lsn_diff(confirmed_flush_lsn, restart_lsn)) FILTER (WHERE slot_name = 'bench_sub'), 0)::bigint,
		coalesce(sum(pg_catalog.pg_wal_lsn_diff(confirmed_flush_lsn, restart_lsn)) FILTER (WHERE slot_name <> 'bench_sub'), 0)::bigint
		FROM pg_catalog.pg_replication_slots WHERE database = current_database() AND NOT temporary`, &native, &pgleap)
	if err != nil {
		return 0, 0, fmt.Errorf("read the slots' positions: %w", err)
	}
	return native, pgleap, nil
}

// cpuUse is the CPU time, user and system, of the processes that drained a backlog, since
// they started.
type cpuUse struct {
	walsender, target, follower time.Duration
}

// cpuUse reads the CPU time of the walsender serving applicationName, of the target
// backends listed by targetPids in db, and of followerPid if not 0. The servers are this
// machine's own, so /proc has them.
func (b *bench) cpuUse(ctx context.Context, applicationName, db, targetPids string, followerPid int) (cpuUse, error) {
	var u cpuUse
	pidsOf := func(s *pgtest.Server, db, sql string, args ...any) ([]int, error) {
		conn, err := pgx.Connect(ctx, s.ConnString(db))
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.Background())
		rows, _ := conn.Query(ctx, sql, args...)
		return pgx.CollectRows(rows, pgx.RowTo[int])
	}
	sum := func(pids []int) (time.Duration, error) {
		var total time.Duration
		for _, pid := range pids {
			t, err := processCPU(pid)
			if err != nil {
				return 0, err
			}
			total += t
		}
		return total, nil
	}
	walsenders, err := pidsOf(b.source, sourceDB, "SELECT pid FROM pg_stat_replication WHERE application_name = $1", applicationName)
	if err != nil {
		return u, fmt.Errorf("find the walsender: %w", err)
	}
	appliers, err := pidsOf(b.target, db, targetPids)
	if err != nil {
		return u, fmt.Errorf("find the target sessions: %w", err)
	}
	if u.walsender, err = sum(walsenders); err != nil {
		return u, err
	}
	if u.target, err = sum(appliers); err != nil {
		return u, err
	}
	if followerPid != 0 {
		u.follower, err = processCPU(followerPid)
	}
	return u, err
}

// processCPU is the user and system time of a process of this machine.
func processCPU(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may hold spaces:
	// state is the first, utime and stime the 12th and 13th.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("read /proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

func (b *bench) disableNative(ctx context.Context) error {
	if err := b.exec(ctx, b.target, nativeDB, "ALTER SUBSCRIPTION bench_sub DISABLE"); err != nil {
		return err
	}
	return b.waitUntil(ctx, "the subscription to stop", b.source, sourceDB,
		"SELECT count(*) = 0 FROM pg_stat_replication WHERE application_name = 'bench_sub'")
}

// waitUntil polls a boolean query every 5 ms, for at most -wait.
func (b *bench) waitUntil(ctx context.Context, what string, s *pgtest.Server, db, sql string) error {
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(b.cfg.wait)
	for {
		var done bool
		if err := conn.QueryRow(ctx, sql).Scan(&done); err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if done {
			return nil
		}
		if b.follower != nil {
			select {
			case err := <-b.followerExit:
				b.follower = nil
				return fmt.Errorf("wait for %s: pgleap exited (%v):\n%s", what, err, b.followerOut.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not done after %s; pgleap's output:\n%s", what, b.cfg.wait, b.followerOut.String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (b *bench) exec(ctx context.Context, s *pgtest.Server, db string, stmts ...string) error {
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, sql := range stmts {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(sql, "\n", 2)[0], err)
		}
	}
	return nil
}

func (b *bench) queryRow(ctx context.Context, s *pgtest.Server, db, sql string, dest ...any) error {
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

func (b *bench) digests(ctx context.Context, s *pgtest.Server, db string) (map[string]datatest.TableDigest, error) {
	conn, err := pg.Connect(ctx, pg.Source, s.ConnString(db))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	all, err := datatest.DigestTables(ctx, conn)
	if err != nil {
		return nil, err
	}
	delete(all, pg.QualifiedName("public", "probe_seen")) // the target's own lag stamps
	return all, nil
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	return nil
}

// buildPgleap builds bin/pgleap from the module root, unless a binary is given.
func buildPgleap(ctx context.Context, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if parent := filepath.Dir(dir); parent != dir {
			dir = parent
		} else {
			return "", errors.New("run from the pgleap repository: no go.mod above the working directory")
		}
	}
	bin := filepath.Join(dir, "bin", "pgleap")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pgleap")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pgleap: %w\n%s", err, out)
	}
	return bin, nil
}
