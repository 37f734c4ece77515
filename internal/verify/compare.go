package verify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/cdc"
	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// RowOptions configure CompareRows.
type RowOptions struct {
	Source, Target string
	// Tables selects what to compare when the target records no migration; a recorded
	// migration's own selection wins.
	Tables    config.TableFilter
	Jobs      int   // chunks compared at once, each on a connection to either side
	ChunkRows int64 // rows per chunk, about
	MaxKeys   int   // differing rows listed per table
	// ShowValues adds each differing row's text on both sides.
	ShowValues bool
	Sequences  bool // compare sequence values too
	// HoldTimeout bounds the wait for the apply (pgleap migrate) to reach the source
	// snapshot's position.
	HoldTimeout time.Duration
	// Frozen says neither side changes (a cutover froze the source and holds the apply):
	// both are read as they are, without holding the apply.
	Frozen bool
	// CountsOnly compares row counts, not hashes: quicker, and enough to show rows lost.
	CountsOnly bool
	Logger     *slog.Logger
}

// RowReport is what CompareRows found.
type RowReport struct {
	Equal bool `json:"equal"`
	// SourceLSN is the position of the source snapshot compared, when it came from a slot.
	SourceLSN    string        `json:"source_lsn,omitempty"`
	Tables       []TableResult `json:"tables"`
	LargeObjects *TableResult  `json:"large_objects,omitempty"`
	Sequences    *TableResult  `json:"sequences,omitempty"`
	RowsCompared int64         `json:"rows_compared"`
	Seconds      float64       `json:"seconds"`
	RowsPerSec   float64       `json:"rows_per_second"`
	// ApplyPauseMS is how long the apply stood still while the target's snapshot was taken.
	ApplyPauseMS float64 `json:"apply_pause_ms"`
	Attempts     int     `json:"attempts"` // source snapshots taken before the apply held at one
	Differing    int     `json:"differing_tables"`
}

// TableResult is one table's comparison.
type TableResult struct {
	Table           string          `json:"table"`
	Equal           bool            `json:"equal"`
	SourceRows      int64           `json:"source_rows"`
	TargetRows      int64           `json:"target_rows"`
	Chunks          int             `json:"chunks"`
	DifferingChunks int             `json:"differing_chunks"`
	Differences     []RowDifference `json:"differences,omitempty"`
	// MoreDifferences counts the differing rows found beyond those listed.
	MoreDifferences int    `json:"more_differences,omitempty"`
	Problem         string `json:"problem,omitempty"` // why it could not be compared row by row
}

// RowDifference is one row that differs.
type RowDifference struct {
	Key    string `json:"key"`
	What   string `json:"what"` // missing on the target, only on the target, values differ
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
}

const (
	missingOnTarget = "missing on the target"
	onlyOnTarget    = "only on the target"
	valuesDiffer    = "values differ"
	maxAttempts     = 5
)

