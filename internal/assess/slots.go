package assess

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/monitor"
	"github.com/pgleap/pgleap/internal/pg"
)

// pgleapSlot is a replication slot pgleap made on the source database.
type pgleapSlot struct {
	Name     string
	Active   bool
	Retained int64 // bytes of WAL it keeps
}

// checkLeftoverSlots finds pgleap's slots on the source that no migration on this target
// uses: left by a migration whose target was emptied or dropped without pgleap cleanup, they
// keep WAL until the source's disk fills.
func checkLeftoverSlots(ctx context.Context, env *Env) ([]Finding, error) {
	rows, err := env.Source.conn.Query(ctx, `SELECT slot_name, active,
		coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::bigint
		FROM pg_catalog.pg_replication_slots
		WHERE slot_name LIKE 'pgleap\_%' AND database = current_database() ORDER BY slot_name`)
	if err != nil {
		return nil, fmt.Errorf("list replication slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pgleapSlot, error) {
		var s pgleapSlot
		err := row.Scan(&s.Name, &s.Active, &s.Retained)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list replication slots: %w", err)
	}
	var used []string
	var hasState bool
	if err := env.Target.conn.QueryRow(ctx, "SELECT to_regclass('pgleap.replication') IS NOT NULL").Scan(&hasState); err != nil {
		return nil, err
	}
	if hasState {
		rows, err := env.Target.conn.Query(ctx, "SELECT slot_name FROM pgleap.replication")
		if err == nil {
			used, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return nil, fmt.Errorf("read the migration's slot: %w", err)
		}
	}
	return judgeLeftoverSlots(slots, used), nil
}

// judgeLeftoverSlots reports each inactive pgleap slot that is not the target's migration's
// (used).
func judgeLeftoverSlots(slots []pgleapSlot, used []string) []Finding {
	var findings []Finding
	for _, s := range slots {
		if s.Active || slices.Contains(used, s.Name) {
			continue
		}
		findings = append(findings, Finding{
			Check: "source.leftover_slot", Severity: Warning, Object: s.Name,
			Why: fmt.Sprintf("a replication slot of an earlier pgleap migration that no migration on this target uses keeps %s of WAL on the source, and more every minute, until the disk fills.",
				monitor.HumanBytes(s.Retained)),
			Fix: fmt.Sprintf("if no other target migrates from it: SELECT pg_drop_replication_slot(%s); DROP PUBLICATION IF EXISTS %s; (or run pgleap cleanup against that migration's target)",
				pg.QuoteLiteral(s.Name), pg.QuoteIdent(s.Name)),
		})
	}
	return findings
}
