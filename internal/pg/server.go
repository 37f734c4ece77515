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

// DatabaseLocale is how a database encodes and sorts text.
type DatabaseLocale struct {
	Encoding, Collate, Ctype string
	Provider                 string // libc, icu or builtin
	// Locale is the ICU locale, or the builtin provider's; empty for libc.
	Locale string
}

// CreateClause is what CREATE DATABASE needs to give a database this locale.
func (l DatabaseLocale) CreateClause() string {
	clause := fmt.Sprintf("ENCODING %s LC_COLLATE %s LC_CTYPE %s", QuoteLiteral(l.Encoding), QuoteLiteral(l.Collate), QuoteLiteral(l.Ctype))
	switch l.Provider {
	case "icu":
		clause += " LOCALE_PROVIDER icu ICU_LOCALE " + QuoteLiteral(l.Locale)
	case "builtin":
		clause += " LOCALE_PROVIDER builtin BUILTIN_LOCALE " + QuoteLiteral(l.Locale)
	}
	return clause
}

// ReadDatabaseLocale reads the locale of database name on a server of this major, or of the
// connection's own database when name is empty. Locale providers arrived in 15; before,
// every database used libc.
func ReadDatabaseLocale(ctx context.Context, conn *pgx.Conn, major int, name string) (DatabaseLocale, error) {
	provider, locale := "'libc'", "''"
	if major >= 15 {
		provider = "CASE datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END"
		locale = "coalesce(daticulocale, '')"
	}
	if major >= 17 {
		locale = "coalesce(datlocale, '')"
	}
	var l DatabaseLocale
	err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype, `+provider+`, `+locale+`
		FROM pg_catalog.pg_database WHERE datname = coalesce(nullif($1, ''), current_database())`, name).
		Scan(&l.Encoding, &l.Collate, &l.Ctype, &l.Provider, &l.Locale)
	if err != nil {
		what := "the connection's database"
		if name != "" {
			what = "database " + QuoteIdent(name)
		}
		return l, fmt.Errorf("read the locale of %s: %w", what, err)
	}
	return l, nil
}
