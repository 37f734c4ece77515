// Command fullload times a full initial load (schema, rows, indexes and constraints, no
// streaming) from an old PostgreSQL major into a new one with pgleap and with the tools people
// use today: pgcopydb, PostgreSQL's own logical replication, and pg_dump/pg_restore.
//
// In one run it starts a source and a target server with the same settings, builds two
// datasets on the source (pgbench's tables, and a "multi" database of about twenty tables of
// mixed sizes and types), warms the target up, then loads each dataset with each tool, in a
// fixed order, into a fresh database of the target. Each load is timed wall clock from the
// tool's start until everything is in, checked against the source (row counts of every table,
// the number of valid indexes and constraints), and dropped. It prints seconds per dataset and
// tool, and pgleap's time as a ratio of every other tool's and of the best of them.
//
// A tool that fails is reported and the others still run; the exit status is non-zero only
// when the harness itself could not run (servers, datasets, flags). See README.md beside this
// file for the flags and what each tool's command line is.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgleap/pgleap/internal/pgtest"
)

// goalRatio is what pgleap aims for: at most 85% of the time of the fastest other tool.
const goalRatio = 0.85

// rssGoalMB is the memory pgleap must stay well under, whatever the table or row size.
const rssGoalMB = 256

// config holds the flags.
type config struct {
	sourceMajor, targetMajor int
	scale                    int
	multiMB                  int
	warmupMB                 int
	jobs                     int
	datasets                 []string
	tools                    []string
	runTimeout               time.Duration
	pgleapBin                string
	pgcopydbSplit            string
	rounds                   int
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fullload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err = run(ctx, cfg, log)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fullload:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var cfg config
	var datasets, tools string
	fs := flag.NewFlagSet("fullload", flag.ContinueOnError)
	fs.IntVar(&cfg.sourceMajor, "source-major", pgtest.DefaultSourceMajor, "PostgreSQL major of the source")
	fs.IntVar(&cfg.targetMajor, "target-major", pgtest.DefaultTargetMajor, "PostgreSQL major of the target")
	fs.IntVar(&cfg.scale, "scale", 100, "pgbench scale of the pgbench dataset (100 is about 1.5 GB)")
	fs.IntVar(&cfg.multiMB, "multi-mb", 1500, "size in MB of the multi dataset")
	fs.IntVar(&cfg.warmupMB, "warmup-mb", 2048, "MB written on the target before timing, so no tool pays for creating WAL segments")
	fs.IntVar(&cfg.jobs, "jobs", 2, "parallel jobs given to every tool")
	fs.StringVar(&datasets, "datasets", strings.Join(datasetNames(), ","), "datasets to load, comma-separated")
	fs.StringVar(&tools, "tools", strings.Join(toolNames(), ","), "tools to time, comma-separated; they always run in this order")
	fs.DurationVar(&cfg.runTimeout, "run-timeout", 30*time.Minute, "give up on one tool's load after this long")
	fs.StringVar(&cfg.pgleapBin, "pgleap", "", "pgleap binary to time (default: build ./cmd/pgleap into bin/pgleap)")
	fs.StringVar(&cfg.pgcopydbSplit, "pgcopydb-split", "", "pass --split-tables-larger-than with this size to pgcopydb (default: not passed)")
	fs.IntVar(&cfg.rounds, "rounds", 1, "load each dataset this many times with each tool, starting each round with the next tool; report the median")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if cfg.scale < 1 || cfg.multiMB < 1 || cfg.jobs < 1 || cfg.rounds < 1 || cfg.warmupMB < 0 {
		return cfg, errors.New("-scale, -multi-mb, -jobs and -rounds must be positive, -warmup-mb not negative")
	}
	var err error
	if cfg.datasets, err = pickNames("-datasets", datasets, datasetNames()); err != nil {
		return cfg, err
	}
	if cfg.tools, err = pickNames("-tools", tools, toolNames()); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// pickNames splits a comma-separated flag value and keeps known's order, so that the tools
// run in the same order whatever order the flag lists them in.
func pickNames(flagName, value string, known []string) ([]string, error) {
	wanted := map[string]bool{}
	for name := range strings.SplitSeq(value, ",") {
		if name = strings.TrimSpace(name); name != "" {
			wanted[name] = true
		}
	}
	var picked []string
	for _, name := range known {
		if wanted[name] {
			picked = append(picked, name)
			delete(wanted, name)
		}
	}
	for name := range wanted {
		return nil, fmt.Errorf("%s: unknown name %q (known: %s)", flagName, name, strings.Join(known, ", "))
	}
	if len(picked) == 0 {
		return nil, fmt.Errorf("%s: nothing selected", flagName)
	}
	return picked, nil
}

// run is the whole benchmark. It returns an error only when the harness could not run; a
// tool's failure is part of the results.
func run(ctx context.Context, cfg config, log *slog.Logger) (err error) {
	started := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	workDir, err := os.MkdirTemp("", "pgleap-fullload-")
	if err != nil {
		return fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(workDir)

	b := &bench{cfg: cfg, log: log, workDir: workDir}
	if err := b.launch(ctx); err != nil {
		return err
	}
	defer func() {
		if stopErr := b.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	datasets, err := b.prepare(ctx, root)
	if err != nil {
		return err
	}
	env, err := b.describe(ctx)
	if err != nil {
		return err
	}
	var results []result
	for _, ds := range datasets {
		if err := b.warmUpWithDataset(ctx, ds); err != nil {
			return err
		}
		tools := b.selectedTools()
		byTool := map[string][]result{}
		for round := range cfg.rounds {
			// Each round starts with the next tool, so that no tool always runs first.
			for i := range tools {
				t := tools[(round+i)%len(tools)]
				r, err := b.measure(ctx, ds, t)
				if err != nil {
					return err
				}
				byTool[t.name] = append(byTool[t.name], r)
			}
		}
		for _, t := range tools {
			results = append(results, median(byTool[t.name]))
		}
	}
	env.total = time.Since(started)
	printReport(os.Stdout, env, datasets, b.selectedTools(), results)
	return nil
}

// moduleRoot finds the directory of pgleap's go.mod, where bin/pgleap is built, from the
// working directory that go run was started in.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find the module root: no go.mod above the working directory: run from the pgleap repository")
		}
		dir = parent
	}
}

