package monitor

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// CopyProgress renders the data copy.
type CopyProgress struct {
	mu          sync.Mutex
	logger      *slog.Logger
	start       time.Time
	totalBytes  int64 // estimated, of the items still to copy
	copiedBytes int64
	rows        int64
	items, done int
	walRetained int64

	bars    *mpb.Progress // nil when not on a terminal
	overall *mpb.Bar
	running map[itemKey]*runningItem

	stop chan struct{}
	wg   sync.WaitGroup
}

type itemKey struct {
	schema, table string
	chunk         int
}

type runningItem struct {
	bar    *mpb.Bar
	copied int64
	total  int64
}

// NewCopyProgress renders to out when it is a terminal, else logs to logger every interval.
func NewCopyProgress(out io.Writer, logger *slog.Logger, interval time.Duration) *CopyProgress {
	p := &CopyProgress{logger: logger, start: time.Now(), running: map[itemKey]*runningItem{}, stop: make(chan struct{})}
	if IsTerminal(out) {
		p.bars = mpb.New(mpb.WithOutput(out), mpb.WithWidth(40), mpb.WithRefreshRate(250*time.Millisecond))
		return p
	}
	p.wg.Add(1)
	go p.logEvery(interval)
	return p
}

// IsTerminal reports whether w is a terminal, where output may redraw itself.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// Planned is told the whole plan; finished items count as done.
func (p *CopyProgress) Planned(items []state.CopyItem) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range items {
		if !i.Finished() {
			p.totalBytes += i.EstimatedBytes
			p.items++
		}
	}
	if p.bars != nil {
		p.overall = p.bars.AddBar(max(p.totalBytes, 1),
			mpb.PrependDecorators(decor.Name("total ", decor.WC{W: 30, C: decor.DindentRight}), decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")),
			mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f"), decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)))
	}
}

// Started is told an item begins.
func (p *CopyProgress) Started(i state.CopyItem) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &runningItem{total: max(i.EstimatedBytes, 1)}
	if p.bars != nil {
		r.bar = p.bars.AddBar(r.total, mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name(itemLabel(i), decor.WC{W: 30, C: decor.DindentRight}), decor.Current(decor.SizeB1024(0), "% .1f")),
			mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f")))
	}
	p.running[itemKey{i.Schema, i.Table, i.Chunk}] = r
}

// Copied is told bytes passed for an item.
func (p *CopyProgress) Copied(i state.CopyItem, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.copiedBytes += int64(n)
	r := p.running[itemKey{i.Schema, i.Table, i.Chunk}]
	if r == nil {
		return
	}
	r.copied += int64(n)
	if r.bar != nil {
		if r.copied >= r.total { // the estimate was low: keep the bar open until Finished
			r.total = r.copied + r.copied/10 + 1
			r.bar.SetTotal(r.total, false)
		}
		r.bar.IncrBy(n)
	}
	if p.overall != nil && p.copiedBytes < p.totalBytes {
		p.overall.SetCurrent(p.copiedBytes)
	}
}

// Finished is told an item is on the target.
func (p *CopyProgress) Finished(i state.CopyItem, rows int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := itemKey{i.Schema, i.Table, i.Chunk}
	if r := p.running[key]; r != nil && r.bar != nil {
		r.bar.SetTotal(-1, true)
	}
	delete(p.running, key)
	p.done++
	p.rows += rows
}

// SourceWAL is told how much WAL the source keeps for the copy's slot.
func (p *CopyProgress) SourceWAL(retained int64) {
	p.mu.Lock()
	p.walRetained = retained
	p.mu.Unlock()
}

// Close stops rendering.
func (p *CopyProgress) Close() {
	close(p.stop)
	p.wg.Wait()
	if p.bars != nil {
		if p.overall != nil {
			p.overall.SetTotal(-1, true)
		}
		for _, r := range p.running {
			if r.bar != nil {
				r.bar.Abort(true)
			}
		}
		p.bars.Wait()
	}
}

func (p *CopyProgress) logEvery(interval time.Duration) {
	defer p.wg.Done()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-ticker.C:
			p.logLine()
		}
	}
}

func (p *CopyProgress) logLine() {
	p.mu.Lock()
	defer p.mu.Unlock()
	elapsed := time.Since(p.start)
	rate := float64(p.copiedBytes) / elapsed.Seconds()
	eta := timeLeft(p.totalBytes-p.copiedBytes, rate)
	p.logger.Info("copy progress",
		"units", fmt.Sprintf("%d/%d", p.done, p.items), "rows", p.rows,
		"copied", HumanBytes(p.copiedBytes), "estimated", HumanBytes(p.totalBytes),
		"rate", HumanBytes(int64(rate))+"/s", "eta", eta, "source_wal_retained", HumanBytes(p.walRetained))
}

func itemLabel(i state.CopyItem) string {
	label := pg.QualifiedName(i.Schema, i.Table)
	if i.Chunks > 1 {
		label += fmt.Sprintf(" %d/%d", i.Chunk+1, i.Chunks)
	}
	if len(label) > 29 {
		label = "…" + label[len(label)-28:]
	}
	return label
}

// HumanBytes writes a byte count with a binary unit: 1.5 GiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// timeLeft is how long the remaining bytes take at rate (bytes per second), to the second.
func timeLeft(remaining int64, rate float64) string {
	if rate <= 0 || remaining <= 0 {
		return "unknown"
	}
	return time.Duration(float64(remaining) / rate * float64(time.Second)).Round(time.Second).String()
}