// CompareRows compares the rows of every selected table of the source and the target.
//
// Both sides are read at one point: when the target follows the source (pgleap migrate
// streaming), a temporary slot's snapshot on the source, and on the target a snapshot taken
// while the apply holds at exactly that slot's position; otherwise both as they are now.
// The result is recorded in the target's pgleap state when it has one.
func CompareRows(ctx context.Context, opts RowOptions) (*RowReport, error) {
	started := time.Now()
	opts.Jobs = max(1, opts.Jobs)
	opts.ChunkRows = max(1000, opts.ChunkRows)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	source, target, err := pg.ConnectBoth(ctx, opts.Source, opts.Target)
	if err != nil {
		return nil, err
	}
	defer source.Close(context.Background())
	defer target.Close(context.Background())

	selection := opts.Tables
	var repl state.Replication
	following := false
	hasState, err := state.Exists(ctx, target)
	if err != nil {
		return nil, err
	}
	if hasState {
		if err := state.Init(ctx, target); err != nil {
			return nil, err
		}
		if m, ok, err := state.LoadMigration(ctx, target); err != nil {
			return nil, err
		} else if ok {
			selection = config.TableFilter{Include: m.Include, Exclude: m.Exclude}
		}
		var ok bool
		if repl, ok, err = state.LoadReplication(ctx, target); err != nil {
			return nil, err
		}
		following = ok && repl.StartLSN != 0 && !opts.Frozen
	}
	all, err := catalog.Tables(ctx, source)
	if err != nil {
		return nil, fmt.Errorf("list source tables: %w", err)
	}
	var tables []catalog.Table
	for _, t := range all {
		if t.Kind == catalog.KindTable && selection.Selects(t.Schema, t.Name) {
			tables = append(tables, t)
		}
	}
	keys, err := keyColumns(ctx, source, tables)
	if err != nil {
		return nil, err
	}

	report := &RowReport{}
	points, err := openPoints(ctx, opts, source, target, repl, following, report)
	if err != nil {
		return nil, err
	}
	workers, err := openWorkers(ctx, opts, points)
	points.close() // every worker has imported both snapshots
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, w := range workers {
			w.close()
		}
	}()

	missing, err := tablesNotOnTarget(ctx, workers[0].target, tables)
	if err != nil {
		return nil, err
	}
	results := make([]*TableResult, len(tables))
	var chunks []chunk
	for i, t := range tables {
		results[i] = &TableResult{Table: t.QualifiedName(), Equal: true}
		if missing[t.QualifiedName()] {
			results[i].Equal, results[i].Problem = false, "the table is not on the target"
			continue
		}
		plan, err := planTable(ctx, workers[0].source, t, keys[t.OID], opts.ChunkRows, opts.CountsOnly)
		if err != nil {
			return nil, err
		}
		results[i].Chunks = len(plan.chunks)
		for c := range plan.chunks {
			chunks = append(chunks, chunk{plan: plan, index: c})
		}
	}
	byTable := map[string]*TableResult{}
	for _, r := range results {
		byTable[r.Table] = r
	}
	if err := compareChunks(ctx, opts, workers, chunks, byTable); err != nil {
		return nil, err
	}
	if report.LargeObjects, err = compareLargeObjects(ctx, workers[0], opts.MaxKeys); err != nil {
		return nil, err
	}
	if opts.Sequences {
		if report.Sequences, err = compareSequences(ctx, workers[0], selection, opts.MaxKeys); err != nil {
			return nil, err
		}
	}

	report.Equal = true
	for _, r := range results {
		slices.SortFunc(r.Differences, func(a, b RowDifference) int { return cmp.Compare(a.Key, b.Key) })
		report.Tables = append(report.Tables, *r)
		report.RowsCompared += r.SourceRows
		if !r.Equal {
			report.Equal = false
			report.Differing++
		}
	}
	for _, extra := range []*TableResult{report.LargeObjects, report.Sequences} {
		if extra != nil && !extra.Equal {
			report.Equal = false
		}
	}
	elapsed := time.Since(started)
	report.Seconds = elapsed.Seconds()
	report.RowsPerSec = float64(report.RowsCompared) / elapsed.Seconds()
	if hasState {
		if err := record(ctx, target, started, points.sourceLSN, report); err != nil {
			return nil, err
		}
	}
	return report, nil
}

// tablesNotOnTarget lists the tables the target does not have, by quoted name.
func tablesNotOnTarget(ctx context.Context, target pgx.Tx, tables []catalog.Table) (map[string]bool, error) {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.QualifiedName()
	}
	rows, err := target.Query(ctx, "SELECT n FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NULL", names)
	if err != nil {
		return nil, fmt.Errorf("look for the tables on the target: %w", err)
	}
	missing := map[string]bool{}
	var name string
	_, err = pgx.ForEachRow(rows, []any{&name}, func() error { missing[name] = true; return nil })
	if err != nil {
		return nil, fmt.Errorf("look for the tables on the target: %w", err)
	}
	return missing, nil
}

func record(ctx context.Context, target *pgx.Conn, started time.Time, lsn pglogrepl.LSN, r *RowReport) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return state.RecordVerification(ctx, target, state.Verification{
		StartedAt: started, FinishedAt: time.Now(), SourceLSN: lsn, Equal: r.Equal, Tables: len(r.Tables),
		DifferingTables: r.Differing, RowsCompared: r.RowsCompared,
		ApplyPause: time.Duration(r.ApplyPauseMS * float64(time.Millisecond)), Report: body,
	})
}

