package schema

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
)

// Tools are the PostgreSQL client programs the schema stage runs, all of one installation.
type Tools struct {
	Dir                          string // "" when found on $PATH
	PgDump, PgDumpAll, PgRestore string
	Major                        int
	Version                      string // as pg_dump --version prints it
}

// ErrToolsTooOld is returned when no pg_dump of a major at least the source's is found.
var ErrToolsTooOld = errors.New("no pg_dump new enough for the source")

var toolVersion = regexp.MustCompile(`\(PostgreSQL\) (\d+)(\.\d+)?`)

// FindTools looks for pg_dump, pg_dumpall and pg_restore of a major at least minMajor: in
// binDir when given, then on $PATH, then in the newest /usr/lib/postgresql/*/bin.
func FindTools(ctx context.Context, binDir string, minMajor int) (Tools, error) {
	var candidates []string
	if binDir != "" {
		candidates = []string{binDir}
	} else {
		candidates = append(candidates, "") // $PATH
		installed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		slices.SortFunc(installed, func(a, b string) int { return majorOfDir(b) - majorOfDir(a) })
		candidates = append(candidates, installed...)
	}
	var seen []string
	for _, dir := range candidates {
		tools, err := toolsIn(ctx, dir)
		if err != nil {
			seen = append(seen, err.Error())
			continue
		}
		if tools.Major >= minMajor {
			return tools, nil
		}
		seen = append(seen, fmt.Sprintf("%s is %s", tools.PgDump, tools.Version))
	}
	where := "on $PATH or in /usr/lib/postgresql/*/bin"
	if binDir != "" {
		where = "in " + binDir
	}
	return Tools{}, fmt.Errorf("%w: the source is PostgreSQL %d, and pg_dump must be of that major or newer; found %s %s: install postgresql-client-%d (or newer) or point --pg-bin at its bin directory",
		ErrToolsTooOld, minMajor, where, describeSeen(seen), minMajor)
}

func describeSeen(seen []string) string {
	if len(seen) == 0 {
		return "nothing"
	}
	return fmt.Sprintf("%q", seen)
}

func majorOfDir(dir string) int {
	major, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return major
}

func toolsIn(ctx context.Context, dir string) (Tools, error) {
	t := Tools{Dir: dir}
	for _, tool := range []struct {
		name string
		path *string
	}{{"pg_dump", &t.PgDump}, {"pg_dumpall", &t.PgDumpAll}, {"pg_restore", &t.PgRestore}} {
		path := filepath.Join(dir, tool.name)
		if dir == "" {
			found, err := exec.LookPath(tool.name)
			if err != nil {
				return Tools{}, fmt.Errorf("%s not on $PATH", tool.name)
			}
			path = found
		} else if _, err := os.Stat(path); err != nil {
			return Tools{}, fmt.Errorf("no %s in %s", tool.name, dir)
		}
		*tool.path = path
	}
	out, err := exec.CommandContext(ctx, t.PgDump, "--version").Output()
	if err != nil {
		return Tools{}, fmt.Errorf("%s --version: %v", t.PgDump, err)
	}
	m := toolVersion.FindStringSubmatch(string(out))
	if m == nil {
		return Tools{}, fmt.Errorf("%s --version printed %q", t.PgDump, out)
	}
	t.Major, _ = strconv.Atoi(m[1])
	t.Version = "pg_dump " + m[1] + m[2]
	return t, nil
}
