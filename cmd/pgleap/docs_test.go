package main

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra/doc"
)

// commandDocs is where the reference page of each command lives, generated from the
// commands themselves so that no flag goes undocumented.
const commandDocs = "../../docs/commands"

// TestCommandReferenceIsCurrent regenerates docs/commands and fails when a page differs:
// a command or flag changed without its page. PGLEAP_UPDATE_DOCS=1 writes the pages.
func TestCommandReferenceIsCurrent(t *testing.T) {
	c := &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	root := newRootCommand(c)
	root.DisableAutoGenTag = true // no generation date: the pages stay the same until the commands change
	fresh := t.TempDir()
	if err := doc.GenMarkdownTree(root, fresh); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("PGLEAP_UPDATE_DOCS") == "1" {
		if err := os.RemoveAll(commandDocs); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(commandDocs, os.DirFS(fresh)); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, _ := filepath.Glob(filepath.Join(fresh, "*.md"))
	got, _ := filepath.Glob(filepath.Join(commandDocs, "*.md"))
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	if !slices.Equal(names(want), names(got)) {
		t.Fatalf("docs/commands holds %v, the commands make %v: run PGLEAP_UPDATE_DOCS=1 go test ./cmd/pgleap -run TestCommandReferenceIsCurrent", names(got), names(want))
	}
	for _, path := range want {
		fresh, _ := os.ReadFile(path)
		current, _ := os.ReadFile(filepath.Join(commandDocs, filepath.Base(path)))
		if string(fresh) != string(current) {
			t.Errorf("docs/commands/%s is out of date: run PGLEAP_UPDATE_DOCS=1 go test ./cmd/pgleap -run TestCommandReferenceIsCurrent", filepath.Base(path))
		}
	}
}

// TestTroubleshootingNamesEveryCheck: every check id pgleap check can report has its entry in
// docs/troubleshooting.md.
func TestTroubleshootingNamesEveryCheck(t *testing.T) {
	sources, err := filepath.Glob("../../internal/assess/*.go")
	if err != nil {
		t.Fatal(err)
	}
	id := regexp.MustCompile(`"((?:source|target|data|compat|settings)\.[a-z_]+)"`)
	ids := map[string]bool{}
	for _, path := range sources {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		code, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range id.FindAllStringSubmatch(string(code), -1) {
			ids[m[1]] = true
		}
	}
	page, err := os.ReadFile("../../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) < 30 {
		t.Fatalf("found only %d check ids in internal/assess: has the way they are written changed?", len(ids))
	}
	for _, check := range slices.Sorted(maps.Keys(ids)) {
		if !strings.Contains(string(page), "### "+check+"\n") {
			t.Errorf("docs/troubleshooting.md has no entry (### %s) for check %s", check, check)
		}
	}
}
