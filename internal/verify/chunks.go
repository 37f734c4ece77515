package verify

import (
	"context"
	"fmt"
	"math/big"
	"math/bits"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/pg"
)

// Chunks. A table is compared in chunks, each digested on both servers by one query: a
// range of its integer key (an index range scan, several compared at once), or, for other
// tables, the whole table at once, its rows spread over buckets by a hash of their key (of
// the whole row without a key). A chunk's digest is, per bucket, the row count and two sums
// of 64-bit hashes of the rows' text: sums do not depend on the order rows are read in, and
// count duplicate rows as often as they occur. A differing bucket is then read row by row
// on both sides, which names the rows.

const maxBuckets = 4096

// tablePlan is how one table is compared.
type tablePlan struct {
	table catalog.Table
	key   []string // the columns that identify a row; none for a table without a key
	// chunks are WHERE conditions, "" for the whole table.
	chunks    []string
	buckets   int  // per chunk, a power of two
	countOnly bool // digests are row counts only
}

// chunk is one unit of work: a table's range, compared on both servers.
type chunk struct {
	plan  *tablePlan
	index int
}

func (c chunk) String() string {
	return fmt.Sprintf("%s chunk %d/%d", c.plan.table.QualifiedName(), c.index+1, len(c.plan.chunks))
}

// keyColumns reads the columns that identify a row of each table: its primary key, or the
// index of its REPLICA IDENTITY USING INDEX; by table OID.
func keyColumns(ctx context.Context, conn *pgx.Conn, tables []catalog.Table) (map[uint32][]string, error) {
	oids := make([]uint32, len(tables))
	for i, t := range tables {
		oids[i] = t.OID
	}
	rows, err := conn.Query(ctx, `
		SELECT DISTINCT ON (i.indrelid) i.indrelid,
		       (SELECT array_agg(a.attname ORDER BY k.ord)
		          FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
		FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
		WHERE i.indrelid = ANY($1::oid[]) AND (i.indisprimary OR c.relreplident = 'i' AND i.indisreplident)
		ORDER BY i.indrelid, i.indisprimary DESC`, oids)
	if err != nil {
		return nil, fmt.Errorf("read the keys of the tables to verify: %w", err)
	}
	keys := map[uint32][]string{}
	var oid uint32
	var cols []string
	_, err = pgx.ForEachRow(rows, []any{&oid, &cols}, func() error { keys[oid] = cols; return nil })
	if err != nil {
		return nil, fmt.Errorf("read the keys of the tables to verify: %w", err)
	}
	return keys, nil
}

// planTable cuts a table into chunks of about chunkRows rows. conn reads the source at the
// verification's snapshot, for the bounds of the key.
func planTable(ctx context.Context, conn pgx.Tx, t catalog.Table, key []string, chunkRows int64, countOnly bool) (*tablePlan, error) {
	p := &tablePlan{table: t, key: key, chunks: []string{""}, buckets: 1, countOnly: countOnly}
	if countOnly {
		return p, nil
	}
	rows := t.RowEstimate
	if rows < 0 {
		rows = t.DataBytes / 100 // never analyzed: guess from its size
	}
	n := max(1, (rows+chunkRows-1)/chunkRows)
	if n == 1 {
		return p, nil
	}
	if t.IntegerKey != "" {
		var lo, hi *int64
		col := pg.QuoteIdent(t.IntegerKey)
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT min(%[1]s), max(%[1]s) FROM ONLY %[2]s", col, t.QualifiedName())).Scan(&lo, &hi); err != nil {
			return nil, fmt.Errorf("plan the verification of %s: %w", t.QualifiedName(), err)
		}
		if lo != nil && *hi-*lo >= n {
			p.chunks = make([]string, n)
			bound := func(i int64) int64 { return rangeBound(*lo, *hi, i, n) }
			for i := range p.chunks {
				// The first and last ranges are open: rows beyond the bounds read on the
				// source (the target's extra rows) are compared too.
				var conds []string
				if i > 0 {
					conds = append(conds, fmt.Sprintf("%s >= %d", col, bound(int64(i))))
				}
				if i < int(n)-1 {
					conds = append(conds, fmt.Sprintf("%s < %d", col, bound(int64(i)+1)))
				}
				p.chunks[i] = strings.Join(conds, " AND ")
			}
			return p, nil
		}
	}
	p.buckets = min(maxBuckets, 1<<bits.Len64(uint64(n-1)))
	return p, nil
}

