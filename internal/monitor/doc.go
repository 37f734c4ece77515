// Package monitor shows a migration to the people running it.
//
//   - ReadStatus reads where a migration stands from the target's pgleap state (and the lag
//     from the source): what pgleap status prints, as text or JSON.
//   - CopyProgress renders the data copy: progress bars on a terminal, periodic log lines
//     otherwise.
//   - Tracker follows a running pgleap migrate: it reads the status every interval over
//     connections of its own, keeps an hour of samples, raises alerts (alerts.go) as log
//     warnings, hears the copy's bytes as they pass, and serves the status page, /status,
//     /history, /metrics (Prometheus) and /healthz (server.go, metrics.go, page.html).
//   - EventLog sits in front of the log output and keeps the warnings and errors, which the
//     tracker stores in the state (pgleap.event) for pgleap status on any machine.
package monitor
