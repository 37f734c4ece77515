package schema

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBin makes a directory whose pg_dump, pg_dumpall and pg_restore report major.
func fakeBin(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	for _, tool := range []string{"pg_dump", "pg_dumpall", "pg_restore"} {
		script := "#!/bin/sh\necho '" + tool + " (PostgreSQL) " + version + "'\n"
		if err := os.WriteFile(filepath.Join(dir, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFindTools(t *testing.T) {
	ctx := context.Background()
	dir := fakeBin(t, "16.4")
	tools, err := FindTools(ctx, dir, 13)
	if err != nil || tools.Major != 16 || tools.PgDump != filepath.Join(dir, "pg_dump") || tools.Version != "pg_dump 16.4" {
		t.Fatalf("FindTools(16.4 for 13) = %+v, %v", tools, err)
	}
	_, err = FindTools(ctx, fakeBin(t, "12.20"), 15)
	if !errors.Is(err, ErrToolsTooOld) || !strings.Contains(err.Error(), "PostgreSQL 15") || !strings.Contains(err.Error(), "--pg-bin") {
		t.Errorf("FindTools(12.20 for 15) = %v, want ErrToolsTooOld naming the source major and --pg-bin", err)
	}
	empty := t.TempDir()
	if _, err := FindTools(ctx, empty, 13); !errors.Is(err, ErrToolsTooOld) || !strings.Contains(err.Error(), "no pg_dump in "+empty) {
		t.Errorf("FindTools(empty dir) = %v", err)
	}
	// Without --pg-bin, the machine's own tools are found (Debian's are major 15).
	if tools, err := FindTools(ctx, "", 13); err != nil || tools.Major < 13 {
		t.Errorf("FindTools on this machine = %+v, %v", tools, err)
	}
}
