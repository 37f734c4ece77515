package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/ddl"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// DDLError is a captured schema change the apply cannot run on the target.
type DDLError struct {
	Command   ddl.Command
	Statement string // "" when the query text shows none
	Err       error
}

func (e *DDLError) Error() string {
	c := e.Command
	if errors.Is(e.Err, errUntrustedRole) {
		return fmt.Sprintf("schema change %d (%s by %s) comes from a role that is not a superuser: pgleap does not run it on the target unasked, since code it calls "+
			"(a function in a default, a trigger) would run in pgleap's own session there; review it (%s), then pass --ddl-roles %s to run the changes of that role, "+
			"or run its equivalent on the target and pass --skip-ddl %d", c.ID, c.Tag, pg.QuoteIdent(c.Role), abbreviate(e.Statement), c.Role, c.ID)
	}
	if e.Statement == "" {
		return fmt.Sprintf("schema change %d (%s by %s) ran inside a function or a DO block, whose statements pgleap cannot see (the client sent: %s): "+
			"run its equivalent on the target, then pgleap migrate --skip-ddl %d", c.ID, c.Tag, pg.QuoteIdent(c.Role), abbreviate(c.Query), c.ID)
	}
	return fmt.Sprintf("schema change %d (%s by %s) failed on the target: %s: %v: "+
		"fix the target so that it can run and run pgleap migrate again, or run its equivalent on the target and pass --skip-ddl %d",
		c.ID, c.Tag, pg.QuoteIdent(c.Role), abbreviate(e.Statement), e.Err, c.ID)
}

func (e *DDLError) Unwrap() error { return e.Err }

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// errUntrustedRole: a captured change of a role that is neither a superuser nor trusted.
var errUntrustedRole = errors.New("the role is not trusted to change the target's schema")

// isDDLLog reports whether a relation is the source's log of schema changes.
func isDDLLog(rel *Relation) bool { return rel.Schema == ddl.Schema && rel.Name == ddl.Table }

// applyDDL runs a captured schema change on the target at its place in the stream: after
// every change before it, before any after it, in the same target transaction, and records
// it there so that a replayed stream does not run it twice.
func (a *applier) applyDDL(ctx context.Context, c *Change) error {
	if c.Kind != Insert {
		return nil // the log is only ever appended to; pgleap cleanup's removal is not a change to carry
	}
	names := make([]string, len(c.Rel.Columns))
	values := make([][]byte, len(c.Rel.Columns))
	for i, col := range c.Rel.Columns {
		names[i], values[i] = col.Name, c.New[i].Data
	}
	cmd, err := ddl.CommandFromRow(names, values)
	if err != nil {
		return err
	}
	tx, err := a.afterPending(ctx)
	if err != nil {
		return err
	}
	stmt, next, found := ddl.Statement(ddl.Split(cmd.Query), cmd.Tag, ddl.ObjectNames(cmd.Objects), a.ddlNext[cmd.Query])
	if found {
		a.ddlNext[cmd.Query] = next
	}
	if done, err := state.DDLDone(ctx, tx, cmd.ID); err != nil || done {
		return err
	}
	skipped := ""
	switch {
	case a.skipDDL[cmd.ID]:
		skipped = "pgleap migrate --skip-ddl"
	case !a.ddlSelected(cmd):
		skipped = "it touches nothing the migration selects"
	case !found:
		return &DDLError{Command: cmd}
	case !cmd.Superuser && !a.ddlRoles[cmd.Role]:
		return &DDLError{Command: cmd, Statement: stmt, Err: errUntrustedRole}
	}
	if skipped == "" {
		if ddl.Concurrent(stmt) {
			err = a.runConcurrentDDL(ctx, cmd, stmt)
		} else {
			err = a.runDDL(ctx, tx, cmd, stmt)
		}
		if err != nil {
			return &DDLError{Command: cmd, Statement: stmt, Err: err}
		}
		if tx, err = a.txn(ctx); err != nil {
			return err
		}
	}
	if err := state.RecordDDL(ctx, tx, cmd.ID, cmd.Tag, stmt, skipped); err != nil {
		return err
	}
	// What the applier knows of the target's tables may be out of date now, and so may the
	// parameter types of its prepared statements; a change skipped left them as they were.
	if skipped == "" {
		clear(a.tables)
		if err := a.forgetStatements(ctx); err != nil {
			return err
		}
	}
	a.group.schemaChanged = true
	a.group.changes++
	a.curChanges++
	a.Stats.DDL++
	switch {
	case skipped != "":
		a.logger.Info("skipped a schema change captured on the source", "id", cmd.ID, "tag", cmd.Tag, "why", skipped)
	case ddl.FillsRowsItsOwnWay(stmt):
		a.logger.Warn("a schema change captured on the source added a column whose value each server computes for itself (now(), random(), a sequence): "+
			"the existing rows may differ on the target; pgleap verify shows them, and an UPDATE from the source's values mends them before the cutover",
			"id", cmd.ID, "statement", abbreviate(stmt))
	default:
		a.logger.Info("ran a schema change captured on the source", "id", cmd.ID, "tag", cmd.Tag, "statement", abbreviate(stmt))
	}
	return nil
}

