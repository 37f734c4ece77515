package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/demo"
	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestDemo runs the demo at a twentieth of its size, keeping its servers, and checks its end:
// the application's writes are on the new server and on the old one, both verifies were
// clean, the cutover through PgBouncer failed no write. --clean then stops and removes it all.
func TestDemo(t *testing.T) {
	parent := t.TempDir()
	// The servers run as an unprivileged OS user under root: it must reach the directory.
	for _, d := range []string{filepath.Dir(parent), parent} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(parent, "demo")
	var out strings.Builder
	res, err := demo.Run(context.Background(), demo.Options{Dir: dir, SourceMajor: pgtest.SourceMajor(), TargetMajor: pgtest.TargetMajor(),
		Scale: 0.05, Clients: 2, Keep: true, InstallScript: "../../scripts/install-postgres.sh", Out: &out, Progress: io.Discard,
		Pgleap: func(ctx context.Context, stdout, stderr io.Writer, args ...string) int {
			return run(ctx, args, stdout, stderr, func(string) string { return "" })
		}})
	t.Cleanup(func() { demo.Clean(dir) })
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, &out)
	}
	for _, step := range []string{"check", "status", "verify", "cutover", "verify back"} {
		if res.Exit[step] != exitOK {
			t.Errorf("%s exited %d", step, res.Exit[step])
		}
	}
	if res.NewServerPurchases == 0 || res.OldServerPurchases < res.NewServerPurchases {
		t.Errorf("after the cutover: %d purchases on the new server, %d on the old one; want some, and the old one to have them all",
			res.NewServerPurchases, res.OldServerPurchases)
	}
	if res.FailedWrites != 0 {
		t.Errorf("%d writes failed during the cutover through PgBouncer", res.FailedWrites)
	}
	for _, want := range []string{"== 9. pgleap verify, the other way ==", "What the application saw: its longest wait for a write was", "Everything keeps running"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo did not say %q", want)
		}
	}
	// Kept: both servers answer, with the same purchases once the way back caught up.
	datatest.RequireSameRows(t, res.TargetConn, res.SourceConn, 10)
	t.Logf("longest wait for a write during the cutover: %s; %d purchases on the new server after it", res.WritePause, res.NewServerPurchases)

	code, stdout, stderr := pgleap(t, nil, "demo", "--clean", "--dir", dir)
	if code != exitOK {
		t.Fatalf("demo --clean: exit %d: %s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("demo --clean left %s: %v", dir, err)
	}
	port := res.SourceConn[strings.Index(res.SourceConn, "port=")+5:]
	port = port[:strings.Index(port, " ")]
	if conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port)); err == nil {
		conn.Close()
		t.Errorf("the old server still listens on port %s after demo --clean", port)
	}
}
