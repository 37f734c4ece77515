package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Rights are what pgleap's role may do on one server, beyond reading and writing the
// migrated tables, for the steps that change the server itself: the apply, the freeze of a
// cutover or rollback, and the way back.
type Rights struct {
	Role, Database string
	Major          int
	Superuser      bool
	// OwnsDatabase: the role owns the database or has its owner's privileges, which
	// ALTER DATABASE and revoking CONNECT need.
	OwnsDatabase bool
	// SignalBackend: a member of pg_signal_backend, which ends other roles' sessions.
	SignalBackend bool
	// ReadAllStats: a member of pg_read_all_stats, without which other roles' sessions show
	// no backend type and cannot be told from replication and background workers.
	ReadAllStats bool
	// SetReplicationRole: may set session_replication_role, which the apply runs with.
	SetReplicationRole bool
	// Replication: may open a replication connection and a slot.
	Replication bool
	// CreateInDatabase: may create schemas (pgleap's state).
	CreateInDatabase bool
	// SuperuserSessions are other superusers' sessions on the database, which only a
	// superuser may end.
	SuperuserSessions []string
}

const rightsSQL = `SELECT current_user, current_database(), r.rolsuper,
	pg_catalog.pg_has_role(current_user, d.datdba, 'USAGE'),
	pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE'),
	pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
	r.rolsuper OR r.rolreplication,
	pg_catalog.has_database_privilege(current_database(), 'CREATE'),
	coalesce((SELECT array_agg(format('pid %s (%s)', a.pid, a.usename) ORDER BY a.pid) FROM pg_catalog.pg_stat_activity a
	          JOIN pg_catalog.pg_roles o ON o.oid = a.usesysid
	          WHERE a.datname = current_database() AND a.pid <> pg_catalog.pg_backend_pid() AND o.rolsuper
	            AND coalesce(a.backend_type, 'client backend') = 'client backend'
	            AND coalesce(a.application_name, '') NOT LIKE 'pgleap%'), '{}')
	FROM pg_catalog.pg_roles r, pg_catalog.pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`

// ReadRights reads what pgleap's role may do on the server conn is connected to.
func ReadRights(ctx context.Context, conn *pgx.Conn) (Rights, error) {
	var r Rights
	version, err := ServerVersion(ctx, conn)
	if err != nil {
		return r, err
	}
	r.Major = version.Major
	err = conn.QueryRow(ctx, rightsSQL).Scan(&r.Role, &r.Database, &r.Superuser, &r.OwnsDatabase, &r.SignalBackend,
		&r.ReadAllStats, &r.Replication, &r.CreateInDatabase, &r.SuperuserSessions)
	if err != nil {
		return r, fmt.Errorf("read pgleap's role's privileges: %w", err)
	}
	if r.SetReplicationRole, err = canSetReplicationRole(ctx, conn); err != nil {
		return r, fmt.Errorf("read pgleap's role's privileges: %w", err)
	}
	return r, nil
}

// canSetReplicationRole tries it, in a transaction rolled back: managed services let their
// admin role set it on versions where the catalog says only a superuser may.
func canSetReplicationRole(ctx context.Context, conn *pgx.Conn) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "SET LOCAL session_replication_role = replica")
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42501" {
		return false, nil
	}
	return err == nil, err
}

// FreezeMissing lists what the role lacks to freeze writes on the database, each as the
// statement that gives it; none when it may. Other superusers' sessions, which it could not
// end, are not counted: they come and go.
func (r Rights) FreezeMissing() []string {
	if r.Superuser {
		return nil
	}
	role, db := QuoteIdent(r.Role), QuoteIdent(r.Database)
	var missing []string
	if !r.OwnsDatabase {
		missing = append(missing, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s;", db, role))
	}
	if !r.SignalBackend {
		missing = append(missing, fmt.Sprintf("GRANT pg_signal_backend TO %s;", role))
	}
	if !r.ReadAllStats {
		missing = append(missing, fmt.Sprintf("GRANT pg_read_all_stats TO %s;", role))
	}
	return missing
}

// ReplicationRoleFix is the statement that lets the role set session_replication_role.
func (r Rights) ReplicationRoleFix() string {
	if r.Major < 15 {
		return fmt.Sprintf("before PostgreSQL 15 only a superuser may set session_replication_role: ALTER ROLE %s SUPERUSER; (on a managed service, use its admin role)", QuoteIdent(r.Role))
	}
	return fmt.Sprintf("GRANT SET ON PARAMETER session_replication_role TO %s;", QuoteIdent(r.Role))
}
