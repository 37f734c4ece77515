package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// cliEnv makes the test binary act as the pgleap command, so tests can run it as a process
// of its own (to kill it) without building another binary.
const cliEnv = "PGLEAP_TEST_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) == "1" {
		main() // exits
	}
	pgtest.Main(m)
}

// pgleap runs one command line in-process, as main does, with env as the environment.
func pgleap(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

// connectingCommands are the commands that open connections; each must fail the same way
// when a server cannot be reached.
var connectingCommands = [][]string{
	{"check"},
	{"migrate", "--schema-only"},
	{"migrate", "--no-follow"},
	{"migrate"},
	{"verify", "--schema"},
	{"verify"},
	{"cutover", "--no-reverse"},
	{"cleanup"},
	{"status"},
}

func TestUnreachableSourceExitsTwoWithOneLine(t *testing.T) {
	for _, command := range connectingCommands {
		t.Run(command[0], func(t *testing.T) {
			args := append(command, "--source", "host=127.0.0.1 port=1 user=app password=s3cret",
				"--target", "postgres://app:s3cret@127.0.0.1:2/db")
			code, stdout, stderr := pgleap(t, nil, args...)
			if code != exitCannotRun {
				t.Errorf("exit %d, want %d", code, exitCannotRun)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", len(lines), stderr)
			}
			for _, want := range []string{"source", "127.0.0.1:1", "connection refused"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q does not name %q", stderr, want)
				}
			}
			for _, leak := range []string{"s3cret", "goroutine", "panic"} {
				if strings.Contains(stderr, leak) {
					t.Errorf("stderr contains %q: %s", leak, stderr)
				}
			}
		})
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"check", "--bogus"}, "unknown flag"},
		{"unknown command", []string{"nope"}, "unknown command"},
		{"missing target", []string{"check", "--source", "host=a"}, "--target"},
		{"bad pattern", []string{"check", "--source", "host=a", "--target", "host=b", "--include", "x.[y"}, "table pattern"},
		{"bad log level", []string{"check", "--log-level", "loud"}, "--log-level"},
		{"bad log format", []string{"check", "--log-format", "xml"}, "--log-format"},
		{"watch every zero", []string{"status", "--target", "host=b", "--watch", "--every", "0s"}, "--every"},
		{"bad alert size", []string{"migrate", "--alert-slot-wal", "lots"}, "--alert-slot-wal"},
		{"two modes", []string{"migrate", "--schema-only", "--no-follow"}, "none of the others"},
		{"bad size", []string{"migrate", "--no-follow", "--split-larger-than", "big"}, "--split-larger-than"},
		{"verify with no jobs", []string{"verify", "--source", "host=a", "--target", "host=b", "--jobs", "0"}, "--jobs"},
		{"missing config", []string{"check", "--config", "/nonexistent/pgleap.yaml"}, "pgleap.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := pgleap(t, nil, tt.args...)
			if code != exitCannotRun || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, exitCannotRun, tt.want)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, stdout, _ := pgleap(t, nil, "--version")
	if code != exitOK || !strings.HasPrefix(stdout, "pgleap version ") {
		t.Errorf("--version: exit %d, %q", code, stdout)
	}
	code, stdout, _ = pgleap(t, nil, "check", "--help")
	if code != exitOK || !strings.Contains(stdout, "--source") || !strings.Contains(stdout, "Exit status") {
		t.Errorf("check --help: exit %d, %q", code, stdout)
	}
}

// catalogFingerprint lists what check must never create: objects, slots, publications,
// roles. pg_class covers every relation, index and sequence of the database.
const catalogFingerprint = `
SELECT (SELECT count(*) FROM pg_class) || '/' || (SELECT count(*) FROM pg_namespace) || '/' ||
       (SELECT count(*) FROM pg_replication_slots) || '/' || (SELECT count(*) FROM pg_publication) || '/' ||
       (SELECT count(*) FROM pg_roles) || '/' || (SELECT count(*) FROM pg_proc) || '/' ||
       (SELECT count(*) FROM pg_db_role_setting) || '/' || (SELECT coalesce(max(xmin::text::bigint), 0) FROM pg_class)`

