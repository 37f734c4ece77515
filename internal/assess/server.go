package assess

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
)

// ReadOnlySettings are the startup parameters of check's connections: a check that tried
// to write would fail instead.
var ReadOnlySettings = map[string]string{"default_transaction_read_only": "on"}

// Managed names the managed PostgreSQL service a server runs on, "" for a self-managed one.
type Managed string

const (
	SelfManaged Managed = ""
	RDS         Managed = "rds"
	Aurora      Managed = "aurora"
	CloudSQL    Managed = "cloudsql"
	Azure       Managed = "azure"
	AlloyDB     Managed = "alloydb"
)

// Server is what the checks need to know about one side.
type Server struct {
	Side      pg.Side
	Version   pg.Version
	Database  string
	User      string
	Superuser bool
	Managed   Managed
	conn      *pgx.Conn
}

// Each service leaves a role (or for Aurora a function) that a self-managed server does not have.
const serverSQL = `
SELECT current_database(), current_user, r.rolsuper,
       CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_proc WHERE proname = 'aurora_version') THEN 'aurora'
            WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'rds_superuser') THEN 'rds'
            WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'cloudsqlsuperuser') THEN 'cloudsql'
            WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'azure_pg_admin') THEN 'azure'
            WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'alloydbsuperuser') THEN 'alloydb'
            ELSE '' END
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`

// DescribeServer reads the facts every check shares about one side.
func DescribeServer(ctx context.Context, side pg.Side, conn *pgx.Conn) (Server, error) {
	s := Server{Side: side, conn: conn}
	version, err := pg.ServerVersion(ctx, conn)
	if err != nil {
		return Server{}, fmt.Errorf("describe %s: %w", side, err)
	}
	s.Version = version
	var managed string
	if err := conn.QueryRow(ctx, serverSQL).Scan(&s.Database, &s.User, &s.Superuser, &managed); err != nil {
		return Server{}, fmt.Errorf("describe %s: %w", side, err)
	}
	s.Managed = Managed(managed)
	return s, nil
}

// ServiceName is how the managed service is known to its users.
func (m Managed) ServiceName() string {
	switch m {
	case RDS:
		return "Amazon RDS"
	case Aurora:
		return "Amazon Aurora"
	case CloudSQL:
		return "Google Cloud SQL"
	case Azure:
		return "Azure Database for PostgreSQL"
	case AlloyDB:
		return "AlloyDB"
	}
	return "self-managed PostgreSQL"
}

// settingFix says how to change a server parameter on this server: ALTER SYSTEM on a
// self-managed server, the service's own mechanism on a managed one.
func (s Server) settingFix(name, value string, restart bool) string {
	switch s.Managed {
	case RDS, Aurora:
		group := "DB parameter group"
		if s.Managed == Aurora {
			group = "DB cluster parameter group"
		}
		fix := fmt.Sprintf("set %s = %s in the %s", name, value, group)
		if restart {
			fix += ", then reboot the instance"
		}
		return fix
	case CloudSQL:
		return fmt.Sprintf("gcloud sql instances patch INSTANCE --database-flags=%s=%s (Cloud SQL restarts the instance when the flag needs it)", name, value)
	case Azure:
		fix := fmt.Sprintf("az postgres flexible-server parameter set --name %s --value %s", name, value)
		if restart {
			fix += ", then restart the server"
		}
		return fix
	case AlloyDB:
		return fmt.Sprintf("gcloud alloydb instances update INSTANCE --database-flags=%s=%s", name, value)
	}
	fix := fmt.Sprintf("ALTER SYSTEM SET %s = %s;", name, settingValueSQL(name, value))
	if restart {
		return fix + " then restart the server"
	}
	return fix + " SELECT pg_reload_conf();"
}

// listSettings take a list of values, where one quoted literal is one element: 'a,b' would
// be a single library named "a,b".
var listSettings = map[string]bool{"search_path": true, "shared_preload_libraries": true,
	"session_preload_libraries": true, "local_preload_libraries": true, "temp_tablespaces": true}

// settingValueSQL writes value for ALTER SYSTEM, ALTER DATABASE or ALTER ROLE ... SET name =:
// the elements of a list setting one by one, any other value whole.
func settingValueSQL(name, value string) string {
	if !listSettings[name] || strings.TrimSpace(value) == "" {
		return quoteSettingValue(value)
	}
	var elements []string
	for _, e := range strings.Split(value, ",") {
		// pg_settings shows elements that need it double-quoted: "$user", public.
		e = strings.TrimSpace(e)
		if len(e) >= 2 && strings.HasPrefix(e, `"`) && strings.HasSuffix(e, `"`) {
			e = strings.ReplaceAll(e[1:len(e)-1], `""`, `"`)
		}
		elements = append(elements, quoteSettingValue(e))
	}
	return strings.Join(elements, ", ")
}

// quoteSettingValue quotes a value for ALTER SYSTEM unless it is a plain number or a plain
// word; 16GB, 'a,b' and the empty string need quotes.
func quoteSettingValue(value string) string {
	if plainNumber.MatchString(value) || plainWord.MatchString(value) {
		return value
	}
	return pg.QuoteLiteral(value)
}

var (
	plainNumber = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
	plainWord   = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
)
