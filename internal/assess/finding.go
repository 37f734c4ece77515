package assess

import (
	"cmp"
	"fmt"
	"slices"
)

// Severity orders findings: a Blocker stops the migration, a Warning needs a decision, Info
// says what pgleap will take care of.
type Severity int

const (
	Info Severity = iota
	Warning
	Blocker
)

var severityNames = [...]string{Info: "info", Warning: "warning", Blocker: "blocker"}

func (s Severity) String() string { return severityNames[s] }

// MarshalText makes severities read as words in JSON.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity word back.
func (s *Severity) UnmarshalText(text []byte) error {
	for i, name := range severityNames {
		if name == string(text) {
			*s = Severity(i)
			return nil
		}
	}
	return fmt.Errorf("unknown severity %q", text)
}

// Finding is one thing a user should know before migrating.
type Finding struct {
	Check    string   `json:"check"`    // stable id, such as source.wal_level
	Severity Severity `json:"severity"` // blocker, warning or info
	Object   string   `json:"object"`   // quoted name of the object or setting concerned
	Why      string   `json:"why"`      // one sentence: why it matters
	Fix      string   `json:"fix"`      // the SQL to run or the setting to change
}

// sortFindings puts blockers first, then warnings, then info; within a severity by check
// id, then object, so output is stable from run to run.
func sortFindings(findings []Finding) {
	slices.SortStableFunc(findings, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(b.Severity, a.Severity),
			cmp.Compare(a.Check, b.Check),
			cmp.Compare(a.Object, b.Object),
		)
	})
}
