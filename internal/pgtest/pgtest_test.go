package pgtest

import (
	"context"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// TestPairRunsSideBySide starts the source and target majors at once and asks each, while
// both run, for its version and wal_level.
func TestPairRunsSideBySide(t *testing.T) {
	majors := []int{SourceMajor(), TargetMajor()}
	servers := make([]*Server, len(majors))
	var wg sync.WaitGroup
	for i, major := range majors {
		wg.Go(func() {
			s, err := Launch(context.Background(), major, Options{})
			if err != nil {
				t.Errorf("launch PostgreSQL %d: %v", major, err)
				return
			}
			servers[i] = s
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range servers {
			if s != nil {
				if err := s.Stop(); err != nil {
					t.Error(err)
				}
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	if servers[0].Port == servers[1].Port {
		t.Fatalf("both servers got port %d", servers[0].Port)
	}
	ctx := context.Background()
	for i, s := range servers {
		conn := s.Conn(t, "postgres")
		var versionNum int
		var walLevel string
		if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('wal_level')").Scan(&versionNum, &walLevel); err != nil {
			t.Fatalf("query PostgreSQL %d: %v", majors[i], err)
		}
		if versionNum/10000 != majors[i] {
			t.Errorf("server started as major %d reports server_version_num %d", majors[i], versionNum)
		}
		if walLevel != "logical" {
			t.Errorf("PostgreSQL %d: wal_level = %s, want logical", majors[i], walLevel)
		}
	}
}

func TestStopRemovesEverything(t *testing.T) {
	s, err := Launch(context.Background(), SourceMajor(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := s.process.Process.Pid
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("server directory %s still there after Stop (stat: %v)", s.Dir, err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("postgres pid %d still running after Stop", pid)
	}
	if conn, err := pgx.Connect(context.Background(), s.ConnString("postgres")); err == nil {
		conn.Close(context.Background())
		t.Errorf("port %d still accepts connections after Stop", s.Port)
	}
}

func TestCreateDatabaseIsDroppedAfterTheTest(t *testing.T) {
	s := Shared(t, SourceMajor())
	var name string
	t.Run("uses a database", func(t *testing.T) {
		name = s.CreateDatabase(t)
		conn := s.Conn(t, name)
		if _, err := conn.Exec(context.Background(), "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
	})
	var exists bool
	err := s.Conn(t, "postgres").QueryRow(context.Background(),
		"SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

// TestServerRunsAsUnprivilegedUserUnderRoot: PostgreSQL refuses root, so a root caller's server
// must belong to another OS user.
func TestServerRunsAsUnprivilegedUserUnderRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: TestHelperAsNonRoot covers this caller")
	}
	s := Start(t, SourceMajor())
	uid := processUID(t, s.process.Process.Pid)
	if uid == 0 {
		t.Fatal("the server runs as root")
	}
	u, err := user.Lookup(s.OSUser)
	if err != nil {
		t.Fatal(err)
	}
	if strconv.Itoa(uid) != u.Uid {
		t.Errorf("server runs as uid %d, want %s (%s)", uid, u.Uid, s.OSUser)
	}
}

const childEnv = "PGLEAP_PGTEST_CHILD"

// TestHelperAsNonRoot proves the helper works for a caller that is not root. Under root it
// runs this test binary again as the unprivileged user; otherwise the caller already is one.
func TestHelperAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(childEnv) != "" {
		s := Start(t, SourceMajor())
		if s.OSUser == "" {
			t.Fatal("server OS user unknown")
		}
		if uid := processUID(t, s.process.Process.Pid); uid != os.Getuid() {
			t.Fatalf("non-root caller's server runs as uid %d, want the caller's uid %d", uid, os.Getuid())
		}
		var one int
		if err := s.Conn(t, "postgres").QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
		return
	}
	runAs, err := serverUser()
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := BinDir(SourceMajor())
	if err != nil {
		t.Fatal(err)
	}
	// The go tool keeps test binaries in a directory only root may enter.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pgleap-pgtest-child-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "pgtest.test")
	copyFile(t, exe, child)

	cmd := exec.Command(child, "-test.run=^TestHelperAsNonRoot$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		"PGLEAP_PG_CACHE="+filepath.Dir(filepath.Dir(binDir)),
		"HOME="+dir,
		"TMPDIR=")
	cmd.SysProcAttr = runAs.sysProcAttr()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHelperAsNonRoot") {
		t.Fatalf("helper run as %s failed: %v\n%s", runAs.Username, err, out)
	}
}

func processUID(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if fields := strings.Fields(line); len(fields) > 1 && fields[0] == "Uid:" {
			uid, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatal(err)
			}
			return uid
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return -1
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
