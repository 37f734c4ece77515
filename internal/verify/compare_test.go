package verify

import (
	"slices"
	"testing"

	"github.com/pgleap/pgleap/internal/catalog"
)

func TestDescribeKey(t *testing.T) {
	tests := []struct {
		key  []string
		k    string
		want string
	}{
		{[]string{"id"}, "42", `("id")=(42)`},
		{[]string{"a", "B"}, "(5,k3)", `("a", "B")=(5,k3)`},
		{nil, "(x1,2)", "(x1,2)"}, // without a key the row is its own name
	}
	for _, tt := range tests {
		p := &tablePlan{table: catalog.Table{Schema: "public", Name: "t"}, key: tt.key}
		if got := p.describeKey(tt.k); got != tt.want {
			t.Errorf("describeKey(%v, %q) = %q, want %q", tt.key, tt.k, got, tt.want)
		}
	}
}

func TestDiffer(t *testing.T) {
	tests := []struct {
		name           string
		source, target map[string]string
		maxKeys        int
		want           []string
		more           int
	}{
		{"equal", map[string]string{"a": "1"}, map[string]string{"a": "1"}, 10, nil, 0},
		{"each kind", map[string]string{"a": "1", "b": "2"}, map[string]string{"b": "3", "c": "4"}, 10,
			[]string{"a " + missingOnTarget, "b " + valuesDiffer, "c " + onlyOnTarget}, 0},
		{"trimmed", map[string]string{"a": "1", "b": "1", "c": "1"}, map[string]string{}, 2,
			[]string{"a " + missingOnTarget, "b " + missingOnTarget}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &TableResult{Equal: true}
			r.differ(tt.source, tt.target, "", tt.maxKeys)
			var got []string
			for _, d := range r.Differences {
				got = append(got, d.Key+" "+d.What)
			}
			if !slices.Equal(got, tt.want) || r.MoreDifferences != tt.more || r.Equal != (len(tt.want) == 0) {
				t.Errorf("differences %q (more %d, equal %v), want %q (more %d)", got, r.MoreDifferences, r.Equal, tt.want, tt.more)
			}
		})
	}
}

func TestChunkOutcomeKeepsMaxKeys(t *testing.T) {
	r := &TableResult{Equal: true}
	for range 3 {
		chunkOutcome{sourceRows: 10, targetRows: 9, differs: true,
			differences: []RowDifference{{Key: "k", What: missingOnTarget}}}.addTo(r, 2)
	}
	chunkOutcome{sourceRows: 5, targetRows: 5}.addTo(r, 2)
	if r.Equal || r.SourceRows != 35 || r.TargetRows != 32 || r.DifferingChunks != 3 || len(r.Differences) != 2 || r.MoreDifferences != 1 {
		t.Errorf("after four chunks: %+v", r)
	}
}

func TestRangeBound(t *testing.T) {
	tests := []struct{ lo, hi, i, n, want int64 }{
		{1, 100, 0, 4, 1},
		{1, 100, 1, 4, 26},
		{1, 100, 4, 4, 101},
		{1e18, 1.8e18, 12, 100, 1e18 + 96e15}, // the span times 12 overflows int64
		{-5, 5, 1, 2, 0},
	}
	for _, tt := range tests {
		if got := rangeBound(tt.lo, tt.hi, tt.i, tt.n); got != tt.want {
			t.Errorf("rangeBound(%d, %d, %d, %d) = %d, want %d", tt.lo, tt.hi, tt.i, tt.n, got, tt.want)
		}
	}
}