// points are the two snapshots compared, exported for the workers to import.
type points struct {
	sourceSnapshot, targetSnapshot string
	sourceLSN                      pglogrepl.LSN
	slot                           *pg.Snapshot // the source snapshot's slot, when following
	sourceTx, targetTx             pgx.Tx       // the transactions that export them
	sourceConn, targetConn         *pgx.Conn
}

func (p *points) close() {
	if p.slot != nil {
		p.slot.Close()
	}
	for _, c := range []*pgx.Conn{p.sourceConn, p.targetConn} {
		if c != nil {
			c.Close(context.Background())
		}
	}
}

// openPoints takes the source snapshot and a target snapshot at the same point.
func openPoints(ctx context.Context, opts RowOptions, source, target *pgx.Conn, repl state.Replication, following bool, report *RowReport) (*points, error) {
	var err error
	if !following {
		p := &points{}
		if p.sourceConn, p.sourceTx, p.sourceSnapshot, err = exportSnapshot(ctx, pg.Source, opts.Source); err != nil {
			return nil, err
		}
		if p.targetConn, p.targetTx, p.targetSnapshot, err = exportSnapshot(ctx, pg.Target, opts.Target); err != nil {
			p.close()
			return nil, err
		}
		report.Attempts = 1
		return p, nil
	}
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		report.Attempts = attempt
		p, held, pause, err := holdAtSlot(ctx, opts, source, target, repl)
		pause2, releaseErr := state.ReleaseHold(context.WithoutCancel(ctx), target)
		if err = errors.Join(err, releaseErr); err != nil {
			if p != nil {
				p.close()
			}
			return nil, err
		}
		if held {
			report.SourceLSN = p.sourceLSN.String()
			report.ApplyPauseMS = float64(pause+pause2) / float64(time.Millisecond)
			return p, nil
		}
		p.close()
		opts.Logger.Info("the apply did not hold at the source snapshot: taking a newer one", "snapshot", p.sourceLSN)
	}
	return nil, fmt.Errorf("the apply did not hold at any of %d source snapshots in a row: verify again", maxAttempts)
}

// holdAtSlot stops the apply where it stands, makes the source snapshot's slot (which the
// apply, standing still, cannot have passed), lets the apply go on up to the slot's position
// and, once it holds there, exports a snapshot of the target. pause is how long the apply
// stood still before it went on to the slot's position.
func holdAtSlot(ctx context.Context, opts RowOptions, source, target *pgx.Conn, repl state.Replication) (p *points, held bool, pause time.Duration, err error) {
	if held, _, err := cdc.HoldAt(ctx, source, target, repl.Slot, state.HoldNow, opts.HoldTimeout); err != nil || !held {
		return nil, false, 0, cmp.Or(err, errors.New("the apply did not stop when asked: verify again"))
	}
	p = &points{}
	if p.slot, err = pg.OpenSnapshot(ctx, opts.Source, "verify"); err != nil {
		return nil, false, 0, err
	}
	p.sourceSnapshot, p.sourceLSN = p.slot.Name, p.slot.LSN
	if held, pause, err = cdc.HoldAt(ctx, source, target, repl.Slot, p.sourceLSN, opts.HoldTimeout); err != nil || !held {
		return p, false, pause, err
	}
	if p.targetConn, p.targetTx, p.targetSnapshot, err = exportSnapshot(ctx, pg.Target, opts.Target); err != nil {
		return p, false, pause, err
	}
	// The target snapshot must show the apply holding: had it lost its connection and a new
	// session applied on before taking the hold again, this is where it would show.
	var stillHeld bool
	err = p.targetTx.QueryRow(ctx, "SELECT held_at IS NOT NULL AND hold_lsn = $1::text::pg_lsn FROM pgleap.replication", p.sourceLSN.String()).Scan(&stillHeld)
	if err != nil {
		return p, false, pause, fmt.Errorf("read the hold in the target's snapshot: %w", err)
	}
	return p, stillHeld, pause, nil
}

