package assess

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pgtest"
)

// TestCleanSourceHasOnlyInfo: a well-prepared pair yields no blocker and no warning.
func TestCleanSourceHasOnlyInfo(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, `
		CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
		CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers, total numeric(12,2));
		INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100) g;
		ANALYZE`)
	r := p.check(t, Options{})
	if n := r.Count(Blocker) + r.Count(Warning); n != 0 {
		t.Fatalf("clean source: %d blockers and warnings, want none:\n%s", n, dump(r))
	}
	if r.Summary.Tables != 2 || r.Summary.TotalBytes <= 0 {
		t.Errorf("summary = %+v, want 2 tables with a size", r.Summary)
	}
	if r.Summary.Largest[0].Name != `"public"."customers"` || r.Summary.Largest[0].RowEstimate != 100 {
		t.Errorf("largest table = %+v, want public.customers with 100 rows", r.Summary.Largest[0])
	}
	if r.Source.Major != pgtest.SourceMajor() || r.Target.Major != pgtest.TargetMajor() {
		t.Errorf("versions = %d → %d, want %d → %d", r.Source.Major, r.Target.Major, pgtest.SourceMajor(), pgtest.TargetMajor())
	}
}

// TestReplicationSettings: a source that cannot stream at all, then the same source seen as
// a managed service, whose fix is a parameter group.
func TestReplicationSettings(t *testing.T) {
	settings := map[string]string{
		"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "1",
		"wal_sender_timeout": "10s",
	}
	if pgtest.SourceMajor() >= 13 {
		settings["max_slot_wal_keep_size"] = "-1"
		settings["logical_decoding_work_mem"] = "1MB"
	}
	source := pgtest.Start(t, pgtest.SourceMajor(), pgtest.Options{Settings: settings})
	p := pairOn(t, source, pgtest.Shared(t, pgtest.TargetMajor()))
	r := p.check(t, Options{})

	walLevel := requireFinding(t, r, "source.wal_level", Blocker, "wal_level")
	if !strings.Contains(walLevel.Fix, "ALTER SYSTEM SET wal_level = logical") {
		t.Errorf("self-managed wal_level fix = %q", walLevel.Fix)
	}
	requireFinding(t, r, "source.max_replication_slots", Warning, "max_replication_slots")
	requireFinding(t, r, "source.max_wal_senders", Warning, "max_wal_senders")
	requireFinding(t, r, "source.wal_sender_timeout", Warning, "wal_sender_timeout")
	if pgtest.SourceMajor() >= 13 {
		requireFinding(t, r, "source.max_slot_wal_keep_size", Warning, "max_slot_wal_keep_size")
		requireFinding(t, r, "source.logical_decoding_work_mem", Warning, "logical_decoding_work_mem")
	} else {
		requireFinding(t, r, "source.max_slot_wal_keep_size", Info, "max_slot_wal_keep_size")
	}

	// The same server playing the target: rollback needs logical there too.
	back := pairOn(t, pgtest.Shared(t, pgtest.SourceMajor()), source)
	requireFinding(t, back.check(t, Options{}), "target.wal_level", Warning, "wal_level")

	// RDS leaves an rds_superuser role behind; the fix becomes the parameter group.
	source.Exec(t, "postgres", "CREATE ROLE rds_superuser NOLOGIN")
	r = p.check(t, Options{})
	if r.Source.Managed != string(RDS) {
		t.Errorf("managed service = %q, want rds", r.Source.Managed)
	}
	walLevel = requireFinding(t, r, "source.wal_level", Blocker, "wal_level")
	if !strings.Contains(walLevel.Fix, "rds.logical_replication = 1 in the DB parameter group") {
		t.Errorf("RDS wal_level fix = %q, want the parameter group", walLevel.Fix)
	}
}

