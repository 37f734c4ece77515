package cutover

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Pooler is a PgBouncer in front of the application. With one, the cutover pauses the
// database entry (clients wait instead of failing), and once the other side is open points
// the entry at it, reloads and resumes: the application sees a pause, not an error.
// PAUSE waits for the transactions running through PgBouncer to end, so pool_mode must be
// transaction or statement.
type Pooler struct {
	Admin         string // connection string of its admin console
	Database      string // the [databases] entry the application uses
	DatabasesFile string // the file that holds the entry, which the cutover rewrites
}

type pooler struct {
	cfg      Pooler
	connCfg  *pgconn.Config
	conn     *pgconn.PgConn
	original []byte // the databases file before the entry was switched
	mode     os.FileMode
	paused   bool
	switched bool
}

var poolerName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

func openPooler(ctx context.Context, cfg Pooler) (*pooler, error) {
	if !poolerName.MatchString(cfg.Database) {
		return nil, fmt.Errorf("pgbouncer database %q: only letters, digits, _, . and - are supported", cfg.Database)
	}
	info, err := os.Stat(cfg.DatabasesFile)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer databases file: %w", err)
	}
	original, err := os.ReadFile(cfg.DatabasesFile)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer databases file: %w", err)
	}
	if _, err := switchEntry(original, cfg.Database, "h", 1, "d"); err != nil {
		return nil, fmt.Errorf("pgbouncer databases file %s: %w", cfg.DatabasesFile, err)
	}
	// The admin console speaks the simple protocol only, and knows few startup parameters.
	connCfg, err := pgconn.ParseConfig(cfg.Admin)
	if err != nil {
		return nil, fmt.Errorf("parse the pgbouncer admin connection string: %w", err)
	}
	conn, err := pgconn.ConnectConfig(ctx, connCfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the pgbouncer admin console: %w: check --pgbouncer, and that the user is in admin_users", err)
	}
	return &pooler{cfg: cfg, connCfg: connCfg, conn: conn, original: original, mode: info.Mode()}, nil
}

func (p *pooler) close() { p.conn.Close(context.Background()) }

func (p *pooler) command(ctx context.Context, command string) error {
	if p.conn.IsClosed() {
		// A command cut short (a PAUSE that timed out, Ctrl-C) closes the connection; the
		// RESUME that undoes it must still get through.
		conn, err := pgconn.ConnectConfig(ctx, p.connCfg)
		if err != nil {
			return fmt.Errorf("reconnect to the pgbouncer admin console for %s: %w", command, err)
		}
		p.conn = conn
	}
	if _, err := p.conn.Exec(ctx, command).ReadAll(); err != nil {
		return fmt.Errorf("pgbouncer %s: %w", command, err)
	}
	return nil
}

// pause makes the entry's clients wait; it waits for the transactions running to end.
func (p *pooler) pause(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p.paused = true // a PAUSE that times out may have taken effect
	if err := p.command(ctx, "PAUSE "+p.cfg.Database); err != nil {
		return fmt.Errorf("%w: a transaction through pgbouncer may have stayed open for 10 s (or pool_mode is session)", err)
	}
	return nil
}

func (p *pooler) resume(ctx context.Context) error {
	if !p.paused {
		return nil
	}
	if err := p.command(ctx, "RESUME "+p.cfg.Database); err != nil {
		return err
	}
	p.paused = false
	return nil
}

// pointAt switches the entry to the server of connString and reloads.
func (p *pooler) pointAt(ctx context.Context, connString string) error {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return err
	}
	content, err := switchEntry(p.original, p.cfg.Database, cfg.Host, cfg.Port, cfg.Database)
	if err != nil {
		return err
	}
	p.switched = true
	if err := writeFileAtomically(p.cfg.DatabasesFile, content, p.mode); err != nil {
		return err
	}
	return p.command(ctx, "RELOAD")
}

// restore puts the databases file back and reloads.
func (p *pooler) restore(ctx context.Context) error {
	if !p.switched {
		return nil
	}
	if err := writeFileAtomically(p.cfg.DatabasesFile, p.original, p.mode); err != nil {
		return err
	}
	if err := p.command(ctx, "RELOAD"); err != nil {
		return err
	}
	p.switched = false
	return nil
}

func writeFileAtomically(path string, content []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pgleap-*")
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), mode.Perm()); err != nil {
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	return nil
}

var entryParam = regexp.MustCompile(`([A-Za-z_]+)\s*=\s*('(?:[^']|'')*'|\S+)`)

// switchEntry rewrites the line of database name in a PgBouncer [databases] section (or a
// file of entries only, as %include makes possible) to connect to host, port and dbname,
// keeping its other parameters (user, pool sizes...).
func switchEntry(content []byte, name, host string, port uint16, dbname string) ([]byte, error) {
	lines := bytes.Split(content, []byte("\n"))
	section := "databases" // a file of entries only
	if bytes.Contains(content, []byte("[")) && !bytes.Contains(content, []byte("[databases]")) {
		section = ""
	}
	found := false
	for i, raw := range lines {
		line := strings.TrimSpace(string(raw))
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.ToLower(strings.Trim(line, "[] "))
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if section != "databases" || !ok || strings.TrimSpace(key) != name || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "#") {
			continue
		}
		if found {
			return nil, fmt.Errorf("database %s has two entries", name)
		}
		found = true
		want := map[string]string{"host": host, "port": strconv.Itoa(int(port)), "dbname": dbname}
		var params []string
		for _, m := range entryParam.FindAllStringSubmatch(value, -1) {
			if v, replace := want[m[1]]; replace {
				params = append(params, m[1]+"="+quoteEntryValue(v))
				delete(want, m[1])
				continue
			}
			params = append(params, m[1]+"="+m[2])
		}
		for _, k := range []string{"host", "port", "dbname"} {
			if v, missing := want[k]; missing {
				params = append(params, k+"="+quoteEntryValue(v))
			}
		}
		lines[i] = []byte(name + " = " + strings.Join(params, " "))
	}
	if !found {
		return nil, fmt.Errorf("no entry for database %s in its [databases] section", name)
	}
	return bytes.Join(lines, []byte("\n")), nil
}

func quoteEntryValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " '") {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}
