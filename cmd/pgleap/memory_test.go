package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestMemoryStaysBounded streams a large transaction (1.5 million rows in one) and then a
// huge value (100 MB of text, inserted, then changed), and reads pgleap's peak resident memory
// from the kernel after each: bounded whatever the transaction's size, and a few times the
// largest value. Measured: about 80 MB after the transaction (465 MB before net changes
// counted their overhead), about 460 MB after the value, which is held in the connection's
// read buffer, in pglogrepl's copy of it and in the statement pgx writes, with the garbage
// collector's headroom.
func TestMemoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("moves a few hundred megabytes")
	}
	const valueMB, rows = 100, 1500000
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `CREATE TABLE docs (id int PRIMARY KEY, body text);
		ALTER TABLE docs ALTER body SET STORAGE EXTERNAL; -- no compression: the full size travels
		CREATE TABLE lines (id bigint PRIMARY KEY, v text)`)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)

	// A binary of its own: the test binary runs under the race detector, which multiplies
	// memory.
	bin := filepath.Join(t.TempDir(), "pgleap")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build pgleap: %v\n%s", err, out)
	}
	migrate := exec.Command(bin, "migrate", "--source", sourceConn, "--target", targetConn)
	out := &pgtest.LockedBuffer{}
	migrate.Stdout, migrate.Stderr = out, out
	if err := migrate.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { migrate.Process.Kill() })
	waitFor(t, "streaming", func() bool { return datatest.Scalar(t, sourceConn, streamingSQL) == "1" })
	caughtUp := func(what string) {
		want := datatest.Scalar(t, sourceConn, "SELECT pg_current_wal_insert_lsn()::text")
		waitFor(t, what, func() bool {
			return lsnAtLeast(t, datatest.Scalar(t, targetConn, "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want)
		})
	}

	source.Exec(t, sourceDB, "INSERT INTO lines SELECT g, 'line ' || g FROM generate_series(1, "+strconv.Itoa(rows)+") g")
	caughtUp("the large transaction")
	afterTransaction := peakRSS(t, migrate.Process.Pid)
	source.Exec(t, sourceDB, "INSERT INTO docs VALUES (1, repeat('a', "+strconv.Itoa(valueMB<<20)+"))")
	source.Exec(t, sourceDB, "UPDATE docs SET body = repeat('b', "+strconv.Itoa(valueMB<<20)+") WHERE id = 1")
	caughtUp("the huge value")
	afterValue := peakRSS(t, migrate.Process.Pid)
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := migrate.Wait(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if got := datatest.Scalar(t, targetConn, "SELECT left(body, 3) || length(body) || '/' || (SELECT count(*) FROM lines) FROM docs"); got != "bbb"+strconv.Itoa(valueMB<<20)+"/"+strconv.Itoa(rows) {
		t.Errorf("on the target: %s", got)
	}
	t.Logf("pgleap's peak resident memory: %d MB after a %d-row transaction, %d MB after a %d MB value", afterTransaction>>20, rows, afterValue>>20, valueMB)
	if afterTransaction > 200<<20 {
		t.Errorf("a %d-row transaction took pgleap's memory to %d MB: it grows with the transaction", rows, afterTransaction>>20)
	}
	if limit := int64(6 * valueMB << 20); afterValue > limit {
		t.Errorf("pgleap's peak resident memory %d MB is more than %d MB", afterValue>>20, limit>>20)
	}
}

// peakRSS reads a process's peak resident set size (VmHWM) from /proc.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
