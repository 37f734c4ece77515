package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// ApplySettings are the session settings of the apply connection: triggers and foreign-key
// checks stay quiet on this session only, and commits are durable before the source is told.
var ApplySettings = map[string]string{
	"session_replication_role": "replica",
	"synchronous_commit":       "on",
	"search_path":              "",
}

// Group bounds: a target transaction holds source transactions until one of these is
// reached, or until the stream pauses.
const (
	maxGroupChanges = 20000
	maxGroupAge     = 200 * time.Millisecond
	maxBatch        = 1000     // statements sent in one round trip
	maxNetBytes     = 32 << 20 // net changes held for one table before they are written
)

// ErrRowNotFound is returned when an update or delete finds no row on the target: the
// target has diverged from the source, and going on would hide it.
var ErrRowNotFound = errors.New("row not found on the target")

// SchemaMismatchError is a source relation whose columns differ from the target table's.
type SchemaMismatchError struct {
	Table       string
	Differences []string // one sentence each
	DDL         []string // what to run on the target, where pgleap can tell
}

func (e *SchemaMismatchError) Error() string {
	msg := fmt.Sprintf("table %s differs between source and target: %s", e.Table, strings.Join(e.Differences, "; "))
	if len(e.DDL) > 0 {
		msg += "; run on the target: " + strings.Join(e.DDL, " ")
	}
	return msg + "; then run pgleap migrate again to continue"
}

// applier writes source transactions on the target, several per target transaction.
type applier struct {
	conn   *pgx.Conn
	skip   map[string]pglogrepl.LSN // qualified table name → changes committed before this are in its copy
	tables map[string]*targetTable  // by qualified name
	stmts  map[string]string        // statement text → prepared name
	nextID int
	tx     pgx.Tx
	batch  pendingBatch
	group  groupStats
	// applied is how far the target is in step with the source: the end of the last source
	// transaction committed on the target, or a keepalive's position past it when nothing
	// was left to apply; recorded is what pgleap.replication says (it follows applied
	// lazily while idle).
	applied, recorded pglogrepl.LSN
	// inStep is a mark of the source (a WAL position and its clock then) taken while idle;
	// once applied reaches it, the target is in step with the source as of its time, which
	// persistIdle records for the lag in seconds.
	inStep inStepMark
	cur    *Begin // the source transaction being applied
	net    map[string]*netTable
	// prefetch reads the rows of the open group ahead of the apply session (nil: none);
	// openedGroups numbers the groups, so that it can tell one already handed over.
	prefetch     *prefetcher
	openedGroups int64
	// inflight is the closed group the target is committing while the next one is read;
	// inflightIdleEnd a keepalive's position received meanwhile with nothing else open,
	// applied once inflight commits; handedEnd the last position handed to the target.
	inflight                   *groupCommit
	inflightIdleEnd, handedEnd pglogrepl.LSN
	// lastCommitLSN is the commit position of the last source transaction taken in (or,
	// before the first, the recorded position: every transaction applied committed before it).
	lastCommitLSN pglogrepl.LSN
	// now is the stream's clock, read once per message: reading it for every transaction
	// showed in profiles.
	now time.Time
	// orderedUntil: source transactions committed up to here are applied change by change,
	// after their net changes met a unique constraint.
	orderedUntil pglogrepl.LSN
	// Captured schema changes (ddl.go): those to skip, the migration's selection, and for
	// the current source transaction the statement each query text is at, and how many
	// changes it has brought so far.
	skipDDL    map[int64]bool
	ddlRoles   map[string]bool // roles trusted to change the schema besides superusers
	selection  config.TableFilter
	ddlNext    map[string]int
	curChanges int
	logger     *slog.Logger
	Stats      ApplyStats
}

// ApplyStats count what the applier did.
type ApplyStats struct {
	Transactions, Changes, Skipped, Groups int64
	// DDL counts the captured schema changes run (or skipped) on the target.
	DDL int64
	// TargetTime is the time the target spent executing and committing, most of it while
	// the next group was being read.
	TargetTime time.Duration
	// Prefetched counts the rows a second target session read ahead of the apply (prefetch.go).
	Prefetched int64
}

type groupStats struct {
	open         bool
	started      time.Time
	transactions int
	changes      int
	end          pglogrepl.LSN
	commitTime   time.Time
	idleEnd      pglogrepl.LSN // a keepalive's position received after the group's last commit
	// schemaChanged: a captured schema change ran in the group.
	schemaChanged bool
}

