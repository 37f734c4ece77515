package cdc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/pg"
)

// Net changes. Within one target transaction (a group of source transactions), successive
// changes to the same row of a keyed table collapse into one: insert then updates → one
// insert, updates → one update, insert then delete → nothing, delete then insert → one
// update. What is left is applied per table in three set-based statements (a DELETE and an
// UPDATE joined to arrays of keys and values, and a COPY of the new rows), so a backlog costs
// the target a fraction of the source's statements. New rows of a table without a usable
// key (REPLICA IDENTITY FULL or NOTHING) go out with COPY as well, in order; its updates and
// deletes are applied one by one after them. Order between tables is not kept, which
// the apply session allows (no triggers, no foreign-key checks); order inside a table can
// matter to a unique constraint (two rows swapping a value), and when it does the group is
// applied again change by change (errCompactionConflict).

type netOp int

const (
	netInsert netOp = iota + 1
	netUpdate
	netDelete
)

// netRow is what is left of a row's changes in the group.
type netRow struct {
	op     netOp
	key    []Value // the row's key as the group found it (updates, deletes)
	values []Value // its new values (inserts, updates); ValueUnchanged where untouched
}

// netTable is one table's pending net changes.
type netTable struct {
	rel   *Relation
	keys  []string // first-seen order, so statements are deterministic
	rows  map[string]*netRow
	bytes int
	// appended are new rows of a table without a usable key, in order: they go out with
	// COPY too, while its updates and deletes are applied one by one.
	appended [][]Value
	// unread are rows the group updates or deletes that are not offered to the prefetcher yet.
	unread []*netRow
}

// errCompactionConflict is returned when net changes broke a unique constraint that the
// changes in their own order did not: the group must be applied again in order.
type errCompactionConflict struct {
	until pglogrepl.LSN
	err   error
}

func (e *errCompactionConflict) Error() string {
	return fmt.Sprintf("net changes up to %s conflict (%v): applying them again one by one", e.until, e.err)
}

func (e *errCompactionConflict) Unwrap() error { return e.err }

// keyed reports whether a relation's rows can be told apart by key, so their changes can
// be collapsed.
func keyed(rel *Relation) bool {
	if rel.Identity == 'f' || rel.Identity == 'n' {
		return false
	}
	for _, c := range rel.Columns {
		if c.Key {
			return true
		}
	}
	return false
}

// rowKey is a map key made of the key columns' values.
func rowKey(rel *Relation, values []Value) (string, bool) {
	var b strings.Builder
	for i, c := range rel.Columns {
		if !c.Key {
			continue
		}
		v := values[i]
		if v.Kind != ValueText {
			return "", false // a NULL or unsent key cannot be matched by value
		}
		b.WriteString(strconv.Itoa(len(v.Data)))
		b.WriteByte(':')
		b.Write(v.Data)
	}
	return b.String(), true
}

// collapse folds a row change into the table's net changes. It returns false when the
// change cannot be folded (a key change, or a sequence that does not fit a row's life, which
// the change applied on its own will report): the caller applies the table's net changes
// and then this change by itself.
func (t *netTable) collapse(c *Change) bool {
	rel := c.Rel
	if !keyed(rel) {
		if c.Kind != Insert {
			return false
		}
		t.appended = append(t.appended, c.New)
		t.bytes += valuesBytes(c.New) + changeOverhead
		return true
	}
	var key string
	var ok bool
	switch c.Kind {
	case Insert:
		key, ok = rowKey(rel, c.New)
	case Delete:
		key, ok = rowKey(rel, c.Old)
	case Update:
		key, ok = rowKey(rel, c.New)
		if ok && c.Old != nil {
			oldKey, oldOK := rowKey(rel, c.Old)
			ok = oldOK && oldKey == key
		}
	}
	if !ok {
		return false
	}
	r := t.rows[key]
	switch {
	case c.Kind == Insert && r == nil:
		t.add(key, &netRow{op: netInsert, values: c.New})
	case c.Kind == Insert && r.op == netDelete:
		r.op, r.values = netUpdate, c.New
	case c.Kind == Update && r == nil:
		r = &netRow{op: netUpdate, key: keyValues(rel, c.New), values: c.New}
		t.add(key, r)
		t.unread = append(t.unread, r)
	case c.Kind == Update && r.op != netDelete:
		r.values = merge(r.values, c.New)
	case c.Kind == Delete && r == nil:
		r = &netRow{op: netDelete, key: keyValues(rel, c.Old)}
		t.add(key, r)
		t.unread = append(t.unread, r)
	case c.Kind == Delete && r.op == netInsert:
		delete(t.rows, key)
	case c.Kind == Delete && r.op == netUpdate:
		r.op, r.values = netDelete, nil
	default:
		return false
	}
	t.bytes += valuesBytes(c.New) + valuesBytes(c.Old) + changeOverhead
	return true
}

