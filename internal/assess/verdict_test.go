package assess

import (
	"strings"
	"testing"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/pg"
)

func checksOf(findings []Finding) map[string]Severity {
	out := map[string]Severity{}
	for _, f := range findings {
		out[f.Check] = f.Severity
	}
	return out
}

func TestJudgeReplicationSettings(t *testing.T) {
	good := map[string]string{"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10",
		"max_slot_wal_keep_size": "4096", "wal_sender_timeout": "60000", "logical_decoding_work_mem": "65536"}
	with := func(name, value string) map[string]string {
		s := map[string]string{}
		for k, v := range good {
			s[k] = v
		}
		if value == "" {
			delete(s, name)
		} else {
			s[name] = value
		}
		return s
	}
	tests := []struct {
		name     string
		facts    replicationFacts
		want     map[string]Severity
		fixMatch string
	}{
		{"ready", replicationFacts{Settings: good}, map[string]Severity{}, ""},
		{"wal_level replica", replicationFacts{Settings: with("wal_level", "replica")},
			map[string]Severity{"source.wal_level": Blocker}, "wal_level = logical"},
		{"no free slot", replicationFacts{Settings: good, SlotsInUse: 10},
			map[string]Severity{"source.max_replication_slots": Blocker}, "max_replication_slots = 14"},
		{"one free slot", replicationFacts{Settings: good, SlotsInUse: 9},
			map[string]Severity{"source.max_replication_slots": Warning}, ""},
		{"senders all busy", replicationFacts{Settings: good, WALSenders: 12},
			map[string]Severity{"source.max_wal_senders": Blocker}, ""},
		{"unlimited slot WAL", replicationFacts{Settings: with("max_slot_wal_keep_size", "-1"), DatabaseMiB: 40 * 1024},
			map[string]Severity{"source.max_slot_wal_keep_size": Warning}, "'40GB'"},
		{"PostgreSQL 12 cannot cap slot WAL", replicationFacts{Settings: with("max_slot_wal_keep_size", "")},
			map[string]Severity{"source.max_slot_wal_keep_size": Info}, ""},
		{"short sender timeout", replicationFacts{Settings: with("wal_sender_timeout", "5000")},
			map[string]Severity{"source.wal_sender_timeout": Warning}, ""},
		{"disabled sender timeout is not short", replicationFacts{Settings: with("wal_sender_timeout", "0")},
			map[string]Severity{}, ""},
		{"small decoding memory", replicationFacts{Settings: with("logical_decoding_work_mem", "1024")},
			map[string]Severity{"source.logical_decoding_work_mem": Warning}, "256MB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings := judgeReplicationSettings(Server{Version: pg.Version{Major: 13}}, tt.facts)
			got := checksOf(findings)
			if len(got) != len(tt.want) {
				t.Fatalf("findings %v, want %v", got, tt.want)
			}
			for check, severity := range tt.want {
				if got[check] != severity {
					t.Errorf("%s = %v, want %v", check, got[check], severity)
				}
			}
			if tt.fixMatch != "" && !strings.Contains(findings[0].Fix, tt.fixMatch) {
				t.Errorf("fix %q does not contain %q", findings[0].Fix, tt.fixMatch)
			}
		})
	}
}

func TestSettingFixPerService(t *testing.T) {
	tests := []struct {
		managed Managed
		want    string
	}{
		{SelfManaged, "ALTER SYSTEM SET work_mem = '64MB'; SELECT pg_reload_conf();"},
		{RDS, "set work_mem = 64MB in the DB parameter group"},
		{Aurora, "DB cluster parameter group"},
		{CloudSQL, "--database-flags=work_mem=64MB"},
		{Azure, "az postgres flexible-server parameter set --name work_mem --value 64MB"},
		{AlloyDB, "gcloud alloydb instances update"},
	}
	for _, tt := range tests {
		if got := (Server{Managed: tt.managed}).settingFix("work_mem", "64MB", false); !strings.Contains(got, tt.want) {
			t.Errorf("%s: settingFix = %q, want it to contain %q", tt.managed.ServiceName(), got, tt.want)
		}
	}
	if got := walLevelFix(Server{Managed: CloudSQL}); !strings.Contains(got, "cloudsql.logical_decoding=on") {
		t.Errorf("Cloud SQL wal_level fix = %q", got)
	}
}

