package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestWatchingAMigration runs pgleap migrate --http while the source takes writes, and
// watches it the ways people would: Prometheus scrapes /metrics, pgleap status --json
// reads the state from outside, and a headless browser opens the status page. It breaks the
// stream once, and the problem shows in status and in the metrics.
func TestWatchingAMigration(t *testing.T) {
	source, target := pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor())
	sourceDB, targetDB := source.CreateDatabase(t), target.CreateDatabase(t)
	source.Exec(t, sourceDB, `CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
		INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 1000) g;
		CREATE TABLE history (id bigserial PRIMARY KEY, account int NOT NULL, delta int NOT NULL)`)
	sourceConn, targetConn := source.ConnString(sourceDB), target.ConnString(targetDB)

	var written atomic.Int64
	writerCtx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan error, 1)
	go func() { writerDone <- writeTransfers(writerCtx, sourceConn, &written) }()
	defer stopWriter()

	migrate, out := startCLI(t, "migrate", "--jobs", "2", "--source", sourceConn, "--target", targetConn,
		"--http", "127.0.0.1:0", "--status-interval", "200ms", "--log-format", "json", "--alert-slot-wal", "1MB")
	var base string
	waitFor(t, "the status page's address", func() bool {
		base = statusPageURL(out.String())
		return base != ""
	})
	waitFor(t, "streaming", func() bool { return datatest.Scalar(t, sourceConn, streamingSQL) == "1" })

	if body := httpGet(t, base+"healthz"); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %q", body)
	}

	// The metrics move while data flows.
	var first map[string]*dto.MetricFamily
	waitFor(t, "metrics of a streaming migration", func() bool {
		first = scrape(t, base)
		return metricValue(first, "pgleap_phase", "phase", "streaming") == 1 && metricValue(first, "pgleap_applied_transactions_total") > 0
	})
	if got := metricValue(first, "pgleap_table_copied_rows_total", "table", "accounts"); got != 1000 {
		t.Errorf("pgleap_table_copied_rows_total{table=accounts} = %v, want 1000", got)
	}
	if got := metricValue(first, "pgleap_table_copied_bytes_total", "table", "accounts"); got <= 0 {
		t.Errorf("pgleap_table_copied_bytes_total{table=accounts} = %v, want the bytes read", got)
	}
	// The slot keeps more WAL than --alert-slot-wal: the alert holds, and is logged as a warning.
	waitFor(t, "the slot_wal alert", func() bool { return metricValue(scrape(t, base), "pgleap_alert", "alert", "slot_wal") == 1 })
	waitFor(t, "the slot_wal warning in pgleap.event", func() bool {
		return datatest.Scalar(t, targetConn, "SELECT count(*) FROM pgleap.event WHERE level = 'warn' AND attrs->>'alert' = 'slot_wal'") == "1"
	})
	if got := metricValue(scrape(t, base), "pgleap_alert", "alert", "lag_growing"); got != 0 {
		t.Errorf("pgleap_alert{alert=lag_growing} = %v, want 0", got)
	}
	for _, name := range []string{"pgleap_apply_lag_bytes", "pgleap_apply_lag_seconds", "pgleap_slot_retained_bytes", "pgleap_errors_total"} {
		if metricValue(first, name) < 0 {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	waitFor(t, "the applied counters to move", func() bool {
		later := scrape(t, base)
		return metricValue(later, "pgleap_applied_transactions_total") > metricValue(first, "pgleap_applied_transactions_total") &&
			metricValue(later, "pgleap_applied_changes_total") > metricValue(first, "pgleap_applied_changes_total") &&
			metricValue(later, "pgleap_applied_lsn") > metricValue(first, "pgleap_applied_lsn")
	})

	// pgleap status --json, from outside, agrees with the state it reads.
	appliedBefore := datatest.Scalar(t, targetConn, "SELECT applied_lsn::text FROM pgleap.replication")
	code, stdout, stderr := pgleap(t, nil, "status", "--json", "--source", sourceConn, "--target", targetConn, "--sample", "300ms")
	appliedAfter := datatest.Scalar(t, targetConn, "SELECT applied_lsn::text FROM pgleap.replication")
	var st struct {
		Phase      string   `json:"phase"`
		LagBytes   *int64   `json:"lag_bytes"`
		LagSeconds *float64 `json:"lag_seconds"`
		AppliedLSN string   `json:"applied_lsn"`
		TPS        *float64 `json:"transactions_per_second"`
		Tables     []struct {
			Name        string `json:"name"`
			State       string `json:"state"`
			RowsCopied  int64  `json:"rows_copied"`
			BytesCopied int64  `json:"bytes_copied"`
		} `json:"tables"`
		RecentErrors []struct {
			Message string         `json:"message"`
			Attrs   map[string]any `json:"attrs"`
		} `json:"recent_errors"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); code != exitOK || err != nil {
		t.Fatalf("status: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if phase := datatest.Scalar(t, targetConn, "SELECT phase FROM pgleap.migration"); st.Phase != phase {
		t.Errorf("status phase %q, the state's %q", st.Phase, phase)
	}
	if !lsnAtLeast(t, st.AppliedLSN, appliedBefore) || !lsnAtLeast(t, appliedAfter, st.AppliedLSN) {
		t.Errorf("status applied_lsn %s, the state's went from %s to %s meanwhile", st.AppliedLSN, appliedBefore, appliedAfter)
	}
	if st.LagBytes == nil || st.LagSeconds == nil || st.TPS == nil || *st.TPS <= 0 {
		t.Errorf("status while streaming and writing: lag %v bytes, %v s, %v transactions/s", st.LagBytes, st.LagSeconds, st.TPS)
	}
	copied := map[string]string{}
	for _, tbl := range st.Tables {
		copied[tbl.Name] = fmt.Sprintf("%s %d rows %t", tbl.State, tbl.RowsCopied, tbl.BytesCopied > 0)
	}
	want := datatest.Scalar(t, targetConn, `SELECT string_agg(format('%I.%I=copied %s rows %s', table_schema, table_name, rows, (bytes > 0)::text), ' ' ORDER BY table_name)
		FROM (SELECT table_schema, table_name, sum(rows_copied) AS rows, sum(bytes_copied) AS bytes FROM pgleap.copy_item GROUP BY 1, 2) t`)
	if got := fmt.Sprintf("public.accounts=%s public.history=%s", copied[`"public"."accounts"`], copied[`"public"."history"`]); got != want {
		t.Errorf("status tables: %s; the state's: %s", got, want)
	}

	// --watch reads again and again until Ctrl-C: one JSON object per line.
	watchCtx, stopWatching := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	var watched, watchErr strings.Builder
	code = run(watchCtx, []string{"status", "--watch", "--json", "--every", "300ms", "--sample", "100ms", "--target", targetConn},
		&watched, &watchErr, func(string) string { return "" })
	stopWatching()
	lines := strings.Split(strings.TrimSpace(watched.String()), "\n")
	if code != exitOK || len(lines) < 3 || !json.Valid([]byte(lines[0])) || !strings.Contains(lines[len(lines)-1], `"phase":"streaming"`) {
		t.Errorf("status --watch --json: exit %d, %d lines:\n%s%s", code, len(lines), watched.String(), watchErr.String())
	}

	// A lost walsender is retried; the problem shows in status and is counted.
	errorsBefore := metricValue(scrape(t, base), "pgleap_errors_total")
	datatest.Exec(t, sourceConn, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'pgleap_stream'")
	waitFor(t, "the interruption in pgleap.event", func() bool {
		return datatest.Scalar(t, targetConn, "SELECT count(*) FROM pgleap.event WHERE message LIKE 'streaming interrupted%'") != "0"
	})
	if got := metricValue(scrape(t, base), "pgleap_errors_total"); got <= errorsBefore {
		t.Errorf("pgleap_errors_total went from %v to %v over a lost walsender", errorsBefore, got)
	}
	_, stdout, _ = pgleap(t, nil, "status", "--target", targetConn)
	if !strings.Contains(stdout, "recent problems") || !strings.Contains(stdout, "streaming interrupted") {
		t.Errorf("status does not show the lost walsender:\n%s", stdout)
	}
	waitFor(t, "streaming again", func() bool { return datatest.Scalar(t, sourceConn, streamingSQL) == "1" })

	var history []struct {
		TPS *float64 `json:"transactions_per_second"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, base+"history")), &history); err != nil || len(history) < 2 {
		t.Errorf("/history: %d samples, %v", len(history), err)
	}

	openStatusPage(t, base)

	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := migrate.Wait(); err != nil {
		t.Fatalf("migrate after Ctrl-C: %v\n%s", err, out)
	}
	// The log is JSON, one object per line, for collectors.
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if strings.HasPrefix(line, "{") && !json.Valid([]byte(line)) {
			t.Errorf("a log line is not JSON: %s", line)
		}
	}
}

