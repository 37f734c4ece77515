package monitor

import (
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgleap/pgleap/internal/state"
)

// Metric descriptions: docs/monitoring.md lists them for the people writing alert rules.
var (
	phaseDesc = prometheus.NewDesc("pgleap_phase",
		"The migration's phase: 1 for the current one, 0 for the others.", []string{"phase"}, nil)
	tableUnitsDesc = prometheus.NewDesc("pgleap_table_copy_units",
		"Units (tables or ranges) a table's copy is cut into.", []string{"schema", "table"}, nil)
	tableUnitsDoneDesc = prometheus.NewDesc("pgleap_table_copy_units_done",
		"Units of a table on the target.", []string{"schema", "table"}, nil)
	tableRowsDesc = prometheus.NewDesc("pgleap_table_copied_rows_total",
		"Rows of a table copied, counted when each unit commits.", []string{"schema", "table"}, nil)
	tableBytesDesc = prometheus.NewDesc("pgleap_table_copied_bytes_total",
		"Bytes of a table read from the source, the units under way included.", []string{"schema", "table"}, nil)
	tableEstimatedDesc = prometheus.NewDesc("pgleap_table_estimated_bytes",
		"The planner's size of a table's rows, what the copy expects to read.", []string{"schema", "table"}, nil)
	lagBytesDesc = prometheus.NewDesc("pgleap_apply_lag_bytes",
		"Source WAL written since the last change the target applied.", nil, nil)
	lagSecondsDesc = prometheus.NewDesc("pgleap_apply_lag_seconds",
		"How long ago the target was in step with the source (the last applied commit, or a later moment with nothing left to apply), when it is behind (0 when caught up).", nil, nil)
	appliedTransactionsDesc = prometheus.NewDesc("pgleap_applied_transactions_total",
		"Source transactions applied to the target since streaming began.", nil, nil)
	appliedChangesDesc = prometheus.NewDesc("pgleap_applied_changes_total",
		"Row changes (inserts, updates, deletes) applied to the target since streaming began.", nil, nil)
	appliedLSNDesc = prometheus.NewDesc("pgleap_applied_lsn",
		"The source WAL position applied on the target, as a number.", nil, nil)
	sourceLSNDesc = prometheus.NewDesc("pgleap_source_lsn",
		"The source's current WAL position, as a number.", nil, nil)
	slotRetainedDesc = prometheus.NewDesc("pgleap_slot_retained_bytes",
		"WAL the source keeps for pgleap's replication slot.", nil, nil)
	slotMaxDesc = prometheus.NewDesc("pgleap_slot_max_wal_keep_bytes",
		"The source's max_slot_wal_keep_size, when it is limited: past it the slot is lost.", nil, nil)
	errorsDesc = prometheus.NewDesc("pgleap_errors_total",
		"Errors pgleap logged: lost connections it retried, failed steps.", nil, nil)
	alertDesc = prometheus.NewDesc("pgleap_alert",
		"1 while an alert holds: slot_wal, lag_growing, copy_stalled.", []string{"alert"}, nil)
	targetGuardDesc = prometheus.NewDesc("pgleap_target_guard",
		"1 while the target database is read-only for every session but pgleap's.", nil, nil)
	verificationEqualDesc = prometheus.NewDesc("pgleap_last_verification_equal",
		"1 when the last pgleap verify found source and target equal, 0 when it found differences.", nil, nil)
	verificationTimeDesc = prometheus.NewDesc("pgleap_last_verification_timestamp_seconds",
		"When the last pgleap verify finished, in Unix time.", nil, nil)
	readTimeDesc = prometheus.NewDesc("pgleap_status_read_timestamp_seconds",
		"When pgleap last read the migration's state, in Unix time: the other metrics are that old.", nil, nil)
)

// alertNames are the alerts there are, exported at 0 when they do not hold.
var alertNames = []string{"slot_wal", "lag_growing", "copy_stalled"}

// metrics exports a tracker's status in the Prometheus format.
type metrics struct{ t *Tracker }

// Registry returns a registry holding the tracker's metrics and Go's process metrics.
func (t *Tracker) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics{t}, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return reg
}

func (m metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{phaseDesc, tableUnitsDesc, tableUnitsDoneDesc, tableRowsDesc, tableBytesDesc,
		tableEstimatedDesc, lagBytesDesc, lagSecondsDesc, appliedTransactionsDesc, appliedChangesDesc, appliedLSNDesc,
		sourceLSNDesc, slotRetainedDesc, slotMaxDesc, errorsDesc, alertDesc, targetGuardDesc, verificationEqualDesc,
		verificationTimeDesc, readTimeDesc} {
		ch <- d
	}
}

func (m metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.t.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, m.t.monotonic(d.String(), labels, v), labels...)
	}
	phases := append([]string{PhaseStarting}, state.Phases...)
	for _, phase := range phases {
		gauge(phaseDesc, boolValue(phase == st.Phase), phase)
	}
	for _, t := range st.Tables {
		gauge(tableUnitsDesc, float64(t.Units), t.Schema, t.Table)
		gauge(tableUnitsDoneDesc, float64(t.UnitsDone), t.Schema, t.Table)
		gauge(tableEstimatedDesc, float64(t.EstimatedBytes), t.Schema, t.Table)
		counter(tableRowsDesc, float64(t.RowsCopied), t.Schema, t.Table)
		counter(tableBytesDesc, float64(t.BytesCopied), t.Schema, t.Table)
	}
	if st.LagBytes != nil {
		gauge(lagBytesDesc, float64(*st.LagBytes))
		gauge(lagSecondsDesc, *st.LagSeconds)
	}
	if st.AppliedLSN != "" {
		counter(appliedTransactionsDesc, float64(st.AppliedTransactions))
		counter(appliedChangesDesc, float64(st.AppliedChanges))
		if lsn, err := pglogrepl.ParseLSN(st.AppliedLSN); err == nil {
			gauge(appliedLSNDesc, float64(lsn))
		}
		gauge(targetGuardDesc, boolValue(st.TargetGuard))
	}
	if lsn, err := pglogrepl.ParseLSN(st.SourceLSN); err == nil && st.SourceLSN != "" {
		gauge(sourceLSNDesc, float64(lsn))
	}
	if st.SlotRetainedBytes != nil {
		gauge(slotRetainedDesc, float64(*st.SlotRetainedBytes))
	}
	if st.MaxSlotWALKeepBytes != nil {
		gauge(slotMaxDesc, float64(*st.MaxSlotWALKeepBytes))
	}
	counter(errorsDesc, float64(m.t.errorsLogged()))
	holding := map[string]bool{}
	for _, a := range st.Alerts {
		holding[a.Name] = true
	}
	for _, name := range alertNames {
		gauge(alertDesc, boolValue(holding[name]), name)
	}
	if v := st.LastVerification; v != nil {
		gauge(verificationEqualDesc, boolValue(v.Equal))
		gauge(verificationTimeDesc, float64(v.FinishedAt.UnixNano())/1e9)
	}
	if !st.ReadAt.IsZero() {
		gauge(readTimeDesc, float64(st.ReadAt.UnixNano())/1e9)
	}
}

// monotonic keeps a counter from going down between two scrapes: a unit that just
// committed can be counted both as under way and by the state read for a moment.
func (t *Tracker) monotonic(desc string, labels []string, v float64) float64 {
	key := desc
	for _, l := range labels {
		key += "\x00" + l
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v < t.exportedCounts[key] {
		return t.exportedCounts[key]
	}
	t.exportedCounts[key] = v
	return v
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
