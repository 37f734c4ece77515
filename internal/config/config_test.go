package config

import (
	"os"
	"path/filepath"
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
		{"flags win", Config{Source: "flag-source", Target: "flag-target"}, true, Config{"flag-source", "flag-target"}},
		{"environment over file", Config{Source: "flag-source"}, true, Config{"flag-source", "env-target"}},
		{"file last", Config{}, false, Config{"file-source", "file-target"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			get := getenv
			if !tt.env {
				get = func(string) string { return "" }
			}
			if got := Resolve(tt.flags, file, get); got != tt.want {
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
