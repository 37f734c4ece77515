package cdc

import (
	"testing"

	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/ddl"
)

func TestDDLSelected(t *testing.T) {
	a := &applier{selection: config.TableFilter{Exclude: []string{"archive.*", "public.scratch"}}}
	for _, tt := range []struct {
		name    string
		objects []string
		want    bool
	}{
		{"a selected table", []string{"table\tpublic\tpublic.orders"}, true},
		{"an excluded table", []string{"table\tpublic\tpublic.scratch"}, false},
		{"an index of an excluded table", []string{"index\tpublic\tpublic.scratch_x_idx", "table\tpublic\tpublic.scratch"}, false},
		{"a serial column of an excluded table", []string{"sequence\tpublic\tpublic.scratch_n_seq", "table\tpublic\tpublic.scratch"}, false},
		{"a view in an excluded schema", []string{"view\tarchive\tarchive.old"}, false},
		{"a function in a kept schema", []string{"function\tpublic\tpublic.f(integer)"}, true},
		{"a grant, which names nothing", []string{"\t\t"}, true},
		{"a table in an excluded schema and a selected one", []string{"table\tarchive\tarchive.a", "table\tpublic\tpublic.b"}, true},
	} {
		if got := a.ddlSelected(ddl.Command{Objects: tt.objects}); got != tt.want {
			t.Errorf("%s: ddlSelected = %v, want %v", tt.name, got, tt.want)
		}
	}
}
