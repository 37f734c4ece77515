package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
)

// tool is one way of loading a dataset into the target.
type tool struct {
	name string
	// load copies j.dataset into j.targetDB, schema, rows, indexes and constraints: the part
	// that is timed.
	load func(ctx context.Context, b *bench, j job) error
	// cleanup, when set, removes what load leaves on either server besides the target
	// database (a subscription, a publication); it is not timed and runs even after a failure.
	cleanup func(ctx context.Context, b *bench, j job) error
}

// tools are the tools in the order they run, the same for every dataset.
func tools() []tool {
	return []tool{
		{name: "pgleap", load: loadPgleap},
		{name: "pgcopydb", load: loadPgcopydb},
		{name: "logical", load: loadLogical, cleanup: cleanUpLogical},
		{name: "pg_dump", load: loadDumpRestore},
	}
}

func toolNames() []string {
	var names []string
	for _, t := range tools() {
		names = append(names, t.name)
	}
	return names
}

// loadPgleap: pgleap migrate without streaming, which ends once the copy is complete.
// --index-jobs is given like pgcopydb's, rather than left to its default of one per CPU.
func loadPgleap(ctx context.Context, b *bench, j job) error {
	if b.pgleapErr != nil {
		return b.pgleapErr
	}
	jobs := strconv.Itoa(b.cfg.jobs)
	cmd := command(ctx, b.pgleapBin, "migrate", "--no-follow",
		"--source", b.source.ConnString(j.dataset), "--target", b.target.ConnString(j.targetDB),
		"--jobs", jobs, "--index-jobs", jobs)
	err := runCmd(cmd)
	if usage, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && j.peakRSS != nil {
		*j.peakRSS = usage.Maxrss << 10 // kilobytes on Linux
	}
	return err
}

// loadPgcopydb: pgcopydb clone, which runs pg_dump's pre-data, parallel COPY, parallel index
// builds and VACUUM ANALYZE, then pg_dump's remaining post-data.
func loadPgcopydb(ctx context.Context, b *bench, j job) error {
	if b.pgcopydbErr != nil {
		return b.pgcopydbErr
	}
	jobs := strconv.Itoa(b.cfg.jobs)
	args := []string{"clone", "--source", b.source.URL(j.dataset), "--target", b.target.URL(j.targetDB),
		"--table-jobs", jobs, "--index-jobs", jobs, "--dir", filepath.Join(j.scratch, "pgcopydb")}
	if b.cfg.pgcopydbSplit != "" {
		args = append(args, "--split-tables-larger-than", b.cfg.pgcopydbSplit)
	}
	return runCommand(ctx, "pgcopydb", args...)
}

// loadDumpRestore: pg_dump's directory format and pg_restore, each with -jobs workers.
func loadDumpRestore(ctx context.Context, b *bench, j job) error {
	dir := filepath.Join(j.scratch, "dump")
	jobs := strconv.Itoa(b.cfg.jobs)
	if err := runCommand(ctx, "pg_dump", "-Fd", "-j", jobs, "-f", dir, "-d", b.source.ConnString(j.dataset)); err != nil {
		return err
	}
	return runCommand(ctx, "pg_restore", "-j", jobs, "-d", b.target.ConnString(j.targetDB), dir)
}

// The logical replication objects the logical tool creates; the subscription's slot on the
// source takes the subscription's name.
const (
	benchPublication  = "bench_pub"
	benchSubscription = "bench_sub"
)

// loadLogical is what a DBA does by hand with PostgreSQL's own logical replication: pre-data
// from pg_dump, a publication of every table, a subscription that copies them (as many
// tables at once as max_sync_workers_per_subscription allows), then post-data once every
// table is synchronised.
func loadLogical(ctx context.Context, b *bench, j job) error {
	source, target := b.source.ConnString(j.dataset), b.target.ConnString(j.targetDB)
	if err := dumpSection(ctx, "pre-data", source, target); err != nil {
		return err
	}
	if err := execSQL(ctx, b.source, j.dataset, stmt("CREATE PUBLICATION "+benchPublication+" FOR ALL TABLES")); err != nil {
		return err
	}
	create := fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s WITH (copy_data = true)",
		benchSubscription, pg.QuoteLiteral(source), benchPublication)
	if err := execSQL(ctx, b.target, j.targetDB, stmt(create)); err != nil {
		return err
	}
	if err := b.waitSynchronised(ctx, j.targetDB); err != nil {
		return err
	}
	return dumpSection(ctx, "post-data", source, target)
}