func (t *netTable) add(key string, r *netRow) {
	if r.key == nil && r.op != netInsert {
		panic("netTable.add: a row to update or delete without its key")
	}
	t.keys = append(t.keys, key)
	t.rows[key] = r
}

// keyValues keeps the key columns' values (the others are left empty).
func keyValues(rel *Relation, values []Value) []Value {
	key := make([]Value, len(values))
	for i, c := range rel.Columns {
		if c.Key {
			key[i] = values[i]
		}
	}
	return key
}

// merge lays newer values over older ones; an unsent TOAST value keeps the older one.
func merge(older, newer []Value) []Value {
	merged := make([]Value, len(newer))
	for i, v := range newer {
		if v.Kind == ValueUnchanged {
			merged[i] = older[i]
		} else {
			merged[i] = v
		}
	}
	return merged
}

// valuesBytes estimates the memory values hold: their data, and per value its header and
// its share of the decoded message that backs it.
func valuesBytes(values []Value) int {
	n := 0
	for _, v := range values {
		n += len(v.Data) + 48
	}
	return n
}

// changeOverhead estimates what each change held costs besides its values: the change, the
// row's entry, its key and its place in the map. Without it a table of narrow rows reaches
// maxNetBytes only after millions of rows, and memory grows with the transaction
// (measured: 465 MB for a 1.5-million-row insert before, 64 MB after).
const changeOverhead = 256

// netStatements are the set-based statements of one table's net changes.
type netStatements struct {
	deletes, updates []statement
	inserts          *copyRows
}

type statement struct {
	sql    string
	params [][]byte
	rows   int64
}

type copyRows struct {
	sql  string
	data bytes.Buffer
	rows int64
}

// statements turns a table's net changes into set-based statements. types holds the
// target's type of each column, for the casts from text.
func (t *netTable) statements(types map[string]string) (netStatements, error) {
	var out netStatements
	rel := t.rel
	name := rel.QualifiedName()
	keyCols, err := keyColumns(rel, types)
	if err != nil {
		return out, err
	}
	match := keyMatch(rel, types, keyCols)

	var deletes []*netRow
	updates := map[string][]*netRow{} // by the set of columns they write
	var updateOrder []string
	inserts := &copyRows{}
	for _, values := range t.appended {
		writeCopyRow(&inserts.data, values)
		inserts.rows++
	}
	for _, k := range t.keys {
		r := t.rows[k]
		if r == nil {
			continue // inserted and deleted again
		}
		delete(t.rows, k) // a key seen twice in keys is flushed once
		switch r.op {
		case netDelete:
			deletes = append(deletes, r)
		case netUpdate:
			sig := columnSet(r.values)
			if _, seen := updates[sig]; !seen {
				updateOrder = append(updateOrder, sig)
			}
			updates[sig] = append(updates[sig], r)
		case netInsert:
			writeCopyRow(&inserts.data, r.values)
			inserts.rows++
		}
	}

	if len(deletes) > 0 {
		params, aliases, arrays := keyArrays(deletes, keyCols)
		sql := fmt.Sprintf("DELETE FROM %s t USING unnest(%s) AS v(%s) WHERE %s", name, strings.Join(arrays, ", "), strings.Join(aliases, ", "), match)
		out.deletes = append(out.deletes, statement{sql: sql, params: params, rows: int64(len(deletes))})
	}
	for _, sig := range updateOrder {
		rows := updates[sig]
		params, aliases, arrays := keyArrays(rows, keyCols)
		var sets []string
		for col, written := range []byte(sig) {
			// A key column is matched, not written: a row whose key changed is never
			// collapsed (collapse), so the new value is the one matched.
			if written != '1' || rel.Columns[col].Key {
				continue
			}
			alias := "c" + strconv.Itoa(col)
			aliases = append(aliases, alias)
			params = append(params, textArray(rows, func(r *netRow) Value { return r.values[col] }))
			arrays = append(arrays, fmt.Sprintf("$%d::text[]", len(params)))
			sets = append(sets, fmt.Sprintf("%s = %s", pg.QuoteIdent(rel.Columns[col].Name), castAlias(rel, types, alias, col)))
		}
		if len(sets) == 0 {
			// Only unsent TOAST values: nothing to write, but every row must exist.
			sql := fmt.Sprintf("SELECT FROM %s t, unnest(%s) AS v(%s) WHERE %s", name, strings.Join(arrays, ", "), strings.Join(aliases, ", "), match)
			out.updates = append(out.updates, statement{sql: sql, params: params, rows: int64(len(rows))})
			continue
		}
		sql := fmt.Sprintf("UPDATE %s t SET %s FROM unnest(%s) AS v(%s) WHERE %s",
			name, strings.Join(sets, ", "), strings.Join(arrays, ", "), strings.Join(aliases, ", "), match)
		out.updates = append(out.updates, statement{sql: sql, params: params, rows: int64(len(rows))})
	}
	if inserts.rows > 0 {
		var cols []string
		for _, c := range rel.Columns {
			cols = append(cols, pg.QuoteIdent(c.Name))
		}
		inserts.sql = fmt.Sprintf("COPY %s (%s) FROM STDIN", name, strings.Join(cols, ", "))
		out.inserts = inserts
	}
	t.keys, t.bytes, t.appended, t.unread = t.keys[:0], 0, nil, nil
	return out, nil
}