// openStatusPage opens the status page in headless Chromium: it must show the phase and a
// lag chart that grows as samples come. A screenshot is left for people to look at.
func openStatusPage(t *testing.T, base string) {
	t.Helper()
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s: %v: run make deps (scripts/install-postgres.sh --browser) to install it", chromium, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true), chromedp.WindowSize(1280, 1100))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	run := func(what string, action func() error) {
		t.Helper()
		if err := action(); err != nil {
			t.Fatalf("status page: %s: %v", what, err)
		}
	}
	var phase string
	var before, after int
	var screenshot []byte
	chartPoints := chromedp.Evaluate[int](`+document.getElementById("lag-chart").dataset.points`)
	run("open", func() (err error) { _, err = chromedp.Run(ctx, chromedp.Navigate(base)); return err })
	run("wait for the phase and a first sample", func() (err error) {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("phase").textContent === "streaming" && +document.getElementById("lag-chart").dataset.points > 0`))
		return err
	})
	run("read the phase", func() (err error) { phase, err = chromedp.Run(ctx, chromedp.Text("#phase")); return err })
	run("count the chart's points", func() (err error) { before, err = chromedp.Run(ctx, chartPoints); return err })
	run("wait for the chart to grow", func() (err error) {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`+document.getElementById("lag-chart").dataset.points > %d && document.querySelector("#lag-chart polyline") !== null`, before)))
		return err
	})
	run("count the chart's points again", func() (err error) { after, err = chromedp.Run(ctx, chartPoints); return err })
	run("take a screenshot", func() (err error) { screenshot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); return err })
	path := filepath.Join(t.ArtifactDir(), "status-page.png")
	if err := os.WriteFile(path, screenshot, 0o644); err != nil {
		t.Fatal(err)
	}
	if phase != "streaming" {
		t.Errorf("status page phase %q, want streaming", phase)
	}
	t.Logf("status page: phase %q, lag chart %d then %d points; screenshot %s", phase, before, after, path)
}

var statusURLPattern = regexp.MustCompile(`"msg":"serving the status page","url":"(http://[^"]+)"`)

func statusPageURL(log string) string {
	if m := statusURLPattern.FindStringSubmatch(log); m != nil {
		return m[1]
	}
	return ""
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v: %s", url, resp.Status, err, body)
	}
	return string(body)
}

// scrape reads /metrics as Prometheus does.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(httpGet(t, base+"metrics")))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// metricValue is the value of the metric name with the label pair given, -1 when there is
// none.
func metricValue(families map[string]*dto.MetricFamily, name string, label ...string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
	for _, m := range f.GetMetric() {
		if len(label) == 2 && !hasLabel(m, label[0], label[1]) {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
	}
	return -1
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