// bench is one run of the benchmark: the two servers and what the tools need.
type bench struct {
	cfg            config
	log            *slog.Logger
	workDir        string // scratch space of the tools, removed at the end
	source, target *pgtest.Server
	pgleapBin      string
	pgleapErr      error // why pgleap cannot be timed, when it cannot
	pgcopydbErr    error // why pgcopydb cannot be timed, when it cannot
}

// serverSettings are the same on both servers and for every tool: generous memory and WAL
// so that no tool is slowed by checkpoints, and room for every tool's replication workers.
// Everything else keeps its default (autovacuum stays on, as in production).
func serverSettings() map[string]string {
	return map[string]string{
		"shared_buffers":                    "2GB",
		"max_wal_size":                      "16GB",
		"min_wal_size":                      "2GB",
		"checkpoint_timeout":                "30min",
		"maintenance_work_mem":              "1GB",
		"max_parallel_maintenance_workers":  "2",
		"wal_level":                         "logical",
		"max_replication_slots":             "20",
		"max_wal_senders":                   "20",
		"max_worker_processes":              "16",
		"max_logical_replication_workers":   "8",
		"max_sync_workers_per_subscription": "2",
		"synchronous_commit":                "on",
	}
}

// launch starts the source and the target, durable, as a benchmark needs.
func (b *bench) launch(ctx context.Context) error {
	opts := pgtest.Options{Durable: true, Settings: serverSettings()}
	var err error
	b.log.Info("start servers", "source", b.cfg.sourceMajor, "target", b.cfg.targetMajor)
	if b.source, err = pgtest.Launch(ctx, b.cfg.sourceMajor, opts); err != nil {
		return fmt.Errorf("start the source: %w", err)
	}
	if b.target, err = pgtest.Launch(ctx, b.cfg.targetMajor, opts); err != nil {
		return errors.Join(fmt.Errorf("start the target: %w", err), b.stop())
	}
	return nil
}

