package copy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// Options configure the copy.
type Options struct {
	Source, Target string
	Tables         config.TableFilter
	// Only, when set, limits the copy to these tables ("schema"."name"): those the schema
	// stage restored, which leaves out tables that depend on excluded ones.
	Only map[string]bool
	// Follow keeps a publication and a permanent slot on the source, created before the
	// copy, so that the changes made during and after it can be streamed; without it the
	// copy reads at a temporary slot's snapshot and leaves nothing on the source (a cold copy).
	Follow bool
	// SlotName and PublicationName name what Follow creates; "" for a pgleap_ name of its own.
	SlotName, PublicationName string
	Jobs                      int
	SplitLargerThan           int64  // bytes; 0 never splits
	MaxRate                   int64  // bytes per second across all workers; 0 is unlimited
	Format                    string // auto, binary or text
	Logger                    *slog.Logger
	Progress                  Progress
	// TableCopied is called once all of a table's rows are on the target, so its indexes
	// can be built while other tables still copy. It may be called from several goroutines.
	TableCopied func(schema, table string)
}

// Progress hears about the copy as it goes; it may be called from several goroutines.
type Progress interface {
	Planned(items []state.CopyItem)
	Started(item state.CopyItem)
	Copied(item state.CopyItem, bytes int)
	Finished(item state.CopyItem, rows int64)
	// SourceWAL is told, now and then, how much WAL the source keeps for the copy's slot.
	SourceWAL(retained int64)
}

// Result says what the copy did.
type Result struct {
	Items, ItemsDoneEarlier int
	Bytes, Rows             int64
	SnapshotLSN             string
	// Slot and Publication are what changes stream from, StreamStartLSN where (Follow only).
	Slot, Publication, StreamStartLSN string `json:",omitempty"`
	LargeObjects                      int64
	Duration                          time.Duration
}

const (
	stepLargeObjects = "copy:large-objects"
	pipeBuffer       = 256 << 10 // bytes gathered before a hand-off between the two COPYs
	sourceReadBuffer = 256 << 10 // bytes read from the source's socket at once
)

// copySettings are the target session settings of copy workers: a crash loses at most the
// last commits, and those are recorded as unfinished with them.
var copySettings = map[string]string{"synchronous_commit": "off"}

