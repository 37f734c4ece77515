package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgleap/pgleap/internal/pg"
)

// While a backlog drains, the apply session spends about half its time bringing the pages
// of the rows it updates into shared buffers (measured at pgbench scale 100: reads from the
// kernel's cache, first touches of shared memory and writes of evicted dirty pages), and it
// is the longest piece of work of the drain. So a second target session reads the rows of
// the group being gathered (SELECT by key, which takes no row locks), while the apply
// session is busy with the group before: when that group's statements come to them, their
// heap and index pages are in shared buffers already. On a target whose data is not cached
// this turns one random read after another into reads that overlap the apply, as recovery's
// prefetching does for a physical standby.
//
// The prefetch is only ever a help: its statements are offered, never waited for; one that
// cannot be taken at once, or whose group has been handed to the target meanwhile, is
// dropped; an error ends the prefetching for the session and the apply goes on without.
const (
	// prefetchRows is how many keys of a table a prefetch reads at once: big enough that a
	// group of a backlog takes a few round trips, more than steady traffic ever gathers in
	// one group, which then reads nothing twice.
	prefetchRows = 1000
	// prefetchQueue is how many prefetches may wait for the session.
	prefetchQueue = 8
)

// PrefetchSettings are the prefetch session's settings on top of ApplySettings: it must never
// wait on the apply session's locks (a TRUNCATE or a schema change in the group it reads
// ahead of) nor hold a table's lock for long, which the apply would wait for.
var PrefetchSettings = map[string]string{
	"lock_timeout":                  "50ms",
	"statement_timeout":             "1s",
	"default_transaction_read_only": "on",
	// A key of one column is read with a bitmap scan, which reads the heap pages of many
	// keys ahead (see prefetchReadAhead); an index scan would wait for each page in turn.
	"enable_indexscan": "off",
}

// prefetchReadAhead is set once connected, and a refusal ignored: a server built without
// posix_fadvise accepts no other value than 0.
const prefetchReadAhead = "SET effective_io_concurrency = 32"

// prefetchRequest reads the rows of some keys of a group not yet handed to the target.
type prefetchRequest struct {
	statement
	table string
	group int64
}

// prefetcher reads rows ahead of the apply session on its own target connection.
type prefetcher struct {
	conn   *pgx.Conn
	logger *slog.Logger
	queue  chan prefetchRequest
	// handed is the number of the last group handed to the apply session (or that stopped
	// being read ahead, drop): a request for it or an earlier one comes too late to help.
	handed atomic.Int64
	// reading is set while a statement runs; stopped once the prefetcher has given up.
	reading, stopped atomic.Bool
	// rows counts the rows read, for the stream's summary.
	rows atomic.Int64

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// startPrefetcher opens the prefetch session with cfg (the apply session's, to which it adds
// PrefetchSettings) and reads ahead on it until stop.
func startPrefetcher(ctx context.Context, cfg *pgx.ConnConfig, logger *slog.Logger) (*prefetcher, error) {
	cfg = cfg.Copy()
	for k, v := range PrefetchSettings {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, prefetchReadAhead); err != nil {
		logger.Debug("reads ahead of the heap are off on the prefetch session", "err", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	p := &prefetcher{conn: conn, logger: logger, queue: make(chan prefetchRequest, prefetchQueue), cancel: cancel}
	p.done.Add(1)
	go p.run(runCtx)
	return p, nil
}

func (p *prefetcher) run(ctx context.Context) {
	defer p.done.Done()
	defer p.stopped.Store(true)
	for {
		var req prefetchRequest
		select {
		case <-ctx.Done():
			return
		case req = <-p.queue:
		}
		if req.group <= p.handed.Load() {
			continue
		}
		p.reading.Store(true)
		rows, err := p.read(ctx, req.statement)
		p.reading.Store(false)
		if err != nil {
			if ctx.Err() == nil {
				p.logger.Warn("reading rows ahead of the apply failed; the apply goes on without", "table", req.table, "err", err)
			}
			return
		}
		p.rows.Add(rows)
	}
}

// read runs one prefetch statement and returns how many rows it found.
func (p *prefetcher) read(ctx context.Context, st statement) (int64, error) {
	result := p.conn.PgConn().ExecParams(ctx, st.sql, st.params, nil, nil, nil).Read()
	pgErr, isPgErr := errors.AsType[*pgconn.PgError](result.Err)
	switch {
	case isPgErr && pgErr.Code == "55P03": // lock_not_available
		return 0, nil // the apply session holds the table: its group reads it itself
	case isPgErr && pgErr.Code == "57014" && ctx.Err() == nil: // statement_timeout
		return 0, nil // too slow to help this group; the next may be quicker
	case result.Err != nil:
		return 0, fmt.Errorf("read %d rows ahead: %w", st.rows, result.Err)
	case len(result.Rows) != 1 || len(result.Rows[0]) != 1:
		return 0, fmt.Errorf("read %d rows ahead: %d rows returned, want one count", st.rows, len(result.Rows))
	}
	return strconv.ParseInt(string(result.Rows[0][0]), 10, 64)
}

// takes reports whether a request for group would be taken now, so that none is built in
// vain on the stream's own time.
func (p *prefetcher) takes(group int64) bool {
	return !p.stopped.Load() && group > p.handed.Load() && len(p.queue) < cap(p.queue)
}

// offer queues a prefetch unless the queue is full.
func (p *prefetcher) offer(req prefetchRequest) {
	select {
	case p.queue <- req:
	default:
	}
}

// drop stops reading ahead for group and the groups before: what is queued is skipped, and
// a statement running now is cancelled, since the apply is about to lock what it may read.
func (p *prefetcher) drop(group int64) {
	for handed := p.handed.Load(); handed < group && !p.handed.CompareAndSwap(handed, group); handed = p.handed.Load() {
	}
	if p.reading.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// A cancel that comes after the statement has ended finds the session idle, or
		// ends a later read ahead, which read counts as dropped.
		_ = p.conn.PgConn().CancelRequest(ctx)
	}
}

// stop ends the prefetcher, waits for it and closes its session.
func (p *prefetcher) stop(ctx context.Context) {
	p.cancel()
	p.done.Wait()
	p.conn.Close(ctx)
}

// prefetchStatement reads a table's rows at the given keys, heap pages included: selecting
// ctid rules out an index-only scan, which would leave the heap pages unread. A key of one
// column is looked up with = ANY, which the session's settings make a bitmap scan: it asks
// the kernel for the heap pages ahead (effective_io_concurrency) instead of one at a time.
func prefetchStatement(rel *Relation, types map[string]string, rows []*netRow) (statement, error) {
	keyCols, err := keyColumns(rel, types)
	if err != nil {
		return statement{}, err
	}
	params, aliases, arrays := keyArrays(rows, keyCols)
	var sql string
	if len(keyCols) == 1 {
		col := keyCols[0]
		sql = fmt.Sprintf("SELECT count(t.ctid) FROM %s t WHERE t.%s = ANY (ARRAY(SELECT %s FROM unnest(%s) AS v(%s)))",
			rel.QualifiedName(), pg.QuoteIdent(rel.Columns[col].Name), castAlias(rel, types, aliases[0], col), arrays[0], aliases[0])
	} else {
		sql = fmt.Sprintf("SELECT count(t.ctid) FROM %s t, unnest(%s) AS v(%s) WHERE %s",
			rel.QualifiedName(), strings.Join(arrays, ", "), strings.Join(aliases, ", "), keyMatch(rel, types, keyCols))
	}
	return statement{sql: sql, params: params, rows: int64(len(rows))}, nil
}
