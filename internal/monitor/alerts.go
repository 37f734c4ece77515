package monitor

import (
	"fmt"
	"time"

	"github.com/pgleap/pgleap/internal/state"
)

// AlertThresholds say when a running migration needs a person.
type AlertThresholds struct {
	// SlotWALBytes raises slot_wal when the source keeps more WAL than this for the slot
	// (0: only the fraction below counts).
	SlotWALBytes int64
	// SlotWALFraction raises slot_wal when the slot keeps this fraction of the source's
	// max_slot_wal_keep_size: beyond it, the source drops the slot's WAL and the migration
	// must start over.
	SlotWALFraction float64
	// LagGrowing raises lag_growing when the lag stayed above where it was this long ago
	// for all that time, and ended higher (0: off).
	LagGrowing time.Duration
	// CopyStalled raises copy_stalled when the copy read nothing for this long (0: off).
	CopyStalled time.Duration
}

// DefaultAlertThresholds are what an unattended migration should be woken up for.
var DefaultAlertThresholds = AlertThresholds{
	SlotWALBytes:    10 << 30, // pgleap migrate --alert-slot-wal: 10GB
	SlotWALFraction: 0.8,
	LagGrowing:      10 * time.Minute,
	CopyStalled:     5 * time.Minute,
}

// Alert is a condition that needs a person.
type Alert struct {
	Name    string    `json:"name"` // slot_wal, lag_growing or copy_stalled
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
}

// Sample is the migration at one moment, for the status page's chart and the alerts.
type Sample struct {
	At                    time.Time `json:"at"`
	LagBytes              *int64    `json:"lag_bytes"`
	LagSeconds            *float64  `json:"lag_seconds"`
	TransactionsPerSecond *float64  `json:"transactions_per_second"`
	ChangesPerSecond      *float64  `json:"changes_per_second"`
	// CopiedBytes counts what the copy read since pgleap started.
	CopiedBytes int64 `json:"copied_bytes"`
}

// alertsAt returns the alerts that hold at now for st and the samples before it (oldest
// first, the newest being now's). Since is left for the caller, which knows when each began.
func alertsAt(now time.Time, st *Status, history []Sample, th AlertThresholds) []Alert {
	var alerts []Alert
	if a, ok := slotWALAlert(st, th); ok {
		alerts = append(alerts, a)
	}
	if st.Phase == state.PhaseStreaming && th.LagGrowing > 0 {
		if a, ok := lagGrowingAlert(now, history, th.LagGrowing); ok {
			alerts = append(alerts, a)
		}
	}
	if st.Phase == state.PhaseCopying && th.CopyStalled > 0 {
		if a, ok := copyStalledAlert(now, history, th.CopyStalled); ok {
			alerts = append(alerts, a)
		}
	}
	return alerts
}

func slotWALAlert(st *Status, th AlertThresholds) (Alert, bool) {
	if st.SlotRetainedBytes == nil {
		return Alert{}, false
	}
	retained := *st.SlotRetainedBytes
	switch {
	case st.SlotWALStatus == "lost":
		return Alert{Name: "slot_wal", Message: fmt.Sprintf("the source removed WAL that slot %s still needed: the migration cannot continue and must start over: pgleap cleanup, empty the target database (drop and create it), then pgleap migrate", st.Slot)}, true
	case st.MaxSlotWALKeepBytes != nil && th.SlotWALFraction > 0 && float64(retained) >= th.SlotWALFraction*float64(*st.MaxSlotWALKeepBytes):
		return Alert{Name: "slot_wal", Message: fmt.Sprintf("the source keeps %s of WAL for slot %s, %.0f%% of its max_slot_wal_keep_size (%s): past it the slot is lost; let the apply catch up, or raise max_slot_wal_keep_size",
			HumanBytes(retained), st.Slot, 100*float64(retained)/float64(*st.MaxSlotWALKeepBytes), HumanBytes(*st.MaxSlotWALKeepBytes))}, true
	case th.SlotWALBytes > 0 && retained >= th.SlotWALBytes:
		return Alert{Name: "slot_wal", Message: fmt.Sprintf("the source keeps %s of WAL for slot %s: watch the source's free disk space, and let the apply catch up or end the migration (pgleap cleanup) before it fills",
			HumanBytes(retained), st.Slot)}, true
	}
	return Alert{}, false
}

// lagGrowingAlert: the lag never went back down to where it was window ago, and grew.
// A lag that rises and falls with the load, or that is large but shrinking, is no alert.
func lagGrowingAlert(now time.Time, history []Sample, window time.Duration) (Alert, bool) {
	start := now.Add(-window)
	base := -1
	for i, s := range history {
		if s.At.After(start) {
			break
		}
		if s.LagBytes != nil {
			base = i
		}
	}
	if base < 0 || base == len(history)-1 {
		return Alert{}, false // not watched for a whole window yet
	}
	from := *history[base].LagBytes
	for _, s := range history[base+1:] {
		if s.LagBytes == nil || *s.LagBytes <= from {
			return Alert{}, false
		}
	}
	last := history[len(history)-1]
	if *last.LagBytes < 1<<20 {
		return Alert{}, false
	}
	return Alert{Name: "lag_growing", Message: fmt.Sprintf("the apply has fallen further behind for %s: from %s to %s of source WAL (%.0f s); the target may be too slow, or a long transaction is streaming",
		window, HumanBytes(from), HumanBytes(*last.LagBytes), ptrValue(last.LagSeconds))}, true
}

// copyStalledAlert: the copy read nothing through the whole window.
func copyStalledAlert(now time.Time, history []Sample, window time.Duration) (Alert, bool) {
	if len(history) == 0 {
		return Alert{}, false
	}
	last := history[len(history)-1]
	start := now.Add(-window)
	for i := len(history) - 1; i >= 0; i-- {
		s := history[i]
		if s.CopiedBytes != last.CopiedBytes {
			return Alert{}, false
		}
		if !s.At.After(start) {
			return Alert{Name: "copy_stalled", Message: fmt.Sprintf("the copy read nothing from the source for %s: look for locks on the source or target (pg_stat_activity wait_event), or a stuck network",
				window)}, true
		}
	}
	return Alert{}, false
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