// Run copies every unfinished item of the plan (making the plan on a first run).
func Run(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	if opts.Format == "" {
		opts.Format = "auto"
	}
	source, target, err := pg.ConnectBoth(ctx, opts.Source, opts.Target)
	if err != nil {
		return nil, err
	}
	defer source.Close(context.Background())
	defer target.Close(context.Background())

	all, err := catalog.Tables(ctx, source)
	if err != nil {
		return nil, fmt.Errorf("list source tables: %w", err)
	}
	selected := selectedTables(all, opts.Tables, opts.Only)
	var tables []catalog.Table // the ones holding rows: partitions, not their parents; no foreign tables
	for _, t := range selected {
		if t.Kind == catalog.KindTable {
			tables = append(tables, t)
		}
	}
	version, err := pg.ServerVersion(ctx, source)
	if err != nil {
		return nil, err
	}
	items, err := state.CopyPlan(ctx, target)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		planned, err := planItems(ctx, source, version.Major, tables, opts.SplitLargerThan, opts.Jobs)
		if err != nil {
			return nil, err
		}
		if err := state.SaveCopyPlan(ctx, target, planned); err != nil {
			return nil, err
		}
		if items, err = state.CopyPlan(ctx, target); err != nil {
			return nil, err
		}
	}
	if err := resetPartlyCopied(ctx, target, items, opts.Follow, catalog.PartitionRoots(all)); err != nil {
		return nil, err
	}
	if items, err = state.CopyPlan(ctx, target); err != nil {
		return nil, err
	}
	res := &Result{}
	var todo []state.CopyItem
	for _, i := range items {
		if i.Finished() {
			res.ItemsDoneEarlier++
		} else {
			todo = append(todo, i)
		}
	}
	if opts.Progress != nil {
		opts.Progress.Planned(items)
	}
	tracker := newTableTracker(items, opts.TableCopied)
	done, err := state.DoneSteps(ctx, target)
	if err != nil {
		return nil, err
	}
	var snapshot *pg.Snapshot
	if opts.Follow {
		stream, created, err := prepareStream(ctx, opts, source, target, version.Major, items, selected)
		if err != nil {
			return nil, err
		}
		res.Slot, res.Publication, res.StreamStartLSN = stream.Slot, stream.Publication, stream.StartLSN.String()
		if created != nil {
			snapshot = created
			defer snapshot.Close()
		}
	}
	if len(todo) == 0 && done[stepLargeObjects] {
		res.Duration = time.Since(start)
		return res, nil
	}
	if snapshot == nil {
		// Rows copied after the first snapshot (a resumed run) are read at a snapshot of
		// their own, whose LSN they record as their sync LSN.
		if snapshot, err = pg.OpenSnapshot(ctx, opts.Source, "copy"); err != nil {
			return nil, err
		}
		defer snapshot.Close()
	}
	res.SnapshotLSN = snapshot.LSN.String()
	watchedSlot := snapshot.Slot
	if res.Slot != "" {
		watchedSlot = res.Slot // it keeps WAL from its start on, the copy's own only from now
	}
	opts.Logger.Info("copying rows", "snapshot", snapshot.Name, "lsn", snapshot.LSN, "items", len(todo), "done earlier", res.ItemsDoneEarlier)
	if err := setAutovacuum(ctx, target, todo, false); err != nil {
		return nil, err
	}

	byName := map[string]tableCopy{}
	withoutSend, err := typesWithoutSend(ctx, source)
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		byName[t.Schema+"."+t.Name] = newTableCopy(t, opts.Format, withoutSend)
	}
	var limiter *rate.Limiter
	if opts.MaxRate > 0 {
		limiter = rate.NewLimiter(rate.Limit(opts.MaxRate), int(min(opts.MaxRate, pipeBuffer)))
	}
	sortLargestFirst(todo)
	queue := make(chan state.CopyItem, len(todo))
	for _, i := range todo {
		queue <- i
	}
	close(queue)

	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	watchCtx, stopWatch := context.WithCancel(gctx)
	defer stopWatch()
	go watchSlotWAL(watchCtx, source, watchedSlot, opts)
	for range min(opts.Jobs, max(len(todo), 1)) {
		g.Go(func() error {
			w, err := newWorker(gctx, opts, snapshot, limiter)
			if err != nil {
				return err
			}
			defer w.close()
			for item := range queue {
				tc, ok := byName[item.Schema+"."+item.Table]
				if !ok {
					return fmt.Errorf("copy %s: the table is in the copy plan but not on the source any more: run pgleap cleanup and start over",
						pg.QualifiedName(item.Schema, item.Table))
				}
				rows, bytes, err := w.copyItem(gctx, tc, item)
				if err != nil {
					return err
				}
				mu.Lock()
				res.Items++
				res.Rows += rows
				res.Bytes += bytes
				mu.Unlock()
				tracker.finished(item)
			}
			return nil
		})
	}
	if !done[stepLargeObjects] {
		g.Go(func() error {
			n, err := copyLargeObjects(gctx, opts, snapshot)
			mu.Lock()
			res.LargeObjects = n
			mu.Unlock()
			return err
		})
	}
	err = g.Wait()
	stopWatch()
	if err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

const slotWatchInterval = 5 * time.Second

