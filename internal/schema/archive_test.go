package schema

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/pgtest"
)

// dumpSchema runs the real pg_dump on db and returns the archive bytes.
func dumpSchema(t testing.TB, s *pgtest.Server, db string) []byte {
	t.Helper()
	tools, err := FindTools(context.Background(), "", s.Major)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "schema.dump")
	if out, err := exec.Command(tools.PgDump, "-Fc", "--schema-only", "-f", path, s.ConnString(db)).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestReadArchiveAgreesWithPgRestore reads a real archive and checks every entry against
// what pg_restore -l lists for it.
func TestReadArchiveAgreesWithPgRestore(t *testing.T) {
	s := pgtest.Shared(t, pgtest.SourceMajor())
	db := s.CreateDatabase(t)
	s.Exec(t, db, `
		CREATE SCHEMA "Sales";
		CREATE TABLE "Sales"."Orders" (id int PRIMARY KEY, note text);
		CREATE INDEX orders_note ON "Sales"."Orders" (note);
		CREATE TABLE "Sales".items (id int PRIMARY KEY, order_id int REFERENCES "Sales"."Orders");
		COMMENT ON TABLE "Sales"."Orders" IS 'it''s a comment with a
		newline';
		CREATE VIEW "Sales".v AS SELECT * FROM "Sales"."Orders"`)
	raw := dumpSchema(t, s, db)
	archive, err := ReadArchive(raw)
	if err != nil {
		t.Fatal(err)
	}
	tools, _ := FindTools(context.Background(), "", s.Major)
	path := filepath.Join(t.TempDir(), "a.dump")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tools.PgRestore, "-l", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	listed := map[int]string{}
	for line := range strings.SplitSeq(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		id, rest, _ := strings.Cut(line, "; ")
		n, _ := strconv.Atoi(id)
		listed[n] = rest
	}
	byID := map[int]Entry{}
	compared := 0
	for _, e := range archive.Entries {
		byID[e.DumpID] = e
		switch e.Desc {
		case "ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE": // pg_restore -l leaves these out
			continue
		}
		compared++
		ns := e.Namespace
		if ns == "" {
			ns = "-"
		}
		want := strings.Join([]string{strconv.Itoa(int(e.TableOID)), strconv.Itoa(int(e.OID)), e.Desc, ns, e.Tag, e.Owner}, " ")
		if listed[e.DumpID] != want {
			t.Errorf("entry %d: ReadArchive gives %q, pg_restore -l %q", e.DumpID, want, listed[e.DumpID])
		}
	}
	if compared != len(listed) {
		t.Errorf("pg_restore lists %d entries, ReadArchive %d", len(listed), compared)
	}
	var index Entry
	for _, e := range archive.Entries {
		if e.Desc == "INDEX" && e.Tag == "orders_note" {
			index = e
		}
	}
	if !strings.Contains(index.Defn, `CREATE INDEX orders_note ON "Sales"."Orders"`) {
		t.Errorf("index definition = %q", index.Defn)
	}
	if len(index.Deps) != 1 || byID[index.Deps[0]].Desc != "TABLE" || byID[index.Deps[0]].Tag != "Orders" {
		t.Errorf("index depends on %v, want the Orders table", index.Deps)
	}
}

func TestReadArchiveRejectsOtherInput(t *testing.T) {
	for _, input := range [][]byte{nil, []byte("PGDMP"), []byte("-- plain SQL dump\n"), []byte("PGDMP\x01\x0e\x00\x04\x08\x03")} {
		if _, err := ReadArchive(input); err == nil {
			t.Errorf("ReadArchive(%q) accepted it", input)
		}
	}
}

func FuzzReadArchive(f *testing.F) {
	f.Add([]byte("PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01\x00\x00\x00"))
	if raw, err := os.ReadFile("testdata/schema.dump"); err == nil {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := ReadArchive(raw)
		if err == nil && a == nil {
			t.Fatal("nil archive without an error")
		}
	})
}

func TestMain(m *testing.M) { pgtest.Main(m) }
