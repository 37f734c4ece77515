package assess

import (
	"fmt"
	"github.com/pgleap/pgleap/internal/monitor"
	"io"
	"strings"
)

const (
	textWidth = 80
	// infoShown is how many info findings of one check are printed before the rest are
	// counted; blockers and warnings are always printed in full, since each needs action.
	infoShown = 3
)

var sectionTitles = map[Severity]string{Blocker: "BLOCKERS", Warning: "WARNINGS", Info: "INFO"}

// WriteText prints the report for a person: the two servers, then blockers, warnings and
// info with the fix for each, then the size of the migration, within 80 columns.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "source  PostgreSQL %s, database %s as %s%s\n", r.Source.Version, r.Source.Database, r.Source.User, managedNote(r.Source.Managed))
	fmt.Fprintf(&b, "target  PostgreSQL %s, database %s as %s%s\n", r.Target.Version, r.Target.Database, r.Target.User, managedNote(r.Target.Managed))
	fmt.Fprintf(&b, "\n%s, %s, %d info\n",
		plural(r.Count(Blocker), "blocker"), plural(r.Count(Warning), "warning"), r.Count(Info))

	for _, severity := range []Severity{Blocker, Warning, Info} {
		shownOfCheck := map[string]int{}
		hiddenOfCheck := map[string]int{}
		var order []string
		started := false
		for _, f := range r.Findings {
			if f.Severity != severity {
				continue
			}
			if !started {
				fmt.Fprintf(&b, "\n%s\n", sectionTitles[severity])
				started = true
			}
			if severity == Info && shownOfCheck[f.Check] == infoShown {
				if hiddenOfCheck[f.Check] == 0 {
					order = append(order, f.Check)
				}
				hiddenOfCheck[f.Check]++
				continue
			}
			shownOfCheck[f.Check]++
			fmt.Fprintf(&b, "  %s  %s\n", f.Check, f.Object)
			writeWrapped(&b, "    ", f.Why)
			writeWrapped(&b, "    ", "fix: "+f.Fix)
		}
		for _, check := range order {
			writeWrapped(&b, "  ", fmt.Sprintf("%s: %d more (pgleap check --json lists them all)", check, hiddenOfCheck[check]))
		}
	}

	s := r.Summary
	fmt.Fprintf(&b, "\nSUMMARY\n")
	writeWrapped(&b, "  ", fmt.Sprintf("%s, %s; copying takes about %s at %s/s",
		plural(s.Tables, "table"), monitor.HumanBytes(s.TotalBytes), humanSeconds(s.EstimatedCopySeconds), monitor.HumanBytes(copyBytesPerSecond)))
	if len(s.Largest) > 0 {
		fmt.Fprintf(&b, "  largest tables:\n")
		for _, t := range s.Largest {
			rows := "never analyzed"
			if t.RowEstimate >= 0 {
				rows = fmt.Sprintf("~%d rows", t.RowEstimate)
			}
			name := t.Name
			if len(name) > 44 {
				name = name[:41] + "..."
			}
			fmt.Fprintf(&b, "    %-44s %11s  %s\n", name, monitor.HumanBytes(t.Bytes), rows)
		}
	}
	if n := r.Count(Blocker); n > 0 {
		fmt.Fprintf(&b, "\nNot ready: fix the %s above, then run pgleap check again.\n", plural(n, "blocker"))
	} else {
		fmt.Fprintf(&b, "\nReady: no blockers.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func managedNote(managed string) string {
	if managed == "" {
		return ""
	}
	return " (" + Managed(managed).ServiceName() + ")"
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func humanSeconds(s int64) string {
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", max(s, 1))
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
}

// writeWrapped writes text word-wrapped to textWidth, every line starting with indent. A word
// longer than a line (a long SQL fix) stands on a line of its own rather than being cut.
func writeWrapped(b *strings.Builder, indent, text string) {
	width := textWidth - len(indent)
	line := 0
	b.WriteString(indent)
	for i, word := range strings.Fields(text) {
		if i > 0 {
			if line+1+len(word) > width {
				b.WriteString("\n" + indent)
				line = 0
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		b.WriteString(word)
		line += len(word)
	}
	b.WriteByte('\n')
}
