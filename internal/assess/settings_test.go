package assess

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
)

// TestSettingsDrift: parameters set on the source, at server, database and role level,
// that the target lacks or sets otherwise.
func TestSettingsDrift(t *testing.T) {
	settings := map[string]string{
		"work_mem":                 "64MB",
		"shared_preload_libraries": "pg_stat_statements",
	}
	removed := ""
	if pgtest.SourceMajor() < 16 && pgtest.TargetMajor() >= 16 {
		removed = "vacuum_defer_cleanup_age"
		settings[removed] = "100"
	}
	source := pgtest.Start(t, pgtest.SourceMajor(), pgtest.Options{Settings: settings})
	p := pairOn(t, source, pgtest.Shared(t, pgtest.TargetMajor()))
	role := fmt.Sprintf("pgleap_settings_role_%d", source.Port)
	for _, s := range []*pgtest.Server{p.source, p.target} {
		s.Exec(t, "postgres", "CREATE ROLE "+role)
		t.Cleanup(func() { s.Exec(t, "postgres", "DROP ROLE "+role) })
	}
	p.sourceSQL(t, fmt.Sprintf(`ALTER DATABASE %q SET statement_timeout = '5s'; ALTER ROLE %s SET lock_timeout = '2s'`, p.sourceDB, role))

	r := p.check(t, Options{})
	f := requireFinding(t, r, "settings.drift", Info, "work_mem")
	if !strings.Contains(f.Fix, "ALTER SYSTEM SET work_mem = '64MB'") {
		t.Errorf("work_mem fix = %q", f.Fix)
	}
	f = requireFinding(t, r, "settings.preload_library", Warning, "pg_stat_statements")
	if !strings.Contains(f.Fix, "shared_preload_libraries") || !strings.Contains(f.Fix, "restart") {
		t.Errorf("preload fix = %q", f.Fix)
	}
	if removed != "" {
		requireFinding(t, r, "settings.missing", Warning, removed)
	}
	f = requireFinding(t, r, "settings.database", Info, fmt.Sprintf("%q", p.targetDB))
	if !strings.Contains(f.Fix, "statement_timeout = '5s'") {
		t.Errorf("database setting fix = %q", f.Fix)
	}
	requireFinding(t, r, "settings.role", Info, fmt.Sprintf("%q", role))
	// Settings that belong to each server (port, sockets) are never drift.
	requireNoFinding(t, r, "settings.drift", "port")
	requireNoFinding(t, r, "settings.drift", "unix_socket_directories")

	// Once the target matches, nothing is left to say.
	p.targetSQL(t, fmt.Sprintf(`ALTER DATABASE %q SET statement_timeout = '5s'; ALTER ROLE %s SET lock_timeout = '2s'`, p.targetDB, role))
	r = p.check(t, Options{})
	requireNoFinding(t, r, "settings.database", "")
	requireNoFinding(t, r, "settings.role", "")
}