// forgetStatements deallocates the applier's prepared statements, in one round trip: each
// is prepared again on its next use, against the tables as they are now.
func (a *applier) forgetStatements(ctx context.Context) error {
	if len(a.stmts) == 0 {
		return nil
	}
	var sql strings.Builder
	for _, name := range a.stmts {
		sql.WriteString("DEALLOCATE " + name + ";")
	}
	if _, err := a.conn.PgConn().Exec(ctx, sql.String()).ReadAll(); err != nil {
		return fmt.Errorf("forget the apply's prepared statements: %w", err)
	}
	clear(a.stmts)
	return nil
}

// ddlSelected reports whether a change touches anything the migration selects. The tables
// it touches decide (an index's or a trigger's is among them): one selected is enough.
// Without a table, an object in a schema the selection does not exclude is enough.
func (a *applier) ddlSelected(cmd ddl.Command) bool {
	if a.selection.Include == nil && a.selection.Exclude == nil {
		return true
	}
	var tables, selectedTables, inSchemas int
	for _, o := range cmd.Objects {
		kind, schema, name := ddl.ParseObject(o)
		switch {
		case kind == "table" || kind == "foreign table":
			tables++
			if a.selection.Selects(schema, name) {
				selectedTables++
			}
		case schema == "" || !a.selection.ExcludesSchema(schema):
			inSchemas++ // not in a schema, or one it cannot tell, or one the selection keeps
		}
	}
	if tables > 0 {
		return selectedTables > 0
	}
	return inSchemas > 0
}

// runDDL runs a change in the group's target transaction, as the role that ran it on the
// source where the target has that role and pgleap may act as it, with its search_path.
func (a *applier) runDDL(ctx context.Context, tx pgx.Tx, cmd ddl.Command, stmt string) error {
	role, err := a.ddlRole(ctx, cmd.Role)
	if err != nil {
		return err
	}
	if err := actAs(ctx, tx, cmd.SearchPath, role, true); err != nil {
		return err
	}
	// The simple protocol: a change is sent as the client sent it, never prepared.
	if _, err := a.conn.PgConn().Exec(ctx, stmt).ReadAll(); err != nil {
		return err
	}
	return actAs(ctx, tx, "", "none", true)
}

// actAs sets the search_path and the role a change runs with, for the transaction (local)
// or the session; the empty search_path and role none are pgleap's own.
func actAs(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, searchPath, role string, local bool) error {
	_, err := db.Exec(ctx, "SELECT pg_catalog.set_config('search_path', $1, $3), pg_catalog.set_config('role', $2, $3)", searchPath, role, local)
	return err
}

// runConcurrentDDL runs a change that cannot run in a transaction block (CREATE INDEX
// CONCURRENTLY), as the source did. Its source transaction holds nothing else, so the
// group is committed up to the source transaction before, the change runs on its own, and
// the group goes on. Run again after a crash, it finds what the crashed run did: an index
// built (kept), left invalid (dropped and built again) or dropped already.
func (a *applier) runConcurrentDDL(ctx context.Context, cmd ddl.Command, stmt string) error {
	if a.curChanges > 0 {
		return errors.New("it cannot run in a transaction block, and its source transaction holds other changes")
	}
	cur := a.cur
	a.cur = nil
	if err := a.commitGroup(ctx); err != nil {
		return err
	}
	if err := a.settle(); err != nil {
		return err
	}
	a.cur, a.group = cur, groupStats{open: true, started: a.now}
	conn := a.conn
	index := ""
	for _, o := range cmd.Objects {
		if kind, schema, name := ddl.ParseObject(o); kind == "index" {
			index = pg.QualifiedName(schema, name)
			break
		}
	}
	if index != "" {
		var exists, valid bool
		err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, coalesce((SELECT indisvalid FROM pg_catalog.pg_index WHERE indexrelid = to_regclass($1)), false)`,
			index).Scan(&exists, &valid)
		switch {
		case err != nil:
			return err
		case strings.HasPrefix(cmd.Tag, "DROP") && !exists, !strings.HasPrefix(cmd.Tag, "DROP") && valid:
			return nil // done by the run that crashed
		case !strings.HasPrefix(cmd.Tag, "DROP") && exists:
			if _, err := conn.Exec(ctx, "DROP INDEX "+index); err != nil { // left invalid
				return err
			}
		}
	}
	role, err := a.ddlRole(ctx, cmd.Role)
	if err != nil {
		return err
	}
	if err := actAs(ctx, conn, cmd.SearchPath, role, false); err != nil {
		return err
	}
	_, runErr := conn.PgConn().Exec(ctx, stmt).ReadAll()
	return errors.Join(runErr, actAs(ctx, conn, "", "none", false))
}

// ddlRole is the role to run a change as on the target: the one that ran it on the
// source. Never pgleap's own instead: what the change creates would belong to it.
func (a *applier) ddlRole(ctx context.Context, role string) (string, error) {
	var may bool
	err := a.conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1)
		AND pg_catalog.pg_has_role(current_user, $1, 'MEMBER')`, role).Scan(&may)
	if err != nil {
		return "", err
	}
	if !may {
		return "", fmt.Errorf("role %s, which ran it on the source, does not exist on the target or pgleap's role may not act as it: create it (or GRANT it to pgleap's role) there", pg.QuoteIdent(role))
	}
	return role, nil
}

// selects reports whether the migration selects a relation (new tables join the
// publication whatever the selection). The verdict is kept with the description, so the
// glob patterns are matched once per description rather than for every change; a table
// renamed is described anew.
func (a *applier) selects(rel *Relation) bool {
	if !rel.judged {
		rel.selected, rel.judged = a.selection.Selects(rel.Schema, rel.Name), true
	}
	return rel.selected
}
