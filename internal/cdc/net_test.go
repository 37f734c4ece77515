package cdc

import (
	"bytes"
	"testing"
)

func textValues(vs ...string) []Value {
	out := make([]Value, len(vs))
	for i, v := range vs {
		switch v {
		case "\x00":
			out[i] = Value{Kind: ValueNull}
		case "\x01":
			out[i] = Value{Kind: ValueUnchanged}
		default:
			out[i] = Value{Kind: ValueText, Data: []byte(v)}
		}
	}
	return out
}

func TestCollapse(t *testing.T) {
	rel := &Relation{Schema: "public", Name: "t", Identity: 'd', Columns: []Column{{Name: "id", Key: true}, {Name: "a"}, {Name: "b"}}}
	ins := func(vs ...string) *Change { return &Change{Kind: Insert, Rel: rel, New: textValues(vs...)} }
	upd := func(vs ...string) *Change { return &Change{Kind: Update, Rel: rel, New: textValues(vs...)} }
	updKey := func(old string, vs ...string) *Change {
		return &Change{Kind: Update, Rel: rel, Old: textValues(old, "\x00", "\x00"), New: textValues(vs...)}
	}
	del := func(id string) *Change { return &Change{Kind: Delete, Rel: rel, Old: textValues(id, "\x00", "\x00")} }
	tests := []struct {
		name    string
		changes []*Change
		want    map[string]string // key → op and values, "" when nothing is left
		refused int               // index of the change collapse refuses, -1 if none
	}{
		{"insert then updates is one insert", []*Change{ins("1", "a", "b"), upd("1", "a2", "\x01"), upd("1", "\x01", "b3")},
			map[string]string{"1": "insert 1 a2 b3"}, -1},
		{"updates are one update, unsent values kept unsent", []*Change{upd("1", "a", "\x01"), upd("1", "a2", "\x01")},
			map[string]string{"1": "update 1 a2 ?"}, -1},
		{"insert then delete is nothing", []*Change{ins("1", "a", "b"), del("1")}, map[string]string{"1": ""}, -1},
		{"update then delete is a delete", []*Change{upd("1", "a", "b"), del("1")}, map[string]string{"1": "delete"}, -1},
		{"delete then insert is an update", []*Change{del("1"), ins("1", "a", "b")}, map[string]string{"1": "update 1 a b"}, -1},
		{"a key change is applied on its own", []*Change{upd("1", "a", "b"), updKey("1", "2", "a", "b")}, map[string]string{"1": "update 1 a b"}, 1},
		{"an update after a delete is refused", []*Change{del("1"), upd("1", "a", "b")}, map[string]string{"1": "delete"}, 1},
		{"a second insert is refused", []*Change{ins("1", "a", "b"), ins("1", "a", "b")}, map[string]string{"1": "insert 1 a b"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &netTable{rel: rel, rows: map[string]*netRow{}}
			refused := -1
			for i, c := range tt.changes {
				if !n.collapse(c) && refused < 0 {
					refused = i
				}
			}
			if refused != tt.refused {
				t.Errorf("refused change %d, want %d", refused, tt.refused)
			}
			for id, want := range tt.want {
				key, _ := rowKey(rel, textValues(id, "", ""))
				if got := describeNet(n.rows[key]); got != want {
					t.Errorf("row %s: %q, want %q", id, got, want)
				}
			}
		})
	}
}

func TestCollapseWithoutKey(t *testing.T) {
	rel := &Relation{Schema: "public", Name: "log", Identity: 'f', Columns: []Column{{Name: "a"}, {Name: "b"}}}
	n := &netTable{rel: rel, rows: map[string]*netRow{}}
	for i, c := range []*Change{
		{Kind: Insert, Rel: rel, New: textValues("1", "x")},
		{Kind: Insert, Rel: rel, New: textValues("1", "x")}, // a duplicate row is a row of its own
	} {
		if !n.collapse(c) {
			t.Fatalf("insert %d was refused", i)
		}
	}
	if len(n.appended) != 2 {
		t.Errorf("%d rows appended, want 2", len(n.appended))
	}
	if n.collapse(&Change{Kind: Update, Rel: rel, Old: textValues("1", "x"), New: textValues("1", "y")}) ||
		n.collapse(&Change{Kind: Delete, Rel: rel, Old: textValues("1", "x")}) {
		t.Error("an update or delete of a keyless row was folded: it must be applied on its own, in order")
	}
	stmts, err := n.statements(map[string]string{"a": "integer", "b": "text"})
	if err != nil || stmts.inserts == nil || stmts.inserts.rows != 2 || stmts.inserts.data.String() != "1\tx\n1\tx\n" {
		t.Errorf("statements = %+v, %v", stmts, err)
	}
}

