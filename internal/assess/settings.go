package assess

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/pgleap/pgleap/internal/pg"
)

// serverSetting is one row of pg_settings.
type serverSetting struct {
	Name    string
	Setting string // normalized to the base unit, comparable between servers
	Display string // current_setting(): with its unit, as a human writes it
	Context string // postmaster settings need a restart
}

// Settings set in the server's configuration, rather than left at their defaults or set by a
// session; pgleap's own session settings show up as 'client' and are left out.
const configuredSettingsSQL = `
SELECT name, setting, pg_catalog.current_setting(name), context
FROM pg_catalog.pg_settings
WHERE source NOT IN ('default', 'override', 'client', 'session', 'interactive') AND context <> 'internal'
ORDER BY name`

const allSettingsSQL = `
SELECT name, setting, pg_catalog.current_setting(name), context FROM pg_catalog.pg_settings ORDER BY name`

// settingsThatDiffer are the settings that belong to one server and are expected to differ,
// or that another check covers.
var settingsThatDiffer = map[string]bool{
	"port": true, "listen_addresses": true, "unix_socket_directories": true, "unix_socket_group": true,
	"unix_socket_permissions": true, "data_directory": true, "config_file": true, "hba_file": true,
	"ident_file": true, "external_pid_file": true, "cluster_name": true, "ssl_cert_file": true,
	"ssl_key_file": true, "ssl_ca_file": true, "ssl_crl_file": true, "ssl_crl_dir": true,
	"log_directory": true, "primary_conninfo": true, "primary_slot_name": true, "restore_command": true,
	"wal_level": true, "shared_preload_libraries": true, "lc_messages": true, "lc_monetary": true,
	"lc_numeric": true, "lc_time": true, "application_name": true, "max_stack_depth": true,
}

// renamedSettings says where a setting that a newer major dropped went.
var renamedSettings = map[string]string{
	"wal_keep_segments":                 "wal_keep_size (in MB: segments × 16MB), since 13",
	"operator_precedence_warning":       "nothing: removed in 14",
	"vacuum_cleanup_index_scale_factor": "nothing: removed in 14",
	"stats_temp_directory":              "nothing: statistics live in shared memory since 15",
	"force_parallel_mode":               "debug_parallel_query, since 16",
	"promote_trigger_file":              "pg_ctl promote or pg_promote(), since 16",
	"vacuum_defer_cleanup_age":          "hot_standby_feedback or a replication slot, since 16",
	"old_snapshot_threshold":            "nothing: removed in 17",
	"db_user_namespace":                 "nothing: removed in 17",
	"trace_recovery_messages":           "nothing: removed in 17",
}

type roleSetting struct {
	Role    string // "" for the database's own settings
	Setting string // name=value
}

// The database's own settings (ALTER DATABASE ... SET) and those of roles, globally or in
// this database (ALTER ROLE ... [IN DATABASE ...] SET).
const roleSettingsSQL = `
SELECT coalesce(r.rolname, ''), unnest(s.setconfig)
FROM pg_catalog.pg_db_role_setting s
LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
WHERE (s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) OR s.setdatabase = 0)
  AND NOT (s.setrole = 0 AND s.setdatabase = 0)
ORDER BY 1, 2`

type settingsFacts struct {
	Source, Target           []serverSetting
	SourceRoles, TargetRoles []roleSetting
	TargetRolesPresent       []string
}

func checkSettingsDrift(ctx context.Context, env *Env) ([]Finding, error) {
	var f settingsFacts
	var err error
	if f.Source, err = queryRows[serverSetting](ctx, env.Source.conn, configuredSettingsSQL); err != nil {
		return nil, fmt.Errorf("read source settings: %w", err)
	}
	if f.Target, err = queryRows[serverSetting](ctx, env.Target.conn, allSettingsSQL); err != nil {
		return nil, fmt.Errorf("read target settings: %w", err)
	}
	if f.SourceRoles, err = queryRows[roleSetting](ctx, env.Source.conn, roleSettingsSQL); err != nil {
		return nil, fmt.Errorf("read source database and role settings: %w", err)
	}
	if f.TargetRoles, err = queryRows[roleSetting](ctx, env.Target.conn, roleSettingsSQL); err != nil {
		return nil, fmt.Errorf("read target database and role settings: %w", err)
	}
	if f.TargetRolesPresent, err = queryStrings(ctx, env.Target.conn, "SELECT rolname FROM pg_catalog.pg_roles"); err != nil {
		return nil, fmt.Errorf("list target roles: %w", err)
	}
	return judgeSettingsDrift(env.Target, pg.QuoteIdent(env.Target.Database), f), nil
}

