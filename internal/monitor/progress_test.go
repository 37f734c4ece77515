package monitor

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/state"
)

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestTimeLeft(t *testing.T) {
	for _, tt := range []struct {
		remaining int64
		rate      float64
		want      string
	}{
		{100 << 20, 10 << 20, "10s"}, // the log line once said 0s for every estimate
		{90 << 20, 1 << 20, "1m30s"},
		{1, 1e9, "0s"},
		{100, 0, "unknown"},
		{0, 100, "unknown"},
	} {
		if got := timeLeft(tt.remaining, tt.rate); got != tt.want {
			t.Errorf("timeLeft(%d, %g) = %s, want %s", tt.remaining, tt.rate, got, tt.want)
		}
	}
}

// TestLogLinesWhenNotATerminal: output to a buffer (not a terminal) gets periodic log lines
// with units, rows, bytes and the WAL the source keeps.
func TestLogLinesWhenNotATerminal(t *testing.T) {
	var out bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&out, nil))
	p := NewCopyProgress(&out, logger, 20*time.Millisecond)
	items := []state.CopyItem{
		{Schema: "public", Table: "a", Chunks: 2, EstimatedBytes: 1000},
		{Schema: "public", Table: "a", Chunk: 1, Chunks: 2, EstimatedBytes: 1000},
	}
	p.Planned(items)
	p.Started(items[0])
	p.Copied(items[0], 1500) // more than estimated: fine
	p.Finished(items[0], 42)
	p.SourceWAL(3 << 20)
	time.Sleep(60 * time.Millisecond)
	p.Close()
	line := out.String()
	for _, want := range []string{"copy progress", "units=1/2", "rows=42", `copied="1.5 KiB"`, `source_wal_retained="3.0 MiB"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %q:\n%s", want, line)
		}
	}
}
