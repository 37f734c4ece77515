package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"gopkg.in/yaml.v3"
)

// Config is what pgleap.yaml holds and what the flags and environment override.
type Config struct {
	Source string      `yaml:"source"`
	Target string      `yaml:"target"`
	Tables TableFilter `yaml:",inline"`
	// MaxCopyRate caps the bytes per second the copy reads from the source (512MB, 1GB...).
	MaxCopyRate string `yaml:"max_copy_rate"`
	// DDL carries the schema changes made on the source during the migration (--ddl).
	DDL bool `yaml:"ddl"`
	// DDLRoles are the roles, besides superusers, whose captured schema changes run on the
	// target (--ddl-roles).
	DDLRoles []string `yaml:"ddl_roles"`
	// Databases selects the tables of each database of a migration of several (--databases,
	// --all-databases), by database name; a database not listed takes include and exclude.
	Databases map[string]TableFilter `yaml:"databases"`
}

// Environment variables that stand in for --source and --target.
const (
	SourceEnv = "PGLEAP_SOURCE"
	TargetEnv = "PGLEAP_TARGET"
)

// ErrNoConnection is returned by Require when a side has no connection string at all.
var ErrNoConnection = errors.New("no connection string")

// Load reads a pgleap.yaml file. Unknown keys are an error: a misspelt key silently ignored
// would run a migration against the wrong server.
func Load(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config %q: %w", path, err)
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("parse config %q: %w", path, err)
	}
	if err := cfg.Tables.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %q: %w", path, err)
	}
	for db, tables := range cfg.Databases {
		if err := tables.Validate(); err != nil {
			return Config{}, fmt.Errorf("config %q: databases: %s: %w", path, db, err)
		}
	}
	if cfg.MaxCopyRate != "" {
		if _, err := ParseBytes(cfg.MaxCopyRate); err != nil {
			return Config{}, fmt.Errorf("config %q: max_copy_rate: %w", path, err)
		}
	}
	return cfg, nil
}

// Resolve fills each key from the first place that sets it: the flag value, then the
// environment, then the file. Table patterns come from the flags if any is given there,
// else from the file.
func Resolve(flags, file Config, getenv func(string) string) Config {
	tables := flags.Tables
	if len(tables.Include) == 0 && len(tables.Exclude) == 0 {
		tables = file.Tables
	}
	return Config{
		Source:      firstSet(flags.Source, getenv(SourceEnv), file.Source),
		Target:      firstSet(flags.Target, getenv(TargetEnv), file.Target),
		Tables:      tables,
		MaxCopyRate: firstSet(flags.MaxCopyRate, file.MaxCopyRate),
		DDL:         flags.DDL || file.DDL,
		DDLRoles:    append(slices.Clip(flags.DDLRoles), file.DDLRoles...),
		Databases:   file.Databases,
	}
}

// TablesOf is the table selection of one database of a migration of several: the flags'
// patterns if any, else the file's for that database, else the file's.
func TablesOf(flags, file Config, database string) TableFilter {
	if len(flags.Tables.Include) > 0 || len(flags.Tables.Exclude) > 0 {
		return flags.Tables
	}
	if tables, ok := file.Databases[database]; ok {
		return tables
	}
	return file.Tables
}

// Require returns an error naming every listed side that has no connection string.
func (c Config) Require(sides ...string) error {
	for _, side := range sides {
		value := c.Source
		if side == "target" {
			value = c.Target
		}
		if value == "" {
			return fmt.Errorf("%w for the %s: pass --%s, set %s or put %q in pgleap.yaml",
				ErrNoConnection, side, side, envFor(side), side+":")
		}
	}
	return nil
}

func envFor(side string) string {
	if side == "target" {
		return TargetEnv
	}
	return SourceEnv
}

func firstSet(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
