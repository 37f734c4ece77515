package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgleap/pgleap/internal/pgtest"
)

// environment is what the report says the figures were measured on.
type environment struct {
	machine  string
	versions []string
	jobs     int
	rounds   int
	total    time.Duration
}

// describe reads the machine and the versions of the servers and tools.
func (b *bench) describe(ctx context.Context) (environment, error) {
	env := environment{machine: machine(), jobs: b.cfg.jobs, rounds: b.cfg.rounds}
	for _, s := range []struct {
		role   string
		server *pgtest.Server
	}{{"source", b.source}, {"target", b.target}} {
		var v string
		if err := queryRow(ctx, s.server, "postgres", stmt("SELECT current_setting('server_version')"), &v); err != nil {
			return env, fmt.Errorf("read the %s's version: %w", s.role, err)
		}
		env.versions = append(env.versions, fmt.Sprintf("%s PostgreSQL %s", s.role, v))
	}
	programs := [][]string{{"pg_dump", "--version"}, {"pg_restore", "--version"}, {"psql", "--version"}, {"pgbench", "--version"}}
	if b.selected("pgcopydb") && b.pgcopydbErr == nil {
		programs = append(programs, []string{"pgcopydb", "--version"})
	}
	if b.selected("pgleap") && b.pgleapErr == nil {
		programs = append(programs, []string{b.pgleapBin, "--version"})
	}
	for _, p := range programs {
		env.versions = append(env.versions, programVersion(ctx, p[0], p[1:]...))
	}
	env.versions = append(env.versions, "harness built with "+runtime.Version())
	return env, nil
}

// programVersion is the first line a program prints about its version (pgcopydb prints it on
// stdout and its log on stderr, so stdout alone).
func programVersion(ctx context.Context, name string, args ...string) string {
	out, err := command(ctx, name, args...).Output()
	if err != nil {
		return fmt.Sprintf("%s: version unknown (%v)", filepath.Base(name), err)
	}
	return firstLine(string(out))
}

// machine is the CPU count and model and the memory, from /proc.
func machine() string {
	model := "unknown CPU"
	if cpuinfo, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(cpuinfo), "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				model = strings.TrimSpace(value)
				break
			}
		}
	}
	memory := "unknown memory"
	if meminfo, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for line := range strings.SplitSeq(string(meminfo), "\n") {
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				memory = fmt.Sprintf("%.1f GiB memory", float64(kb)/(1<<20))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s, %s/%s", runtime.NumCPU(), model, memory, runtime.GOOS, runtime.GOARCH)
}

// printReport prints the seconds of every load, pgleap's ratios and what went wrong.
func printReport(w io.Writer, env environment, datasets []*dataset, tools []tool, results []result) {
	byKey := map[[2]string]result{}
	for _, r := range results {
		byKey[[2]string{r.dataset, r.tool}] = r
	}
	fmt.Fprintf(w, "\nFull load benchmark, %d jobs per tool, finished in %s\n", env.jobs, env.total.Round(time.Second))
	fmt.Fprintf(w, "machine: %s\n", env.machine)
	fmt.Fprintf(w, "both servers: %s\n", settingsLine())
	for _, v := range env.versions {
		fmt.Fprintf(w, "  %s\n", v)
	}
	for _, ds := range datasets {
		fmt.Fprintf(w, "dataset %s: %s; %d MB on the source\n", ds.name, ds.detail, ds.size>>20)
	}

	fmt.Fprintf(w, "\nseconds, wall clock, until rows, indexes and constraints are in:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprint(tw, "dataset")
	for _, t := range tools {
		fmt.Fprintf(tw, "\t%s", t.name)
	}
	fmt.Fprintln(tw)
	for _, ds := range datasets {
		fmt.Fprint(tw, ds.name)
		for _, t := range tools {
			fmt.Fprintf(tw, "\t%s", cell(byKey[[2]string{ds.name, t.name}]))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()

	if env.rounds > 1 {
		fmt.Fprintf(w, "\nmedian of %d rounds; every round, in seconds:\n", env.rounds)
		for _, ds := range datasets {
			for _, t := range tools {
				r := byKey[[2]string{ds.name, t.name}]
				var times []string
				for _, d := range r.rounds {
					times = append(times, fmt.Sprintf("%.1f", seconds(d)))
				}
				fmt.Fprintf(w, "  %s %s: %s\n", ds.name, t.name, strings.Join(times, " "))
			}
		}
	}
	if slices.ContainsFunc(tools, func(t tool) bool { return t.name == "pgleap" }) {
		fmt.Fprintf(w, "\npgleap's time / other tool's time (goal: at most %.2f of the fastest other):\n", goalRatio)
		for _, ds := range datasets {
			fmt.Fprintf(w, "%s: %s\n", ds.name, ratios(ds.name, tools, byKey))
		}
		fmt.Fprintf(w, "\npgleap's peak RSS (goal: well under %d MB):", rssGoalMB)
		for _, ds := range datasets {
			fmt.Fprintf(w, " %s %d MB", ds.name, byKey[[2]string{ds.name, "pgleap"}].peakRSS>>20)
		}
		fmt.Fprintln(w)
	}
	printProblems(w, results)
}

// settingsLine lists the servers' settings, name=value, sorted.
func settingsLine() string {
	settings := serverSettings()
	var pairs []string
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		pairs = append(pairs, name+"="+settings[name])
	}
	return strings.Join(pairs, " ")
}

// cell is one load's figure in the table.
func cell(r result) string {
	switch {
	case r.err != nil:
		return "failed"
	case len(r.problems) > 0:
		return fmt.Sprintf("INVALID (%.1f)", seconds(r.elapsed))
	default:
		return fmt.Sprintf("%.1f", seconds(r.elapsed))
	}
}

// ratios compares pgleap's valid load of a dataset with the other tools' valid loads.
func ratios(dataset string, tools []tool, byKey map[[2]string]result) string {
	mine := byKey[[2]string{dataset, "pgleap"}]
	if !mine.valid() {
		return "no valid pgleap load to compare"
	}
	var parts []string
	var best result
	for _, t := range tools {
		other := byKey[[2]string{dataset, t.name}]
		if t.name == "pgleap" || !other.valid() {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", t.name, mine.elapsed.Seconds()/other.elapsed.Seconds()))
		if best.tool == "" || other.elapsed < best.elapsed {
			best = other
		}
	}
	if best.tool == "" {
		return "no valid load by another tool to compare"
	}
	ratio := mine.elapsed.Seconds() / best.elapsed.Seconds()
	verdict := "goal met"
	if ratio > goalRatio {
		verdict = "goal NOT met"
	}
	return fmt.Sprintf("%s; fastest other %s (%.1f s): %.2f, %s", strings.Join(parts, ", "), best.tool, seconds(best.elapsed), ratio, verdict)
}

// printProblems lists failures, incomplete copies and what the harness cleaned up.
func printProblems(w io.Writer, results []result) {
	header := false
	for _, r := range results {
		if r.valid() && len(r.notes) == 0 {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nfailures and notes:\n")
			header = true
		}
		if r.err != nil {
			fmt.Fprintf(w, "%s %s: FAILED after %.1f s: %s\n", r.dataset, r.tool, seconds(r.elapsed), indent(r.err.Error()))
		}
		for _, p := range r.problems {
			fmt.Fprintf(w, "%s %s: INVALID: %s\n", r.dataset, r.tool, p)
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "%s %s: note: %s\n", r.dataset, r.tool, n)
		}
	}
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n  ") }
