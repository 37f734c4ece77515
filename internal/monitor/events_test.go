package monitor

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestEventLogKeepsWarningsAndErrors(t *testing.T) {
	var out bytes.Buffer
	events := NewEventLog()
	// The output shows errors only: warnings are kept all the same.
	logger := slog.New(events.Handler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError})))

	logger.Info("copying rows", "items", 3)
	logger.With("slot", "pgleap_1").WithGroup("stream").Warn("streaming interrupted: reconnecting", "err", errors.New("connection reset"), "in", "1s")
	logger.Warn("a verification held the apply for too long")
	logger.Error("pgbouncer could not be switched")
	events.Failed(errors.New("copy \"public\".\"orders\" chunk 3/8: disk full"))

	if got := strings.Count(out.String(), "\n"); got != 1 {
		t.Errorf("the output shows %d lines, want the error only:\n%s", got, &out)
	}
	taken := events.Take()
	var got []string
	for _, e := range taken {
		got = append(got, fmt.Sprintf("%s %s %v", e.Level, e.Message, e.Attrs))
	}
	want := []string{
		"warn streaming interrupted: reconnecting map[slot:pgleap_1 stream.err:connection reset stream.in:1s]",
		"warn a verification held the apply for too long map[]",
		"error pgbouncer could not be switched map[]",
		`error copy "public"."orders" chunk 3/8: disk full map[]`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The interruption carried an error: it counts with the two errors.
	if n := events.Errors(); n != 3 {
		t.Errorf("Errors() = %d, want 3", n)
	}
	if again := events.Take(); len(again) != 0 {
		t.Errorf("a second Take returned %d events", len(again))
	}

	// Events that could not be stored come back before newer ones, and only the newest
	// are kept while the target cannot be reached.
	events.Return(taken[:2])
	for i := range maxPendingEvents {
		logger.Warn(fmt.Sprintf("lost %d", i))
	}
	pending := events.Take()
	if len(pending) != maxPendingEvents || pending[0].Message != "lost 0" || pending[len(pending)-1].Message != fmt.Sprintf("lost %d", maxPendingEvents-1) {
		t.Errorf("%d pending, from %q to %q", len(pending), pending[0].Message, pending[len(pending)-1].Message)
	}
}
