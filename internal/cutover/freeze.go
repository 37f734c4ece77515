package cutover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/pg"
)

// Freezing the source. A database-wide default_transaction_read_only alone is not a
// freeze: any session may set it off for itself. So the freeze also keeps other sessions
// out, and ends the sessions already open (never pgleap's own, never replication). As a
// superuser, pgleap sets the database's connection limit to 0, which refuses new sessions
// of every role but superusers. Any other role would lock itself out that way, so it
// revokes CONNECT on the database from PUBLIC and from every role but the owner and its
// own; an application connecting as one of those still comes in, but read-only. What is left, a session that turns read-only off, the final checks catch: the
// apply held at the freeze must find no row change after it.

// freezeUndo is what the freeze changes, as it was before: recorded on the target first,
// so that a cutover that dies frozen can be undone.
type freezeUndo struct {
	Database        string `json:"database"`
	ConnectionLimit int    `json:"connection_limit"`
	// ReadOnly is the database's own default_transaction_read_only setting before, "" for none.
	ReadOnly string `json:"read_only,omitempty"`
	// ByPrivilege is set when the freeze revokes CONNECT instead of setting the connection
	// limit, from RevokedConnect, the roles that held it ("" for PUBLIC).
	ByPrivilege    bool     `json:"by_privilege,omitempty"`
	RevokedConnect []string `json:"revoked_connect,omitempty"`
	// GrantOption are those of RevokedConnect that held it WITH GRANT OPTION.
	GrantOption []string `json:"grant_option,omitempty"`
}

// connectHoldersSQL lists the roles the database's owner granted CONNECT to, PUBLIC as "",
// and whether WITH GRANT OPTION, but for the owner and pgleap's own role: pgleap, which has
// the owner's privileges, connects through them. An application's role pgleap is a member
// of is on the list: left able to connect, its pool would come straight back.
const connectHoldersSQL = `SELECT coalesce(r.rolname, ''), a.is_grantable FROM pg_catalog.pg_database d
	CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
	LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
	WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT' AND a.grantor = d.datdba
	  AND a.grantee <> d.datdba AND (r.rolname IS NULL OR r.rolname <> current_user)
	ORDER BY 1`

// readFreezeUndo reads what the freeze will change.
func readFreezeUndo(ctx context.Context, source *pgx.Conn) (freezeUndo, error) {
	var u freezeUndo
	var superuser bool
	err := source.QueryRow(ctx, `SELECT d.datname, d.datconnlimit,
		coalesce((SELECT split_part(s, '=', 2) FROM pg_catalog.pg_db_role_setting r, unnest(r.setconfig) s
		          WHERE r.setdatabase = d.oid AND r.setrole = 0 AND s LIKE 'default\_transaction\_read\_only=%'), ''),
		(SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
		FROM pg_catalog.pg_database d WHERE d.datname = current_database()`).Scan(&u.Database, &u.ConnectionLimit, &u.ReadOnly, &superuser)
	if err != nil {
		return u, fmt.Errorf("read the settings of the database to freeze: %w", err)
	}
	if u.ByPrivilege = !superuser; u.ByPrivilege {
		rows, err := source.Query(ctx, connectHoldersSQL)
		if err == nil {
			var grantee string
			var grantable bool
			_, err = pgx.ForEachRow(rows, []any{&grantee, &grantable}, func() error {
				u.RevokedConnect = append(u.RevokedConnect, grantee)
				if grantable {
					u.GrantOption = append(u.GrantOption, grantee)
				}
				return nil
			})
		}
		if err != nil {
			return u, fmt.Errorf("read who may connect to the database to freeze: %w", err)
		}
	}
	return u, nil
}

// otherSessions selects the source database's sessions that are neither pgleap's nor
// replication.
const otherSessions = `FROM pg_catalog.pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
	AND backend_type = 'client backend' AND coalesce(application_name, '') NOT LIKE 'pgleap%'`

// freeze stops writes on the source database, and waits until the sessions it ended are
// gone.
func freeze(ctx context.Context, source *pgx.Conn, u freezeUndo) error {
	db := pg.QuoteIdent(u.Database)
	keepOut, need := "ALTER DATABASE "+db+" CONNECTION LIMIT 0", "pgleap's role must be a superuser"
	if u.ByPrivilege {
		keepOut, need = "", "pgleap's role must own the database (or have its owner's privileges) and be a member of pg_signal_backend and pg_read_all_stats"
		if len(u.RevokedConnect) > 0 {
			keepOut = "REVOKE CONNECT ON DATABASE " + db + " FROM " + grantees(u.RevokedConnect)
		}
	}
	for _, sql := range []string{
		keepOut,
		"ALTER DATABASE " + db + " SET default_transaction_read_only = on",
		"SELECT pg_catalog.pg_terminate_backend(pid) " + otherSessions,
	} {
		if sql == "" {
			continue
		}
		if _, err := source.Exec(ctx, sql); err != nil {
			return fmt.Errorf("freeze writes on database %s: %s: %w: %s",
				db, strings.Join(strings.SplitN(sql, " ", 4)[:3], " "), err, need)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		var left int
		if err := source.QueryRow(ctx, "SELECT count(*) "+otherSessions).Scan(&left); err != nil {
			return fmt.Errorf("freeze writes on database %s: count the sessions left: %w", db, err)
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var who []string
			if rows, err := source.Query(ctx, "SELECT DISTINCT usename::text "+otherSessions); err == nil {
				who, _ = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			return fmt.Errorf("freeze writes on database %s: %d sessions (of %s) did not end within 10 s: a pool that connects as a superuser, "+
				"or as pgleap's own role, comes straight back; stop it, or run the cutover as a role the application does not use", db, left, strings.Join(who, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unfreeze puts back what freeze changed.
func unfreeze(ctx context.Context, source *pgx.Conn, u freezeUndo) error {
	db := pg.QuoteIdent(u.Database)
	readOnly := "ALTER DATABASE " + db + " RESET default_transaction_read_only"
	if u.ReadOnly != "" {
		readOnly = "ALTER DATABASE " + db + " SET default_transaction_read_only = " + pg.QuoteLiteral(u.ReadOnly)
	}
	letIn := []string{fmt.Sprintf("ALTER DATABASE %s CONNECTION LIMIT %d", db, u.ConnectionLimit)}
	if u.ByPrivilege {
		// One role at a time: a role dropped meanwhile must not keep the others out.
		letIn = nil
		for _, role := range u.RevokedConnect {
			grant := "GRANT CONNECT ON DATABASE " + db + " TO " + grantees([]string{role})
			if slices.Contains(u.GrantOption, role) {
				grant += " WITH GRANT OPTION"
			}
			letIn = append(letIn, grant)
		}
	}
	var errs []error
	for _, sql := range append(letIn, readOnly) {
		if _, err := source.Exec(ctx, sql); err != nil {
			if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42704" {
				continue // the role is gone
			}
			errs = append(errs, fmt.Errorf("unfreeze database %s (%s): %w: run it by hand", db, sql, err))
		}
	}
	return errors.Join(errs...)
}

// grantees is the list of roles for GRANT and REVOKE, "" standing for PUBLIC.
func grantees(roles []string) string {
	quoted := make([]string, len(roles))
	for i, r := range roles {
		quoted[i] = "PUBLIC"
		if r != "" {
			quoted[i] = pg.QuoteIdent(r)
		}
	}
	return strings.Join(quoted, ", ")
}
