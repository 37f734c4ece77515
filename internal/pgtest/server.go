package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one running PostgreSQL server that pgtest started.
type Server struct {
	Major   int
	Port    int
	Dir     string // holds data/, socket/ and server.log; removed by Stop
	BinDir  string
	OSUser  string // the OS user the server runs as
	process *exec.Cmd
	exited  chan error
	args    []string // the postgres command line, kept for Restart
	runAs   *osUser
	// detached: see Options.Detached
	detached bool
}

// Options adjust a server before it starts.
type Options struct {
	// Settings are extra postgresql.conf settings; they override pgtest's defaults.
	Settings map[string]string
	// Durable keeps fsync, full_page_writes and synchronous_commit on, as benchmarks need.
	Durable bool
	// Dir is where the server lives instead of a new temporary directory; it must not exist
	// yet. Port is its port instead of a free one.
	Dir  string
	Port int
	// Detached servers outlive the process that started them (the demo's --keep): no death
	// signal, a session of their own. StopDetached stops them from any process.
	Detached bool
}

// DataDir is the server's data directory.
func (s *Server) DataDir() string { return filepath.Join(s.Dir, "data") }

// SocketDir is the directory holding the server's unix socket.
func (s *Server) SocketDir() string { return filepath.Join(s.Dir, "socket") }

// LogFile is where the server writes its log.
func (s *Server) LogFile() string { return filepath.Join(s.Dir, "server.log") }

// ConnString is a keyword/value connection string for database db as the superuser.
func (s *Server) ConnString(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", s.Port, db)
}

// URL is the same connection as a postgres:// URL.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// BinDir returns the directory holding the server binaries of major, or an error that says
// how to install them.
func BinDir(major int) (string, error) {
	cache := os.Getenv("PGLEAP_PG_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the PostgreSQL cache: %w: set PGLEAP_PG_CACHE", err)
		}
		cache = filepath.Join(home, ".cache", "pgleap", "pg")
	}
	dir := filepath.Join(cache, strconv.Itoa(major), "bin")
	if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
		return "", fmt.Errorf("PostgreSQL %d is not installed in %s: run scripts/install-postgres.sh %d", major, dir, major)
	}
	return dir, nil
}

const startAttempts = 5 // another process may take the free port before the server binds it

// Launch starts a server of major and waits until it accepts connections. The caller stops
// it with Stop; tests use Start or Shared instead.
func Launch(ctx context.Context, major int, opts Options) (*Server, error) {
	binDir, err := BinDir(major)
	if err != nil {
		return nil, err
	}
	runAs, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", fmt.Sprintf("pgleap-pg%d-", major))
	} else {
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("create server directory: %w", err)
	}
	s := &Server{Major: major, Dir: dir, BinDir: binDir, detached: opts.Detached}
	if runAs != nil {
		s.OSUser = runAs.Username
	} else if current, err := user.Current(); err == nil {
		s.OSUser = current.Username
	}
	if err := s.initdb(ctx, runAs); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = s.start(ctx, runAs, opts)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == startAttempts || opts.Port != 0 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func (s *Server) initdb(ctx context.Context, runAs *osUser) error {
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		return fmt.Errorf("open server directory %s: %w", s.Dir, err)
	}
	for _, sub := range []string{s.DataDir(), s.SocketDir()} {
		if err := os.Mkdir(sub, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", sub, err)
		}
	}
	if err := os.WriteFile(s.LogFile(), nil, 0o600); err != nil {
		return fmt.Errorf("create %s: %w", s.LogFile(), err)
	}
	if runAs != nil {
		for _, path := range []string{s.DataDir(), s.SocketDir(), s.LogFile()} {
			if err := os.Chown(path, runAs.uid, runAs.gid); err != nil {
				return fmt.Errorf("hand %s to OS user %s: %w", path, runAs.Username, err)
			}
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "initdb"),
		"--no-sync", "--pgdata", s.DataDir(), "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C")
	cmd.SysProcAttr = runAs.sysProcAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb PostgreSQL %d in %s: %w\n%s", s.Major, s.DataDir(), err, out)
	}
	return nil
}

var errPortTaken = errors.New("port taken")

func (s *Server) start(ctx context.Context, runAs *osUser, opts Options) error {
	port := opts.Port
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return err
		}
	}
	s.Port = port
	settings := map[string]string{
		"port":                    strconv.Itoa(port),
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": s.SocketDir(),
		"wal_level":               "logical",
		"max_replication_slots":   "20",
		"max_wal_senders":         "20",
		"max_connections":         "100",
		"fsync":                   "off",
		"full_page_writes":        "off",
		"synchronous_commit":      "off",
		"log_min_messages":        "warning",
		"log_line_prefix":         "%m [%p] %q%u@%d ",
	}
	if s.Major >= 13 {
		// Production servers cap the WAL a stalled slot may keep; so do test servers.
		settings["max_slot_wal_keep_size"] = "4GB"
	}
	if opts.Durable {
		for _, name := range []string{"fsync", "full_page_writes", "synchronous_commit"} {
			delete(settings, name)
		}
	}
	for name, value := range opts.Settings {
		settings[name] = value
	}
	s.args = []string{"-D", s.DataDir()}
	for name, value := range settings {
		s.args = append(s.args, "-c", name+"="+value)
	}
	s.runAs = runAs
	return s.startProcess(ctx)
}

// Restart stops the server as a crash would (immediate shutdown: no checkpoint, sessions
// cut) and starts it again on the same port and data, through crash recovery.
func (s *Server) Restart(ctx context.Context) error {
	if s.process != nil {
		s.kill()
		s.process = nil
	}
	return s.startProcess(ctx)
}

