package assess

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
)

// Options tune the assessment.
type Options struct {
	Tables config.TableFilter
	// LongTransactionAge is how old an open transaction must be to be reported; sessions
	// idle in a transaction are reported at any age.
	LongTransactionAge time.Duration
}

// DefaultLongTransactionAge is the age past which an open transaction is worth a warning.
const DefaultLongTransactionAge = time.Minute

// Env is what every check reads: both servers, and the source tables selected for the
// migration.
type Env struct {
	Source, Target Server
	Tables         []catalog.Table
	Options        Options
}

type check struct {
	name string
	run  func(ctx context.Context, env *Env) ([]Finding, error)
}

// checks lists every check in the order they run; the report sorts their findings.
var checks = []check{
	{"source version", checkSourceVersion},
	{"source replication settings", checkReplicationSettings},
	{"source replication privilege", checkReplicationPrivilege},
	{"source table privileges", checkTablePrivileges},
	{"source identifiers", checkCaseCollisions},
	{"source sessions", checkSessions},
	{"leftover slots", checkLeftoverSlots},
	{"schema change capture", checkDDLCapture},
	{"replica identity", checkReplicaIdentity},
	{"table kinds", checkTableKinds},
	{"column types", checkColumnTypes},
	{"database objects", checkDatabaseObjects},
	{"target version", checkTargetVersion},
	{"target emptiness", checkTargetEmpty},
	{"target privileges", checkTargetPrivileges},
	{"cutover privileges", checkCutoverPrivileges},
	{"extensions", checkExtensions},
	{"encoding and locale", checkEncodingAndLocale},
	{"collations", checkCollations},
	{"removed features", checkRemovedFeatures},
	{"settings drift", checkSettingsDrift},
}

// ServerSummary identifies one side in a report.
type ServerSummary struct {
	Version  string `json:"version"`
	Major    int    `json:"major"`
	Database string `json:"database"`
	User     string `json:"user"`
	Managed  string `json:"managed_service,omitempty"`
}

// Report is the outcome of an assessment.
type Report struct {
	Source   ServerSummary `json:"source"`
	Target   ServerSummary `json:"target"`
	Findings []Finding     `json:"findings"`
	Summary  Summary       `json:"summary"`
}

// Count returns how many findings have severity s.
func (r *Report) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// Run assesses the pair of servers behind source and target. Both connections should carry
// ReadOnlySettings.
func Run(ctx context.Context, source, target *pgx.Conn, opts Options) (*Report, error) {
	if opts.LongTransactionAge == 0 {
		opts.LongTransactionAge = DefaultLongTransactionAge
	}
	env := &Env{Options: opts}
	var err error
	if env.Source, err = DescribeServer(ctx, pg.Source, source); err != nil {
		return nil, err
	}
	if env.Target, err = DescribeServer(ctx, pg.Target, target); err != nil {
		return nil, err
	}
	all, err := catalog.Tables(ctx, source)
	if err != nil {
		return nil, fmt.Errorf("read source tables: %w", err)
	}
	for _, t := range all {
		if opts.Tables.Selects(t.Schema, t.Name) {
			env.Tables = append(env.Tables, t)
		}
	}
	report := &Report{Source: env.Source.summary(), Target: env.Target.summary(), Findings: []Finding{}}
	for _, c := range checks {
		findings, err := c.run(ctx, env)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", c.name, err)
		}
		report.Findings = append(report.Findings, findings...)
	}
	sortFindings(report.Findings)
	report.Summary = summarize(env.Tables)
	return report, nil
}

func (s Server) summary() ServerSummary {
	return ServerSummary{
		Version:  s.Version.String(),
		Major:    s.Version.Major,
		Database: s.Database,
		User:     s.User,
		Managed:  string(s.Managed),
	}
}

// queryRows runs sql and collects each row into a T by position.
func queryRows[T any](ctx context.Context, conn *pgx.Conn, sql string, args ...any) ([]T, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[T])
}

// queryStrings runs sql and returns its single text column.
func queryStrings(ctx context.Context, conn *pgx.Conn, sql string, args ...any) ([]string, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// queryNames runs sql, whose rows are (schema, name), and returns the quoted names.
func queryNames(ctx context.Context, conn *pgx.Conn, sql string, args ...any) ([]string, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var schema, name string
		err := row.Scan(&schema, &name)
		return pg.QualifiedName(schema, name), err
	})
}