// keyColumns are the positions of a relation's key columns; it fails when a column is not
// on the target (types holds the target's type of each column).
func keyColumns(rel *Relation, types map[string]string) ([]int, error) {
	var keyCols []int
	for i, c := range rel.Columns {
		if c.Key {
			keyCols = append(keyCols, i)
		}
		if _, ok := types[c.Name]; !ok {
			return nil, fmt.Errorf("column %s of %s is not on the target", pg.QuoteIdent(c.Name), rel.QualifiedName())
		}
	}
	return keyCols, nil
}

// keyArrays are the rows' keys as text[] parameters $1, $2, ..., one per key column, with
// their aliases (k0, k1, ...) and casts for unnest.
func keyArrays(rows []*netRow, keyCols []int) (params [][]byte, aliases, arrays []string) {
	for j, col := range keyCols {
		aliases = append(aliases, "k"+strconv.Itoa(j))
		arrays = append(arrays, fmt.Sprintf("$%d::text[]", j+1))
		params = append(params, textArray(rows, func(r *netRow) Value {
			if r.key != nil {
				return r.key[col]
			}
			return r.values[col]
		}))
	}
	return params, aliases, arrays
}

// keyMatch joins the table (t) to the unnested arrays of keys (v, one alias k0, k1, ... per
// key column).
func keyMatch(rel *Relation, types map[string]string, keyCols []int) string {
	conds := make([]string, len(keyCols))
	for j, col := range keyCols {
		conds[j] = fmt.Sprintf("t.%s = %s", pg.QuoteIdent(rel.Columns[col].Name), castAlias(rel, types, "k"+strconv.Itoa(j), col))
	}
	return strings.Join(conds, " AND ")
}

// castAlias casts an unnested text value to its column's type on the target.
func castAlias(rel *Relation, types map[string]string, alias string, col int) string {
	return fmt.Sprintf("v.%s::%s", alias, types[rel.Columns[col].Name])
}

// columnSet is a row's written columns as a string of '0' and '1'.
func columnSet(values []Value) string {
	b := make([]byte, len(values))
	for i, v := range values {
		b[i] = '0'
		if v.Kind != ValueUnchanged {
			b[i] = '1'
		}
	}
	return string(b)
}

// textArray writes one value of each row as a text[] literal.
func textArray(rows []*netRow, value func(*netRow) Value) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		v := value(r)
		if v.Kind != ValueText {
			b.WriteString("NULL")
			continue
		}
		b.WriteByte('"')
		for _, c := range v.Data {
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.Bytes()
}

// writeCopyRow writes a row in COPY's text format.
func writeCopyRow(b *bytes.Buffer, values []Value) {
	for i, v := range values {
		if i > 0 {
			b.WriteByte('\t')
		}
		if v.Kind != ValueText {
			b.WriteString(`\N`)
			continue
		}
		for _, c := range v.Data {
			switch c {
			case '\\':
				b.WriteString(`\\`)
			case '\t':
				b.WriteString(`\t`)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			default:
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('\n')
}

// isUniqueViolation tells a unique constraint broken by reordered changes.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "23P01")
}
