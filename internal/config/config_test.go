package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"keyword/value", "host=db port=5432 password=s3cret user=app", "host=db port=5432 password=xxxxx user=app"},
		{"quoted with spaces", "password='a b\\' c' host=db", "password=xxxxx host=db"},
		{"spaces around equals", "host = db password = s3cret", "host = db password = xxxxx"},
		{"escaped space", `password=a\ b host=db`, "password=xxxxx host=db"},
		{"no password", "host=127.0.0.1 port=1", "host=127.0.0.1 port=1"},
		{"URL userinfo", "postgres://app:s3cret@db:5432/shop?sslmode=disable", "postgres://app:xxxxx@db:5432/shop?sslmode=disable"},
		{"URL password parameter", "postgresql://db/shop?password=s3cret&user=app", "postgresql://db/shop?password=xxxxx&user=app"},
		{"URL without password", "postgres://app@db/shop", "postgres://app@db/shop"},
		{"unterminated quote hides the rest", "host=db password='s3cret", "host=db password=xxxxx"},
		{"unparsable URL", "postgres://app:s3cret@db:port/x", "xxxxx@db:port/x"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.in)
			if got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if strings.Contains(got, "s3cret") {
				t.Errorf("Redact(%q) leaks the password: %q", tt.in, got)
			}
		})
	}
}

