package config

import (
	"fmt"
	"path"
	"strings"
)

// TableFilter selects tables by glob patterns on "schema.table" (unquoted names, matched
// case-sensitively as stored: public.orders, sales.Order_Items). With no Include patterns
// every table is selected; Exclude wins over Include.
type TableFilter struct {
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`
}

// Validate reports the first malformed pattern.
func (f TableFilter) Validate() error {
	for _, list := range [][]string{f.Include, f.Exclude} {
		for _, pattern := range list {
			if _, err := path.Match(pattern, ""); err != nil {
				return fmt.Errorf("table pattern %q: %w: use shell globs on schema.table, such as 'sales.*'", pattern, err)
			}
		}
	}
	return nil
}

// Selects reports whether the table schema.name is part of the migration.
func (f TableFilter) Selects(schema, name string) bool {
	qualified := schema + "." + name
	if matchesAny(f.Exclude, qualified) {
		return false
	}
	return len(f.Include) == 0 || matchesAny(f.Include, qualified)
}

func matchesAny(patterns []string, qualified string) bool {
	for _, pattern := range patterns {
		if ok, _ := path.Match(pattern, qualified); ok {
			return true
		}
	}
	return false
}

// ExcludesSchema reports whether the patterns leave out a whole schema, with its functions,
// types and views: an exclude pattern "schema.*" whose schema part matches. Include patterns
// select tables only and never drop a schema's other objects.
func (f TableFilter) ExcludesSchema(schema string) bool {
	for _, pattern := range f.Exclude {
		schemaPattern, tablePattern, ok := strings.Cut(pattern, ".")
		if !ok || tablePattern != "*" {
			continue
		}
		if matched, _ := path.Match(schemaPattern, schema); matched {
			return true
		}
	}
	return false
}
