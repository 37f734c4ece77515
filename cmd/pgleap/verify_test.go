package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// verifyReport is the part of verify --json the tests read.
type verifyReport struct {
	Equal        bool    `json:"equal"`
	SourceLSN    string  `json:"source_lsn"`
	RowsCompared int64   `json:"rows_compared"`
	ApplyPauseMS float64 `json:"apply_pause_ms"`
	Tables       []struct {
		Table       string `json:"table"`
		Equal       bool   `json:"equal"`
		Chunks      int    `json:"chunks"`
		Problem     string `json:"problem"`
		Differences []struct {
			Key, What, Source, Target string
		} `json:"differences"`
	} `json:"tables"`
	LargeObjects *struct {
		Equal      bool  `json:"equal"`
		SourceRows int64 `json:"source_rows"`
	} `json:"large_objects"`
}

// TestVerifyRows runs verify while pgbench writes to the source at full speed and migrate
// streams: every run must find source and target equal (no false alarm from changes in
// flight) with a short stop of the apply. Then it changes the target behind pgleap's back
// and verify must name exactly the rows changed.
func TestVerifyRows(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", "1", sourceConn).CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	source.Exec(t, sourceDB, `
		CREATE TABLE pairs (a int, b text, v numeric, PRIMARY KEY (a, b));
		INSERT INTO pairs SELECT g % 100, 'k' || (g / 100), g * 1.5 FROM generate_series(1, 5000) g;
		CREATE TABLE bag (v text, n int);
		ALTER TABLE bag REPLICA IDENTITY FULL;
		INSERT INTO bag SELECT 'x' || (g % 50), g % 3 FROM generate_series(1, 3000) g;
		CREATE TABLE events (id int, at date, what text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		INSERT INTO events SELECT g, date '2025-06-01' + g % 365, 'e' || g FROM generate_series(1, 2000) g;
		CREATE TABLE odd (id int PRIMARY KEY, j json, p point, x xml, f float8, r real, n numeric, t timestamptz, i interval, a int[]);
		INSERT INTO odd VALUES (1, '{"a" :  1}', '(1,2)', '<x>1</x>', '-0', 'NaN', 'NaN', '2024-02-29 12:00:00.123456+05:30', '1 mon 2 days', '{1,NULL}'),
			(2, '[]', '(0.1,-0)', NULL, 'Infinity', '1.17549435e-38', '0.1000000000000000000000000001', '-infinity', '-1 year', '{}'),
			(3, NULL, NULL, '<y/>', 0.1, 3.4028235e38, 1e-30, 'epoch', '00:00:00.000001', NULL);
		CREATE SEQUENCE tickets;
		SELECT lo_from_bytea(0, 'large object one'), lo_from_bytea(0, 'two');
		ANALYZE`)
	conns := []string{"--source", sourceConn, "--target", targetConn}
	migrate, migrateOut := startCLI(t, append([]string{"migrate", "--jobs", "2"}, conns...)...)
	waitFor(t, "migrate to stream", func() bool { return datatest.Scalar(t, sourceConn, streamingSQL) == "1" })

	writerCtx, stopWriter := context.WithCancel(context.Background())
	defer stopWriter()
	writer := exec.CommandContext(writerCtx, "pgbench", "-n", "-c", "2", "-T", "600", sourceConn)
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	verifyArgs := append([]string{"verify", "--json", "--chunk-rows", "1000", "--jobs", "2"}, conns...)
	for i := range 10 {
		code, stdout, stderr := pgleap(t, nil, verifyArgs...)
		var r verifyReport
		if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != exitOK || !r.Equal {
			t.Fatalf("verify %d while pgbench writes: exit %d, %v\n%s%s\nmigrate:\n%s", i+1, code, err, stdout, stderr, migrateOut)
		}
		if r.ApplyPauseMS >= 1000 || r.SourceLSN == "" || r.RowsCompared < 100000 || r.LargeObjects == nil || r.LargeObjects.SourceRows != 2 {
			t.Errorf("verify %d: pause %.0f ms at %q, %d rows, large objects %+v", i+1, r.ApplyPauseMS, r.SourceLSN, r.RowsCompared, r.LargeObjects)
		}
		if i == 0 {
			chunks := map[string]int{}
			for _, table := range r.Tables {
				chunks[table.Table] = table.Chunks
			}
			if chunks[`"public"."pgbench_accounts"`] < 50 {
				t.Errorf("pgbench_accounts (100,000 rows, 1,000 a chunk) was compared in %d chunks", chunks[`"public"."pgbench_accounts"`])
			}
		}
		t.Logf("verify %d: the apply stood still %.1f ms", i+1, r.ApplyPauseMS)
	}
	stopWriter()
	writer.Wait()

	// Sequences are not streamed (cutover copies them): --sequences shows them apart.
	source.Exec(t, sourceDB, "SELECT nextval('tickets'), nextval('tickets')")
	code, stdout, stderr := pgleap(t, nil, append(verifyArgs, "--sequences")...)
	var withSequences struct {
		Equal     bool `json:"equal"`
		Sequences struct {
			Differences []struct{ Key, What, Source, Target string } `json:"differences"`
		} `json:"sequences"`
	}
	if err := json.Unmarshal([]byte(stdout), &withSequences); err != nil || code != exitAnswerNo || withSequences.Equal ||
		len(withSequences.Sequences.Differences) != 1 || withSequences.Sequences.Differences[0].Key != "public.tickets" ||
		withSequences.Sequences.Differences[0].Source != "2" {
		t.Errorf("verify --sequences: exit %d, %v, %+v\n%s", code, err, withSequences, stderr)
	}

	// Behind pgleap's back: a session lifts the target guard for itself.
	target.Exec(t, targetDB, `BEGIN READ WRITE;
		UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 17;
		DELETE FROM pairs WHERE a = 5 AND b = 'k3';
		INSERT INTO events VALUES (99999, '2026-02-01', 'new');
		COMMIT`)
	code, stdout, stderr = pgleap(t, nil, append(verifyArgs, "--show-rows")...)
	var r verifyReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != exitAnswerNo || r.Equal {
		t.Fatalf("verify after changing the target: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	var got []string
	for _, table := range r.Tables {
		if table.Equal {
			continue
		}
		for _, d := range table.Differences {
			got = append(got, table.Table+" "+d.Key+": "+d.What)
		}
	}
	want := []string{
		`"public"."events_2026" ("id", "at")=(99999,2026-02-01): only on the target`,
		`"public"."pairs" ("a", "b")=(5,k3): missing on the target`,
		`"public"."pgbench_accounts" ("aid")=(17): values differ`,
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("differences:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	code, stdout, _ = pgleap(t, nil, append([]string{"verify"}, conns...)...)
	if code != exitAnswerNo || !strings.Contains(stdout, `"public"."pgbench_accounts": DIFFERS`) || !strings.Contains(stdout, "the data differs in 3 of") {
		t.Errorf("verify's text report: exit %d\n%s", code, stdout)
	}
	if last := datatest.Scalar(t, targetConn, "SELECT equal FROM pgleap.verification ORDER BY id DESC LIMIT 1"); last != "false" {
		t.Errorf("the last recorded verification is equal=%s, want false", last)
	}
	if n := datatest.Scalar(t, targetConn, "SELECT count(*) FROM pgleap.verification WHERE equal"); n != "10" {
		t.Errorf("recorded equal verifications: %s, want 10", n)
	}
	code, stdout, _ = pgleap(t, nil, append([]string{"status"}, conns...)...)
	if code != exitOK || !strings.Contains(stdout, "last verification: ") || !strings.Contains(stdout, "the data differed in 3 of") {
		t.Errorf("status after verify: exit %d\n%s", code, stdout)
	}
	// A table made on the source after the copy is on the source only.
	source.Exec(t, sourceDB, "CREATE TABLE made_later (id int PRIMARY KEY)")
	code, stdout, stderr = pgleap(t, nil, verifyArgs...)
	r = verifyReport{}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != exitAnswerNo {
		t.Fatalf("verify with a table on the source only: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	var notOnTarget []string
	for _, table := range r.Tables {
		if table.Problem != "" {
			notOnTarget = append(notOnTarget, table.Table+": "+table.Problem)
		}
	}
	if want := []string{`"public"."made_later": the table is not on the target`}; !slices.Equal(notOnTarget, want) {
		t.Errorf("tables not on the target: %q, want %q", notOnTarget, want)
	}
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := migrate.Wait(); err != nil {
		t.Fatalf("migrate after Ctrl-C: %v\n%s", err, migrateOut)
	}
	// With nothing applying changes, the target cannot be brought to the source's snapshot.
	code, _, stderr = pgleap(t, nil, verifyArgs...)
	if code != exitCannotRun || !strings.Contains(stderr, "pgleap migrate is not streaming") {
		t.Errorf("verify with migrate stopped: exit %d, %s", code, stderr)
	}
	if hold := datatest.Scalar(t, targetConn, "SELECT hold_lsn FROM pgleap.replication"); hold != "" {
		t.Errorf("verify left a hold behind: %s", hold)
	}
}