// TestSourcePrivileges: a role without REPLICATION that can read one table and owns none.
func TestSourcePrivileges(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, `CREATE TABLE secret (id int PRIMARY KEY); CREATE TABLE shared (id int PRIMARY KEY)`)
	role := createRole(t, p.source, p.sourceDB, "")
	p.sourceSQL(t, fmt.Sprintf("CREATE TABLE owned (id int PRIMARY KEY); ALTER TABLE owned OWNER TO %s; GRANT SELECT ON shared TO %s", role, role))

	r := runCheck(t, strings.Replace(p.source.ConnString(p.sourceDB), "user=postgres", "user="+role, 1),
		p.target.ConnString(p.targetDB), Options{})
	requireFinding(t, r, "source.replication_privilege", Blocker, `"`+role+`"`)
	requireFinding(t, r, "source.publication_privilege", Blocker, `"`+p.sourceDB+`"`)
	requireFinding(t, r, "source.table_privilege", Blocker, `"public"."secret"`)
	requireNoFinding(t, r, "source.table_privilege", `"public"."shared"`)
	requireNoFinding(t, r, "source.table_privilege", `"public"."owned"`)
	requireFinding(t, r, "source.publication_privilege", Blocker, `"public"."shared"`)
	requireNoFinding(t, r, "source.publication_privilege", `"public"."owned"`)

	// The superuser may do all of it.
	r = p.check(t, Options{})
	requireNoFinding(t, r, "source.replication_privilege", "")
	requireNoFinding(t, r, "source.publication_privilege", "")
	requireNoFinding(t, r, "source.table_privilege", "")
}

func TestCaseCollisions(t *testing.T) {
	p := newPair(t)
	p.sourceSQL(t, `
		CREATE TABLE "Orders" (id int PRIMARY KEY);
		CREATE TABLE orders (id int PRIMARY KEY, "Total" int, total int);
		CREATE TABLE unique_name (id int PRIMARY KEY)`)
	r := p.check(t, Options{})
	requireFinding(t, r, "source.case_collision", Warning, `"public"."Orders"`)
	requireFinding(t, r, "source.case_collision", Warning, `"public"."orders"`) // its columns
	requireNoFinding(t, r, "source.case_collision", `"public"."unique_name"`)
	// Excluding one of the pair removes the collision from the migration.
	r = p.check(t, Options{Tables: tablesExcluding("public.Orders")})
	requireNoFinding(t, r, "source.case_collision", `"public"."Orders"`)
}

// TestSessions: an idle-in-transaction session and a forgotten prepared transaction delay
// slot creation; they are listed, and gone once ended.
func TestSessions(t *testing.T) {
	source := pgtest.Start(t, pgtest.SourceMajor(), pgtest.Options{Settings: map[string]string{"max_prepared_transactions": "2"}})
	p := pairOn(t, source, pgtest.Shared(t, pgtest.TargetMajor()))
	ctx := context.Background()

	r := p.check(t, Options{})
	requireNoFinding(t, r, "source.long_transaction", "")
	requireNoFinding(t, r, "source.prepared_transaction", "")

	idle := source.Conn(t, p.sourceDB)
	var pid int
	if err := idle.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Exec(ctx, "BEGIN; SELECT txid_current()"); err != nil {
		t.Fatal(err)
	}
	prepared := source.Conn(t, p.sourceDB)
	if _, err := prepared.Exec(ctx, "BEGIN; CREATE TABLE half_done (id int); PREPARE TRANSACTION 'pgleap-test-gid'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { source.Exec(t, p.sourceDB, "ROLLBACK PREPARED 'pgleap-test-gid'") })
	// An active transaction older than the threshold is reported too.
	busy := source.Conn(t, p.sourceDB)
	busyDone := make(chan error, 1)
	go func() { _, err := busy.Exec(ctx, "SELECT pg_sleep(3)"); busyDone <- err }()
	time.Sleep(500 * time.Millisecond)

	r = p.check(t, Options{LongTransactionAge: 200 * time.Millisecond})
	f := requireFinding(t, r, "source.long_transaction", Warning, fmt.Sprintf("pid %d", pid))
	if !strings.Contains(f.Why, "idle in transaction") {
		t.Errorf("idle session finding does not say it is idle: %s", f.Why)
	}
	if n := len(findingsOf(r, "source.long_transaction")); n != 2 {
		t.Errorf("%d long_transaction findings, want 2 (idle and busy):\n%s", n, dump(r))
	}
	requireFinding(t, r, "source.prepared_transaction", Warning, "'pgleap-test-gid'")
	if err := <-busyDone; err != nil {
		t.Fatal(err)
	}
}

func tablesExcluding(patterns ...string) (f config.TableFilter) {
	f.Exclude = patterns
	return f
}
