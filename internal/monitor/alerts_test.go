package monitor

import (
	"strings"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/state"
)

func TestAlertsAt(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	// lags gives samples a minute apart, the last at now.
	lags := func(values ...int64) []Sample {
		var samples []Sample
		for i, v := range values {
			samples = append(samples, Sample{At: now.Add(time.Duration(i-len(values)+1) * time.Minute), LagBytes: &v})
		}
		return samples
	}
	copied := func(values ...int64) []Sample {
		var samples []Sample
		for i, v := range values {
			samples = append(samples, Sample{At: now.Add(time.Duration(i-len(values)+1) * time.Minute), CopiedBytes: v})
		}
		return samples
	}
	bytes := func(n int64) *int64 { return &n }
	const mib = 1 << 20
	th := AlertThresholds{SlotWALBytes: 10 << 30, SlotWALFraction: 0.8, LagGrowing: 5 * time.Minute, CopyStalled: 3 * time.Minute}
	streaming := &Status{Phase: state.PhaseStreaming, Slot: "pgleap_1"}
	copying := &Status{Phase: state.PhaseCopying}
	tests := []struct {
		name    string
		status  *Status
		history []Sample
		want    string // alert names, comma-separated
		message string // in the first alert's message
	}{
		{"caught up", streaming, lags(0, 0, 0, 0, 0, 0, 0), "", ""},
		{"lag grows for the window", streaming, lags(5*mib, 6*mib, 9*mib, 12*mib, 20*mib, 25*mib, 40*mib), "lag_growing", "fallen further behind for 5m0s: from 6.0 MiB to 40.0 MiB"},
		{"lag dips back to where it was", streaming, lags(5*mib, 6*mib, 9*mib, 6*mib, 20*mib, 25*mib, 40*mib), "", ""},
		{"lag high but shrinking", streaming, lags(90*mib, 80*mib, 70*mib, 60*mib, 50*mib, 40*mib, 30*mib), "", ""},
		{"lag grows, but a few bytes", streaming, lags(0, 10, 20, 30, 40, 50, 60), "", ""},
		{"not watched for a whole window yet", streaming, lags(5*mib, 9*mib, 12*mib), "", ""},
		{"lag growing before streaming is no alert", &Status{Phase: state.PhaseIndexing}, lags(5*mib, 6*mib, 9*mib, 12*mib, 20*mib, 25*mib, 40*mib), "", ""},
		{"copy moving", copying, copied(1, 2, 3, 4, 5), "", ""},
		{"copy stalled", copying, copied(1, 2, 7, 7, 7, 7), "copy_stalled", "read nothing from the source for 3m0s"},
		{"copy stalled, not for the window yet", copying, copied(1, 2, 3, 7, 7, 7), "", ""},
		{"copy idle while streaming is no alert", streaming, copied(7, 7, 7, 7, 7, 7), "", ""},
		{"slot WAL under the limits", &Status{Phase: state.PhaseStreaming, SlotRetainedBytes: bytes(100 * mib), MaxSlotWALKeepBytes: bytes(1000 * mib)}, nil, "", ""},
		{"slot WAL near max_slot_wal_keep_size", &Status{Phase: state.PhaseStreaming, Slot: "pgleap_1", SlotRetainedBytes: bytes(850 * mib), MaxSlotWALKeepBytes: bytes(1000 * mib)}, nil,
			"slot_wal", "85% of its max_slot_wal_keep_size"},
		{"slot WAL above the threshold", &Status{Phase: state.PhaseCopying, Slot: "pgleap_1", SlotRetainedBytes: bytes(11 << 30)}, nil, "slot_wal", "keeps 11.0 GiB of WAL for slot pgleap_1"},
		{"slot lost", &Status{Phase: state.PhaseStreaming, Slot: "pgleap_1", SlotRetainedBytes: bytes(0), SlotWALStatus: "lost"}, nil, "slot_wal", "must start over"},
		{"slot WAL unknown", &Status{Phase: state.PhaseStreaming}, nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alerts := alertsAt(now, tt.status, tt.history, th)
			var names []string
			for _, a := range alerts {
				names = append(names, a.Name)
			}
			if got := strings.Join(names, ","); got != tt.want {
				t.Fatalf("alerts %q, want %q: %+v", got, tt.want, alerts)
			}
			if tt.message != "" && !strings.Contains(alerts[0].Message, tt.message) {
				t.Errorf("message %q does not say %q", alerts[0].Message, tt.message)
			}
		})
	}
}
