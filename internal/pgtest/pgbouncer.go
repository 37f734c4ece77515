package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
}

// StartPgBouncer starts PgBouncer with one database entry, name, for database db of server;
// users may log in through it. It is stopped when the test ends.
func StartPgBouncer(t testing.TB, name string, server *Server, db string, users ...string) *PgBouncer {
	t.Helper()
	binary, err := exec.LookPath("pgbouncer")
	if err != nil {
		binary = "/usr/sbin/pgbouncer"
		if _, statErr := os.Stat(binary); statErr != nil {
			t.Fatalf("pgbouncer is missing: run scripts/install-postgres.sh, which installs it (%v)", err)
		}
	}
	runAs, err := serverUser()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pgleap-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	b := &PgBouncer{Dir: dir, DatabasesFile: filepath.Join(dir, "databases.ini"), Port: port}
	var auth strings.Builder
	for _, u := range append([]string{"postgres"}, users...) {
		fmt.Fprintf(&auth, "%q \"\"\n", u)
	}
	files := map[string]string{
		"databases.ini": fmt.Sprintf("%s = host=127.0.0.1 port=%d dbname=%s\n", name, server.Port, db),
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
`, b.DatabasesFile, port, filepath.Join(dir, "users.txt"), filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid")),
	}
	for file, content := range files {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if runAs != nil { // PgBouncer will not run as root either
		for _, path := range []string{dir, b.DatabasesFile} {
			if err := os.Chown(path, runAs.uid, runAs.gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(binary, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = runAs.sysProcAttr()
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	b.process = cmd
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		conn, err := pgconn.Connect(context.Background(), b.AdminConnString())
		if err == nil {
			conn.Close(context.Background())
			return b
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			stdout, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
			t.Fatalf("pgbouncer did not start: %v\n%s%s", err, log, stdout)
		}
	}
}

// ConnString connects to a database entry of the PgBouncer as user.
func (b *PgBouncer) ConnString(name, user string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s sslmode=disable", b.Port, name, user)
}

// AdminConnString connects to its admin console.
func (b *PgBouncer) AdminConnString() string { return b.ConnString("pgbouncer", "postgres") }
