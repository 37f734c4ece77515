package schema

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// task is one post-data step: statements run in one target transaction together with the
// record that the step is done.
type task struct {
	id     string   // state step id
	label  string   // what it builds, for logs and errors
	sql    []string // run in order, in one transaction
	after  []string // tasks that must be done first
	tables []string // tables whose rows must be copied first, as "schema"."name"
	last   bool     // validation: runs once nothing else is ready
}

// constraintInfo is what the source says about a constraint entry of the archive.
type constraintInfo struct {
	OID         uint32
	Schema      string
	Table       string
	Name        string
	Type        string // p, u, f, c, x
	Deferrable  bool
	Validated   bool
	Partitioned bool   // the table is partitioned
	IndexDef    string // CREATE UNIQUE INDEX ... for p and u
}

const constraintsSQL = `
SELECT c.oid, n.nspname, t.relname, c.conname, c.contype::text, c.condeferrable, c.convalidated,
       t.relkind = 'p', CASE WHEN c.conindid <> 0 THEN pg_catalog.pg_get_indexdef(c.conindid) ELSE '' END
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE c.oid = ANY ($1)`

// planPostData turns the plan's post-data entries into tasks. Primary keys and unique
// constraints become an index build (which can run beside the table's other index builds)
// and a quick attach; foreign keys are added NOT VALID and validated at the end, so neither
// holds a long lock that blocks the other builds.
func (s *Stage) planPostData(ctx context.Context) ([]*task, error) {
	entries := s.plan.Entries(SectionPostData)
	var constraintOIDs []uint32
	for _, e := range entries {
		if e.Desc == "CONSTRAINT" || e.Desc == "FK CONSTRAINT" {
			constraintOIDs = append(constraintOIDs, e.OID)
		}
	}
	// pg_get_indexdef qualifies names only outside search_path: make it qualify all of them.
	if _, err := s.source.Exec(ctx, "SELECT pg_catalog.set_config('search_path', '', false)"); err != nil {
		return nil, fmt.Errorf("set the source search_path: %w", err)
	}
	rows, err := s.source.Query(ctx, constraintsSQL, constraintOIDs)
	if err != nil {
		return nil, fmt.Errorf("read source constraints: %w", err)
	}
	infos, err := pgx.CollectRows(rows, pgx.RowToStructByPos[constraintInfo])
	if err != nil {
		return nil, fmt.Errorf("read source constraints: %w", err)
	}
	constraints := map[uint32]constraintInfo{}
	for _, c := range infos {
		constraints[c.OID] = c
	}
	refreshes, err := s.planRefreshes(ctx)
	if err != nil {
		return nil, err
	}
	tasks := refreshes
	refreshOf := map[int]string{}
	for _, t := range refreshes {
		id, _ := strconv.Atoi(strings.TrimPrefix(t.id, "refresh:"))
		refreshOf[id] = t.id
	}
	for _, e := range entries {
		t := &task{id: "post-data:" + strconv.Itoa(e.DumpID), label: strings.ToLower(e.Desc) + " " + entryName(e), sql: []string{e.Defn}}
		t.after, t.tables = s.prerequisites(e, refreshOf)
		if s.opts.KeepTablespaces && e.Tablespace != "" {
			t.sql = append([]string{"SET LOCAL default_tablespace = " + pg.QuoteIdent(e.Tablespace)}, t.sql...)
		}
		c, known := constraints[e.OID]
		switch {
		case e.Desc == "CONSTRAINT" && known && (c.Type == "p" || c.Type == "u") && !c.Deferrable && !c.Partitioned && c.IndexDef != "":
			settings := slices.Clip(t.sql[:len(t.sql)-1]) // the tablespace, if kept
			build := &task{id: t.id + ":index", label: "index for " + t.label, sql: append(settings, c.IndexDef), after: t.after, tables: t.tables}
			kind := "PRIMARY KEY"
			if c.Type == "u" {
				kind = "UNIQUE"
			}
			t.sql = []string{fmt.Sprintf("ALTER TABLE ONLY %s ADD CONSTRAINT %s %s USING INDEX %s",
				pg.QualifiedName(c.Schema, c.Table), pg.QuoteIdent(c.Name), kind, pg.QuoteIdent(c.Name))}
			t.after = []string{build.id}
			tasks = append(tasks, build)
		case e.Desc == "FK CONSTRAINT" && known && c.Validated && !c.Partitioned:
			t.sql = []string{strings.TrimSuffix(strings.TrimSpace(e.Defn), ";") + " NOT VALID"}
			tasks = append(tasks, &task{id: t.id + ":validate", label: "validate " + t.label, last: true, after: []string{t.id},
				sql: []string{fmt.Sprintf("ALTER TABLE ONLY %s VALIDATE CONSTRAINT %s", pg.QualifiedName(c.Schema, c.Table), pg.QuoteIdent(c.Name))}})
		}
		tasks = append(tasks, t)
	}
	if s.opts.Analyze {
		tasks = append(tasks, analyzeTasks(s.plan.Tables(), tasks)...)
	}
	return tasks, nil
}

// analyzeTasks gather each table's statistics after every other step built on it: ANALYZE
// and CREATE INDEX on one table wait for each other, and an index on an expression gets
// statistics of its own.
func analyzeTasks(tables [][2]string, tasks []*task) []*task {
	var analyzes []*task
	for _, t := range tables {
		name := pg.QualifiedName(t[0], t[1])
		a := &task{id: "analyze:" + name, label: "analyze " + name, sql: []string{"ANALYZE " + name}, tables: []string{name}}
		for _, other := range tasks {
			if slices.Contains(other.tables, name) {
				a.after = append(a.after, other.id)
			}
		}
		analyzes = append(analyzes, a)
	}
	return analyzes
}

