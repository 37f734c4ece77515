package schema

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/ddl"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// Options configure the schema stage.
type Options struct {
	Source, Target  string // connection strings
	Tables          config.TableFilter
	PgBin           string // where pg_dump and friends are; "" searches
	IndexJobs       int    // post-data statements run at once
	CopyPasswords   bool   // carry password verifiers (needs a source role that reads pg_authid)
	KeepTablespaces bool
	// Analyze gathers optimizer statistics for each table once its post-data is built, while
	// other tables still load: statistics do not travel with the data.
	Analyze bool
	Logger  *slog.Logger
}

// Result says what the stage did.
type Result struct {
	Tools           Tools
	Roles           RolePlan
	RoleWarnings    []string
	PreDataRestored bool // false when an earlier run had restored it
	PostDataTasks   int  // run by this call
	PostDataResumed int  // done by an earlier run
	Skipped         []state.SkippedObject
	Duration        time.Duration
}

// Step ids recorded in the target's state. StepRoles tells a migration of several
// databases that the roles of the cluster are copied.
const (
	StepRoles   = "schema:roles"
	stepPreData = "schema:pre-data"
)

// Stage runs the schema half of a migration.
type Stage struct {
	opts   Options
	tools  Tools
	source *pgx.Conn
	target *pgx.Conn
	plan   *Plan
	done   map[string]bool
	// archivePath holds the archive on local disk while pg_restore needs it.
	archivePath string
}

// Prepare connects to both sides, initializes pgleap's state on the target, and dumps the
// source's schema (or takes the archive an earlier run stored). Close releases it all.
func Prepare(ctx context.Context, opts Options) (*Stage, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IndexJobs < 1 {
		opts.IndexJobs = 1
	}
	s := &Stage{opts: opts}
	var err error
	if s.source, err = pg.Connect(ctx, pg.Source, opts.Source); err != nil {
		return nil, err
	}
	if s.target, err = pg.Connect(ctx, pg.Target, opts.Target); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// BeginMigration brings pgleap's state on the target up to date and records the migration
// from the source's database of this major with this selection, or checks that the one
// recorded is the same: a rerun resumes, it does not mix two migrations.
func BeginMigration(ctx context.Context, source, target *pgx.Conn, sourceMajor int, tables config.TableFilter) error {
	if err := state.Init(ctx, target); err != nil {
		return err
	}
	var database string
	if err := source.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		return fmt.Errorf("read source database name: %w", err)
	}
	return state.Begin(ctx, target, state.Migration{SourceDatabase: database, SourceMajor: sourceMajor,
		Include: tables.Include, Exclude: tables.Exclude})
}

func (s *Stage) prepare(ctx context.Context) error {
	version, err := pg.ServerVersion(ctx, s.source)
	if err != nil {
		return err
	}
	if s.tools, err = FindTools(ctx, s.opts.PgBin, version.Major); err != nil {
		return err
	}
	s.opts.Logger.Info("using PostgreSQL client tools", "pg_dump", s.tools.PgDump, "version", s.tools.Version)
	if err := BeginMigration(ctx, s.source, s.target, version.Major, s.opts.Tables); err != nil {
		return err
	}
	if s.done, err = state.DoneSteps(ctx, s.target); err != nil {
		return err
	}
	raw, err := state.LoadArchive(ctx, s.target)
	if err != nil {
		return err
	}
	if raw == nil {
		// Counted before the dump: a change captured later may be in it or not, and the
		// copy refuses a slot whose snapshot sees one (copy.checkDDLWindow).
		captured, err := ddl.Captured(ctx, s.source)
		if err != nil {
			return err
		}
		if raw, err = s.dump(ctx); err != nil {
			return err
		}
		if raw, err = state.SaveArchive(ctx, s.target, raw, s.tools.Version, captured); err != nil {
			return err
		}
	}
	archive, err := ReadArchive(raw)
	if err != nil {
		return fmt.Errorf("read the schema archive: %w", err)
	}
	s.plan = NewPlan(archive, s.opts.Tables)
	dir, err := os.MkdirTemp("", "pgleap-schema-")
	if err != nil {
		return fmt.Errorf("create a directory for the schema archive: %w", err)
	}
	s.archivePath = filepath.Join(dir, "schema.dump")
	if err := os.WriteFile(s.archivePath, raw, 0o600); err != nil {
		return fmt.Errorf("write the schema archive: %w", err)
	}
	return nil
}

// Plan returns the selection of the archive this stage restores.
func (s *Stage) Plan() *Plan { return s.plan }

