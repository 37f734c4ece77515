package state

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestStateLifecycle(t *testing.T) {
	s := pgtest.Shared(t, pgtest.TargetMajor())
	conn := s.Conn(t, s.CreateDatabase(t))
	ctx := context.Background()

	if exists, err := Exists(ctx, conn); err != nil || exists {
		t.Fatalf("Exists on a fresh database = %v, %v", exists, err)
	}
	for range 2 { // a second Init changes nothing
		if err := Init(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	m := Migration{SourceDatabase: "shop", SourceMajor: 13, Exclude: []string{"archive.*"}}
	if err := Begin(ctx, conn, m); err != nil {
		t.Fatal(err)
	}
	if err := Begin(ctx, conn, m); err != nil {
		t.Fatalf("resuming the same migration: %v", err)
	}
	other := m
	other.Exclude = nil
	if err := Begin(ctx, conn, other); !errors.Is(err, ErrOtherMigration) {
		t.Fatalf("Begin with another selection = %v, want ErrOtherMigration", err)
	}
	got, ok, err := LoadMigration(ctx, conn)
	if err != nil || !ok || got.SourceDatabase != "shop" || got.Exclude[0] != "archive.*" {
		t.Fatalf("LoadMigration = %+v, %v, %v", got, ok, err)
	}

	// The first archive stays: a resumed run must not restore a different dump.
	first, err := SaveArchive(ctx, conn, []byte("first"), "pg_dump 15", nil)
	if err != nil || string(first) != "first" {
		t.Fatalf("SaveArchive = %q, %v", first, err)
	}
	kept, err := SaveArchive(ctx, conn, []byte("second"), "pg_dump 15", nil)
	if err != nil || string(kept) != "first" {
		t.Fatalf("second SaveArchive = %q, %v; want the first kept", kept, err)
	}

	// A step recorded in a transaction that rolls back is not done.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := RecordStep(ctx, tx, "roles"); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return RecordStep(ctx, tx, "pre-data") })
	if err != nil {
		t.Fatal(err)
	}
	done, err := DoneSteps(ctx, conn)
	if err != nil || done["roles"] || !done["pre-data"] {
		t.Fatalf("DoneSteps = %v, %v; want pre-data only", done, err)
	}

	// A newer pgleap's state is refused.
	if _, err := conn.Exec(ctx, "UPDATE pgleap.state_version SET version = $1", Version+1); err != nil {
		t.Fatal(err)
	}
	if err := Init(ctx, conn); !errors.Is(err, ErrNewerState) {
		t.Fatalf("Init over newer state = %v, want ErrNewerState", err)
	}
}

func TestReplicationRecord(t *testing.T) {
	s := pgtest.Shared(t, pgtest.TargetMajor())
	conn := s.Conn(t, s.CreateDatabase(t))
	ctx := context.Background()
	if err := Init(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := LoadReplication(ctx, conn); err != nil || ok {
		t.Fatalf("LoadReplication before any plan = %v, %v", ok, err)
	}
	first, err := PlanReplication(ctx, conn, "pgleap_aaa", "pgleap_aaa")
	if err != nil || first.Slot != "pgleap_aaa" || first.StartLSN != 0 {
		t.Fatalf("PlanReplication = %+v, %v", first, err)
	}
	// A rerun keeps the names the first run recorded.
	again, err := PlanReplication(ctx, conn, "pgleap_bbb", "pgleap_bbb")
	if err != nil || again.Slot != "pgleap_aaa" {
		t.Fatalf("second PlanReplication = %+v, %v; want the first names kept", again, err)
	}
	if err := RecordStreamStart(ctx, conn, 0x16B3748); err != nil {
		t.Fatal(err)
	}
	if err := RecordStreamStart(ctx, conn, 0x26B3748); err == nil {
		t.Fatal("a second start was recorded over the first")
	}
	got, ok, err := LoadReplication(ctx, conn)
	if err != nil || !ok || got.StartLSN != 0x16B3748 || got.Publication != "pgleap_aaa" {
		t.Fatalf("LoadReplication = %+v, %v, %v", got, ok, err)
	}
	// The time the target is in step with moves forward only: a zero one (WAL with nothing
	// to apply) or an older one keeps the last.
	inStep := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for i, at := range []time.Time{inStep, {}, inStep.Add(-time.Minute)} {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return RecordApplied(ctx, tx, pglogrepl.LSN(0x16B4000+i), at, 0, 0) })
		if err != nil {
			t.Fatal(err)
		}
		if progress, err := LoadProgress(ctx, conn); err != nil || !progress.CommitTime.Equal(inStep) {
			t.Fatalf("after recording %s: in step as of %s (%v), want %s", at, progress.CommitTime, err, inStep)
		}
	}
	// Names reach replication commands unquoted: the state refuses any other alphabet.
	if _, err := conn.Exec(ctx, "UPDATE pgleap.replication SET slot_name = 'x; DROP'"); err == nil {
		t.Fatal("a slot name outside [a-z0-9_] was accepted")
	}
}

// TestUpgradeFromVersion3 upgrades the state a pgleap of state version 3 wrote, in the
// middle of streaming, to this version: the migration and its position survive.
func TestUpgradeFromVersion3(t *testing.T) {
	s := pgtest.Shared(t, pgtest.TargetMajor())
	conn := s.Conn(t, s.CreateDatabase(t))
	ctx := context.Background()
	for v := 1; v <= 3; v++ {
		sql, err := schemaFiles.ReadFile(fmt.Sprintf("schema_v%d.sql", v))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, string(sql)); err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	if _, err := conn.Exec(ctx, "INSERT INTO pgleap.state_version (version) VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	if err := Begin(ctx, conn, Migration{SourceDatabase: "shop", SourceMajor: 13}); err != nil {
		t.Fatal(err)
	}
	if _, err := PlanReplication(ctx, conn, "pgleap_slot", "pgleap_pub"); err != nil {
		t.Fatal(err)
	}
	if err := SetPhase(ctx, conn, PhaseStreaming); err != nil {
		t.Fatal(err)
	}
	if err := Init(ctx, conn); err != nil {
		t.Fatalf("upgrade from version 3: %v", err)
	}
	if phase, _, err := Phase(ctx, conn); err != nil || phase != PhaseStreaming {
		t.Errorf("phase after the upgrade: %q, %v", phase, err)
	}
	if err := SetPhase(ctx, conn, PhaseReverseStreaming); err != nil {
		t.Errorf("a version 4 phase after the upgrade: %v", err)
	}
	if _, err := RequestHold(ctx, conn, 0); err != nil {
		t.Errorf("a hold after the upgrade: %v", err)
	}
	if _, ok, err := LoadReverse(ctx, conn); err != nil || ok {
		t.Errorf("the way back after the upgrade: %v, %v", ok, err)
	}
	// Version 5: events, kept to the newest few hundred.
	var events []Event
	for i := range keptEvents + 10 {
		events = append(events, Event{At: time.Now(), Level: "warn", Message: fmt.Sprintf("event %d", i), Attrs: map[string]any{"err": "lost"}})
	}
	if err := RecordEvents(ctx, conn, events); err != nil {
		t.Fatalf("events after the upgrade: %v", err)
	}
	recent, err := RecentEvents(ctx, conn, 2)
	if err != nil || len(recent) != 2 || recent[0].Message != fmt.Sprintf("event %d", keptEvents+9) || recent[0].Attrs["err"] != "lost" {
		t.Fatalf("RecentEvents = %+v, %v; want the newest first", recent, err)
	}
	var kept int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pgleap.event").Scan(&kept); err != nil || kept != keptEvents {
		t.Errorf("%d events kept, %v; want %d", kept, err, keptEvents)
	}
}
