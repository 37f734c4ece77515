package cdc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
	cur               *Begin // the source transaction being applied
	net               map[string]*netTable
	// orderedUntil: source transactions committed up to here are applied change by change,
	// after their net changes met a unique constraint.
	orderedUntil pglogrepl.LSN
	Stats        ApplyStats
}

// ApplyStats count what the applier did.
type ApplyStats struct {
	Transactions, Changes, Skipped, Groups int64
	// TargetTime is the time spent waiting for the target to execute and commit.
	TargetTime time.Duration
}

type groupStats struct {
	open         bool
	started      time.Time
	transactions int
	changes      int
	end          pglogrepl.LSN
	commitTime   time.Time
	idleEnd      pglogrepl.LSN // a keepalive's position received after the group's last commit
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
		net: map[string]*netTable{}, orderedUntil: orderedUntil}
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
	t := &targetTable{types: map[string]string{}}
	var kind string
	err := a.conn.QueryRow(ctx, "SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = to_regclass($1)", name).Scan(&kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &SchemaMismatchError{Table: name, Differences: []string{"the table is on the source only"}}
	}
	if err != nil {
		return nil, fmt.Errorf("read table %s on the target: %w", name, err)
	}
	t.partitioned = kind == "p"
	rows, err := a.conn.Query(ctx, `SELECT attname, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
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
func (a *applier) forget(rel *Relation) { delete(a.tables, rel.QualifiedName()) }

// begin starts a source transaction, and a target transaction when none is open.
func (a *applier) begin(ctx context.Context, b Begin) error {
	if a.cur != nil {
		return fmt.Errorf("transaction %d begins while transaction %d is half applied: the stream is out of order", b.Xid, a.cur.Xid)
	}
	if !a.group.open {
		tx, err := a.conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("begin a target transaction: %w", err)
		}
		a.tx = tx
		a.group = groupStats{open: true, started: time.Now()}
	}
	a.cur = &b
	return nil
}

// apply queues one change of the current source transaction.
func (a *applier) apply(ctx context.Context, c *Change) error {
	if a.cur == nil {
		return fmt.Errorf("%s outside a transaction: the stream is out of order", c.Kind)
	}
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
	if err := a.flushAllNet(ctx); err != nil {
		return err
	}
	if err := a.flushBatch(ctx); err != nil {
		return err
	}
	if _, err := a.tx.Exec(ctx, sql); err != nil {
		return fmt.Errorf("apply truncate of %s: %w", strings.Join(names, ", "), err)
	}
	a.group.changes++
	a.Stats.Changes++
	return nil
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
		if _, err := a.conn.PgConn().Prepare(ctx, name, sql, nil); err != nil {
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
	start := time.Now()
	results, err := a.conn.PgConn().ExecBatch(ctx, &queued.batch).ReadAll()
	a.Stats.TargetTime += time.Since(start)
	for i, r := range results {
		if i >= len(queued.what) {
			break
		}
		what := queued.what[i]
		if r.Err != nil {
			return a.applyError(what, r.Err)
		}
		if want := what.wantRows; want >= 0 && r.CommandTag.RowsAffected() != want {
			return fmt.Errorf("apply %s: %d of %d rows found: %w: the target has diverged from the source; compare them with pgleap verify",
				what, r.CommandTag.RowsAffected(), want, ErrRowNotFound)
		}
	}
	if err != nil {
		for _, what := range queued.what {
			if what.change == nil && isUniqueViolation(err) {
				return a.applyError(what, err) // the batch held net changes: they are the suspects
			}
		}
		return fmt.Errorf("apply changes of %d statements: %w", len(queued.what), err)
	}
	return nil
}

// applyError wraps a statement's error; a unique violation by net changes means the group
// must be applied again in order.
func (a *applier) applyError(what pendingStatement, err error) error {
	if what.change == nil && isUniqueViolation(err) {
		until := a.group.end
		if a.cur != nil {
			until = max(until, a.cur.CommitLSN)
		}
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
	a.group.end, a.group.commitTime = c.EndLSN, c.CommitTime
	a.group.transactions++
	a.Stats.Transactions++
	if a.group.changes >= maxGroupChanges || time.Since(a.group.started) >= maxGroupAge {
		return a.commitGroup(ctx)
	}
	return nil
}

// commitGroup commits the open target transaction with the position of its last source
// commit; it does nothing when none is open or a source transaction is half applied.
func (a *applier) commitGroup(ctx context.Context) error {
	if !a.group.open || a.cur != nil {
		return nil
	}
	if err := a.flushAllNet(ctx); err != nil {
		return err
	}
	if err := a.flushBatch(ctx); err != nil {
		return err
	}
	end := max(a.group.end, a.group.idleEnd)
	if end > a.recorded {
		if err := state.RecordApplied(ctx, a.tx, end, a.group.commitTime, int64(a.group.transactions), int64(a.group.changes)); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := a.tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit applied changes up to %s on the target: %w", end, err)
	}
	a.Stats.TargetTime += time.Since(start)
	a.applied, a.recorded = max(a.applied, end), max(a.recorded, end)
	a.group = groupStats{}
	a.tx = nil
	a.Stats.Groups++
	return nil
}

// rollback abandons the open target transaction: the next run starts from the recorded
// position again.
func (a *applier) rollback(ctx context.Context) {
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
	t := a.net[name]
	if t == nil || len(t.keys) == 0 && len(t.appended) == 0 {
		return nil
	}
	target, err := a.table(ctx, t.rel)
	if err != nil {
		return err
	}
	stmts, err := t.statements(target.types)
	if err != nil {
		return err
	}
	for _, group := range [][]statement{stmts.deletes, stmts.updates} {
		for _, st := range group {
			a.batch.batch.ExecParams(st.sql, st.params, nil, nil, nil)
			a.batch.what = append(a.batch.what, pendingStatement{label: fmt.Sprintf("%d net changes of %s", st.rows, name), wantRows: st.rows})
		}
	}
	if stmts.inserts == nil {
		return nil
	}
	if err := a.flushBatch(ctx); err != nil {
		return err
	}
	start := time.Now()
	tag, err := a.conn.PgConn().CopyFrom(ctx, &stmts.inserts.data, stmts.inserts.sql)
	a.Stats.TargetTime += time.Since(start)
	if err != nil {
		return a.applyError(pendingStatement{label: fmt.Sprintf("%d new rows of %s", stmts.inserts.rows, name)}, err)
	}
	if tag.RowsAffected() != stmts.inserts.rows {
		return fmt.Errorf("apply %d new rows of %s: %d written", stmts.inserts.rows, name, tag.RowsAffected())
	}
	return nil
}