// stop stops whichever servers launch started.
func (b *bench) stop() error {
	var errs []error
	for _, s := range []*pgtest.Server{b.source, b.target} {
		if s != nil {
			if err := s.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop PostgreSQL %d: %w", s.Major, err))
			}
		}
	}
	return errors.Join(errs...)
}

// prepare readies the tools, builds the datasets on the source and warms the target up. The
// datasets and the warm-up run at once: nothing is timed yet, and it halves the wait.
func (b *bench) prepare(ctx context.Context, root string) ([]*dataset, error) {
	if err := requireClientTools(); err != nil {
		return nil, err
	}
	b.prepareTools(ctx, root)
	datasets := make([]*dataset, len(b.cfg.datasets))
	errs := make([]error, len(datasets)+1)
	var wg sync.WaitGroup
	for i, name := range b.cfg.datasets {
		wg.Go(func() { datasets[i], errs[i] = b.buildDataset(ctx, name) })
	}
	wg.Go(func() { errs[len(datasets)] = b.warmUpTarget(ctx) })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return datasets, nil
}

// requireClientTools checks for the client programs the datasets and tools run.
func requireClientTools() error {
	for _, name := range []string{"pgbench", "pg_dump", "pg_restore", "psql"} {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("%s not found: install Debian's postgresql-client (make deps does)", name)
		}
	}
	return nil
}

// prepareTools builds pgleap and installs pgcopydb. Either may fail: that tool's runs then
// report why, and the others still run.
func (b *bench) prepareTools(ctx context.Context, root string) {
	if b.selected("pgleap") {
		b.pgleapBin, b.pgleapErr = buildPgleap(ctx, root, b.cfg.pgleapBin)
		if b.pgleapErr != nil {
			b.log.Warn("pgleap will not be timed", "err", b.pgleapErr)
		}
	}
	if b.selected("pgcopydb") {
		if b.pgcopydbErr = ensurePgcopydb(ctx, b.log); b.pgcopydbErr != nil {
			b.log.Warn("pgcopydb will not be timed", "err", b.pgcopydbErr)
		}
	}
}

// buildPgleap builds the working tree's pgleap into bin/pgleap, as make build does, unless
// the -pgleap flag names a binary.
func buildPgleap(ctx context.Context, root, given string) (string, error) {
	if given != "" {
		path, err := filepath.Abs(given)
		if err != nil {
			return "", fmt.Errorf("find pgleap binary %s: %w", given, err)
		}
		return path, nil
	}
	bin := filepath.Join(root, "bin", "pgleap")
	cmd := command(ctx, "go", "build", "-o", bin, "./cmd/pgleap")
	cmd.Dir = root
	if err := runCmd(cmd); err != nil {
		return "", fmt.Errorf("build pgleap: %w", err)
	}
	return bin, nil
}

// ensurePgcopydb installs Debian's pgcopydb when it is not on PATH.
func ensurePgcopydb(ctx context.Context, log *slog.Logger) error {
	if _, err := exec.LookPath("pgcopydb"); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("pgcopydb is not installed: apt-get install pgcopydb")
	}
	log.Info("install pgcopydb with apt-get")
	update := command(ctx, "apt-get", "update")
	install := command(ctx, "apt-get", "install", "-y", "pgcopydb")
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, cmd := range []*exec.Cmd{update, install} {
		if err := runCmd(cmd); err != nil {
			return fmt.Errorf("install pgcopydb: %w", err)
		}
	}
	return nil
}

