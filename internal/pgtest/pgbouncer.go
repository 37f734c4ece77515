package pgtest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// PgBouncer is a PgBouncer (the Debian package's) in front of a test's servers: transaction
// pooling, trust authentication for the users given, its [databases] entries in a file of
// their own that a cutover may rewrite.
type PgBouncer struct {
	Dir, DatabasesFile string
	Port               int
	process            *exec.Cmd
	exited             <-chan struct{}
}

// StartPgBouncer starts PgBouncer with one database entry, name, for database db of server;
// users may log in through it. It is stopped when the test ends.
func StartPgBouncer(t testing.TB, name string, server *Server, db string, users ...string) *PgBouncer {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgleap-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b, err := LaunchPgBouncer(context.Background(), PgBouncerOptions{Dir: dir, Port: port, Users: users,
		Databases: map[string]string{name: fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s", server.Port, db)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

// PgBouncerOptions describe a PgBouncer to launch.
type PgBouncerOptions struct {
	Dir  string // holds its configuration and logs; it must exist
	Port int
	// Databases are its [databases] entries: name to libpq connection string.
	Databases map[string]string
	// Users may log in (trust authentication) besides postgres, the admin.
	Users []string
	// Detached: it outlives the process that launched it (see Options.Detached).
	Detached bool
}

// LaunchPgBouncer starts the Debian package's PgBouncer and waits until it takes
// connections. Transaction pooling; its [databases] entries are in a file of their own, which
// a cutover may rewrite.
func LaunchPgBouncer(ctx context.Context, opts PgBouncerOptions) (*PgBouncer, error) {
	binary, err := exec.LookPath("pgbouncer")
	if err != nil {
		binary = "/usr/sbin/pgbouncer"
		if _, statErr := os.Stat(binary); statErr != nil {
			return nil, fmt.Errorf("pgbouncer is missing: run scripts/install-postgres.sh, which installs it (%v)", err)
		}
	}
	runAs, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir := opts.Dir
	b := &PgBouncer{Dir: dir, DatabasesFile: filepath.Join(dir, "databases.ini"), Port: opts.Port}
	var auth, entries strings.Builder
	for _, u := range append([]string{"postgres"}, opts.Users...) {
		fmt.Fprintf(&auth, "%q \"\"\n", u)
	}
	for _, name := range slices.Sorted(maps.Keys(opts.Databases)) {
		fmt.Fprintf(&entries, "%s = %s\n", name, opts.Databases[name])
	}
	files := map[string]string{
		"databases.ini": entries.String(),
		"users.txt":     auth.String(),
		"pgbouncer.ini": fmt.Sprintf(`[databases]
%%include %s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = postgres
pool_mode = transaction
max_client_conn = 100
default_pool_size = 10
ignore_startup_parameters = extra_float_digits
logfile = %s
pidfile = %s
`, b.DatabasesFile, opts.Port, filepath.Join(dir, "users.txt"), filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid")),
	}
	for file, content := range files {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	if runAs != nil { // PgBouncer will not run as root either
		for _, path := range []string{dir, b.DatabasesFile} {
			if err := os.Chown(path, runAs.uid, runAs.gid); err != nil {
				return nil, err
			}
		}
	}
	cmd := exec.Command(binary, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = runAs.sysProcAttr()
	if opts.Detached {
		cmd.SysProcAttr.Setsid = true
	} else {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pgbouncer: %w", err)
	}
	b.process = cmd
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	b.exited = exited
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err := pgconn.Connect(ctx, b.AdminConnString())
		if err == nil {
			conn.Close(ctx)
			return b, nil
		}
		select {
		case <-exited:
		case <-time.After(50 * time.Millisecond):
			if time.Now().Before(deadline) && ctx.Err() == nil {
				continue
			}
		}
		b.Stop()
		log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		stdout, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
		return nil, fmt.Errorf("pgbouncer did not start on port %d: %w\n%s%s", opts.Port, err, log, stdout)
	}
}

// Stop stops PgBouncer and waits until it is gone.
func (b *PgBouncer) Stop() {
	b.process.Process.Signal(syscall.SIGINT)
	<-b.exited
}

// ConnString connects to a database entry of the PgBouncer as user.
func (b *PgBouncer) ConnString(name, user string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s sslmode=disable", b.Port, name, user)
}

// AdminConnString connects to its admin console.
func (b *PgBouncer) AdminConnString() string { return b.ConnString("pgbouncer", "postgres") }
