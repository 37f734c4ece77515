package verify

import (
	"testing"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/state"
)

func TestDiffObjects(t *testing.T) {
	source := []schemaObject{
		{Kind: "table", Schema: "public", Table: "a", Relation: "a", Name: "a"},
		{Kind: "index", Schema: "public", Table: "a", Relation: "a", Name: "a.a_pkey"},
		{Kind: "index", Schema: "public", Table: "a", Relation: "a", Name: "a.a_note"},
	}
	target := []schemaObject{
		{Kind: "table", Schema: "public", Table: "a", Relation: "a", Name: "a"},
		{Kind: "index", Schema: "public", Table: "a", Relation: "a", Name: "a.a_pkey"},
		{Kind: "index", Schema: "public", Table: "a", Relation: "a", Name: "a.extra"},
	}
	r := diffObjects(source, target)
	if r.Equal() || len(r.Differences) != 1 {
		t.Fatalf("report = %+v", r)
	}
	d := r.Differences[0]
	if d.Kind != "index" || d.Source != 2 || d.Target != 2 || d.OnlyOnSource[0] != "a.a_note" || d.OnlyOnTarget[0] != "a.extra" {
		t.Errorf("difference = %+v", d)
	}
	if !diffObjects(source, source).Equal() {
		t.Error("a schema differs from itself")
	}
}

func TestInMigration(t *testing.T) {
	selection := config.TableFilter{Exclude: []string{"archive.*", "public.tmp"}}
	skipped := []state.SkippedObject{{Kind: "view", Name: "public.all_orders"}, {Kind: "fk constraint", Name: "public.refunds refunds_fkey"}}
	tests := []struct {
		o    schemaObject
		want bool
	}{
		{schemaObject{Kind: "table", Schema: "public", Table: "orders", Relation: "orders", Name: "orders"}, true},
		{schemaObject{Kind: "function", Schema: "archive", Name: "purge()"}, false},
		{schemaObject{Kind: "column", Schema: "public", Table: "tmp", Relation: "tmp", Name: "tmp.id integer"}, false},
		{schemaObject{Kind: "view", Schema: "public", Relation: "all_orders", Name: "all_orders"}, false},
		{schemaObject{Kind: "column", Schema: "public", Relation: "all_orders", Name: "all_orders.id bigint"}, false},
		{schemaObject{Kind: "constraint foreign key", Schema: "public", Table: "refunds", Relation: "refunds", Name: "refunds.refunds_fkey"}, false},
		{schemaObject{Kind: "constraint primary key", Schema: "public", Table: "refunds", Relation: "refunds", Name: "refunds.refunds_pkey"}, true},
	}
	for _, tt := range tests {
		if got := inMigration(tt.o, selection, skipped); got != tt.want {
			t.Errorf("inMigration(%+v) = %v, want %v", tt.o, got, tt.want)
		}
	}
}