func TestResolveOrder(t *testing.T) {
	env := map[string]string{SourceEnv: "env-source", TargetEnv: "env-target"}
	getenv := func(k string) string { return env[k] }
	file := Config{Source: "file-source", Target: "file-target"}

	tests := []struct {
		name  string
		flags Config
		env   bool
		want  Config
	}{
		{"flags win", Config{Source: "flag-source", Target: "flag-target"}, true, Config{Source: "flag-source", Target: "flag-target"}},
		{"environment over file", Config{Source: "flag-source"}, true, Config{Source: "flag-source", Target: "env-target"}},
		{"file last", Config{}, false, Config{Source: "file-source", Target: "file-target"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			get := getenv
			if !tt.env {
				get = func(string) string { return "" }
			}
			if got := Resolve(tt.flags, file, get); got.Source != tt.want.Source || got.Target != tt.want.Target {
				t.Errorf("Resolve = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRequireNamesTheMissingSide(t *testing.T) {
	err := Config{Source: "host=a"}.Require("source", "target")
	if err == nil || !strings.Contains(err.Error(), "--target") || !strings.Contains(err.Error(), TargetEnv) {
		t.Fatalf("Require = %v, want an error naming --target and %s", err, TargetEnv)
	}
	if err := (Config{Source: "host=a"}).Require("source"); err != nil {
		t.Fatalf("Require(source) = %v, want nil", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	cfg, err := Load(write("ok.yaml", "source: host=a\ntarget: postgres://b/db\n"))
	if err != nil || cfg.Source != "host=a" || cfg.Target != "postgres://b/db" {
		t.Fatalf("Load = %+v, %v", cfg, err)
	}
	if _, err := Load(write("empty.yaml", "")); err != nil {
		t.Fatalf("Load(empty) = %v, want nil", err)
	}
	if _, err := Load(write("typo.yaml", "sourse: host=a\n")); err == nil || !strings.Contains(err.Error(), "sourse") {
		t.Fatalf("Load(typo) = %v, want an error naming the unknown key", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("Load(missing) = nil, want an error")
	}
}

func TestTableFilter(t *testing.T) {
	tests := []struct {
		name          string
		filter        TableFilter
		schema, table string
		want          bool
	}{
		{"no patterns selects all", TableFilter{}, "public", "orders", true},
		{"include matches", TableFilter{Include: []string{"sales.*"}}, "sales", "Orders", true},
		{"include misses", TableFilter{Include: []string{"sales.*"}}, "public", "orders", false},
		{"exclude wins", TableFilter{Include: []string{"*.*"}, Exclude: []string{"public.audit_*"}}, "public", "audit_log", false},
		{"exclude only", TableFilter{Exclude: []string{"archive.*"}}, "public", "orders", true},
		{"case matters", TableFilter{Include: []string{"public.orders"}}, "public", "Orders", false},
		{"glob crosses no schema boundary by accident", TableFilter{Include: []string{"pub*.o?ders"}}, "public", "orders", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.filter.Selects(tt.schema, tt.table); got != tt.want {
				t.Errorf("Selects(%s.%s) = %v, want %v", tt.schema, tt.table, got, tt.want)
			}
		})
	}
	if err := (TableFilter{Include: []string{"sales.[orders"}}).Validate(); err == nil {
		t.Error("Validate accepted a malformed pattern")
	}
}

func TestLoadTables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pgleap.yaml")
	if err := os.WriteFile(path, []byte("source: host=a\ninclude: [\"sales.*\"]\nexclude:\n  - sales.tmp_*\nmax_copy_rate: 50MB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Tables.Selects("sales", "orders") || cfg.Tables.Selects("sales", "tmp_x") || cfg.Tables.Selects("public", "t") {
		t.Errorf("tables from pgleap.yaml select wrongly: %+v", cfg.Tables)
	}
	if cfg.MaxCopyRate != "50MB" {
		t.Errorf("max_copy_rate = %q", cfg.MaxCopyRate)
	}
	resolved := Resolve(Config{Tables: TableFilter{Include: []string{"public.*"}}}, cfg, func(string) string { return "" })
	if !resolved.Tables.Selects("public", "t") || resolved.Tables.Selects("sales", "orders") {
		t.Errorf("flag patterns should replace the file's: %+v", resolved.Tables)
	}
}

func TestSplitPassword(t *testing.T) {
	tests := []struct{ in, without, password string }{
		{"host=db password=s3cret user=app", "host=db user=app", "s3cret"},
		{`host=db password='it\'s secret' port=5`, "host=db port=5", "it's secret"},
		{"host=db user=app", "host=db user=app", ""},
		{"postgres://app:s3cret@db:5432/shop?sslmode=disable", "postgres://app@db:5432/shop?sslmode=disable", "s3cret"},
		{"postgresql://db/shop?password=s3cret&user=app", "postgresql://db/shop?user=app", "s3cret"},
	}
	for _, tt := range tests {
		without, password, err := SplitPassword(tt.in)
		if err != nil || without != tt.without || password != tt.password {
			t.Errorf("SplitPassword(%q) = %q, %q, %v; want %q, %q", tt.in, without, password, err, tt.without, tt.password)
		}
	}
}

func TestExcludesSchema(t *testing.T) {
	f := TableFilter{Include: []string{"public.*"}, Exclude: []string{"archive.*", "sales.tmp_*", "log*.*"}}
	for schema, want := range map[string]bool{"archive": true, "sales": false, "public": false, "logs": true, "other": false} {
		if got := f.ExcludesSchema(schema); got != want {
			t.Errorf("ExcludesSchema(%q) = %v, want %v", schema, got, want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1GB": 1 << 30, "512MB": 512 << 20, "1.5GB": 3 << 29, "100": 100, "64kb": 64 << 10, "0": 0} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GB", "-1MB", "ten"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted it", bad)
		}
	}
}

func TestTablesOf(t *testing.T) {
	file := Config{Tables: TableFilter{Exclude: []string{"audit.*"}}, Databases: map[string]TableFilter{"shop": {Include: []string{"public.*"}}}}
	for _, tt := range []struct {
		name     string
		flags    Config
		database string
		want     TableFilter
	}{
		{"listed in databases:", Config{}, "shop", TableFilter{Include: []string{"public.*"}}},
		{"not listed: the file's", Config{}, "crm", TableFilter{Exclude: []string{"audit.*"}}},
		{"flags win", Config{Tables: TableFilter{Exclude: []string{"tmp.*"}}}, "shop", TableFilter{Exclude: []string{"tmp.*"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := TablesOf(tt.flags, file, tt.database); !slices.Equal(got.Include, tt.want.Include) || !slices.Equal(got.Exclude, tt.want.Exclude) {
				t.Errorf("TablesOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDatabasesInConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pgleap.yaml")
	if err := os.WriteFile(path, []byte("databases:\n  shop:\n    include: ['public.[']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "databases: shop") {
		t.Errorf("a bad pattern under databases: %v", err)
	}
}
