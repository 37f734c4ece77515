package pg

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Version is a server's release, from server_version_num.
type Version struct {
	Major, Minor int
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// VersionFromNum splits server_version_num (for example 130023 or 170010) into major and
// minor. Only majors 10 and later use this two-part numbering, and pgleap needs 12 or later.
func VersionFromNum(num int) Version {
	return Version{Major: num / 10000, Minor: num % 10000}
}

// ServerVersion asks the server which release it runs.
func ServerVersion(ctx context.Context, conn *pgx.Conn) (Version, error) {
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return Version{}, fmt.Errorf("read server_version_num: %w", err)
	}
	return VersionFromNum(num), nil
}

// Settings returns the current value of each named setting. A name the server does not know
// is left out of the map rather than failing, because settings come and go between majors.
func Settings(ctx context.Context, conn *pgx.Conn, names ...string) (map[string]string, error) {
	rows, err := conn.Query(ctx, "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY($1)", names)
	if err != nil {
		return nil, fmt.Errorf("read settings %v: %w", names, err)
	}
	values := make(map[string]string, len(names))
	var name, value string
	_, err = pgx.ForEachRow(rows, []any{&name, &value}, func() error {
		values[name] = value
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read settings %v: %w", names, err)
	}
	return values, nil
}
