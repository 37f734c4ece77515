package monitor

import (
	"testing"

	"github.com/pgleap/pgleap/internal/state"
)

// The copy's units under way count in the tables' bytes before the state does, and the
// bytes counter never goes down when a finished unit is, for a moment, counted twice.
func TestTrackerCountsUnitsUnderWay(t *testing.T) {
	tr := NewTracker(TrackerOptions{})
	orders := func(bytes int64) []TableStatus {
		return []TableStatus{{Name: `"public"."orders"`, Schema: "public", Table: "orders", Units: 2, UnitsDone: 1, BytesCopied: bytes}}
	}
	tr.status = &Status{Phase: state.PhaseCopying, Tables: orders(100)}
	chunk := state.CopyItem{Schema: "public", Table: "orders", Chunk: 1, Chunks: 2}
	tr.Started(chunk)
	tr.Copied(chunk, 30)
	tr.Copied(chunk, 20)
	if got := tr.Status().Tables[0].BytesCopied; got != 150 {
		t.Errorf("bytes with a unit under way: %d, want 150", got)
	}
	if got := copiedBytesMetric(t, tr); got != 150 {
		t.Errorf("pgleap_table_copied_bytes_total = %v, want 150", got)
	}
	// The unit commits; a state read that began before it does not count it yet, a later
	// one does while the unit is still remembered.
	tr.Finished(chunk, 10)
	tr.status = &Status{Phase: state.PhaseCopying, Tables: orders(150)}
	if got := copiedBytesMetric(t, tr); got != 200 {
		t.Errorf("pgleap_table_copied_bytes_total while counted twice = %v, want 200", got)
	}
	clear(tr.live) // what the next read does
	if got := copiedBytesMetric(t, tr); got != 200 {
		t.Errorf("pgleap_table_copied_bytes_total went down to %v", got)
	}
	if got := tr.Status().Tables[0].BytesCopied; got != 150 {
		t.Errorf("bytes once the state counts the unit: %d, want 150", got)
	}
}

func copiedBytesMetric(t *testing.T, tr *Tracker) float64 {
	t.Helper()
	families, err := tr.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "pgleap_table_copied_bytes_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no pgleap_table_copied_bytes_total")
	return 0
}
