package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// SetTargetGuard makes the target database read-only by default for every new session but
// pgleap's own (which start with default_transaction_read_only off), or lifts that. While
// changes stream, a write by anyone else to a migrated table would fork the target from the
// source without anyone noticing; reads, such as an application's read-only tests, stay
// possible. It is a guard against mistakes, not a permission: a session may still turn
// read-only off for itself. Sessions already open keep their setting.
func SetTargetGuard(ctx context.Context, target *pgx.Conn, on bool) error {
	var db string
	if err := target.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return fmt.Errorf("read the target database name: %w", err)
	}
	sql := "ALTER DATABASE " + pg.QuoteIdent(db) + " RESET default_transaction_read_only"
	if on {
		sql = "ALTER DATABASE " + pg.QuoteIdent(db) + " SET default_transaction_read_only = on"
	}
	return pgx.BeginFunc(ctx, target, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("make target database %s read-only for other sessions: %w: the target role must own the database; "+
				"or pass --no-target-guard and keep applications off the target until cutover", pg.QuoteIdent(db), err)
		}
		return state.RecordTargetGuard(ctx, tx, on)
	})
}
