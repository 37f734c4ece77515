package cutover

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
)

// Freezing the source. A database-wide default_transaction_read_only alone is not a
// freeze: any session may set it off for itself. So the freeze also sets the database's
// connection limit to 0, which refuses new sessions of every role but superusers, and ends
// the sessions already open (never pgleap's own, never replication). A superuser that
// connects during the freeze still starts read-only; one that turns that off is the one
// case left, and the final verification catches what it writes.

// freezeUndo is what the freeze changes, as it was before: recorded on the target first,
// so that a cutover that dies frozen can be undone.
type freezeUndo struct {
	Database        string `json:"database"`
	ConnectionLimit int    `json:"connection_limit"`
	// ReadOnly is the database's own default_transaction_read_only setting before, "" for none.
	ReadOnly string `json:"read_only,omitempty"`
}

// readFreezeUndo reads what the freeze will change.
func readFreezeUndo(ctx context.Context, source *pgx.Conn) (freezeUndo, error) {
	var u freezeUndo
	err := source.QueryRow(ctx, `SELECT d.datname, d.datconnlimit,
		coalesce((SELECT split_part(s, '=', 2) FROM pg_catalog.pg_db_role_setting r, unnest(r.setconfig) s
		          WHERE r.setdatabase = d.oid AND r.setrole = 0 AND s LIKE 'default\_transaction\_read\_only=%'), '')
		FROM pg_catalog.pg_database d WHERE d.datname = current_database()`).Scan(&u.Database, &u.ConnectionLimit, &u.ReadOnly)
	if err != nil {
		return u, fmt.Errorf("read the source database's settings: %w", err)
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
	for _, sql := range []string{
		"ALTER DATABASE " + db + " CONNECTION LIMIT 0",
		"ALTER DATABASE " + db + " SET default_transaction_read_only = on",
		"SELECT pg_catalog.pg_terminate_backend(pid) " + otherSessions,
	} {
		if _, err := source.Exec(ctx, sql); err != nil {
			return fmt.Errorf("freeze writes on source database %s: %s: %w: pgleap's role must be a superuser",
				db, strings.Join(strings.SplitN(sql, " ", 4)[:3], " "), err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		var left int
		if err := source.QueryRow(ctx, "SELECT count(*) "+otherSessions).Scan(&left); err != nil {
			return fmt.Errorf("freeze writes on source database %s: count the sessions left: %w", db, err)
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("freeze writes on source database %s: %d sessions did not end within 10 s", db, left)
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
	for _, sql := range []string{fmt.Sprintf("ALTER DATABASE %s CONNECTION LIMIT %d", db, u.ConnectionLimit), readOnly} {
		if _, err := source.Exec(ctx, sql); err != nil {
			return fmt.Errorf("unfreeze source database %s (%s): %w: run it by hand", db, sql, err)
		}
	}
	return nil
}