// warmUpTarget writes -warmup-mb into a scratch database of the target and drops it: the
// first large load on a new server pays for creating WAL segments, which after this
// checkpoint are recycled instead, for every tool alike.
func (b *bench) warmUpTarget(ctx context.Context) error {
	if b.cfg.warmupMB == 0 {
		return nil
	}
	const db, rowBytes = "bench_warmup", 240 // 200 bytes of padding, a bigint and the tuple header
	b.log.Info("warm up the target", "mb", b.cfg.warmupMB)
	if err := createDatabase(ctx, b.target, db); err != nil {
		return fmt.Errorf("warm up the target: %w", err)
	}
	rows := int64(b.cfg.warmupMB) << 20 / rowBytes
	err := execSQL(ctx, b.target, db,
		stmt("CREATE TABLE warm (id bigint, pad text)"),
		stmt("INSERT INTO warm SELECT g, repeat('x', 200) FROM generate_series(1, $1::bigint) g", rows))
	if err != nil {
		return fmt.Errorf("warm up the target: %w", err)
	}
	if err := dropDatabase(ctx, b.target, db); err != nil {
		return fmt.Errorf("warm up the target: %w", err)
	}
	return checkpoint(ctx, b.target)
}

// warmUpWithDataset loads the dataset once, untimed, with pg_dump and pg_restore (a tool
// none of the timed ones depends on), and drops the copy. Writing a scratch table warms the
// target's WAL, but the first real load of a dataset still ran about 5 s slower than the
// next ones on a 2-core machine, and the first tool in the fixed order paid for it alone.
func (b *bench) warmUpWithDataset(ctx context.Context, ds *dataset) error {
	warm := tool{name: "warm-up", load: loadDumpRestore}
	r, err := b.measure(ctx, ds, warm)
	if err != nil {
		return fmt.Errorf("warm up with %s: %w", ds.name, err)
	}
	if r.err != nil {
		return fmt.Errorf("warm up with %s: %w", ds.name, r.err)
	}
	return nil
}

func (b *bench) selected(tool string) bool { return slices.Contains(b.cfg.tools, tool) }

// selectedTools are the tools the -tools flag chose, in the fixed order of tools().
func (b *bench) selectedTools() []tool {
	var picked []tool
	for _, t := range tools() {
		if b.selected(t.name) {
			picked = append(picked, t)
		}
	}
	return picked
}

// result is one tool's load of one dataset.
type result struct {
	dataset, tool string
	elapsed       time.Duration
	rounds        []time.Duration // every valid round's time, when there were several
	peakRSS       int64           // bytes, of the tool's own process (pgleap only)
	err           error           // the tool failed
	problems      []string        // the tool succeeded but the target differs from the source
	notes         []string        // what the harness had to clean up after it
}

func (r result) valid() bool { return r.err == nil && len(r.problems) == 0 }

// median is the round of median time among the valid ones, with every round's time; any
// failed round is reported instead, since a tool that fails now and then has a problem.
func median(rounds []result) result {
	var valid []result
	for _, r := range rounds {
		if !r.valid() {
			return r
		}
		valid = append(valid, r)
	}
	slices.SortFunc(valid, func(a, b result) int { return cmp.Compare(a.elapsed, b.elapsed) })
	m := valid[len(valid)/2]
	if len(valid) > 1 {
		for _, r := range rounds {
			m.rounds = append(m.rounds, r.elapsed)
			m.peakRSS = max(m.peakRSS, r.peakRSS)
			m.notes = append(m.notes, r.notes...)
		}
	}
	m.notes = slices.Compact(m.notes)
	return m
}

// job is what a tool's load gets: which database to copy where, and a directory of its own.
type job struct {
	dataset  string // the source database
	targetDB string // a new, empty database on the target
	scratch  string // an empty directory, removed after the run
	peakRSS  *int64 // where a tool that runs one process of its own records its peak RSS
}