// targetTable is what the target says about a table changes are applied to.
type targetTable struct {
	partitioned bool
	types       map[string]string // column name → format_type
}

// pendingBatch is statements queued for one round trip, with what each was for.
type pendingBatch struct {
	batch pgconn.Batch
	what  []pendingStatement
}

type pendingStatement struct {
	change   *Change // nil for net changes
	label    string  // what a net-change statement does
	xid      uint32  // of the source transaction
	wantRows int64   // rows the statement must change, -1 when any count is fine
}

func (p pendingStatement) String() string {
	if p.change == nil {
		return p.label
	}
	return fmt.Sprintf("%s on %s (source transaction %d, key %s)", p.change.Kind, p.change.Rel.QualifiedName(), p.xid, describeKey(p.change))
}

func newApplier(conn *pgx.Conn, skip map[string]pglogrepl.LSN, applied, orderedUntil pglogrepl.LSN) *applier {
	return &applier{conn: conn, skip: skip, tables: map[string]*targetTable{}, stmts: map[string]string{}, applied: applied, recorded: applied,
		handedEnd: applied, lastCommitLSN: applied, net: map[string]*netTable{}, orderedUntil: orderedUntil,
		skipDDL: map[int64]bool{}, ddlRoles: map[string]bool{}, ddlNext: map[string]int{}, logger: slog.New(slog.DiscardHandler)}
}

