package schema

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/state"
)

// Plan is an archive cut to the migration's table selection: which entries are restored,
// in which section, and which were left out because they depend on what was excluded.
type Plan struct {
	Archive *Archive
	// Skipped lists the objects left out only because they depend on an excluded table or
	// schema (views, foreign keys from kept tables, ...), for the user to see.
	Skipped  []state.SkippedObject
	byID     map[int]*Entry
	section  map[int]int
	excluded map[int]bool
}

// entriesOfTable are the kinds of entries that are part of a table rather than objects of
// their own: they go quietly with an excluded table.
var entriesOfTable = map[string]bool{
	"INDEX": true, "CONSTRAINT": true, "CHECK CONSTRAINT": true, "FK CONSTRAINT": true,
	"TRIGGER": true, "RULE": true, "POLICY": true, "ROW SECURITY": true, "DEFAULT": true,
	"SEQUENCE": true, "SEQUENCE OWNED BY": true, "SEQUENCE SET": true, "STATISTICS": true,
	"TABLE ATTACH": true, "INDEX ATTACH": true, "TABLE DATA": true,
}

// entriesOfObject follow whatever object they describe.
var entriesOfObject = map[string]bool{"ACL": true, "COMMENT": true, "SECURITY LABEL": true}

// isTable reports whether an entry creates a table pgleap copies rows of.
func isTable(e *Entry) bool { return e.Desc == "TABLE" || e.Desc == "FOREIGN TABLE" }

// NewPlan selects the archive's entries for filter.
func NewPlan(a *Archive, filter config.TableFilter) *Plan {
	p := &Plan{Archive: a, byID: map[int]*Entry{}, section: map[int]int{}, excluded: map[int]bool{}}
	sections := a.placeSections()
	for i := range a.Entries {
		e := &a.Entries[i]
		p.byID[e.DumpID] = e
		p.section[e.DumpID] = sections[i]
	}
	excludedSchema := func(name string) bool { return name != "" && filter.ExcludesSchema(name) }
	for i := range a.Entries {
		e := &a.Entries[i]
		switch {
		case e.Desc == "SCHEMA" && excludedSchema(e.Tag), excludedSchema(e.Namespace):
			p.excluded[e.DumpID] = true
		case isTable(e) && !filter.Selects(e.Namespace, e.Tag):
			p.excluded[e.DumpID] = true
		case e.Desc == "EVENT TRIGGER" && strings.HasPrefix(e.Tag, "pgleap_ddl_"): // pgleap migrate --ddl's, on the source
			p.excluded[e.DumpID] = true
		}
	}
	// A sequence owned by an excluded table's column goes with that table.
	for i := range a.Entries {
		e := &a.Entries[i]
		if e.Desc != "SEQUENCE OWNED BY" || !p.dependsOnExcludedTable(e) {
			continue
		}
		for _, dep := range e.Deps {
			if d := p.byID[dep]; d != nil && d.Desc == "SEQUENCE" {
				p.excluded[dep] = true
			}
		}
	}
	// Dependents of excluded entries are excluded too; repeat until nothing changes, since
	// a dependency may come after its dependent in the archive.
	for changed := true; changed; {
		changed = false
		for i := range a.Entries {
			e := &a.Entries[i]
			if p.excluded[e.DumpID] {
				continue
			}
			cause := p.excludedDependency(e)
			if cause == nil {
				continue
			}
			p.excluded[e.DumpID] = true
			changed = true
			if !p.goesQuietly(e, cause) {
				p.Skipped = append(p.Skipped, state.SkippedObject{
					Kind:   strings.ToLower(e.Desc),
					Name:   entryName(e),
					Reason: fmt.Sprintf("depends on %s %s, which is excluded", strings.ToLower(cause.Desc), entryName(cause)),
				})
			}
		}
	}
	return p
}

func (p *Plan) excludedDependency(e *Entry) *Entry {
	for _, dep := range e.Deps {
		if p.excluded[dep] {
			return p.byID[dep]
		}
	}
	return nil
}

func (p *Plan) dependsOnExcludedTable(e *Entry) bool {
	for _, dep := range e.Deps {
		if d := p.byID[dep]; d != nil && p.excluded[dep] && isTable(d) {
			return true
		}
	}
	return false
}

// goesQuietly reports whether e is part of what was excluded (an index of an excluded
// table, a comment on an excluded view, anything in an excluded schema) rather than an
// object of its own that the user would miss.
func (p *Plan) goesQuietly(e, cause *Entry) bool {
	if entriesOfObject[e.Desc] || (e.Namespace != "" && p.excludedSchemaEntry(e.Namespace)) {
		return true
	}
	if !entriesOfTable[e.Desc] {
		return false
	}
	for _, dep := range e.Deps {
		d := p.byID[dep]
		if d == nil || !p.excluded[dep] || !isTable(d) || d.Namespace != e.Namespace {
			continue
		}
		// Constraints, triggers and the like are tagged "table name": they belong to the
		// table their tag starts with. Indexes and sequences are tagged with their own name.
		if e.Desc == "INDEX" || strings.HasPrefix(e.Desc, "SEQUENCE") || e.Desc == "STATISTICS" ||
			strings.HasPrefix(e.Tag, d.Tag+" ") || e.Tag == d.Tag {
			return true
		}
	}
	return cause.Desc == "SEQUENCE" && e.Desc == "SEQUENCE SET"
}

func (p *Plan) excludedSchemaEntry(namespace string) bool {
	for id, excluded := range p.excluded {
		if e := p.byID[id]; excluded && e.Desc == "SCHEMA" && e.Tag == namespace {
			return true
		}
	}
	return false
}

// entryName is how pg_restore -l names an entry: schema and tag.
func entryName(e *Entry) string {
	if e.Namespace == "" {
		return e.Tag
	}
	return e.Namespace + "." + e.Tag
}

// Included reports whether the entry with this dump ID is restored.
func (p *Plan) Included(dumpID int) bool { return !p.excluded[dumpID] && p.byID[dumpID] != nil }

// Entry returns the entry with this dump ID.
func (p *Plan) Entry(dumpID int) *Entry { return p.byID[dumpID] }

// Section returns the section the entry is restored in.
func (p *Plan) Section(dumpID int) int { return p.section[dumpID] }

// Entries returns the included entries of section, in archive order.
func (p *Plan) Entries(section int) []*Entry {
	var out []*Entry
	for i := range p.Archive.Entries {
		e := &p.Archive.Entries[i]
		if p.Included(e.DumpID) && p.section[e.DumpID] == section && !special[e.Desc] {
			out = append(out, e)
		}
	}
	return out
}

// special entries set up a restore session rather than create objects.
var special = map[string]bool{"ENCODING": true, "STDSTRINGS": true, "SEARCHPATH": true, "DATABASE": true, "DATABASE PROPERTIES": true}

// Tables returns the included tables, as "schema"."name" parts.
func (p *Plan) Tables() [][2]string {
	var tables [][2]string
	for _, e := range p.Entries(SectionPreData) {
		if e.Desc == "TABLE" {
			tables = append(tables, [2]string{e.Namespace, e.Tag})
		}
	}
	return slices.Clip(tables)
}

// restoreList is a pg_restore --use-list file naming the included entries of section.
func (p *Plan) restoreList(section int) string {
	var b strings.Builder
	for _, e := range p.Entries(section) {
		fmt.Fprintf(&b, "%d; %s\n", e.DumpID, e.Desc) // pg_restore reads the leading ID only
	}
	return b.String()
}