func fingerprint(t *testing.T, s *pgtest.Server, db string) string {
	t.Helper()
	var out string
	if err := s.Conn(t, db).QueryRow(context.Background(), catalogFingerprint).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCheckEndToEnd(t *testing.T) {
	source := pgtest.Shared(t, pgtest.SourceMajor())
	target := pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `CREATE TABLE orders (id bigint PRIMARY KEY, placed timestamptz);
		CREATE TABLE audit (at timestamptz, what text)`)
	sourceURL, targetConn := source.URL(sourceDB), target.ConnString(targetDB)

	before := fingerprint(t, source, sourceDB) + " " + fingerprint(t, target, targetDB)
	code, stdout, stderr := pgleap(t, nil, "check", "--source", sourceURL, "--target", targetConn)
	if code != exitAnswerNo {
		t.Fatalf("check with a blocker: exit %d, want %d\n%s%s", code, exitAnswerNo, stdout, stderr)
	}
	for _, want := range []string{"BLOCKERS", "data.no_replica_identity", `"public"."audit"`, "Not ready"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout)
		}
	}

	code, stdout, _ = pgleap(t, nil, "check", "--json", "--source", sourceURL, "--target", targetConn)
	var report struct {
		Source   struct{ Major int }
		Target   struct{ Major int }
		Findings []struct{ Check, Severity, Object, Why, Fix string }
		Summary  struct{ Tables int }
	}
	if err := json.Unmarshal([]byte(stdout), &report); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, stdout)
	}
	if code != exitAnswerNo || report.Source.Major != pgtest.SourceMajor() || report.Target.Major != pgtest.TargetMajor() || report.Summary.Tables != 2 {
		t.Errorf("--json: exit %d, report %+v", code, report)
	}
	found := false
	for _, f := range report.Findings {
		found = found || (f.Check == "data.no_replica_identity" && f.Severity == "blocker" && f.Object == `"public"."audit"`)
	}
	if !found {
		t.Errorf("--json findings lack the blocker on audit: %+v", report.Findings)
	}

	after := fingerprint(t, source, sourceDB) + " " + fingerprint(t, target, targetDB)
	if before != after {
		t.Errorf("check changed a server: catalog fingerprint %s before, %s after", before, after)
	}

	// Excluding the table without a key leaves a migration with no blocker: exit 0. The
	// connection strings come from the environment and the pattern from pgleap.yaml.
	config := filepath.Join(t.TempDir(), "pgleap.yaml")
	if err := os.WriteFile(config, []byte("exclude: [public.audit]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PGLEAP_SOURCE": sourceURL, "PGLEAP_TARGET": targetConn}
	code, stdout, stderr = pgleap(t, env, "check", "--config", config)
	if code != exitOK || !strings.Contains(stdout, "Ready: no blockers") {
		t.Errorf("check with audit excluded: exit %d, want 0\n%s%s", code, stdout, stderr)
	}
}

