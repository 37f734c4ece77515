package assess

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/monitor"
	"github.com/pgleap/pgleap/internal/pg"
)

// ErrRefused is returned by RefuseMigrate: the pair or the selection is wrong, and pgleap
// migrate changed nothing.
var ErrRefused = errors.New("pgleap migrate refuses to start")

// RefuseMigrate checks, reading only, what would make pgleap migrate do damage or fail
// halfway through: --source and --target naming the same database, a target older than the
// source, a target database that holds relations but no pgleap migration, a table
// selection that selects nothing, and a slot or publication name already in use. pgleap
// check reports the same as findings; migrate, which may run unattended, refuses.
func RefuseMigrate(ctx context.Context, source, target *pgx.Conn, tables config.TableFilter, names StreamNames) error {
	sourceID, err := readIdentity(ctx, source)
	if err != nil {
		return fmt.Errorf("read the source's identity: %w", err)
	}
	targetID, err := readIdentity(ctx, target)
	if err != nil {
		return fmt.Errorf("read the target's identity: %w", err)
	}
	if sourceID.sameDatabase(targetID) {
		return fmt.Errorf("%w: --source and --target are the same database (%s): point --target at the database on the new server",
			ErrRefused, pg.QuoteIdent(sourceID.database))
	}
	// The same judgments as pgleap check's: what it reports as a blocker, migrate refuses.
	contents := targetContents{}
	if err := target.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'pgleap')").Scan(&contents.HasState); err != nil {
		return fmt.Errorf("look for pgleap state on the target: %w", err)
	}
	if !contents.HasState {
		if contents.Tables, err = queryNames(ctx, target, targetRelationsSQL); err != nil {
			return fmt.Errorf("list the target's relations: %w", err)
		}
	}
	findings := append(judgeTargetVersion(sourceID.version, targetID.version), judgeTargetEmpty(pg.QuoteIdent(targetID.database), contents)...)
	for _, f := range findings {
		if f.Severity == Blocker {
			return fmt.Errorf("%w: %s: %s", ErrRefused, strings.TrimSuffix(f.Why, "."), f.Fix)
		}
	}
	if err := refuseStreamNames(ctx, source, target, contents.HasState, names); err != nil {
		return err
	}
	all, err := catalog.Tables(ctx, source)
	if err != nil {
		return err
	}
	for _, t := range all {
		if tables.Selects(t.Schema, t.Name) {
			return nil
		}
	}
	if len(all) == 0 {
		return fmt.Errorf("%w: source database %s holds no table: is --source the right database?", ErrRefused, pg.QuoteIdent(sourceID.database))
	}
	return fmt.Errorf("%w: the table selection (include %q, exclude %q) matches none of the source's %d tables: fix --include and --exclude (globs on schema.table, such as 'public.*')",
		ErrRefused, tables.Include, tables.Exclude, len(all))
}

// identity tells one server's database from another's.
type identity struct {
	database string
	oid      uint32
	// system is the cluster's system identifier when the role may read it, else 0; started
	// and port then tell clusters apart.
	system  int64
	started time.Time
	port    int
	version pg.Version
}

func readIdentity(ctx context.Context, conn *pgx.Conn) (identity, error) {
	var id identity
	err := conn.QueryRow(ctx, `SELECT current_database(), (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()),
		pg_catalog.pg_postmaster_start_time(), current_setting('port')::int,
		CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')
		     THEN (SELECT system_identifier FROM pg_catalog.pg_control_system()) ELSE 0 END`).
		Scan(&id.database, &id.oid, &id.started, &id.port, &id.system)
	if err != nil {
		return id, err
	}
	id.version, err = pg.ServerVersion(ctx, conn)
	return id, err
}

func (a identity) sameDatabase(b identity) bool {
	sameCluster := a.system == b.system && a.started.Equal(b.started) && a.port == b.port
	return sameCluster && a.oid == b.oid
}

// StreamNames are the slot and publication names the user chose; "" leaves the choice to
// pgleap, which picks a pgleap_ name of its own.
type StreamNames struct {
	Slot, Publication string
}

// refuseStreamNames refuses names that differ from those the target's migration already
// streams from, and, for a migration that has none yet, names already taken on the source:
// pgleap would take over another tool's slot or publish another's tables.
func refuseStreamNames(ctx context.Context, source, target *pgx.Conn, hasState bool, names StreamNames) error {
	if names == (StreamNames{}) {
		return nil
	}
	if hasState {
		var recorded StreamNames
		err := target.QueryRow(ctx, "SELECT to_regclass('pgleap.replication') IS NOT NULL").Scan(&hasState)
		if err == nil && hasState {
			err = target.QueryRow(ctx, "SELECT slot_name, publication_name FROM pgleap.replication").Scan(&recorded.Slot, &recorded.Publication)
		} else if err == nil {
			err = pgx.ErrNoRows
		}
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("read the slot the target's migration streams from: %w", err)
		default:
			for _, n := range []struct{ kind, flag, chosen, recorded string }{
				{"slot", "--slot-name", names.Slot, recorded.Slot},
				{"publication", "--publication-name", names.Publication, recorded.Publication},
			} {
				if n.chosen != "" && n.chosen != n.recorded {
					return fmt.Errorf("%w: the target's migration streams from %s %s, not %s: pass %s %s, or leave it out",
						ErrRefused, n.kind, n.recorded, n.chosen, n.flag, n.recorded)
				}
			}
			return nil
		}
	}
	if names.Slot != "" {
		var active bool
		var kept *int64
		err := source.QueryRow(ctx, `SELECT active, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::bigint
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, names.Slot).Scan(&active, &kept)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("look for replication slot %s on the source: %w", names.Slot, err)
		default:
			state := "inactive"
			if active {
				state = "in use"
			}
			if kept != nil {
				state += ", keeping " + monitor.HumanBytes(*kept) + " of WAL"
			}
			return fmt.Errorf("%w: replication slot %s already exists on the source (%s): choose another --slot-name, or, if nothing uses it, drop it: SELECT pg_drop_replication_slot(%s);",
				ErrRefused, names.Slot, state, pg.QuoteLiteral(names.Slot))
		}
	}
	if names.Publication != "" {
		var exists bool
		if err := source.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $1)", names.Publication).Scan(&exists); err != nil {
			return fmt.Errorf("look for publication %s on the source: %w", names.Publication, err)
		}
		if exists {
			return fmt.Errorf("%w: publication %s already exists on the source: choose another --publication-name, or, if nothing uses it, drop it: DROP PUBLICATION %s;",
				ErrRefused, names.Publication, pg.QuoteIdent(names.Publication))
		}
	}
	return nil
}