// exportSnapshot opens a connection in a repeatable-read transaction and exports its snapshot.
func exportSnapshot(ctx context.Context, side pg.Side, connString string) (*pgx.Conn, pgx.Tx, string, error) {
	conn, err := pg.Connect(ctx, side, connString)
	if err != nil {
		return nil, nil, "", err
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	var name string
	if err == nil {
		err = tx.QueryRow(ctx, "SELECT pg_catalog.pg_export_snapshot()").Scan(&name)
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, nil, "", fmt.Errorf("export a snapshot of the %s: %w", side, err)
	}
	return conn, tx, name, nil
}

// worker reads both sides at the verification's snapshots.
type worker struct {
	sourceConn, targetConn *pgx.Conn
	source, target         pgx.Tx
}

func (w *worker) close() {
	for _, c := range []*pgx.Conn{w.sourceConn, w.targetConn} {
		if c != nil {
			c.Close(context.Background())
		}
	}
}

func openWorkers(ctx context.Context, opts RowOptions, p *points) ([]*worker, error) {
	workers := make([]*worker, opts.Jobs)
	g, gctx := errgroup.WithContext(ctx)
	for i := range workers {
		w := &worker{}
		workers[i] = w
		g.Go(func() error {
			var err error
			if w.sourceConn, w.source, err = importSnapshot(gctx, pg.Source, opts.Source, p.sourceSnapshot); err != nil {
				return err
			}
			w.targetConn, w.target, err = importSnapshot(gctx, pg.Target, opts.Target, p.targetSnapshot)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		for _, w := range workers {
			w.close()
		}
		return nil, err
	}
	return workers, nil
}

func importSnapshot(ctx context.Context, side pg.Side, connString, snapshot string) (*pgx.Conn, pgx.Tx, error) {
	conn, err := pg.Connect(ctx, side, connString)
	if err != nil {
		return nil, nil, err
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err == nil {
		_, err = tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+pg.QuoteLiteral(snapshot))
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, nil, fmt.Errorf("read the %s at the verification's snapshot: %w", side, err)
	}
	return conn, tx, nil
}

// compareChunks digests every chunk on both sides, several at once, and reads the rows of
// the buckets that differ.
func compareChunks(ctx context.Context, opts RowOptions, workers []*worker, chunks []chunk, results map[string]*TableResult) error {
	// Largest tables first, so that no worker is left with one at the end.
	slices.SortStableFunc(chunks, func(a, b chunk) int {
		return cmp.Compare(b.plan.table.DataBytes/int64(len(b.plan.chunks)), a.plan.table.DataBytes/int64(len(a.plan.chunks)))
	})
	queue := make(chan chunk)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(queue)
		for _, c := range chunks {
			select {
			case queue <- c:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for _, w := range workers {
		g.Go(func() error {
			for c := range queue {
				out, err := w.compare(gctx, c, opts)
				if err != nil {
					return fmt.Errorf("verify %s: %w", c, err)
				}
				mu.Lock()
				out.addTo(results[c.plan.table.QualifiedName()], opts.MaxKeys)
				mu.Unlock()
			}
			return nil
		})
	}
	return g.Wait()
}

// chunkOutcome is what one chunk's comparison found.
type chunkOutcome struct {
	sourceRows, targetRows int64
	differs                bool
	differences            []RowDifference
}

func (o chunkOutcome) addTo(r *TableResult, maxKeys int) {
	r.SourceRows += o.sourceRows
	r.TargetRows += o.targetRows
	if !o.differs {
		return
	}
	r.Equal = false
	r.DifferingChunks++
	for _, d := range o.differences {
		if len(r.Differences) < maxKeys {
			r.Differences = append(r.Differences, d)
		} else {
			r.MoreDifferences++
		}
	}
}

type bucketDigest struct {
	rows           int64
	sumLo, sumHigh string
}

// compare digests one chunk on both sides at once.
func (w *worker) compare(ctx context.Context, c chunk, opts RowOptions) (chunkOutcome, error) {
	var out chunkOutcome
	var sourceDigests, targetDigests map[int]bucketDigest
	g, gctx := errgroup.WithContext(ctx)
	sql := c.plan.digestSQL(c.index)
	g.Go(func() (err error) { sourceDigests, err = digest(gctx, w.source, sql); return err })
	g.Go(func() (err error) { targetDigests, err = digest(gctx, w.target, sql); return err })
	if err := g.Wait(); err != nil {
		return out, err
	}
	var differing []int
	for b, d := range sourceDigests {
		out.sourceRows += d.rows
		if targetDigests[b] != d {
			differing = append(differing, b)
		}
	}
	for b, d := range targetDigests {
		out.targetRows += d.rows
		if _, ok := sourceDigests[b]; !ok {
			differing = append(differing, b)
		}
	}
	slices.Sort(differing)
	out.differs = len(differing) > 0
	for _, b := range differing {
		if len(out.differences) >= opts.MaxKeys {
			break
		}
		diffs, err := w.bucketDifferences(ctx, c, b, opts.ShowValues)
		if err != nil {
			return out, err
		}
		out.differences = append(out.differences, diffs...)
	}
	return out, nil
}

func digest(ctx context.Context, tx pgx.Tx, sql string) (map[int]bucketDigest, error) {
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	digests := map[int]bucketDigest{}
	var b int
	var d bucketDigest
	_, err = pgx.ForEachRow(rows, []any{&b, &d.rows, &d.sumLo, &d.sumHigh}, func() error { digests[b] = d; return nil })
	return digests, err
}

// sideRow is what one side holds of a row: its hash, its text, and how many times it is
// there (rows without a key can repeat).
type sideRow struct {
	hash, text string
	count      int
}

// bucketDifferences reads one bucket's rows on both sides and names those that differ.
func (w *worker) bucketDifferences(ctx context.Context, c chunk, bucket int, withRow bool) ([]RowDifference, error) {
	var sourceRows, targetRows map[string]*sideRow
	sql := c.plan.bucketRowsSQL(c.index, withRow)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { sourceRows, err = bucketRows(gctx, w.source, sql, bucket, withRow); return err })
	g.Go(func() (err error) { targetRows, err = bucketRows(gctx, w.target, sql, bucket, withRow); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var diffs []RowDifference
	keyless := len(c.plan.key) == 0
	for k, s := range sourceRows {
		t := targetRows[k]
		d := RowDifference{Key: c.plan.describeKey(k), Source: s.text}
		switch {
		case t == nil:
			d.What = missingOnTarget
		case keyless && s.count != t.count:
			d.What = fmt.Sprintf("%d times on the source, %d on the target", s.count, t.count)
		case !keyless && s.hash != t.hash:
			d.What, d.Target = valuesDiffer, t.text
		default:
			continue
		}
		if keyless {
			d.Source = "" // the key is the row already
		}
		diffs = append(diffs, d)
	}
	for k, t := range targetRows {
		if sourceRows[k] == nil {
			d := RowDifference{Key: c.plan.describeKey(k), What: onlyOnTarget, Target: t.text}
			if keyless {
				d.Target = ""
			}
			diffs = append(diffs, d)
		}
	}
	slices.SortFunc(diffs, func(a, b RowDifference) int { return cmp.Compare(a.Key, b.Key) })
	return diffs, nil
}

func bucketRows(ctx context.Context, tx pgx.Tx, sql string, bucket int, withRow bool) (map[string]*sideRow, error) {
	rows, err := tx.Query(ctx, sql, bucket)
	if err != nil {
		return nil, err
	}
	out := map[string]*sideRow{}
	var k, h, text string
	scan := []any{&k, &h}
	if withRow {
		scan = append(scan, &text)
	}
	_, err = pgx.ForEachRow(rows, scan, func() error {
		if r := out[k]; r != nil {
			r.count++
			return nil
		}
		out[k] = &sideRow{hash: h, text: text, count: 1}
		return nil
	})
	return out, err
}