func judgeSettingsDrift(target Server, targetDB string, f settingsFacts) []Finding {
	var findings []Finding
	onTarget := map[string]serverSetting{}
	for _, s := range f.Target {
		onTarget[s.Name] = s
	}
	for _, s := range f.Source {
		// pgleap's own session settings are its connections', not the servers'.
		_, sessionSetting := pg.SessionSettings[s.Name]
		_, readOnlySetting := ReadOnlySettings[s.Name]
		if settingsThatDiffer[s.Name] || sessionSetting || readOnlySetting {
			continue
		}
		t, ok := onTarget[s.Name]
		if !ok {
			fix := "drop it from the configuration you carry over"
			if where, renamed := renamedSettings[s.Name]; renamed {
				fix = "use " + where
			} else if strings.Contains(s.Name, ".") {
				fix = "load the library that defines it on the target (shared_preload_libraries), or drop it"
			}
			findings = append(findings, Finding{
				Check: "settings.missing", Severity: Warning, Object: s.Name,
				Why: fmt.Sprintf("the source sets %s = %s, a setting the target (PostgreSQL %d) does not have.", s.Name, s.Display, target.Version.Major),
				Fix: fix,
			})
			continue
		}
		if t.Setting == s.Setting {
			continue
		}
		findings = append(findings, Finding{
			Check: "settings.drift", Severity: Info, Object: s.Name,
			Why: fmt.Sprintf("the source sets %s = %s, the target has %s.", s.Name, s.Display, t.Display),
			Fix: target.settingFix(s.Name, s.Display, s.Context == "postmaster") + " (if the new server should behave like the old)",
		})
	}

	sourcePreload := preloadLibraries(f.Source)
	targetPreload := preloadLibraries(f.Target)
	for _, lib := range sourcePreload {
		if slices.Contains(targetPreload, lib) {
			continue
		}
		findings = append(findings, Finding{
			Check: "settings.preload_library", Severity: Warning, Object: lib,
			Why: fmt.Sprintf("the source preloads %s (shared_preload_libraries); the target does not, so what it provides (views, hooks, settings) is missing there.", lib),
			Fix: target.settingFix("shared_preload_libraries", strings.Join(append(slices.Clone(targetPreload), lib), ","), true),
		})
	}

	targetHas := map[roleSetting]bool{}
	for _, s := range f.TargetRoles {
		targetHas[s] = true
	}
	for _, s := range f.SourceRoles {
		if targetHas[s] {
			continue
		}
		name, value, _ := strings.Cut(s.Setting, "=")
		if s.Role == "" {
			findings = append(findings, Finding{
				Check: "settings.database", Severity: Info, Object: targetDB,
				Why: fmt.Sprintf("the source database sets %s; the target database does not.", s.Setting),
				Fix: fmt.Sprintf("ALTER DATABASE %s SET %s = %s;", targetDB, name, settingValueSQL(name, value)),
			})
			continue
		}
		// Roles that the schema stage creates bring their settings along.
		if !slices.Contains(f.TargetRolesPresent, s.Role) {
			continue
		}
		role := pg.QuoteIdent(s.Role)
		findings = append(findings, Finding{
			Check: "settings.role", Severity: Info, Object: role,
			Why: fmt.Sprintf("on the source, role %s has %s; the role exists on the target without it.", role, s.Setting),
			Fix: fmt.Sprintf("ALTER ROLE %s SET %s = %s;", role, name, settingValueSQL(name, value)),
		})
	}
	return findings
}

func preloadLibraries(settings []serverSetting) []string {
	var libs []string
	for _, s := range settings {
		if s.Name != "shared_preload_libraries" {
			continue
		}
		for lib := range strings.SplitSeq(s.Setting, ",") {
			if lib = strings.Trim(strings.TrimSpace(lib), `"`); lib != "" {
				libs = append(libs, lib)
			}
		}
	}
	return libs
}
