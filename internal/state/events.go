package state

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event is a problem a running pgleap logged.
type Event struct {
	At      time.Time      `json:"at"`
	Level   string         `json:"level"` // warn or error
	Message string         `json:"message"`
	Attrs   map[string]any `json:"attrs,omitempty"`
}

// keptEvents is how many events the state keeps: enough for the story of a bad night,
// bounded for a migration that runs for weeks.
const keptEvents = 500

// RecordEvents stores events and forgets the oldest beyond the newest few hundred.
func RecordEvents(ctx context.Context, conn *pgx.Conn, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for _, e := range events {
			attrs := e.Attrs
			if attrs == nil {
				attrs = map[string]any{}
			}
			batch.Queue("INSERT INTO pgleap.event (at, level, message, attrs) VALUES ($1, $2, $3, $4)", e.At, e.Level, e.Message, attrs)
		}
		batch.Queue("DELETE FROM pgleap.event WHERE id <= (SELECT max(id) FROM pgleap.event) - $1", keptEvents)
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("record events in pgleap state: %w", err)
		}
		return nil
	})
}

// RecentEvents returns the newest events, newest first; none for a state before version 5.
func RecentEvents(ctx context.Context, conn *pgx.Conn, limit int) ([]Event, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('pgleap.event') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT at, level, message, attrs FROM pgleap.event ORDER BY id DESC LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("read events from pgleap state: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) {
		var e Event
		err := row.Scan(&e.At, &e.Level, &e.Message, &e.Attrs)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read events from pgleap state: %w", err)
	}
	return events, nil
}