// Close releases the stage's connections and local files.
func (s *Stage) Close() {
	ctx := context.Background()
	if s.source != nil {
		s.source.Close(ctx)
	}
	if s.target != nil {
		s.target.Close(ctx)
	}
	if s.archivePath != "" {
		os.RemoveAll(filepath.Dir(s.archivePath))
	}
}

// dump runs pg_dump for the whole database's schema; selection happens on the archive.
func (s *Stage) dump(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "pgleap-dump-")
	if err != nil {
		return nil, fmt.Errorf("create a directory for pg_dump: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "schema.dump")
	start := time.Now()
	// pgleap migrate --ddl's capture stays on the source.
	if _, err := s.runTool(ctx, s.tools.PgDump, s.opts.Source, "--format=custom", "--schema-only",
		"--no-subscriptions", "--exclude-schema=pgleap_ddl", "--file="+path); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pg_dump's archive: %w", err)
	}
	s.opts.Logger.Info("dumped the source schema", "bytes", len(raw), "took", time.Since(start).Round(time.Millisecond))
	return raw, nil
}

// runTool runs a PostgreSQL client program against connString, passing the password through
// the environment, and returns its standard output.
func (s *Stage) runTool(ctx context.Context, program, connString string, args ...string) ([]byte, error) {
	conn, password, err := config.SplitPassword(connString)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(program)
	dbArg := "--dbname=" + conn
	cmd := exec.CommandContext(ctx, program, append([]string{dbArg}, args...)...)
	cmd.Env = os.Environ()
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		message := strings.TrimSpace(stderr.String())
		return nil, fmt.Errorf("%s: %v: %s: %s", name, err, message, toolAdvice(message))
	}
	return out, nil
}

// toolAdvice says what to do about a failed client program, from what it printed.
func toolAdvice(message string) string {
	switch {
	case strings.Contains(message, "permission denied"):
		return "grant the role what it lacks on the source (pgleap check lists the missing privileges), then run pgleap migrate again: it resumes"
	case strings.Contains(message, "server version mismatch"), strings.Contains(message, "aborting because of server version mismatch"):
		return "use client tools at least as new as the source (--pg-bin)"
	}
	return "fix the cause, then run pgleap migrate again: it resumes"
}

