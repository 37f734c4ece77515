package pgtest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The pair of majors the suite migrates between, unless the environment says otherwise.
const (
	DefaultSourceMajor = 13
	DefaultTargetMajor = 17
)

// SourceMajor is the source major under test ($PGLEAP_TEST_SOURCE, default 13).
func SourceMajor() int { return majorFromEnv("PGLEAP_TEST_SOURCE", DefaultSourceMajor) }

// TargetMajor is the target major under test ($PGLEAP_TEST_TARGET, default 17).
func TargetMajor() int { return majorFromEnv("PGLEAP_TEST_TARGET", DefaultTargetMajor) }

func majorFromEnv(name string, fallback int) int {
	value := os.Getenv(name)
	if value == "" {
		return fallback
	}
	major, err := strconv.Atoi(value)
	if err != nil || major < 12 || major > 18 {
		panic(fmt.Sprintf("%s=%q: want a PostgreSQL major from 12 to 18", name, value))
	}
	return major
}

// Start launches a server of major for this test alone and stops it when the test ends.
func Start(t testing.TB, major int, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s, err := Launch(context.Background(), major, o)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL %d server log:\n%s", major, s.Log())
		}
		if err := s.Stop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s
}

var shared struct {
	sync.Mutex
	servers map[int]*Server
}

// Shared returns the package's server of major, starting it on first use. Main stops it.
func Shared(t testing.TB, major int) *Server {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if s := shared.servers[major]; s != nil {
		return s
	}
	s, err := Launch(context.Background(), major, Options{})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if shared.servers == nil {
		shared.servers = map[int]*Server{}
	}
	shared.servers[major] = s
	return s
}

// Main runs the package's tests and then stops the servers Shared started. Call it from
// TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	shared.Lock()
	for major, s := range shared.servers {
		if err := s.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			code = 1
		}
		delete(shared.servers, major)
	}
	shared.Unlock()
	os.Exit(code)
}

var databaseSeq atomic.Int64

var unsafeInName = regexp.MustCompile(`[^a-z0-9_]+`)

// CreateDatabase creates an empty database for this test, named after it, and drops it when
// the test ends.
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	base := strings.Trim(unsafeInName.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name := fmt.Sprintf("t%d_%s", databaseSeq.Add(1), base)
	s.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	t.Cleanup(func() { s.dropDatabase(t, name) })
	return name
}

// dropDatabase drops db even while sessions or replication slots still use it. DROP DATABASE
// ... WITH (FORCE) would do the first part, but only from major 13 on.
func (s *Server) dropDatabase(t testing.TB, db string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.ConnString("postgres"))
	if err != nil {
		t.Errorf("pgtest: drop database %s: %v", db, err)
		return
	}
	defer conn.Close(ctx)
	for _, sql := range []string{
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
		"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active",
	} {
		if _, err := conn.Exec(ctx, sql, db); err != nil {
			t.Errorf("pgtest: drop database %s: %v", db, err)
		}
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()); err != nil {
		t.Errorf("pgtest: drop database %s: %v", db, err)
	}
}

// Conn opens a superuser connection to database db, closed when the test ends.
func (s *Server) Conn(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		t.Fatalf("pgtest: connect to PostgreSQL %d database %s: %v", s.Major, db, err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// Exec runs sql (several statements allowed) in database db as the superuser.
func (s *Server) Exec(t testing.TB, db, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.ConnString(db))
	if err != nil {
		t.Fatalf("pgtest: connect to PostgreSQL %d database %s: %v", s.Major, db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: PostgreSQL %d database %s: %v\nSQL: %s", s.Major, db, err, sql)
	}
}