// checkRelation compares a relation pgoutput describes with the target's table.
// sourceTypes gives the source's declared type of each column (format_type).
func (a *applier) checkRelation(ctx context.Context, rel *Relation, sourceTypes []string) error {
	t, err := a.table(ctx, rel)
	if err != nil {
		return err
	}
	mismatch := &SchemaMismatchError{Table: rel.QualifiedName()}
	seen := map[string]bool{}
	for i, c := range rel.Columns {
		seen[c.Name] = true
		targetType, ok := t.types[c.Name]
		switch {
		case !ok:
			mismatch.Differences = append(mismatch.Differences, fmt.Sprintf("column %s (%s) is on the source only", pg.QuoteIdent(c.Name), sourceTypes[i]))
			mismatch.DDL = append(mismatch.DDL, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s;", rel.QualifiedName(), pg.QuoteIdent(c.Name), sourceTypes[i]))
		case targetType != sourceTypes[i]:
			mismatch.Differences = append(mismatch.Differences, fmt.Sprintf("column %s is %s on the source, %s on the target", pg.QuoteIdent(c.Name), sourceTypes[i], targetType))
			mismatch.DDL = append(mismatch.DDL, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s;", rel.QualifiedName(), pg.QuoteIdent(c.Name), sourceTypes[i]))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(t.types)) {
		if !seen[name] {
			mismatch.Differences = append(mismatch.Differences, fmt.Sprintf("column %s (%s) is on the target only", pg.QuoteIdent(name), t.types[name]))
			mismatch.DDL = append(mismatch.DDL, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s;", rel.QualifiedName(), pg.QuoteIdent(name)))
		}
	}
	if len(mismatch.Differences) > 0 {
		return mismatch
	}
	return nil
}

// table reads a table's columns from the target, once per table.
func (a *applier) table(ctx context.Context, rel *Relation) (*targetTable, error) {
	name := rel.QualifiedName()
	if t, ok := a.tables[name]; ok {
		return t, nil
	}
	conn, err := a.connection()
	if err != nil {
		return nil, err
	}
	t := &targetTable{types: map[string]string{}}
	var kind string
	err = conn.QueryRow(ctx, "SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = to_regclass($1)", name).Scan(&kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &SchemaMismatchError{Table: name, Differences: []string{"the table is on the source only"}}
	}
	if err != nil {
		return nil, fmt.Errorf("read table %s on the target: %w", name, err)
	}
	t.partitioned = kind == "p"
	rows, err := conn.Query(ctx, `SELECT attname, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
		WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`, name)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s on the target: %w", name, err)
	}
	var col, typ string
	if _, err := pgx.ForEachRow(rows, []any{&col, &typ}, func() error { t.types[col] = typ; return nil }); err != nil {
		return nil, fmt.Errorf("read columns of %s on the target: %w", name, err)
	}
	a.tables[name] = t
	return t, nil
}

// forget drops what the applier knows of a relation's table, after pgoutput described it
// anew (its columns may have changed).
func (a *applier) forget(rel *Relation) {
	delete(a.tables, rel.QualifiedName())
}

// begin starts a source transaction, and a group when none is open. The group's target
// transaction begins when its first statement must go out, which for net changes is when
// the group closes.
func (a *applier) begin(b Begin) error {
	if a.cur != nil {
		return fmt.Errorf("transaction %d begins while transaction %d is half applied: the stream is out of order", b.Xid, a.cur.Xid)
	}
	if !a.group.open {
		a.group = groupStats{open: true, started: a.now}
		a.openedGroups++
	}
	a.cur = &b
	a.curChanges = 0
	clear(a.ddlNext)
	return nil
}

// connection waits for the group the target is committing, then hands out the target
// connection: it serves one group at a time.
func (a *applier) connection() (*pgx.Conn, error) {
	if err := a.settle(); err != nil {
		return nil, err
	}
	return a.conn, nil
}

// txn returns the open group's target transaction, beginning it if needed.
func (a *applier) txn(ctx context.Context) (pgx.Tx, error) {
	if a.tx != nil {
		return a.tx, nil
	}
	conn, err := a.connection()
	if err != nil {
		return nil, err
	}
	if a.tx, err = conn.Begin(ctx); err != nil {
		return nil, fmt.Errorf("begin a target transaction: %w", err)
	}
	return a.tx, nil
}

// apply queues one change of the current source transaction.
func (a *applier) apply(ctx context.Context, c *Change) error {
	if a.cur == nil {
		return fmt.Errorf("%s outside a transaction: the stream is out of order", c.Kind)
	}
	a.curChanges++
	if c.Kind == Truncate {
		return a.truncate(ctx, c)
	}
	if lsn, ok := a.skip[c.Rel.QualifiedName()]; ok && a.cur.CommitLSN < lsn {
		a.Stats.Skipped++
		return nil
	}
	if _, err := a.table(ctx, c.Rel); err != nil {
		return err
	}
	name := c.Rel.QualifiedName()
	if a.cur.CommitLSN > a.orderedUntil {
		t := a.net[name]
		if t == nil || t.rel != c.Rel {
			if err := a.flushNet(ctx, name); err != nil { // described anew: its columns may differ
				return err
			}
			t = &netTable{rel: c.Rel, rows: map[string]*netRow{}}
			a.net[name] = t
		}
		if t.collapse(c) {
			a.group.changes++
			a.Stats.Changes++
			if t.bytes > maxNetBytes {
				return a.flushNet(ctx, name)
			}
			if len(t.unread) >= prefetchRows {
				a.offerPrefetch(t)
			}
			return nil
		}
	}
	// Applied on its own, after what is pending for its table.
	if err := a.flushNet(ctx, name); err != nil {
		return err
	}
	sql, params, want := statementFor(c)
	if err := a.queue(ctx, sql, params, pendingStatement{change: c, xid: a.cur.Xid, wantRows: want}); err != nil {
		return err
	}
	a.group.changes++
	a.Stats.Changes++
	return nil
}

func (a *applier) truncate(ctx context.Context, c *Change) error {
	var names []string
	for _, rel := range c.Truncated {
		if lsn, ok := a.skip[rel.QualifiedName()]; ok && a.cur.CommitLSN < lsn {
			continue
		}
		t, err := a.table(ctx, rel)
		if err != nil {
			return err
		}
		if t.partitioned {
			names = append(names, rel.QualifiedName()) // a partitioned table cannot be truncated ONLY
		} else {
			names = append(names, "ONLY "+rel.QualifiedName())
		}
	}
	if len(names) == 0 {
		a.Stats.Skipped++
		return nil
	}
	// The source lists every table its TRUNCATE reached, the cascaded ones included, so
	// CASCADE is not repeated: it could reach target tables the source's did not.
	sql := "TRUNCATE " + strings.Join(names, ", ")
	if c.RestartIdentity {
		sql += " RESTART IDENTITY"
	}
	tx, err := a.afterPending(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, sql); err != nil {
		return fmt.Errorf("apply truncate of %s: %w", strings.Join(names, ", "), err)
	}
	a.group.changes++
	a.Stats.Changes++
	return nil
}

// afterPending writes every change pending (net changes, queued statements) and returns
// the group's target transaction: what runs in it next runs after them. What runs next
// (a TRUNCATE, a schema change) may lock a table the prefetcher reads: it stops reading
// for the group, so that it is not waited for.
func (a *applier) afterPending(ctx context.Context) (pgx.Tx, error) {
	if a.prefetch != nil {
		a.prefetch.drop(a.openedGroups)
	}
	if err := a.flushAllNet(ctx); err != nil {
		return nil, err
	}
	if err := a.flushBatch(ctx); err != nil {
		return nil, err
	}
	return a.txn(ctx)
}

// queue adds a statement to the batch, preparing it on first use, and sends the batch
// once it is full.
func (a *applier) queue(ctx context.Context, sql string, params [][]byte, what pendingStatement) error {
	name, ok := a.stmts[sql]
	if !ok {
		a.nextID++
		name = "pgleap_apply_" + strconv.Itoa(a.nextID)
		if err := a.flushBatch(ctx); err != nil {
			return err
		}
		conn, err := a.connection()
		if err != nil {
			return err
		}
		if _, err := conn.PgConn().Prepare(ctx, name, sql, nil); err != nil {
			return fmt.Errorf("prepare %s of %s: %w", what.change.Kind, what.change.Rel.QualifiedName(), err)
		}
		a.stmts[sql] = name
	}
	a.batch.batch.ExecPrepared(name, params, nil, nil)
	a.batch.what = append(a.batch.what, what)
	if len(a.batch.what) >= maxBatch {
		return a.flushBatch(ctx)
	}
	return nil
}

// flushBatch sends the queued statements in one round trip and checks each one's effect.
func (a *applier) flushBatch(ctx context.Context) error {
	if len(a.batch.what) == 0 {
		return nil
	}
	queued := a.batch
	a.batch = pendingBatch{}
	return a.runNow(ctx, []step{{batch: &queued}})
}

// runNow executes steps in the open group's target transaction and waits for them.
func (a *applier) runNow(ctx context.Context, steps []step) error {
	if len(steps) == 0 {
		return nil
	}
	if _, err := a.txn(ctx); err != nil {
		return err
	}
	until := a.group.end
	if a.cur != nil {
		until = max(until, a.cur.CommitLSN)
	}
	start := time.Now()
	defer func() { a.Stats.TargetTime += time.Since(start) }()
	for _, s := range steps {
		if err := s.run(ctx, a.conn, until); err != nil {
			return err
		}
	}
	return nil
}

// A step is one round trip of a group's work on the target: a batch of statements, or a
// COPY of new rows.
type step struct {
	batch *pendingBatch
	copy  *copyRows
	label string // what the COPY writes
}

// run executes the step and checks its effect. until is the last source commit the
// statements may hold: where an ordered apply must reach if net changes conflict.
func (s step) run(ctx context.Context, conn *pgx.Conn, until pglogrepl.LSN) error {
	if s.copy != nil {
		tag, err := conn.PgConn().CopyFrom(ctx, &s.copy.data, s.copy.sql)
		if err != nil {
			return applyError(pendingStatement{label: s.label}, err, until)
		}
		if tag.RowsAffected() != s.copy.rows {
			return fmt.Errorf("apply %s: %d written", s.label, tag.RowsAffected())
		}
		return nil
	}
	results, err := conn.PgConn().ExecBatch(ctx, &s.batch.batch).ReadAll()
	for i, r := range results {
		if i >= len(s.batch.what) {
			break
		}
		what := s.batch.what[i]
		if r.Err != nil {
			return applyError(what, r.Err, until)
		}
		if want := what.wantRows; want >= 0 && r.CommandTag.RowsAffected() != want {
			return fmt.Errorf("apply %s: %d of %d rows found: %w: the target has diverged from the source; compare them with pgleap verify",
				what, r.CommandTag.RowsAffected(), want, ErrRowNotFound)
		}
	}
	if err != nil {
		for _, what := range s.batch.what {
			if what.change == nil && isUniqueViolation(err) {
				return applyError(what, err, until) // the batch held net changes: they are the suspects
			}
		}
		return fmt.Errorf("apply changes of %d statements: %w", len(s.batch.what), err)
	}
	return nil
}

// applyError wraps a statement's error; a unique violation by net changes means the source
// transactions up to until must be applied again in order.
func applyError(what pendingStatement, err error, until pglogrepl.LSN) error {
	if what.change == nil && isUniqueViolation(err) {
		return &errCompactionConflict{until: until, err: err}
	}
	return fmt.Errorf("apply %s: %w", what, err)
}

// commit ends the current source transaction; the target transaction stays open for more
// unless the group is full.
func (a *applier) commit(ctx context.Context, c Commit) error {
	if a.cur == nil {
		return errors.New("commit outside a transaction: the stream is out of order")
	}
	a.cur = nil
	a.lastCommitLSN = max(a.lastCommitLSN, c.CommitLSN)
	a.group.end, a.group.commitTime = c.EndLSN, c.CommitTime
	a.group.transactions++
	a.Stats.Transactions++
	// A schema change ends its group with its source transaction: what it made may not be
	// usable until committed (an enum value added), as on the source.
	if a.group.changes >= maxGroupChanges || a.now.Sub(a.group.started) >= maxGroupAge || a.group.schemaChanged {
		return a.commitGroup(ctx)
	}
	return nil
}

// commitGroup hands the open group to the target to commit, with the position of its last
// source commit, and returns without waiting: the next group is read while the target
// works. It does nothing when no group is open or a source transaction is half applied.
func (a *applier) commitGroup(ctx context.Context) error {
	if !a.group.open || a.cur != nil {
		return nil
	}
	var steps []step
	for _, name := range slices.Sorted(maps.Keys(a.net)) {
		tableSteps, err := a.netSteps(ctx, name)
		if err != nil {
			return err
		}
		steps = append(steps, tableSteps...)
	}
	if len(a.batch.what) > 0 {
		queued := a.batch
		a.batch = pendingBatch{}
		steps = append(steps, step{batch: &queued})
	}
	// One group at a time, so that the target commits in the source's order.
	if err := a.settle(); err != nil {
		return err
	}
	end := max(a.group.end, a.group.idleEnd)
	g := &groupCommit{steps: steps, tx: a.tx, end: end, record: end > a.handedEnd, commitTime: a.group.commitTime,
		transactions: a.group.transactions, changes: a.group.changes, done: make(chan struct{})}
	a.handedEnd = max(a.handedEnd, end)
	if a.prefetch != nil {
		a.prefetch.handed.Store(a.openedGroups)
	}
	a.inflight, a.inflightIdleEnd = g, 0
	a.group, a.tx = groupStats{}, nil
	go g.run(ctx, a.conn)
	return nil
}

// groupCommit is a closed group on its way to the target.
type groupCommit struct {
	steps                 []step
	tx                    pgx.Tx // begun already when statements went out before the group closed
	end                   pglogrepl.LSN
	record                bool
	commitTime            time.Time
	transactions, changes int

	done chan struct{} // closed when it has committed or failed
	err  error
	took time.Duration
}

func (g *groupCommit) run(ctx context.Context, conn *pgx.Conn) {
	defer close(g.done)
	start := time.Now()
	g.err = g.commit(ctx, conn)
	g.took = time.Since(start)
}

func (g *groupCommit) commit(ctx context.Context, conn *pgx.Conn) (err error) {
	tx := g.tx
	if tx == nil {
		if tx, err = conn.Begin(ctx); err != nil {
			return fmt.Errorf("begin a target transaction: %w", err)
		}
	}
	defer func() {
		if err != nil {
			// A target that stops answering must not hold the stream's end forever.
			rollbackCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tx.Rollback(rollbackCtx)
		}
	}()
	for _, s := range g.steps {
		if err := s.run(ctx, conn, g.end); err != nil {
			return err
		}
	}
	if g.record {
		if err := state.RecordApplied(ctx, tx, g.end, g.commitTime, int64(g.transactions), int64(g.changes)); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit applied changes up to %s on the target: %w", g.end, err)
	}
	return nil
}

// settle waits for the group the target is committing, if any, and takes in its outcome.
func (a *applier) settle() error {
	if a.inflight == nil {
		return nil
	}
	<-a.inflight.done
	return a.reap()
}

// reap takes in the outcome of the group the target was committing, if it is done: the
// position it recorded is applied, and may be told to the source.
func (a *applier) reap() error {
	g := a.inflight
	if g == nil {
		return nil
	}
	select {
	case <-g.done:
	default:
		return nil
	}
	a.inflight = nil
	a.Stats.TargetTime += g.took
	if g.err != nil {
		return g.err
	}
	a.applied = max(a.applied, g.end, a.inflightIdleEnd)
	if g.record {
		a.recorded = max(a.recorded, g.end)
	}
	a.Stats.Groups++
	return nil
}

// rollback abandons the open target transaction, after the group the target is committing
// has finished: the next run starts from the recorded position again.
func (a *applier) rollback(ctx context.Context) {
	a.settle()
	if a.tx != nil {
		a.tx.Rollback(ctx)
	}
	a.tx, a.cur, a.group, a.batch = nil, nil, groupStats{}, pendingBatch{}
	a.net = map[string]*netTable{}
}

// groupDue is when the open group should be committed even if no more arrives; ok is
// false while there is none or a source transaction is half applied (its commit decides).
func (a *applier) groupDue() (due time.Time, ok bool) {
	if !a.group.open || a.cur != nil {
		return time.Time{}, false
	}
	return a.group.started.Add(maxGroupAge), true
}

// statementFor builds the SQL and parameters of a row change. Values travel as text and
// the target parses each with the column's own input function, so every type arrives
// exactly. want is the number of rows the statement must change.
func statementFor(c *Change) (sql string, params [][]byte, want int64) {
	rel := c.Rel
	name := rel.QualifiedName()
	var b strings.Builder
	switch c.Kind {
	case Insert:
		var cols, vals []string
		for i, col := range rel.Columns {
			cols = append(cols, pg.QuoteIdent(col.Name))
			params = append(params, valueParam(c.New[i]))
			vals = append(vals, "$"+strconv.Itoa(len(params)))
		}
		fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES (%s)", name, strings.Join(cols, ", "), strings.Join(vals, ", "))
		return b.String(), params, 1
	case Update:
		var sets []string
		for i, col := range rel.Columns {
			if c.New[i].Kind == ValueUnchanged {
				continue // not sent: the target keeps its value
			}
			params = append(params, valueParam(c.New[i]))
			sets = append(sets, fmt.Sprintf("%s = $%d", pg.QuoteIdent(col.Name), len(params)))
		}
		identity := c.Old
		if identity == nil {
			identity = c.New // the key did not change
		}
		where, whereParams := rowMatch(rel, identity, len(params))
		params = append(params, whereParams...)
		if len(sets) == 0 {
			// Every column unchanged and TOASTed: nothing to write, but the row must exist.
			fmt.Fprintf(&b, "SELECT FROM %s WHERE %s", name, where)
			return b.String(), params, 1
		}
		fmt.Fprintf(&b, "UPDATE %s SET %s WHERE %s", name, strings.Join(sets, ", "), where)
		return b.String(), params, 1
	case Delete:
		where, whereParams := rowMatch(rel, c.Old, 0)
		fmt.Fprintf(&b, "DELETE FROM %s WHERE %s", name, where)
		return b.String(), whereParams, 1
	}
	panic("statementFor: " + c.Kind.String())
}

// rowMatch is the condition that finds the row a change identifies. With a key, its
// columns; with REPLICA IDENTITY FULL, every column compared by text form (which needs no
// equality operator), on exactly one row even when several are identical.
func rowMatch(rel *Relation, identity []Value, paramOffset int) (string, [][]byte) {
	var conds []string
	var params [][]byte
	full := rel.Identity == 'f'
	for i, col := range rel.Columns {
		if !full && !col.Key || identity[i].Kind == ValueUnchanged {
			continue
		}
		params = append(params, valueParam(identity[i]))
		n := paramOffset + len(params)
		if full {
			conds = append(conds, fmt.Sprintf("%s::text IS NOT DISTINCT FROM $%d::text", pg.QuoteIdent(col.Name), n))
		} else {
			conds = append(conds, fmt.Sprintf("%s = $%d", pg.QuoteIdent(col.Name), n))
		}
	}
	if len(conds) == 0 {
		// No identity value to match by (an unsent TOASTed key): match nothing, so the
		// change fails as a missing row instead of touching every row.
		conds = append(conds, "false")
	}
	where := strings.Join(conds, " AND ")
	if full {
		// tableoid too: in a partitioned table a ctid is unique only within one partition.
		where = fmt.Sprintf("(tableoid, ctid) = (SELECT tableoid, ctid FROM %s WHERE %s LIMIT 1)", rel.QualifiedName(), where)
	}
	return where, params
}

func valueParam(v Value) []byte {
	if v.Kind == ValueNull {
		return nil
	}
	return v.Data
}

// describeKey names the row of a change for an error message: its key values.
func describeKey(c *Change) string {
	identity := c.Old
	if identity == nil {
		identity = c.New
	}
	var parts []string
	for i, col := range c.Rel.Columns {
		if (c.Rel.Identity == 'f' || col.Key) && identity[i].Kind == ValueText {
			v := string(identity[i].Data)
			if len(v) > 40 {
				v = v[:40] + "..."
			}
			parts = append(parts, col.Name+"="+v)
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// inStepMark is a position of the source's WAL and a time of its clock such that every
// transaction committed by that time ends before that position: the insert position, read
// after the clock. (Not the flush position: an asynchronous commit, synchronous_commit off,
// is visible before it is flushed.) WAL written after the last commit is flushed by the WAL
// writer within three wal_writer_delay, since the session that wrote it asked for that
// when it ended, and the walsender then sends it: a mark is reached that much later.
type inStepMark struct {
	lsn pglogrepl.LSN
	at  time.Time
}

// markInStep reads a mark of the source while the stream is idle, unless one is pending.
func (a *applier) markInStep(ctx context.Context, source *pgx.Conn) error {
	if a.inStep.lsn != 0 {
		return nil
	}
	// Evaluated in order: the clock before the position.
	err := source.QueryRow(ctx, "SELECT pg_catalog.clock_timestamp(), pg_catalog.pg_current_wal_insert_lsn()").Scan(&a.inStep.at, &a.inStep.lsn)
	if err != nil {
		return fmt.Errorf("read the WAL position and clock of the source: %w", err)
	}
	return nil
}

// inStepAsOf is the source time the target is in step with once applied has reached the
// pending mark, which it then clears; zero before (what is recorded stays).
func (a *applier) inStepAsOf() time.Time {
	if a.inStep.lsn == 0 || a.applied < a.inStep.lsn {
		return time.Time{}
	}
	at := a.inStep.at
	a.inStep = inStepMark{}
	return at
}

// offerPrefetch hands the rows a table's net changes will update or delete, not offered
// yet, to the prefetcher.
func (a *applier) offerPrefetch(t *netTable) {
	rows := t.unread
	t.unread = nil
	target := a.tables[t.rel.QualifiedName()]
	if a.prefetch == nil || target == nil || !a.prefetch.takes(a.openedGroups) {
		return
	}
	st, err := prefetchStatement(t.rel, target.types, rows)
	if err != nil {
		return // the group's own statements report it
	}
	a.prefetch.offer(prefetchRequest{statement: st, table: t.rel.QualifiedName(), group: a.openedGroups})
}

// flushAllNet writes every table's pending net changes.
func (a *applier) flushAllNet(ctx context.Context) error {
	for _, name := range slices.Sorted(maps.Keys(a.net)) {
		if err := a.flushNet(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// flushNet writes one table's pending net changes: deletes, then updates (queued with the
// other statements), then new rows with COPY.
func (a *applier) flushNet(ctx context.Context, name string) error {
	steps, err := a.netSteps(ctx, name)
	if err != nil {
		return err
	}
	return a.runNow(ctx, steps)
}

// netSteps turns one table's pending net changes into statements: its deletes and updates
// join the queued batch; when it has new rows, the batch so far and a COPY of them are
// returned as the steps that must go out, in that order.
func (a *applier) netSteps(ctx context.Context, name string) ([]step, error) {
	t := a.net[name]
	if t == nil || len(t.keys) == 0 && len(t.appended) == 0 {
		return nil, nil
	}
	target, err := a.table(ctx, t.rel)
	if err != nil {
		return nil, err
	}
	stmts, err := t.statements(target.types)
	if err != nil {
		return nil, err
	}
	for _, group := range [][]statement{stmts.deletes, stmts.updates} {
		for _, st := range group {
			a.batch.batch.ExecParams(st.sql, st.params, nil, nil, nil)
			a.batch.what = append(a.batch.what, pendingStatement{label: fmt.Sprintf("%d net changes of %s", st.rows, name), wantRows: st.rows})
		}
	}
	if stmts.inserts == nil {
		return nil, nil
	}
	var steps []step
	if len(a.batch.what) > 0 {
		queued := a.batch
		a.batch = pendingBatch{}
		steps = append(steps, step{batch: &queued})
	}
	return append(steps, step{copy: stmts.inserts, label: fmt.Sprintf("%d new rows of %s", stmts.inserts.rows, name)}), nil
}