// waitSynchronised polls until every table of the subscription has finished its initial copy
// (state r, ready, or s, synchronised and about to be ready). From PostgreSQL 15 on, a failed
// table copy shows in pg_stat_subscription_stats: it is reported at once rather than left to
// retry until the run times out.
func (b *bench) waitSynchronised(ctx context.Context, db string) error {
	const pendingSQL = `SELECT count(*) FILTER (WHERE r.srsubstate NOT IN ('r', 's'))
		FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1`
	const errorsSQL = `SELECT coalesce(sum(sync_error_count + apply_error_count), 0) FROM pg_stat_subscription_stats WHERE subname = $1`
	conn, err := pgx.Connect(ctx, b.target.ConnString(db))
	if err != nil {
		return fmt.Errorf("connect to the target: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var pending, failures int64
		if err := conn.QueryRow(ctx, pendingSQL, benchSubscription).Scan(&pending); err != nil {
			return fmt.Errorf("read subscription state: %w", err)
		}
		if pending == 0 {
			return nil
		}
		if b.target.Major >= 15 {
			if err := conn.QueryRow(ctx, errorsSQL, benchSubscription).Scan(&failures); err != nil {
				return fmt.Errorf("read subscription errors: %w", err)
			}
			if failures > 0 {
				return fmt.Errorf("subscription failed %d time(s), %d table(s) not synchronised; target log:%s",
					failures, pending, outputTail(errorLines(b.target.Log())))
			}
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("wait for the subscription: %w", err)
		}
	}
}

// errorLines keeps the ERROR lines of a server log.
func errorLines(log string) string {
	var keep []string
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, "ERROR:") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// cleanUpLogical drops the subscription without touching the source through it (its slot
// is dropped directly, which works even when the source cannot be reached), then the slot
// and the publication.
func cleanUpLogical(ctx context.Context, b *bench, j job) error {
	var exists bool
	err := queryRow(ctx, b.target, j.targetDB,
		stmt("SELECT EXISTS (SELECT FROM pg_subscription WHERE subname = $1)", benchSubscription), &exists)
	if err != nil {
		return err
	}
	if exists {
		err = execSQL(ctx, b.target, j.targetDB,
			stmt("ALTER SUBSCRIPTION "+benchSubscription+" DISABLE"),
			stmt("ALTER SUBSCRIPTION "+benchSubscription+" SET (slot_name = NONE)"),
			stmt("DROP SUBSCRIPTION "+benchSubscription))
		if err != nil {
			return err
		}
	}
	conn, err := pgx.Connect(ctx, b.source.ConnString(j.dataset))
	if err != nil {
		return fmt.Errorf("connect to the source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := dropSlot(ctx, conn, benchSubscription); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+benchPublication); err != nil {
		return fmt.Errorf("drop publication %s: %w", benchPublication, err)
	}
	return nil
}

// dumpSection pipes one section of pg_dump's plain output into psql, stopping at the first
// error.
func dumpSection(ctx context.Context, section, source, target string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("copy %s: %w", section, err)
	}
	var dumpOut, psqlOut bytes.Buffer
	dump := command(ctx, "pg_dump", "--section="+section, "-d", source)
	dump.Stdout, dump.Stderr = w, &dumpOut
	psql := command(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target)
	psql.Stdin, psql.Stdout, psql.Stderr = r, &psqlOut, &psqlOut
	// The children hold their own ends of the pipe; closing the parent's lets pg_dump see
	// psql exit, and psql see the end of pg_dump's output.
	dumpErr := dump.Start()
	psqlErr := psql.Start()
	r.Close()
	w.Close()
	if dumpErr == nil {
		dumpErr = dump.Wait()
	}
	if psqlErr == nil {
		psqlErr = psql.Wait()
	}
	if psqlErr != nil {
		return fmt.Errorf("copy %s: psql: %w%s", section, psqlErr, outputTail(psqlOut.String()))
	}
	if dumpErr != nil {
		return fmt.Errorf("copy %s: pg_dump: %w%s", section, dumpErr, outputTail(dumpOut.String()))
	}
	return nil
}