// measure times one tool loading one dataset into a fresh database of the target, checks
// the copy and drops it. The error is the harness's; the tool's own is in the result.
func (b *bench) measure(ctx context.Context, ds *dataset, t tool) (result, error) {
	r := result{dataset: ds.name, tool: t.name}
	j := job{dataset: ds.name, targetDB: ds.name + "_" + t.name, scratch: filepath.Join(b.workDir, ds.name+"_"+t.name), peakRSS: &r.peakRSS}
	if err := b.setUpRun(ctx, j); err != nil {
		return r, fmt.Errorf("set up %s on %s: %w", t.name, ds.name, err)
	}
	defer os.RemoveAll(j.scratch)

	b.log.Info("load", "dataset", ds.name, "tool", t.name)
	runCtx, cancel := context.WithTimeout(ctx, b.cfg.runTimeout)
	start := time.Now()
	err := t.load(runCtx, b, j)
	r.elapsed = time.Since(start)
	timedOut := errors.Is(runCtx.Err(), context.DeadlineExceeded)
	cancel()
	if ctx.Err() != nil {
		return r, fmt.Errorf("run %s on %s: %w", t.name, ds.name, ctx.Err())
	}
	if timedOut {
		err = fmt.Errorf("timed out after %s: %w", b.cfg.runTimeout, err)
	}
	if err != nil {
		r.err = fmt.Errorf("run %s on %s: %w", t.name, ds.name, err)
	}

	if t.cleanup != nil {
		if err := t.cleanup(ctx, b, j); err != nil {
			r.notes = append(r.notes, fmt.Sprintf("clean up after %s: %v", t.name, err))
		}
	}
	if r.err == nil {
		if r.problems, err = b.check(ctx, ds, j.targetDB); err != nil {
			r.err = fmt.Errorf("check %s's copy of %s: %w", t.name, ds.name, err)
		}
	}
	if err := b.tearDownRun(ctx, j, &r); err != nil {
		return r, fmt.Errorf("tear down %s on %s: %w", t.name, ds.name, err)
	}
	b.log.Info("loaded", "dataset", ds.name, "tool", t.name, "seconds", seconds(r.elapsed), "valid", r.valid())
	return r, nil
}

// setUpRun gives the run an empty target database and scratch directory, and checkpoints
// both servers so that no run starts with another's dirty buffers to write.
func (b *bench) setUpRun(ctx context.Context, j job) error {
	if err := os.Mkdir(j.scratch, 0o700); err != nil {
		return fmt.Errorf("create scratch directory: %w", err)
	}
	if err := createDatabase(ctx, b.target, j.targetDB); err != nil {
		return err
	}
	if err := checkpoint(ctx, b.source); err != nil {
		return err
	}
	if err := checkpoint(ctx, b.target); err != nil {
		return err
	}
	// The previous run's dropped database and the checkpoints leave writes in the kernel's
	// cache; flushed now, they do not slow the next run down.
	syscall.Sync()
	return nil
}

// tearDownRun drops the run's target database to free the disk, and what the tool left on
// the source: a replication slot would hold WAL for the rest of the benchmark, and the next
// tool should find the source as the first one did.
func (b *bench) tearDownRun(ctx context.Context, j job, r *result) error {
	slots, err := dropSlots(ctx, b.source, j.dataset)
	if err != nil {
		return err
	}
	for _, slot := range slots {
		r.notes = append(r.notes, fmt.Sprintf("left replication slot %s on the source (dropped)", slot))
	}
	publications, err := dropPublications(ctx, b.source, j.dataset)
	if err != nil {
		return err
	}
	for _, publication := range publications {
		r.notes = append(r.notes, fmt.Sprintf("left publication %s on the source (dropped)", publication))
	}
	return dropDatabase(ctx, b.target, j.targetDB)
}

// seconds rounds to a tenth of a second: finer than that is noise for loads this size.
func seconds(d time.Duration) float64 {
	return float64(d.Round(100*time.Millisecond)) / float64(time.Second)
}
