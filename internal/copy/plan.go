package copy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// planItems decides how each table is copied: whole, or split in about equal ranges when
// it is larger than splitLargerThan, into a multiple of jobs so no worker idles at the end.
func planItems(ctx context.Context, source *pgx.Conn, sourceMajor int, tables []catalog.Table, splitLargerThan int64, jobs int) ([]state.CopyItem, error) {
	var items []state.CopyItem
	for _, t := range tables {
		whole := state.CopyItem{Schema: t.Schema, Table: t.Name, Chunks: 1, SplitBy: state.SplitNone, EstimatedBytes: t.DataBytes}
		if splitLargerThan <= 0 || t.DataBytes <= splitLargerThan {
			items = append(items, whole)
			continue
		}
		chunks := int((t.DataBytes + splitLargerThan - 1) / splitLargerThan)
		chunks = (chunks + jobs - 1) / jobs * jobs
		var bounds []int64
		var splitBy, key string
		switch {
		case t.IntegerKey != "":
			var lo, hi *int64
			sql := fmt.Sprintf("SELECT min(%[1]s), max(%[1]s) FROM ONLY %[2]s", pg.QuoteIdent(t.IntegerKey), t.QualifiedName())
			if err := source.QueryRow(ctx, sql).Scan(&lo, &hi); err != nil {
				return nil, fmt.Errorf("plan the copy of %s: %w", t.QualifiedName(), err)
			}
			if lo == nil || *hi-*lo < int64(chunks) {
				items = append(items, whole)
				continue
			}
			bounds, splitBy, key = splitRange(*lo, *hi+1, chunks), state.SplitKey, t.IntegerKey
		case sourceMajor >= 14: // TID range scans arrived in 14; before, a ctid range reads the whole table
			var pages int64
			if err := source.QueryRow(ctx, "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int", t.QualifiedName()).Scan(&pages); err != nil {
				return nil, fmt.Errorf("plan the copy of %s: %w", t.QualifiedName(), err)
			}
			bounds, splitBy = splitRange(0, pages, chunks), state.SplitCTID
		default:
			items = append(items, whole)
			continue
		}
		for i := range chunks {
			item := whole
			item.Chunk, item.Chunks, item.SplitBy, item.KeyColumn = i, chunks, splitBy, key
			item.EstimatedBytes = t.DataBytes / int64(chunks)
			// The first and last ranges are open, so rows beyond the planned bounds are copied too.
			if i > 0 {
				item.Lower = &bounds[i]
			}
			if i < chunks-1 {
				item.Upper = &bounds[i+1]
			}
			items = append(items, item)
		}
	}
	return items, nil
}

// splitRange cuts [lo, hi) into n ranges and returns their n+1 bounds.
func splitRange(lo, hi int64, n int) []int64 {
	bounds := make([]int64, n+1)
	for i := range bounds {
		bounds[i] = lo + (hi-lo)*int64(i)/int64(n)
	}
	return bounds
}

// rangeCondition is the WHERE clause of one item, "" for a whole table.
func rangeCondition(i state.CopyItem) string {
	var conds []string
	switch i.SplitBy {
	case state.SplitKey:
		key := pg.QuoteIdent(i.KeyColumn)
		if i.Lower != nil {
			conds = append(conds, fmt.Sprintf("%s >= %d", key, *i.Lower))
		}
		if i.Upper != nil {
			conds = append(conds, fmt.Sprintf("%s < %d", key, *i.Upper))
		}
	case state.SplitCTID:
		if i.Lower != nil {
			conds = append(conds, fmt.Sprintf("ctid >= '(%d,0)'::tid", *i.Lower))
		}
		if i.Upper != nil {
			conds = append(conds, fmt.Sprintf("ctid < '(%d,0)'::tid", *i.Upper))
		}
	}
	return strings.Join(conds, " AND ")
}

// tableCopy is how one table's rows travel.
type tableCopy struct {
	table   catalog.Table
	columns string // quoted, comma-separated: generated columns are computed by the target
	binary  bool
}

// noBinaryTypes are built-in types whose binary form names catalog OIDs or does not exist.
var noBinaryTypes = map[string]bool{"aclitem": true}

// binarySafe reports whether every column's values have the same binary form on both
// majors: built-in types only, since user types (enums, composites, extension types, arrays
// of them) carry OIDs that differ on the target or lack binary I/O.
func binarySafe(t catalog.Table, withoutSend map[string]bool) bool {
	for _, c := range t.Columns {
		if c.Generated {
			continue
		}
		if c.BaseTypeSchema != "pg_catalog" || c.BaseTypeKind == "c" || strings.HasPrefix(c.BaseType, "reg") ||
			noBinaryTypes[c.BaseType] || withoutSend[c.BaseType] {
			return false
		}
	}
	return true
}

func newTableCopy(t catalog.Table, format string, withoutSend map[string]bool) tableCopy {
	var columns []string
	for _, c := range t.Columns {
		if !c.Generated {
			columns = append(columns, pg.QuoteIdent(c.Name))
		}
	}
	binary := format == "binary" || (format == "auto" && binarySafe(t, withoutSend))
	return tableCopy{table: t, columns: strings.Join(columns, ", "), binary: binary}
}

func (tc tableCopy) format() string {
	if tc.binary {
		return "binary"
	}
	return "text"
}

// sourceSQL reads one item's rows.
func (tc tableCopy) sourceSQL(i state.CopyItem) string {
	name := tc.table.QualifiedName()
	if cond := rangeCondition(i); cond != "" {
		return fmt.Sprintf("COPY (SELECT %s FROM ONLY %s WHERE %s) TO STDOUT (FORMAT %s)", tc.columns, name, cond, tc.format())
	}
	return fmt.Sprintf("COPY %s (%s) TO STDOUT (FORMAT %s)", name, tc.columns, tc.format())
}

// targetSQL writes them; freeze when the table was emptied in the same transaction.
func (tc tableCopy) targetSQL(freeze bool) string {
	options := "FORMAT " + tc.format()
	if freeze {
		options += ", FREEZE"
	}
	return fmt.Sprintf("COPY %s (%s) FROM STDIN (%s)", tc.table.QualifiedName(), tc.columns, options)
}

// sortLargestFirst orders the work so the longest items start first.
func sortLargestFirst(items []state.CopyItem) {
	slices.SortStableFunc(items, func(a, b state.CopyItem) int {
		switch {
		case a.EstimatedBytes > b.EstimatedBytes:
			return -1
		case a.EstimatedBytes < b.EstimatedBytes:
			return 1
		}
		return 0
	})
}
