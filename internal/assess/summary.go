package assess

import (
	"cmp"
	"slices"

	"github.com/pgleap/pgleap/internal/catalog"
)

// copyBytesPerSecond is the full-load rate the estimate assumes: the order of what a 2-core
// machine copies with indexes built alongside (bench/ measures the real figure).
const copyBytesPerSecond = 100 << 20

// Summary sizes up the migration.
type Summary struct {
	Tables     int         `json:"tables"`
	TotalBytes int64       `json:"total_bytes"`
	Largest    []TableSize `json:"largest_tables"`
	// EstimatedCopySeconds is the total size at copyBytesPerSecond.
	EstimatedCopySeconds int64 `json:"estimated_copy_seconds"`
}

// TableSize is one table's share of the copy.
type TableSize struct {
	Name        string `json:"name"`
	Bytes       int64  `json:"bytes"`
	RowEstimate int64  `json:"row_estimate"` // -1: never analyzed
}

func summarize(tables []catalog.Table) Summary {
	s := Summary{Largest: []TableSize{}}
	for _, t := range tables {
		if t.Kind == catalog.KindPartitioned {
			continue // its partitions are counted one by one
		}
		s.Tables++
		s.TotalBytes += t.Bytes
		s.Largest = append(s.Largest, TableSize{Name: t.QualifiedName(), Bytes: t.Bytes, RowEstimate: t.RowEstimate})
	}
	slices.SortStableFunc(s.Largest, func(a, b TableSize) int { return cmp.Compare(b.Bytes, a.Bytes) })
	if len(s.Largest) > 10 {
		s.Largest = s.Largest[:10]
	}
	s.EstimatedCopySeconds = (s.TotalBytes + copyBytesPerSecond - 1) / copyBytesPerSecond
	return s
}