// watchSlotWAL reports the WAL the source keeps for the copy's slot: it grows with the
// source's writes while the copy runs, and a disk that fills ends the source's service.
// It owns conn until ctx ends.
func watchSlotWAL(ctx context.Context, conn *pgx.Conn, slot string, opts Options) {
	ticker := time.NewTicker(slotWatchInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		var retained int64
		err := conn.QueryRow(ctx, `SELECT coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::bigint
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot).Scan(&retained)
		if err != nil {
			if ctx.Err() == nil {
				opts.Logger.Warn("cannot read the WAL kept for the copy's slot", "slot", slot, "err", err)
			}
			return
		}
		if opts.Progress != nil {
			opts.Progress.SourceWAL(retained)
		}
	}
}

// selectedTables are the tables the migration takes, of every kind: those the schema stage
// restored (only), matching the table filter.
func selectedTables(all []catalog.Table, filter config.TableFilter, only map[string]bool) []catalog.Table {
	var selected []catalog.Table
	for _, t := range all {
		if only != nil && !only[t.QualifiedName()] || !filter.Selects(t.Schema, t.Name) || filter.ExcludesSchema(t.Schema) {
			continue
		}
		selected = append(selected, t)
	}
	return selected
}

// resetPartlyCopied empties the tables whose remaining units would be read at another
// snapshot than their finished ones, where that matters: tables split by blocks (rows
// updated in between move between blocks) and, when following, every table, since the
// apply skips changes per table by the one snapshot its rows were read at. When following,
// the partitions of one partitioned table go together, as changes arrive through the root.
func resetPartlyCopied(ctx context.Context, target *pgx.Conn, items []state.CopyItem, follow bool, roots map[string]string) error {
	unit := func(i state.CopyItem) string {
		name := pg.QualifiedName(i.Schema, i.Table)
		if root := roots[name]; follow && root != "" {
			return root
		}
		return name
	}
	partly, finished := map[string]bool{}, map[string]bool{}
	for _, i := range items {
		if !follow && i.SplitBy != state.SplitCTID {
			continue
		}
		if i.Finished() {
			finished[unit(i)] = true
		} else {
			partly[unit(i)] = true
		}
	}
	seen := map[[2]string]bool{}
	for _, i := range items {
		key := [2]string{i.Schema, i.Table}
		if u := unit(i); !partly[u] || !finished[u] || seen[key] {
			continue
		}
		seen[key] = true
		err := pgx.BeginFunc(ctx, target, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "TRUNCATE ONLY "+pg.QualifiedName(key[0], key[1])); err != nil {
				return err
			}
			return state.ResetTable(ctx, tx, key[0], key[1])
		})
		if err != nil {
			return fmt.Errorf("empty %s to copy it again at one snapshot: %w", pg.QualifiedName(key[0], key[1]), err)
		}
	}
	return nil
}

func typesWithoutSend(ctx context.Context, source *pgx.Conn) (map[string]bool, error) {
	rows, err := source.Query(ctx, "SELECT typname FROM pg_catalog.pg_type WHERE typnamespace = 'pg_catalog'::regnamespace AND (typsend = 0 OR typreceive = 0)")
	if err != nil {
		return nil, fmt.Errorf("list types without binary I/O: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list types without binary I/O: %w", err)
	}
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m, nil
}

// setAutovacuum turns autovacuum off on the tables about to load (a vacuum of a table
// still loading is wasted work); RestoreAutovacuum sets it back.
func setAutovacuum(ctx context.Context, target *pgx.Conn, items []state.CopyItem, on bool) error {
	seen := map[string]bool{}
	for _, i := range items {
		name := pg.QualifiedName(i.Schema, i.Table)
		if seen[name] {
			continue
		}
		seen[name] = true
		if _, err := target.Exec(ctx, fmt.Sprintf("ALTER TABLE %s SET (autovacuum_enabled = %t, toast.autovacuum_enabled = %t)", name, on, on)); err != nil {
			return fmt.Errorf("set autovacuum on %s: %w", name, err)
		}
	}
	return nil
}

// worker owns one source connection inside the snapshot and one target connection.
type worker struct {
	source, target *pgx.Conn
	snapshot       *pg.Snapshot
	limiter        *rate.Limiter
	progress       Progress
}

func newWorker(ctx context.Context, opts Options, snapshot *pg.Snapshot, limiter *rate.Limiter) (*worker, error) {
	sourceCfg, err := pg.ParseConfig(pg.Source, opts.Source)
	if err != nil {
		return nil, err
	}
	// COPY TO sends one message per row; pgproto3 reads the socket 8 kB at a time, so a
	// larger buffer beneath it saves most of the read system calls of a copy.
	sourceCfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, sourceReadBuffer), w)
	}
	source, err := pg.ConnectConfig(ctx, pg.Source, sourceCfg)
	if err != nil {
		return nil, err
	}
	if _, err := source.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		source.Close(ctx)
		return nil, fmt.Errorf("start a source transaction: %w", err)
	}
	if _, err := source.Exec(ctx, "SET TRANSACTION SNAPSHOT "+pg.QuoteLiteral(snapshot.Name)); err != nil {
		source.Close(ctx)
		return nil, fmt.Errorf("import snapshot %s: %w", snapshot.Name, err)
	}
	// A key range of half a table still looks cheaper to scan whole than through the key's
	// index, but every chunk would then read the whole table: walk the index instead.
	// Whole-table COPYs are not planned and do not notice.
	if _, err := source.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		source.Close(ctx)
		return nil, fmt.Errorf("set up the source session: %w", err)
	}
	cfg, err := pg.ParseConfig(pg.Target, opts.Target)
	if err != nil {
		source.Close(ctx)
		return nil, err
	}
	for k, v := range copySettings {
		cfg.RuntimeParams[k] = v
	}
	target, err := pg.ConnectConfig(ctx, pg.Target, cfg)
	if err != nil {
		source.Close(ctx)
		return nil, err
	}
	return &worker{source: source, target: target, snapshot: snapshot, limiter: limiter, progress: opts.Progress}, nil
}

func (w *worker) close() {
	w.source.Close(context.Background())
	w.target.Close(context.Background())
}

// copyItem streams one item's rows and records it done, in one target transaction.
func (w *worker) copyItem(ctx context.Context, tc tableCopy, item state.CopyItem) (rows, bytes int64, err error) {
	name := tc.table.QualifiedName()
	label := name
	if item.Chunks > 1 {
		label = fmt.Sprintf("%s chunk %d/%d", name, item.Chunk+1, item.Chunks)
	}
	if w.progress != nil {
		w.progress.Started(item)
	}
	whole := item.SplitBy == state.SplitNone
	err = pgx.BeginFunc(ctx, w.target, func(tx pgx.Tx) error {
		if whole {
			// Emptying the table in this transaction also lets COPY FREEZE write the rows
			// already frozen: no vacuum has to visit them again.
			if _, err := tx.Exec(ctx, "TRUNCATE ONLY "+name); err != nil {
				return err
			}
		}
		pr, pw := io.Pipe()
		meter := &meteredWriter{ctx: ctx, w: pw, limiter: w.limiter, onWrite: func(n int) {
			bytes += int64(n)
			if w.progress != nil {
				w.progress.Copied(item, n)
			}
		}}
		buffered := bufio.NewWriterSize(meter, pipeBuffer)
		readErr := make(chan error, 1)
		go func() {
			_, err := w.source.PgConn().CopyTo(ctx, buffered, tc.sourceSQL(item))
			if err == nil {
				err = buffered.Flush()
			}
			pw.CloseWithError(err) // nil: the reader sees EOF
			readErr <- err
		}()
		tag, err := tx.Conn().PgConn().CopyFrom(ctx, pr, tc.targetSQL(whole))
		pr.CloseWithError(errors.New("the target stopped reading"))
		if rerr := <-readErr; rerr != nil && err == nil {
			err = fmt.Errorf("read from the source: %w", rerr)
		}
		if err != nil {
			return err
		}
		rows = tag.RowsAffected()
		return state.FinishCopyItem(ctx, tx, item, rows, bytes, w.snapshot.LSN)
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		return 0, 0, fmt.Errorf("copy %s: %w: fix the cause and run pgleap migrate again to resume", label, err)
	}
	if w.progress != nil {
		w.progress.Finished(item, rows)
	}
	return rows, bytes, nil
}

// meteredWriter counts what passes and holds it back to the rate limit.
type meteredWriter struct {
	ctx     context.Context // the copy's: a wait for the rate limit ends with it
	w       io.Writer
	limiter *rate.Limiter
	onWrite func(int)
}

func (m *meteredWriter) Write(p []byte) (int, error) {
	if m.limiter != nil {
		for rest := len(p); rest > 0; {
			n := min(rest, m.limiter.Burst())
			if err := m.limiter.WaitN(m.ctx, n); err != nil {
				return 0, err
			}
			rest -= n
		}
	}
	n, err := m.w.Write(p)
	m.onWrite(n)
	return n, err
}

// tableTracker calls back once every item of a table is done.
type tableTracker struct {
	mu       sync.Mutex
	left     map[[2]string]int
	callback func(schema, table string)
}

func newTableTracker(items []state.CopyItem, callback func(schema, table string)) *tableTracker {
	t := &tableTracker{left: map[[2]string]int{}, callback: callback}
	for _, i := range items {
		if !i.Finished() {
			t.left[[2]string{i.Schema, i.Table}]++
		}
	}
	if callback != nil {
		seen := map[[2]string]bool{}
		for _, i := range items {
			key := [2]string{i.Schema, i.Table}
			if t.left[key] == 0 && !seen[key] {
				seen[key] = true
				callback(i.Schema, i.Table)
			}
		}
	}
	return t
}

func (t *tableTracker) finished(i state.CopyItem) {
	key := [2]string{i.Schema, i.Table}
	t.mu.Lock()
	t.left[key]--
	last := t.left[key] == 0
	t.mu.Unlock()
	if last && t.callback != nil {
		t.callback(i.Schema, i.Table)
	}
}