func TestQuoteSettingValue(t *testing.T) {
	for in, want := range map[string]string{
		"logical": "logical", "100": "100", "0.5": "0.5", "-1": "-1",
		"16GB": "'16GB'", "a,b": "'a,b'", "": "''", "it's": "'it''s'", "Europe/Paris": "'Europe/Paris'",
	} {
		if got := quoteSettingValue(in); got != want {
			t.Errorf("quoteSettingValue(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSettingValueSQL(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"shared_preload_libraries", "pg_stat_statements,auto_explain", "pg_stat_statements, auto_explain"},
		{"shared_preload_libraries", "pg_stat_statements", "pg_stat_statements"},
		{"search_path", `"$user", public`, "'$user', public"},
		{"search_path", `app, "Odd Schema"`, "app, 'Odd Schema'"},
		{"shared_preload_libraries", "", "''"},
		{"work_mem", "64MB", "'64MB'"},
		{"application_name", "a,b", "'a,b'"},
	}
	for _, tt := range tests {
		if got := settingValueSQL(tt.name, tt.value); got != tt.want {
			t.Errorf("settingValueSQL(%s, %q) = %s, want %s", tt.name, tt.value, got, tt.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.10", "1.9", 1}, {"1.9", "1.10", -1}, {"1.6", "1.6", 0}, {"1.6", "1.6.0", 0},
		{"2.0", "1.15", 1}, {"3.1.0beta", "3.1.0beta", 0}, {"3.1.0alpha", "3.1.0beta", -1},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestJudgeExtensions(t *testing.T) {
	available := []extension{{"hstore", "1.7"}, {"hstore", "1.8"}, {"postgis", "3.1.0"}}
	installed := []extension{{"hstore", "1.7"}, {"postgis", "3.4.2"}, {"timescaledb", "2.14.0"}}
	got := judgeExtensions(installed, available)
	want := map[string]string{`"postgis"`: "target.extension_version", `"timescaledb"`: "target.extension_missing"}
	if len(got) != len(want) {
		t.Fatalf("findings = %+v, want %v", got, want)
	}
	for _, f := range got {
		if want[f.Object] != f.Check || f.Severity != Blocker {
			t.Errorf("unexpected finding %s %s %s", f.Check, f.Severity, f.Object)
		}
	}
}

func TestJudgeCaseCollisions(t *testing.T) {
	tables := []catalog.Table{
		{Schema: "Sales", Name: "a"}, {Schema: "sales", Name: "b"},
		{Schema: "public", Name: "Orders"}, {Schema: "public", Name: "orders"}, {Schema: "public", Name: "ORDERS"},
		{Schema: "public", Name: "items", Columns: []catalog.Column{{Name: "Qty"}, {Name: "qty"}, {Name: "price"}}},
		{Schema: "public", Name: "clean", Columns: []catalog.Column{{Name: "id"}}},
	}
	got := judgeCaseCollisions(tables)
	objects := map[string]string{}
	for _, f := range got {
		objects[f.Object] = f.Why
	}
	if len(got) != 3 {
		t.Fatalf("%d findings, want 3 (schemas, tables, columns): %+v", len(got), got)
	}
	if why := objects[`"public"."Orders"`]; !strings.Contains(why, `"public"."ORDERS"`) {
		t.Errorf("three-way table collision not listed whole: %q", why)
	}
	if _, ok := objects[`"Sales"`]; !ok {
		t.Errorf("schema collision missing: %v", objects)
	}
	if why := objects[`"public"."items"`]; !strings.Contains(why, `"Qty" and "qty"`) {
		t.Errorf("column collision = %q", why)
	}
}

func TestJudgeCatalogReferences(t *testing.T) {
	defs := []sqlDefinition{
		{Kind: "view", Schema: "public", Name: "bg", Text: "SELECT pg_stat_bgwriter.checkpoints_timed FROM pg_stat_bgwriter"},
		{Kind: "function", Schema: "public", Name: "backup", Args: "()", Text: "BEGIN PERFORM pg_start_backup ('x'); END"},
		{Kind: "view", Schema: "public", Name: "not_catalog", Text: "SELECT checkpoints_timed FROM my_own_stats"},
		{Kind: "function", Schema: "public", Name: "mentions", Args: "()", Text: "SELECT 'pg_start_backup is gone'"},
	}
	tests := []struct {
		source, target int
		want           map[string]Severity
	}{
		{13, 17, map[string]Severity{`"public"."bg"`: Blocker, `"public"."backup"()`: Warning}},
		{15, 17, map[string]Severity{`"public"."bg"`: Blocker}},
		{13, 14, map[string]Severity{}},
		{17, 18, map[string]Severity{}},
	}
	for _, tt := range tests {
		got := map[string]Severity{}
		for _, f := range judgeCatalogReferences(tt.source, tt.target, defs) {
			got[f.Object] = f.Severity
		}
		if len(got) != len(tt.want) {
			t.Errorf("%d → %d: findings %v, want %v", tt.source, tt.target, got, tt.want)
			continue
		}
		for object, severity := range tt.want {
			if got[object] != severity {
				t.Errorf("%d → %d: %s = %v, want %v", tt.source, tt.target, object, got[object], severity)
			}
		}
	}
}

func TestSortFindings(t *testing.T) {
	findings := []Finding{
		{Check: "b", Severity: Info, Object: "x"}, {Check: "a", Severity: Warning, Object: "y"},
		{Check: "c", Severity: Blocker, Object: "z"}, {Check: "a", Severity: Warning, Object: "b"},
	}
	sortFindings(findings)
	var order []string
	for _, f := range findings {
		order = append(order, f.Check+":"+f.Object)
	}
	if got := strings.Join(order, " "); got != "c:z a:b a:y b:x" {
		t.Errorf("order = %s, want blockers, warnings, info, each by check and object", got)
	}
}

func TestWriteTextFitsEightyColumns(t *testing.T) {
	r := &Report{Findings: []Finding{
		{Check: "data.no_replica_identity", Severity: Blocker, Object: `"public"."t"`,
			Why: strings.Repeat("a fairly long explanation ", 12), Fix: "ALTER TABLE " + strings.Repeat("x", 100)},
	}}
	for i := range 7 {
		r.Findings = append(r.Findings, Finding{Check: "data.timestamptz", Severity: Info, Object: string(rune('a' + i)), Why: "w", Fix: "f"})
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, line := range strings.Split(out, "\n") {
		if len(line) > textWidth && !strings.Contains(line, strings.Repeat("x", 100)) {
			t.Errorf("line of %d columns: %q", len(line), line)
		}
	}
	if !strings.Contains(out, "data.timestamptz: 4 more") {
		t.Errorf("info beyond %d per check is not collapsed:\n%s", infoShown, out)
	}
	if !strings.Contains(out, "Not ready: fix the 1 blocker above") {
		t.Errorf("no verdict line:\n%s", out)
	}
}

func TestJudgeRemovedTypes(t *testing.T) {
	used := map[string][]string{
		"abstime": {`"public"."legacy"."created"`},
		"int4":    {`"public"."legacy"."id"`},
	}
	got := judgeRemovedTypes(17, used, []string{"int4"})
	if len(got) != 1 || got[0].Object != `"pg_catalog"."abstime"` || got[0].Severity != Blocker ||
		!strings.Contains(got[0].Why, `"public"."legacy"."created"`) {
		t.Errorf("findings = %+v, want one blocker on abstime naming its column", got)
	}
	if got := judgeRemovedTypes(17, used, []string{"int4", "abstime"}); len(got) != 0 {
		t.Errorf("types present on the target reported: %+v", got)
	}
}

func TestJudgeLeftoverSlots(t *testing.T) {
	slots := []pgleapSlot{
		{Name: "pgleap_0001", Retained: 5 << 30},               // left by an earlier migration
		{Name: "pgleap_0002", Active: true, Retained: 1 << 20}, // another target streams from it
		{Name: "pgleap_0003", Retained: 1 << 10},               // this target's migration
	}
	findings := judgeLeftoverSlots(slots, []string{"pgleap_0003"})
	if len(findings) != 1 || findings[0].Object != "pgleap_0001" || findings[0].Severity != Warning ||
		!strings.Contains(findings[0].Why, "5.0 GiB") || !strings.Contains(findings[0].Fix, "pg_drop_replication_slot('pgleap_0001')") {
		t.Errorf("findings = %+v", findings)
	}
	if got := judgeLeftoverSlots(slots[1:], []string{"pgleap_0003"}); len(got) != 0 {
		t.Errorf("an active slot and the migration's own: %+v", got)
	}
}
