package monitor

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pgleap/pgleap/internal/state"
)

// EventLog keeps the warnings and errors pgleap logs: the tracker stores them in the
// target's state for pgleap status, and the metrics count them. Its handler sits in front
// of the log output, so that nothing has to report a problem twice.
type EventLog struct {
	mu      sync.Mutex
	pending []state.Event // not stored yet, oldest first
	errors  int64
	now     func() time.Time
}

// maxPendingEvents bounds what waits for a target that cannot be reached: the newest are kept.
const maxPendingEvents = 200

// NewEventLog returns an empty event log.
func NewEventLog() *EventLog { return &EventLog{now: time.Now} }

// Handler returns a slog handler that passes every record to next and keeps those at warn
// level or above, even when next's level leaves them out.
func (l *EventLog) Handler(next slog.Handler) slog.Handler {
	return &eventHandler{next: next, log: l}
}

// Errors counts the records that reported an error: error level, or an error value among
// their attributes (a lost connection that is retried logs a warning with its error).
func (l *EventLog) Errors() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errors
}

// Failed keeps the error that ended a command, which is printed rather than logged.
func (l *EventLog) Failed(err error) {
	l.add(state.Event{At: l.now(), Level: "error", Message: err.Error(), Attrs: map[string]any{}}, true)
}

// Take returns the events not stored yet and forgets them.
func (l *EventLog) Take() []state.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	events := l.pending
	l.pending = nil
	return events
}

// Return puts back events whose storing failed, before any logged since.
func (l *EventLog) Return(events []state.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = keepNewest(append(events, l.pending...))
}

func (l *EventLog) add(e state.Event, isError bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = keepNewest(append(l.pending, e))
	if isError {
		l.errors++
	}
}

func keepNewest(events []state.Event) []state.Event {
	if len(events) > maxPendingEvents {
		events = append([]state.Event(nil), events[len(events)-maxPendingEvents:]...)
	}
	return events
}

type eventHandler struct {
	next   slog.Handler
	log    *EventLog
	attrs  []slog.Attr // from WithAttrs, with their group prefix
	prefix string      // from WithGroup: "group."
}

func (h *eventHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn || h.next.Enabled(ctx, level)
}

func (h *eventHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.next.Enabled(ctx, r.Level) {
		err = h.next.Handle(ctx, r)
	}
	if r.Level < slog.LevelWarn {
		return err
	}
	level := "warn"
	isError := r.Level >= slog.LevelError
	if isError {
		level = "error"
	}
	attrs := map[string]any{}
	add := func(prefix string, a slog.Attr) {
		v := a.Value.Resolve()
		if e, ok := v.Any().(error); ok {
			isError = true
			attrs[prefix+a.Key] = e.Error()
			return
		}
		attrs[prefix+a.Key] = v.String()
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		add(h.prefix, a)
		return true
	})
	at := r.Time
	if at.IsZero() {
		at = h.log.now()
	}
	h.log.add(state.Event{At: at, Level: level, Message: r.Message, Attrs: attrs}, isError)
	return err
}

func (h *eventHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		a.Key = h.prefix + a.Key
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *eventHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.prefix = h.prefix + name + "."
	return &c
}