// rangeBound is the lower bound of range i of n that cut [lo, hi]; in big integers, since
// the span of a bigint key times a range number overflows int64.
func rangeBound(lo, hi, i, n int64) int64 {
	span := new(big.Int).Sub(big.NewInt(hi), big.NewInt(lo))
	span.Add(span, big.NewInt(1)).Mul(span, big.NewInt(i)).Quo(span, big.NewInt(n))
	return span.Add(span, big.NewInt(lo)).Int64()
}

// rowsSQL is the inner query of a chunk: each row's text (t) and the text that identifies
// it (k): its key, or without one the row itself.
func (p *tablePlan) rowsSQL(index int) string {
	ident := "r::text"
	if len(p.key) > 0 {
		cols := make([]string, len(p.key))
		for i, c := range p.key {
			cols[i] = "r." + pg.QuoteIdent(c)
		}
		ident = "row(" + strings.Join(cols, ", ") + ")::text"
		if len(cols) == 1 {
			ident = "(" + cols[0] + ")::text"
		}
	}
	sql := fmt.Sprintf("SELECT r::text AS t, %s AS k FROM ONLY %s r", ident, p.table.QualifiedName())
	if cond := p.chunks[index]; cond != "" {
		sql += " WHERE " + cond
	}
	return sql
}

// Rows are hashed with hashtextextended, the 64-bit hash that hash partitioning relies on
// to stay the same across major versions (pg_upgrade keeps hash-partitioned tables), twice
// with two seeds: 128 bits, at less than half the cost of md5.

// bucketSQL is a row's bucket in [0, buckets), from the hash of what identifies it.
func (p *tablePlan) bucketSQL() string {
	if p.buckets == 1 {
		return "0"
	}
	return fmt.Sprintf("(pg_catalog.hashtextextended(s.k, 2) & %d)", p.buckets-1)
}

// digestSQL digests a chunk: per bucket, rows and the two sums of their hashes.
func (p *tablePlan) digestSQL(index int) string {
	if p.countOnly {
		return fmt.Sprintf("SELECT 0, count(*), '', '' FROM ONLY %s", p.table.QualifiedName())
	}
	return fmt.Sprintf(`SELECT %s AS b, count(*), sum(pg_catalog.hashtextextended(s.t, 0))::text,
		sum(pg_catalog.hashtextextended(s.t, 1))::text FROM (%s) s GROUP BY 1`, p.bucketSQL(), p.rowsSQL(index))
}

// bucketRowsSQL reads the rows of one bucket of a chunk: what identifies each, its hash and,
// withRow, its text.
func (p *tablePlan) bucketRowsSQL(index int, withRow bool) string {
	cols := "s.k, pg_catalog.hashtextextended(s.t, 0) || '/' || pg_catalog.hashtextextended(s.t, 1)"
	if withRow {
		cols += ", s.t"
	}
	return fmt.Sprintf("SELECT %s FROM (%s) s WHERE %s = $1", cols, p.rowsSQL(index), p.bucketSQL())
}

// describeKey writes a key as PostgreSQL's messages do: (id)=(42).
func (p *tablePlan) describeKey(k string) string {
	if len(p.key) == 0 {
		return k
	}
	cols := make([]string, len(p.key))
	for i, c := range p.key {
		cols[i] = pg.QuoteIdent(c)
	}
	if len(p.key) == 1 {
		k = "(" + k + ")"
	}
	return "(" + strings.Join(cols, ", ") + ")=" + k
}