func TestMigrateSchemaThenVerify(t *testing.T) {
	source := pgtest.Shared(t, pgtest.SourceMajor())
	target := pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `CREATE TABLE customers (id bigint PRIMARY KEY, email text UNIQUE);
		CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers, note text);
		CREATE INDEX orders_note ON orders (note);
		CREATE TABLE scratch (id int);
		CREATE VIEW scratch_view AS SELECT * FROM scratch`)
	args := []string{"--source", source.ConnString(sourceDB), "--target", target.ConnString(targetDB)}

	code, stdout, stderr := pgleap(t, nil, append([]string{"migrate", "--schema-only", "--exclude", "public.scratch", "--index-jobs", "2"}, args...)...)
	if code != exitOK {
		t.Fatalf("migrate: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"pre-data restored", "view public.scratch_view: depends on table public.scratch, which is excluded"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("migrate output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = pgleap(t, nil, append([]string{"verify", "--schema"}, args...)...)
	if code != exitOK || !strings.Contains(stdout, "schema identical") {
		t.Fatalf("verify after migrate: exit %d\n%s", code, stdout)
	}
	// Running migrate again resumes a finished migration: nothing to do.
	code, stdout, _ = pgleap(t, nil, append([]string{"migrate", "--schema-only", "--exclude", "public.scratch"}, args...)...)
	if code != exitOK || !strings.Contains(stdout, "post-data: 0 steps built now") {
		t.Errorf("second migrate: exit %d\n%s", code, stdout)
	}
	// Rows cannot follow a schema-only migration: its foreign keys and indexes are built.
	code, _, stderr = pgleap(t, nil, append([]string{"migrate", "--no-follow", "--exclude", "public.scratch"}, args...)...)
	if code != exitCannotRun || !strings.Contains(stderr, "schema only") {
		t.Errorf("migrate --no-follow after --schema-only: exit %d, %s", code, stderr)
	}
	// Another selection against the same target is refused rather than mixed in.
	code, _, stderr = pgleap(t, nil, append([]string{"migrate", "--schema-only"}, args...)...)
	if code != exitCannotRun || !strings.Contains(stderr, "another migration") {
		t.Errorf("migrate with another selection: exit %d, %s", code, stderr)
	}

	target.Exec(t, targetDB, "DROP INDEX orders_note")
	code, stdout, _ = pgleap(t, nil, append([]string{"verify", "--schema", "--json"}, args...)...)
	if code != exitAnswerNo || !strings.Contains(stdout, `"orders.orders_note"`) {
		t.Errorf("verify after dropping an index: exit %d\n%s", code, stdout)
	}
}

// TestKilledMidCopyResumes kills pgleap (SIGKILL: no chance to clean up) while it copies,
// then runs it again: the rerun keeps what was committed, copies the rest, and the rows
// equal the source's.
func TestKilledMidCopyResumes(t *testing.T) {
	source := pgtest.Shared(t, pgtest.SourceMajor())
	target := pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `CREATE TABLE big (id bigint PRIMARY KEY, payload text);
		INSERT INTO big SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 120000) g;
		CREATE TABLE small (id int PRIMARY KEY, ref bigint REFERENCES big);
		INSERT INTO small SELECT g, g FROM generate_series(1, 1000) g;
		ANALYZE`)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	args := []string{"migrate", "--no-follow", "--source", sourceConn, "--target", targetConn, "--jobs", "2", "--split-larger-than", "2MB"}

	// The rate cap stretches the copy to several seconds, so the kill lands in the middle.
	cmd := exec.Command(os.Args[0], append(args, "--max-copy-rate", "3MB")...)
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tc := target.Conn(t, targetDB)
	ctx := context.Background()
	finishedBefore := map[string]time.Time{}
	deadline := time.Now().Add(60 * time.Second)
	for len(finishedBefore) < 2 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no chunk finished within a minute:\n%s", output.String())
		}
		time.Sleep(100 * time.Millisecond)
		rows, err := tc.Query(ctx, `SELECT table_name || ' ' || chunk, finished_at FROM pgleap.copy_item WHERE finished_at IS NOT NULL`)
		if err != nil {
			continue // the state schema is not there yet
		}
		for rows.Next() {
			var key string
			var at time.Time
			if err := rows.Scan(&key, &at); err == nil {
				finishedBefore[key] = at
			}
		}
		rows.Close()
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	var total, finished int
	if err := tc.QueryRow(ctx, "SELECT count(*), count(finished_at) FROM pgleap.copy_item").Scan(&total, &finished); err != nil {
		t.Fatal(err)
	}
	if finished == total {
		t.Fatalf("the copy had finished (%d units) before the kill: nothing left to resume", total)
	}

	// The temporary slot went with the killed process: nothing keeps WAL on the source.
	sc := source.Conn(t, sourceDB)
	for slots := 1; slots > 0; time.Sleep(100 * time.Millisecond) {
		if err := sc.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgleap_copy_%'").Scan(&slots); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the copy's replication slot outlived the killed process")
		}
	}

	code, stdout, stderr := pgleap(t, nil, args...)
	if code != exitOK {
		t.Fatalf("rerun after the kill: exit %d\n%s%s", code, stdout, stderr)
	}
	datatest.RequireSameRows(t, sourceConn, targetConn, 2)
	for key, at := range finishedBefore {
		var now time.Time
		table, chunk, _ := strings.Cut(key, " ")
		if err := tc.QueryRow(ctx, "SELECT finished_at FROM pgleap.copy_item WHERE table_name = $1 AND chunk = $2::int", table, chunk).Scan(&now); err != nil || !now.Equal(at) {
			t.Errorf("unit %s was copied again after the kill (finished %v, now %v, %v)", key, at, now, err)
		}
	}
	code, stdout, _ = pgleap(t, nil, "verify", "--schema", "--source", sourceConn, "--target", targetConn)
	if code != exitOK {
		t.Errorf("verify --schema after the resumed load: exit %d\n%s", code, stdout)
	}
	// A cold copy: verify compares both as they are.
	code, stdout, stderr = pgleap(t, nil, "verify", "--chunk-rows", "5000", "--source", sourceConn, "--target", targetConn)
	if code != exitOK || !strings.Contains(stdout, "source and target hold the same data") {
		t.Errorf("verify after the resumed load: exit %d\n%s%s", code, stdout, stderr)
	}
}
