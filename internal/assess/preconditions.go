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
	"github.com/pgleap/pgleap/internal/pg"
)

// ErrRefused is returned by RefuseMigrate: the pair or the selection is wrong, and pgleap
// migrate changed nothing.
var ErrRefused = errors.New("pgleap migrate refuses to start")

// RefuseMigrate checks, reading only, what would make pgleap migrate do damage or fail
// halfway through: --source and --target naming the same database, a target older than the
// source, a target database that holds relations but no pgleap migration, and a table
// selection that selects nothing. pgleap check reports the same as findings; migrate, which
// may run unattended, refuses.
func RefuseMigrate(ctx context.Context, source, target *pgx.Conn, tables config.TableFilter) error {
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