// Run restores the whole schema of a database whose rows are already there, or that
// has none to copy: Restore, then BuildPostData.
func (s *Stage) Run(ctx context.Context) (*Result, error) {
	start := time.Now()
	res, err := s.Restore(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.BuildPostData(ctx, nil, res); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

// ErrSchemaOnlyTarget is returned when rows are to be loaded into a target that received
// its post-data (indexes, foreign keys) without rows, from migrate --schema-only.
var ErrSchemaOnlyTarget = errors.New("the target received the schema only")

// RefuseRowsAfterSchemaOnly fails when post-data was built on this target before any row
// was copied: loading rows then would fight the foreign keys and maintain every index row by
// row, so the load must start again on an empty database.
func (s *Stage) RefuseRowsAfterSchemaOnly(ctx context.Context) error {
	var schemaOnly bool
	err := s.target.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pgleap.step WHERE id LIKE 'post-data:%')
		AND NOT EXISTS (SELECT FROM pgleap.copy_item)`).Scan(&schemaOnly)
	if err != nil {
		return fmt.Errorf("read pgleap state: %w", err)
	}
	if schemaOnly {
		return fmt.Errorf("%w (pgleap migrate --schema-only) and its indexes and foreign keys are built: drop and recreate the target database, then run pgleap migrate (or pgleap migrate --no-follow for a copy that does not follow the source)", ErrSchemaOnlyTarget)
	}
	return nil
}

// Restore creates the roles and the pre-data objects (tables without indexes, types,
// functions, views...): what the data copy needs.
func (s *Stage) Restore(ctx context.Context) (*Result, error) {
	res := &Result{Tools: s.tools, Skipped: s.plan.Skipped}
	if err := s.restoreRoles(ctx, res); err != nil {
		return nil, err
	}
	if err := s.restorePreData(ctx, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (s *Stage) restoreRoles(ctx context.Context, res *Result) error {
	if s.done[StepRoles] {
		return nil
	}
	args := []string{"--roles-only"}
	if s.opts.CopyPasswords {
		var canRead bool
		if err := s.source.QueryRow(ctx, "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')").Scan(&canRead); err != nil {
			return fmt.Errorf("check access to pg_authid: %w", err)
		}
		if !canRead {
			return errors.New("--copy-passwords needs a source role that may read pg_authid (a superuser of a self-managed server); managed services hide password verifiers: run without --copy-passwords and set the listed passwords on the target")
		}
	} else {
		args = append(args, "--no-role-passwords")
	}
	script, err := s.runTool(ctx, s.tools.PgDumpAll, s.opts.Source, args...)
	if err != nil {
		return fmt.Errorf("dump roles: %w", err)
	}
	var targetRoles []string
	rows, err := s.target.Query(ctx, "SELECT rolname FROM pg_catalog.pg_roles")
	if err == nil {
		targetRoles, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return fmt.Errorf("list target roles: %w", err)
	}
	var superuser bool
	if err := s.target.QueryRow(ctx, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").Scan(&superuser); err != nil {
		return fmt.Errorf("check the target role: %w", err)
	}
	res.Roles, res.RoleWarnings = planRoles(string(script), targetRoles, s.opts.CopyPasswords, superuser)
	err = pgx.BeginFunc(ctx, s.target, func(tx pgx.Tx) error {
		for _, stmt := range res.Roles.Statements {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("create roles: %s: %w", firstLine(stmt), err)
			}
		}
		return state.RecordStep(ctx, tx, StepRoles)
	})
	if err != nil {
		return err
	}
	s.opts.Logger.Info("created roles", "created", len(res.Roles.Created), "already on target", len(res.Roles.Existing))
	return nil
}

func (s *Stage) restorePreData(ctx context.Context, res *Result) error {
	if s.done[stepPreData] {
		return nil
	}
	list := filepath.Join(filepath.Dir(s.archivePath), "pre-data.list")
	if err := os.WriteFile(list, []byte(s.plan.restoreList(SectionPreData)), 0o600); err != nil {
		return fmt.Errorf("write the pre-data list: %w", err)
	}
	// The list names the section's entries; --section=pre-data would also drop the grants
	// on schema public, an entry without a parent from PostgreSQL 15 on.
	args := []string{"--use-list=" + list, "--file=-"}
	if !s.opts.KeepTablespaces {
		args = append(args, "--no-tablespaces")
	}
	cmd := exec.CommandContext(ctx, s.tools.PgRestore, append(args, s.archivePath)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	script, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("pg_restore pre-data: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	restore, err := s.keepPublicSchemaOwner(ctx, withoutMetaCommands(string(script)))
	if err != nil {
		return err
	}
	// The script runs in one transaction with its step record: after a crash it is either
	// all there and recorded, or not there at all.
	err = pgx.BeginFunc(ctx, s.target, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, restore); err != nil {
			return fmt.Errorf("restore pre-data (types, functions, tables, views...): %w", err)
		}
		if err := state.RecordSkipped(ctx, tx, s.plan.Skipped); err != nil {
			return err
		}
		return state.RecordStep(ctx, tx, stepPreData)
	})
	if err != nil {
		return err
	}
	// The script's SET commands outlive its transaction; start the session afresh.
	if _, err := s.target.Exec(ctx, "RESET ALL"); err != nil {
		return fmt.Errorf("reset the target session: %w", err)
	}
	res.PreDataRestored = true
	s.opts.Logger.Info("restored pre-data", "objects", len(s.plan.Entries(SectionPreData)), "skipped", len(s.plan.Skipped))
	return nil
}

// publicOwner matches the statement pg_dump writes for the owner of schema public, which
// exists in every new database.
var publicOwner = regexp.MustCompile(`(?m)^ALTER SCHEMA public OWNER TO (.+);$`)

// keepPublicSchemaOwner leaves the target's schema public to its owner when pgleap's role may
// not hand it to the source's owner (usually the source's bootstrap superuser, which a
// managed service's admin role never is): the only thing lost is an owner the database got by
// default. Any other owner change the role may not make fails the restore, and says so.
func (s *Stage) keepPublicSchemaOwner(ctx context.Context, script string) (string, error) {
	m := publicOwner.FindStringSubmatch(script)
	if m == nil {
		return script, nil
	}
	owner := strings.Trim(m[1], `"`)
	var may bool
	err := s.target.QueryRow(ctx, `SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1)
		THEN pg_catalog.pg_has_role(current_user, $1, 'MEMBER') ELSE false END`, owner).Scan(&may)
	if err != nil {
		return "", fmt.Errorf("read whether the role may own schema public as %s: %w", owner, err)
	}
	if may {
		return script, nil
	}
	s.opts.Logger.Info("schema public keeps the target's owner: pgleap's role may not make it the source's", "source owner", owner)
	return publicOwner.ReplaceAllString(script, "-- (schema public keeps the target's owner)"), nil
}

// withoutMetaCommands drops the psql meta-commands pg_restore writes around its script
// (\restrict and \unrestrict, since 15.14) so the server can run the rest.
func withoutMetaCommands(script string) string {
	lines := strings.Split(script, "\n")
	kept := lines[:0]
	for _, line := range lines {
		if !strings.HasPrefix(line, `\restrict `) && !strings.HasPrefix(line, `\unrestrict `) {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
