package pg

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestSessionSettingsHoldOnEveryConnection: the settings that make text forms round-trip are
// in force as soon as a connection opens, whatever the server's own configuration says.
func TestSessionSettingsHoldOnEveryConnection(t *testing.T) {
	for _, major := range []int{pgtest.SourceMajor(), pgtest.TargetMajor()} {
		s := pgtest.Shared(t, major)
		s.Exec(t, "postgres", "ALTER DATABASE postgres SET TimeZone = 'America/New_York'")
		t.Cleanup(func() { s.Exec(t, "postgres", "ALTER DATABASE postgres RESET TimeZone") })
		ctx := context.Background()
		conn, err := Connect(ctx, Source, s.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for name, want := range SessionSettings {
			var got string
			if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, want) { // DateStyle reads back as "ISO, MDY"
				t.Errorf("PostgreSQL %d: %s = %q, want %q", major, name, got, want)
			}
		}
		var ts string
		if err := conn.QueryRow(ctx, "SELECT '2026-03-29 01:30:00+01'::timestamptz::text").Scan(&ts); err != nil {
			t.Fatal(err)
		}
		if ts != "2026-03-29 00:30:00+00" {
			t.Errorf("PostgreSQL %d: timestamptz text = %q, want it in UTC", major, ts)
		}
		version, err := ServerVersion(ctx, conn)
		if err != nil || version.Major != major {
			t.Errorf("ServerVersion = %v, %v; want major %d", version, err, major)
		}
		settings, err := Settings(ctx, conn, "wal_level", "no_such_setting")
		if err != nil || settings["wal_level"] != "logical" || len(settings) != 1 {
			t.Errorf("Settings = %v, %v", settings, err)
		}
	}
}

func TestConnectErrorNamesSideAndServerMessage(t *testing.T) {
	s := pgtest.Shared(t, pgtest.TargetMajor())
	_, err := Connect(context.Background(), Target, strings.Replace(s.ConnString("postgres"), "dbname=postgres", "dbname=no_such_db", 1)+" password=s3cret")
	var connectErr *ConnectError
	if !errors.As(err, &connectErr) {
		t.Fatalf("err = %v, want a *ConnectError", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
		t.Errorf("the server's error is not reachable: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"connect to target at 127.0.0.1:", `"no_such_db" does not exist`, "--target"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "s3cret") || strings.Contains(msg, "\n") {
		t.Errorf("error leaks the password or spans lines: %q", msg)
	}
}

func TestVersionFromNum(t *testing.T) {
	for num, want := range map[int]Version{130023: {13, 23}, 170010: {17, 10}, 120000: {12, 0}, 180004: {18, 4}} {
		if got := VersionFromNum(num); got != want {
			t.Errorf("VersionFromNum(%d) = %v, want %v", num, got, want)
		}
	}
}

func TestQuoting(t *testing.T) {
	tests := map[string]string{
		QuoteIdent("orders"):             `"orders"`,
		QuoteIdent(`we"ird`):             `"we""ird"`,
		QualifiedName("Sales", "select"): `"Sales"."select"`,
		QuoteLiteral("it's"):             `'it''s'`,
	}
	for got, want := range tests {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

// A slot that is dropped, or that the source invalidates for keeping more WAL than
// max_slot_wal_keep_size, is lost, with what to do; a healthy one is not.
func TestCheckSlot(t *testing.T) {
	if pgtest.SourceMajor() < 13 {
		t.Skip("max_slot_wal_keep_size came in PostgreSQL 13")
	}
	s := pgtest.Start(t, pgtest.SourceMajor(), pgtest.Options{Settings: map[string]string{"max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB"}})
	ctx := context.Background()
	conn := s.Conn(t, "postgres")
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('healthy', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
	if err := CheckSlot(ctx, conn, "healthy"); err != nil {
		t.Errorf("a new slot: %v", err)
	}
	if err := CheckSlot(ctx, conn, "never_made"); !errors.Is(err, ErrSlotLost) || !strings.Contains(err.Error(), "gone from the source") {
		t.Errorf("a missing slot: %v", err)
	}
	// Write past the limit and checkpoint: the source removes the WAL the slot still needs.
	for range 4 {
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS filler (x text); INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000); SELECT pg_switch_wal(); CHECKPOINT"); err != nil {
			t.Fatal(err)
		}
	}
	err := CheckSlot(ctx, conn, "healthy")
	if !errors.Is(err, ErrSlotLost) || !strings.Contains(err.Error(), "max_slot_wal_keep_size") {
		t.Errorf("a slot past max_slot_wal_keep_size: %v", err)
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tt := range []struct{ conn, db, want string }{
		{"host=db1 user=migrator", "shop", "shop"},
		{"host=db1 dbname=postgres user=migrator", "shop", "shop"},
		{"host=db1 dbname=postgres", `it's "odd"`, `it's "odd"`},
		{"postgres://migrator@db1:5432/postgres?sslmode=disable", "shop", "shop"},
		{"postgresql://db1", "a b", "a b"},
		{"postgres://db1/postgres?dbname=other&sslmode=disable", "shop", "shop"},
	} {
		got := WithDatabase(tt.conn, tt.db)
		cfg, err := pgx.ParseConfig(got)
		if err != nil || cfg.Database != tt.want || cfg.Host != "db1" {
			t.Errorf("WithDatabase(%q, %q) = %q: database %q, host %q, %v", tt.conn, tt.db, got, cfg.Database, cfg.Host, err)
		}
	}
}
