package assess

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// pair is a source and a target database, fresh for one test.
type pair struct {
	source, target     *pgtest.Server
	sourceDB, targetDB string
}

// newPair takes fresh databases on the package's shared source and target servers.
func newPair(t *testing.T) pair {
	t.Helper()
	return pairOn(t, pgtest.Shared(t, pgtest.SourceMajor()), pgtest.Shared(t, pgtest.TargetMajor()))
}

func pairOn(t *testing.T, source, target *pgtest.Server) pair {
	t.Helper()
	return pair{source: source, target: target, sourceDB: source.CreateDatabase(t), targetDB: target.CreateDatabase(t)}
}

func (p pair) sourceSQL(t *testing.T, sql string) { t.Helper(); p.source.Exec(t, p.sourceDB, sql) }
func (p pair) targetSQL(t *testing.T, sql string) { t.Helper(); p.target.Exec(t, p.targetDB, sql) }

// check runs the assessment as the superuser on both sides.
func (p pair) check(t *testing.T, opts Options) *Report {
	t.Helper()
	return runCheck(t, p.source.ConnString(p.sourceDB), p.target.ConnString(p.targetDB), opts)
}

// runCheck runs the assessment over read-only connections, as pgleap check does.
func runCheck(t *testing.T, sourceConn, targetConn string, opts Options) *Report {
	t.Helper()
	ctx := context.Background()
	connect := func(side pg.Side, connString string) *pgx.Conn {
		cfg, err := pg.ParseConfig(side, connString)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range ReadOnlySettings {
			cfg.RuntimeParams[k] = v
		}
		conn, err := pg.ConnectConfig(ctx, side, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		return conn
	}
	report, err := Run(ctx, connect(pg.Source, sourceConn), connect(pg.Target, targetConn), opts)
	if err != nil {
		t.Fatalf("assess.Run: %v", err)
	}
	return report
}

func findingsOf(r *Report, check string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// requireFinding fails unless the report has check on object with severity, and returns it.
func requireFinding(t *testing.T, r *Report, check string, severity Severity, object string) Finding {
	t.Helper()
	for _, f := range findingsOf(r, check) {
		if f.Object == object {
			if f.Severity != severity {
				t.Errorf("%s on %s: severity %s, want %s", check, object, f.Severity, severity)
			}
			if f.Why == "" || f.Fix == "" {
				t.Errorf("%s on %s: finding without why or fix: %+v", check, object, f)
			}
			return f
		}
	}
	t.Fatalf("no %s finding on %s; findings:\n%s", check, object, dump(r))
	return Finding{}
}

func requireNoFinding(t *testing.T, r *Report, check, object string) {
	t.Helper()
	for _, f := range findingsOf(r, check) {
		if object == "" || f.Object == object {
			t.Errorf("unexpected %s finding on %s: %s", check, f.Object, f.Why)
		}
	}
}

func dump(r *Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "  %-8s %-36s %s\n", f.Severity, f.Check, f.Object)
	}
	return b.String()
}

var roleSeq atomic.Int64

// createRole makes a login role on s, dropped with everything it owns when the test ends.
func createRole(t *testing.T, s *pgtest.Server, db, attributes string) string {
	t.Helper()
	name := fmt.Sprintf("pgleap_role_%d_%d", s.Port, roleSeq.Add(1))
	s.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN %s", name, attributes))
	t.Cleanup(func() {
		s.Exec(t, db, fmt.Sprintf("DROP OWNED BY %s", name))
		s.Exec(t, "postgres", fmt.Sprintf("DROP OWNED BY %s; DROP ROLE %s", name, name))
	})
	return name
}