func describeNet(r *netRow) string {
	if r == nil {
		return ""
	}
	s := map[netOp]string{netInsert: "insert", netUpdate: "update", netDelete: "delete"}[r.op]
	for _, v := range r.values {
		switch v.Kind {
		case ValueText:
			s += " " + string(v.Data)
		case ValueUnchanged:
			s += " ?"
		default:
			s += " NULL"
		}
	}
	return s
}

func TestTextFormats(t *testing.T) {
	rows := []*netRow{{values: textValues(`plain`)}, {values: textValues(`a "quoted" \ back`)}, {values: textValues("\x00")}, {values: textValues(`{}`)}}
	got := textArray(rows, func(r *netRow) Value { return r.values[0] })
	if want := `{"plain","a \"quoted\" \\ back",NULL,"{}"}`; string(got) != want {
		t.Errorf("textArray = %s, want %s", got, want)
	}
	var b bytes.Buffer
	writeCopyRow(&b, textValues("tab\there", "line\nbreak\r", `back\slash`, "\x00", `\N`))
	writeCopyRow(&b, textValues("second", "row"))
	if want := "tab\\there\tline\\nbreak\\r\tback\\\\slash\t\\N\t\\\\N\nsecond\trow\n"; b.String() != want {
		t.Errorf("writeCopyRow = %q, want %q", b.String(), want)
	}
}

func TestNetStatements(t *testing.T) {
	rel := &Relation{Schema: "public", Name: "t", Identity: 'd', Columns: []Column{{Name: "id", Key: true}, {Name: "a"}, {Name: "b"}}}
	types := map[string]string{"id": "integer", "a": "text", "b": "text"}
	n := &netTable{rel: rel, rows: map[string]*netRow{}}
	for _, c := range []*Change{
		{Kind: Update, Rel: rel, New: textValues("1", "a1", "b1")},
		{Kind: Update, Rel: rel, New: textValues("2", "a2", "b2")},
		{Kind: Update, Rel: rel, New: textValues("3", "\x01", "\x01")}, // only unsent TOAST values
		{Kind: Delete, Rel: rel, Old: textValues("4", "\x00", "\x00")},
	} {
		if !n.collapse(c) {
			t.Fatalf("%s refused", c.Kind)
		}
	}
	stmts, err := n.statements(types)
	if err != nil {
		t.Fatal(err)
	}
	if len(stmts.updates) != 2 || len(stmts.deletes) != 1 || stmts.inserts != nil {
		t.Fatalf("statements = %+v", stmts)
	}
	// The key is matched, never written; the row with nothing to write is only checked.
	if got, want := stmts.updates[0].sql, `UPDATE "public"."t" t SET "a" = v.c1::text, "b" = v.c2::text FROM unnest($1::text[], $2::text[], $3::text[]) AS v(k0, c1, c2) WHERE t."id" = v.k0::integer`; got != want {
		t.Errorf("update:\n got %s\nwant %s", got, want)
	}
	if got := string(bytes.Join(stmts.updates[0].params, []byte(" "))); got != `{"1","2"} {"a1","a2"} {"b1","b2"}` {
		t.Errorf("update parameters: %s", got)
	}
	if got, want := stmts.updates[1].sql, `SELECT FROM "public"."t" t, unnest($1::text[]) AS v(k0) WHERE t."id" = v.k0::integer`; got != want {
		t.Errorf("check of unsent values:\n got %s\nwant %s", got, want)
	}
	if got, want := stmts.deletes[0].sql, `DELETE FROM "public"."t" t USING unnest($1::text[]) AS v(k0) WHERE t."id" = v.k0::integer`; got != want {
		t.Errorf("delete:\n got %s\nwant %s", got, want)
	}
}
