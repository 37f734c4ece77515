package assess

import (
	"context"
	"fmt"

	"github.com/pgleap/pgleap/internal/ddl"
	"github.com/pgleap/pgleap/internal/pg"
)

// checkDDLCapture tells whether pgleap migrate --ddl, which carries the schema changes made
// on the source during the migration, may install its event trigger there.
func checkDDLCapture(ctx context.Context, env *Env) ([]Finding, error) {
	installed, err := ddl.Installed(ctx, env.Source.conn)
	if err != nil {
		return nil, err
	}
	may := env.Source.Superuser
	if !may {
		err := env.Source.conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_roles
			WHERE rolname = 'rds_superuser' AND pg_catalog.pg_has_role(current_user, oid, 'MEMBER'))`).Scan(&may)
		if err != nil {
			return nil, fmt.Errorf("read whether %s is rds_superuser on the source: %w", pg.QuoteIdent(env.Source.User), err)
		}
	}
	return judgeDDLCapture(pg.QuoteIdent(env.Source.User), may, installed), nil
}

func judgeDDLCapture(user string, mayCreateEventTriggers, installed bool) []Finding {
	f := Finding{Check: "source.ddl_capture", Severity: Info, Object: user}
	switch {
	case installed:
		f.Why = "the source captures its schema changes for pgleap (pgleap migrate --ddl): they are run on the target at their place among the row changes."
		f.Fix = "none needed; pgleap cleanup removes the capture"
	case mayCreateEventTriggers:
		f.Why = "schema changes made on the source during the migration are carried only with pgleap migrate --ddl; without it the apply stops at the first table whose columns changed, and other objects are left behind."
		f.Fix = "pass --ddl to pgleap migrate (or put ddl: true in pgleap.yaml), or freeze schema changes until the cutover"
	default:
		f.Why = fmt.Sprintf("pgleap migrate --ddl carries schema changes made on the source during the migration with an event trigger, which only a superuser (or rds_superuser) may create, and %s is neither.", user)
		f.Fix = "freeze schema changes until the cutover, or run pgleap migrate --ddl as a superuser (rds_superuser on RDS and Aurora)"
	}
	return []Finding{f}
}
