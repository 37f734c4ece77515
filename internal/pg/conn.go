package pg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Side says which of the two servers of a migration a connection belongs to.
type Side string

const (
	Source Side = "source"
	Target Side = "target"
)

// SessionSettings are the startup parameters every pgleap connection carries. With these, the
// text form of every value reads back as the same value on a server of another major.
var SessionSettings = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
}

const applicationName = "pgleap"

// replicationReadBuffer is how much a replication connection reads from its socket at once.
const replicationReadBuffer = 256 << 10

// ConnectError is a connection to a side that could not be opened.
type ConnectError struct {
	Side    Side
	Address string // host:port, or the socket directory and port
	Err     error  // usually a *pgconn.ConnectError, possibly wrapping a *pgconn.PgError
}

func (e *ConnectError) Error() string {
	cause := e.Err.Error()
	var connectErr *pgconn.ConnectError
	if errors.As(e.Err, &connectErr) && connectErr.Unwrap() != nil {
		// pgconn's own prefix repeats user and database; the per-address causes say more.
		cause = connectErr.Unwrap().Error()
	}
	// With sslmode=prefer pgx tries twice and reports the same cause twice.
	var causes []string
	for line := range strings.SplitSeq(cause, "\n") {
		if line = strings.Join(strings.Fields(line), " "); line != "" && !slices.Contains(causes, line) {
			causes = append(causes, line)
		}
	}
	cause = strings.Join(causes, "; ")
	return fmt.Sprintf("connect to %s at %s: %s: %s", e.Side, e.Address, cause, e.advice())
}

// advice says what to look at, from the server's answer when there is one.
func (e *ConnectError) advice() string {
	var pgErr *pgconn.PgError
	if errors.As(e.Err, &pgErr) {
		switch pgErr.Code {
		case "28P01": // invalid_password
			return fmt.Sprintf("check the password: password= in --%s, PGPASSWORD, or the passfile (~/.pgpass, PGPASSFILE)", e.Side)
		case "28000": // invalid_authorization_specification: pg_hba.conf, certificates
			return fmt.Sprintf("the server's pg_hba.conf refuses this role from here, or wants TLS or a client certificate: check the user and sslmode, sslcert, sslkey in --%s", e.Side)
		case "3D000": // invalid_catalog_name
			return fmt.Sprintf("the database does not exist: check dbname in --%s, or create it", e.Side)
		}
	}
	if strings.Contains(e.Err.Error(), "certificate") || strings.Contains(e.Err.Error(), "tls:") {
		return fmt.Sprintf("the TLS handshake failed: check sslmode and sslrootcert in --%s against the server's certificate", e.Side)
	}
	return fmt.Sprintf("check that the server is running and that --%s is right", e.Side)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// ParseConfig reads a libpq connection string (keyword/value or URL; the PG* environment
// variables fill what it leaves out) and adds pgleap's session settings.
func ParseConfig(side Side, connString string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		// pgconn.ParseConfigError already hides the password.
		return nil, fmt.Errorf("parse %s connection string: %w: fix --%s", side, err, side)
	}
	for name, value := range SessionSettings {
		cfg.RuntimeParams[name] = value
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = applicationName
	}
	// While a migration follows the source, the target database is read-only for every
	// session but pgleap's own (see cdc.SetTargetGuard); after a cutover, so is the old
	// server, which pgleap still writes to (the way back, rollback).
	cfg.RuntimeParams["default_transaction_read_only"] = "off"
	return cfg, nil
}

// Connect opens one connection to side.
func Connect(ctx context.Context, side Side, connString string) (*pgx.Conn, error) {
	cfg, err := ParseConfig(side, connString)
	if err != nil {
		return nil, err
	}
	return ConnectConfig(ctx, side, cfg)
}

// ConnectConfig opens one connection from a config made by ParseConfig.
func ConnectConfig(ctx context.Context, side Side, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s at %s: %w", side, address(cfg), ctx.Err())
		}
		return nil, &ConnectError{Side: side, Address: address(cfg), Err: err}
	}
	return conn, nil
}

// ConnectBoth opens one connection to each side; on an error neither is left open.
func ConnectBoth(ctx context.Context, sourceConnString, targetConnString string) (source, target *pgx.Conn, err error) {
	if source, err = Connect(ctx, Source, sourceConnString); err != nil {
		return nil, nil, err
	}
	if target, err = Connect(ctx, Target, targetConnString); err != nil {
		source.Close(context.Background())
		return nil, nil, err
	}
	return source, target, nil
}

func address(cfg *pgx.ConnConfig) string {
	port := strconv.Itoa(int(cfg.Port))
	if strings.HasPrefix(cfg.Host, "/") {
		return fmt.Sprintf("socket %s port %s", cfg.Host, port)
	}
	return net.JoinHostPort(cfg.Host, port)
}

// ConnectReplication opens a logical replication connection (replication=database) to the
// source, for slot commands and streaming; applicationName names it in pg_stat_replication
// ("" keeps pgleap's).
func ConnectReplication(ctx context.Context, connString, applicationName string) (*pgconn.PgConn, error) {
	cfg, err := ParseConfig(Source, connString)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["replication"] = "database"
	if applicationName != "" {
		cfg.RuntimeParams["application_name"] = applicationName
	}
	// A backlog streams as hundreds of thousands of small messages: read them from the
	// socket many at once, not 8 kB at a time.
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, replicationReadBuffer), w)
	}
	conn, err := pgconn.ConnectConfig(ctx, &cfg.Config)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s at %s: %w", Source, address(cfg), ctx.Err())
		}
		return nil, &ConnectError{Side: Source, Address: address(cfg), Err: err}
	}
	return conn, nil
}

// WithDatabase is a connection string to another database of the same server: its
// dbname replaced (a URL's path, or a keyword/value string's dbname, the last of which
// counts).
func WithDatabase(connString, database string) string {
	if u, err := url.Parse(connString); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + database
		u.RawPath = ""
		query := u.Query() // a dbname parameter would win over the path
		query.Del("dbname")
		query.Del("database")
		u.RawQuery = query.Encode()
		return u.String()
	}
	return strings.TrimSpace(connString) + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(database) + "'"
}