// RestartFast stops the server as an administrator would (fast shutdown: sessions ended, a
// checkpoint) and starts it again on the same port and data.
func (s *Server) RestartFast(ctx context.Context) error {
	if s.process != nil {
		_ = s.process.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.kill()
		}
		s.process = nil
	}
	return s.startProcess(ctx)
}

// Freeze stops every process of the server (SIGSTOP), as a hung machine would: connections
// stay open and nothing answers. Thaw lets them go on.
func (s *Server) Freeze() error { return s.signalAll(syscall.SIGSTOP) }

// Thaw undoes Freeze.
func (s *Server) Thaw() error { return s.signalAll(syscall.SIGCONT) }

// signalAll signals the postmaster and its children, found in /proc: they share the caller's
// process group, which a signal to the group would reach too.
func (s *Server) signalAll(sig syscall.Signal) error {
	if s.process == nil {
		return fmt.Errorf("PostgreSQL %d is not running", s.Major)
	}
	postmaster := s.process.Process.Pid
	pids := []int{postmaster}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(postmaster) {
			pids = append(pids, pid)
		}
	}
	if sig == syscall.SIGCONT {
		slices.Reverse(pids) // the children first, then the postmaster that watches them
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal process %d of PostgreSQL %d: %w", pid, s.Major, err)
		}
	}
	return nil
}

func (s *Server) startProcess(ctx context.Context) error {
	port := s.Port
	logFile, err := os.OpenFile(s.LogFile(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	logStart, _ := logFile.Seek(0, 2)

	cmd := exec.Command(filepath.Join(s.BinDir, "postgres"), s.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = s.runAs.sysProcAttr()
	if s.detached {
		cmd.SysProcAttr.Setsid = true // a Ctrl-C at the terminal is not for it
	} else {
		// SIGQUIT is an immediate shutdown: a test binary killed mid-run leaves no server behind.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start PostgreSQL %d: %w", s.Major, err)
	}
	s.process = cmd
	s.exited = make(chan error, 1)
	go func() { s.exited <- cmd.Wait() }()

	if err := s.waitReady(ctx); err != nil {
		s.kill()
		logText := s.logSince(logStart)
		if strings.Contains(logText, "could not bind") || strings.Contains(logText, "could not create any TCP/IP sockets") {
			return fmt.Errorf("%w: %d", errPortTaken, port)
		}
		return fmt.Errorf("start PostgreSQL %d on port %d: %w\nserver log:\n%s", s.Major, port, err, logText)
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.ConnString("postgres"))
		if err == nil {
			// Another server on the port would answer too: only this one's data directory counts.
			var dataDir string
			err = conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dataDir)
			conn.Close(ctx)
			if err == nil && dataDir == s.DataDir() {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("port %d answers for another server (data directory %s)", s.Port, dataDir)
			}
		}
		select {
		case exitErr := <-s.exited:
			s.exited <- exitErr // Stop reads it again
			return fmt.Errorf("server exited: %v", exitErr)
		case <-ctx.Done():
			return fmt.Errorf("server did not accept connections: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) logSince(offset int64) string {
	raw, err := os.ReadFile(s.LogFile())
	if err != nil || offset > int64(len(raw)) {
		return ""
	}
	return string(raw[offset:])
}

// Stop shuts the server down (fast shutdown, then SIGKILL after 10 seconds) and removes its
// directory.
func (s *Server) Stop() error {
	var err error
	if s.process != nil {
		_ = s.process.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			s.kill()
			err = fmt.Errorf("PostgreSQL %d on port %d did not shut down in 10s and was killed", s.Major, s.Port)
		}
		s.process = nil
	}
	if rmErr := os.RemoveAll(s.Dir); rmErr != nil && err == nil {
		err = fmt.Errorf("remove %s: %w", s.Dir, rmErr)
	}
	return err
}

// StopDetached stops what a process started with Options.Detached under dir (PostgreSQL
// servers, by their data directory's postmaster.pid, and PgBouncers, by pgbouncer.pid) and
// waits until they are gone; dir itself stays.
func StopDetached(dir string) error {
	var errs []error
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (d.Name() != "postmaster.pid" && d.Name() != "pgbouncer.pid") {
			return nil
		}
		if err := stopByPIDFile(path); err != nil {
			errs = append(errs, err)
		}
		return nil
	})
	return errors.Join(errs...)
}

// stopByPIDFile asks the process whose pid heads path to shut down (SIGINT: PostgreSQL's fast
// shutdown, PgBouncer's safe one), and kills it after 10 seconds.
func stopByPIDFile(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil // gone already
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	if err != nil || pid <= 0 {
		return fmt.Errorf("read the pid in %s: %q", path, raw)
	}
	if syscall.Kill(pid, syscall.SIGINT) != nil {
		return nil // not running
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("process %d of %s did not stop in 10 s and was killed", pid, path)
		}
	}
	return nil
}

func (s *Server) kill() {
	_ = s.process.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.process.Process.Kill()
		<-s.exited
	}
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// osUser is the unprivileged user a root caller's servers run as.
type osUser struct {
	*user.User
	uid, gid int
}

// serverUser returns the user to run servers as, or nil to run them as the caller.
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name := os.Getenv("PGLEAP_PG_OS_USER")
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL will not run as root and OS user %q is missing (%v): create it (useradd --system %s) or set PGLEAP_PG_OS_USER", name, err, name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &osUser{User: u, uid: uid, gid: gid}, nil
}

func (u *osUser) sysProcAttr() *syscall.SysProcAttr {
	if u == nil {
		return &syscall.SysProcAttr{}
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}}
}

// Log returns the server's log so far.
func (s *Server) Log() string {
	raw, err := os.ReadFile(s.LogFile())
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", s.LogFile(), err)
	}
	return string(bytes.TrimSpace(raw))
}