// prerequisites maps an entry's dependencies to tasks and tables: a post-data dependency is
// its task, a table is its copied rows, a materialized view is its refresh, and anything in
// pre-data is already there.
func (s *Stage) prerequisites(e *Entry, refreshOf map[int]string) (after, tables []string) {
	for _, dep := range e.Deps {
		d := s.plan.Entry(dep)
		if d == nil || !s.plan.Included(dep) {
			continue
		}
		switch {
		case s.plan.Section(dep) == SectionPostData && !special[d.Desc]:
			after = append(after, "post-data:"+strconv.Itoa(dep))
		case d.Desc == "TABLE":
			tables = append(tables, pg.QualifiedName(d.Namespace, d.Tag))
		case d.Desc == "MATERIALIZED VIEW" && refreshOf[dep] != "":
			after = append(after, refreshOf[dep])
		}
	}
	return after, tables
}

// planRefreshes fills the materialized views that are populated on the source, once the
// tables (and views) they read are filled: a schema-only dump carries no matview data.
func (s *Stage) planRefreshes(ctx context.Context) ([]*task, error) {
	var views []*Entry
	var oids []uint32
	for _, e := range s.plan.Entries(SectionPreData) {
		if e.Desc == "MATERIALIZED VIEW" {
			views = append(views, e)
			oids = append(oids, e.OID)
		}
	}
	if len(views) == 0 {
		return nil, nil
	}
	rows, err := s.source.Query(ctx, "SELECT oid FROM pg_catalog.pg_class WHERE oid = ANY ($1) AND relispopulated", oids)
	if err != nil {
		return nil, fmt.Errorf("find populated materialized views: %w", err)
	}
	populated, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, fmt.Errorf("find populated materialized views: %w", err)
	}
	refreshOf := map[int]string{}
	for _, v := range views {
		if slices.Contains(populated, v.OID) {
			refreshOf[v.DumpID] = "refresh:" + strconv.Itoa(v.DumpID)
		}
	}
	var tasks []*task
	for _, v := range views {
		id := refreshOf[v.DumpID]
		if id == "" {
			continue
		}
		t := &task{id: id, label: "refresh materialized view " + entryName(v),
			sql: []string{"REFRESH MATERIALIZED VIEW " + pg.QualifiedName(v.Namespace, v.Tag)}}
		t.after, t.tables = s.prerequisites(v, refreshOf)
		tasks = append(tasks, t)
	}
	return tasks, nil
}

// postDataSettings are the session settings of post-data connections: names in the
// archive's SQL are fully qualified; sorts for index builds stay in memory; the server's
// max_parallel_maintenance_workers stands, so the build that runs alone at the end of a
// load (the largest table's primary key, typically) uses every core.
var postDataSettings = map[string]string{
	"search_path":          "",
	"maintenance_work_mem": "1GB",
	"synchronous_commit":   "off",
}

const retryAttempts = 3

// BuildPostData builds indexes, constraints, triggers and the rest, each as soon as the
// tables it stands on are copied: tablesCopied delivers each copied table and is closed when
// the copy ends; nil means every table is copied already.
func (s *Stage) BuildPostData(ctx context.Context, tablesCopied <-chan [2]string, res *Result) error {
	tasks, err := s.planPostData(ctx)
	if err != nil {
		return err
	}
	cfg, err := pgxpool.ParseConfig(s.opts.Target)
	if err != nil {
		return fmt.Errorf("parse target connection string: %w", err)
	}
	ccfg, err := pg.ParseConfig(pg.Target, s.opts.Target)
	if err != nil {
		return err
	}
	cfg.ConnConfig = ccfg
	for name, value := range postDataSettings {
		cfg.ConnConfig.RuntimeParams[name] = value
	}
	cfg.MaxConns = int32(s.opts.IndexJobs)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to target for post-data: %w", err)
	}
	defer pool.Close()

	sched := newScheduler(tasks, s.done)
	if tablesCopied == nil {
		for _, t := range s.plan.Tables() {
			sched.tableCopied(pg.QualifiedName(t[0], t[1]))
		}
	}
	res.PostDataResumed = sched.alreadyDone
	run := func(ctx context.Context, t *task) error { return s.runTask(ctx, pool, t) }
	n, err := sched.run(ctx, s.opts.IndexJobs, tablesCopied, run)
	res.PostDataTasks = n
	if err != nil {
		return err
	}
	s.opts.Logger.Info("built post-data", "steps", n, "done earlier", res.PostDataResumed)
	return nil
}

func (s *Stage) runTask(ctx context.Context, pool *pgxpool.Pool, t *task) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, stmt := range t.sql {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return err
				}
			}
			return state.RecordStep(ctx, tx, t.id)
		})
		if err == nil {
			s.opts.Logger.Debug("post-data step done", "step", t.label, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		var pgErr *pgconn.PgError
		// Two ALTER TABLEs on tables that reference each other can deadlock; the loser retries.
		if errors.As(err, &pgErr) && pgErr.Code == "40P01" && attempt < retryAttempts {
			continue
		}
		return fmt.Errorf("post-data %s: %w: fix the object on the source or target, then run pgleap migrate again to resume", t.label, err)
	}
}
