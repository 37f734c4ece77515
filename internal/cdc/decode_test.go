package cdc

import (
	"encoding/binary"
	"testing"
)

// Hand-built pgoutput messages (protocol version 1) for the seed corpus and the table tests.

func relationMessage(id uint32, schema, name string, identity byte, cols ...[2]string) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, schema...), 0)
	b = append(append(b, name...), 0)
	b = append(b, identity)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		flags := byte(0)
		if c[1] == "key" {
			flags = 1
		}
		b = append(b, flags)
		b = append(append(b, c[0]...), 0)
		b = binary.BigEndian.AppendUint32(b, 23) // int4
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

// tuple encodes values: "\x00" is NULL, "\x01" unchanged TOAST, anything else text.
func tuple(values ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(values)))
	for _, v := range values {
		switch v {
		case "\x00":
			b = append(b, 'n')
		case "\x01":
			b = append(b, 'u')
		default:
			b = append(b, 't')
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

func change(kind byte, rel uint32, parts ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{kind}, rel)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func beginMessage(lsn uint64, xid uint32) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'B'}, lsn)
	b = binary.BigEndian.AppendUint64(b, 0)
	return binary.BigEndian.AppendUint32(b, xid)
}

func commitMessage(lsn, end uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'C', 0}, lsn)
	b = binary.BigEndian.AppendUint64(b, end)
	return binary.BigEndian.AppendUint64(b, 0)
}

func truncateMessage(option byte, rels ...uint32) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'T'}, uint32(len(rels)))
	b = append(b, option)
	for _, r := range rels {
		b = binary.BigEndian.AppendUint32(b, r)
	}
	return b
}

var testRelation = relationMessage(16384, "public", "orders", 'd', [2]string{"id", "key"}, [2]string{"note", ""}, [2]string{"qty", ""})

func TestDecode(t *testing.T) {
	d := NewDecoder()
	if _, err := d.Decode(change('I', 16384, []byte{'N'}, tuple("1", "x", "2"))); err == nil {
		t.Fatal("a change before its relation was described decoded")
	}
	msg, err := d.Decode(testRelation)
	rel, ok := msg.(*Relation)
	if err != nil || !ok || rel.QualifiedName() != `"public"."orders"` || !rel.Columns[0].Key || rel.Columns[1].Key {
		t.Fatalf("relation = %#v, %v", msg, err)
	}
	tests := []struct {
		name  string
		msg   []byte
		check func(Message) bool
	}{
		{"begin", beginMessage(0x1000, 7), func(m Message) bool { b, ok := m.(Begin); return ok && b.Xid == 7 && b.CommitLSN == 0x1000 }},
		{"insert", change('I', 16384, []byte{'N'}, tuple("1", "x", "\x00")), func(m Message) bool {
			c, ok := m.(Change)
			return ok && c.Kind == Insert && string(c.New[1].Data) == "x" && c.New[2].Kind == ValueNull
		}},
		{"update keeping the key", change('U', 16384, []byte{'N'}, tuple("1", "\x01", "3")), func(m Message) bool {
			c, ok := m.(Change)
			return ok && c.Kind == Update && c.Old == nil && c.New[1].Kind == ValueUnchanged
		}},
		{"update of the key", change('U', 16384, []byte{'K'}, tuple("1", "\x00", "\x00"), []byte{'N'}, tuple("2", "y", "3")), func(m Message) bool {
			c, ok := m.(Change)
			return ok && string(c.Old[0].Data) == "1" && string(c.New[0].Data) == "2"
		}},
		{"delete", change('D', 16384, []byte{'K'}, tuple("2", "\x00", "\x00")), func(m Message) bool {
			c, ok := m.(Change)
			return ok && c.Kind == Delete && string(c.Old[0].Data) == "2"
		}},
		{"truncate cascade restart", truncateMessage(3, 16384), func(m Message) bool {
			c, ok := m.(Change)
			return ok && c.Kind == Truncate && c.Cascade && c.RestartIdentity && c.Truncated[0] == rel
		}},
		{"commit", commitMessage(0x1000, 0x1028), func(m Message) bool { c, ok := m.(Commit); return ok && c.EndLSN == 0x1028 }},
		{"origin", append([]byte{'O'}, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 0), func(m Message) bool { return m == nil }},
	}
	for _, tt := range tests {
		m, err := d.Decode(tt.msg)
		if err != nil || !tt.check(m) {
			t.Errorf("%s: %#v, %v", tt.name, m, err)
		}
	}
	for name, bad := range map[string][]byte{
		"empty":                nil,
		"unknown type":         {'Z', 1, 2},
		"truncated insert":     change('I', 16384, []byte{'N'}, tuple("1", "x", "2"))[:12],
		"too few columns":      change('I', 16384, []byte{'N'}, tuple("1", "x")),
		"unknown relation":     change('D', 99, []byte{'K'}, tuple("2", "\x00", "\x00")),
		"truncate of unknown":  truncateMessage(0, 99),
		"short begin":          beginMessage(1, 1)[:10],
		"update without a new": change('U', 16384, []byte{'K'}, tuple("1", "\x00", "\x00")),
	} {
		if m, err := d.Decode(bad); err == nil {
			t.Errorf("%s: decoded as %#v, want an error", name, m)
		}
	}
}

// The connection reuses its buffer for the next message: what Decode returns must not
// point into it.
func TestDecodeKeepsNothingOfItsInput(t *testing.T) {
	d := NewDecoder()
	relMsg := relationMessage(16384, "public", "orders", 'd', [2]string{"id", "key"}, [2]string{"note", ""}, [2]string{"qty", ""})
	m, err := d.Decode(relMsg)
	if err != nil {
		t.Fatal(err)
	}
	rel := m.(*Relation)
	insert := change('I', 16384, []byte{'N'}, tuple("1", "x", "2"))
	m, err = d.Decode(insert)
	if err != nil {
		t.Fatal(err)
	}
	for _, buf := range [][]byte{relMsg, insert} {
		for i := range buf {
			buf[i] = '#'
		}
	}
	c := m.(Change)
	if rel.Schema != "public" || rel.Name != "orders" || rel.Columns[1].Name != "note" {
		t.Errorf("relation changed with its message's buffer: %+v", rel)
	}
	if string(c.New[0].Data) != "1" || string(c.New[1].Data) != "x" || string(c.New[2].Data) != "2" {
		t.Errorf("values changed with their message's buffer: %q %q %q", c.New[0].Data, c.New[1].Data, c.New[2].Data)
	}
}

// FuzzDecode feeds the decoder arbitrary messages after a known relation: it must return
// an error or a well-formed message, never panic, and never a change whose rows do not fit
// its relation.
func FuzzDecode(f *testing.F) {
	for _, seed := range [][]byte{
		testRelation,
		beginMessage(0x1000, 7),
		change('I', 16384, []byte{'N'}, tuple("1", "x", "\x00")),
		change('U', 16384, []byte{'K'}, tuple("1", "\x00", "\x00"), []byte{'N'}, tuple("2", "y", "\x01")),
		change('U', 16384, []byte{'O'}, tuple("1", "a", "b"), []byte{'N'}, tuple("2", "y", "3")),
		change('D', 16384, []byte{'O'}, tuple("1", "a", "b")),
		truncateMessage(1, 16384),
		commitMessage(0x1000, 0x1028),
		relationMessage(5, "s", "t", 'f', [2]string{"a", ""}),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder()
		if _, err := d.Decode(testRelation); err != nil {
			t.Fatal(err)
		}
		m, err := d.Decode(data)
		if err != nil {
			return
		}
		c, ok := m.(Change)
		if !ok || c.Kind == Truncate {
			return
		}
		for _, row := range [][]Value{c.Old, c.New} {
			if row != nil && len(row) != len(c.Rel.Columns) {
				t.Fatalf("%s of %s has %d values for %d columns", c.Kind, c.Rel.QualifiedName(), len(row), len(c.Rel.Columns))
			}
		}
		if c.Kind != Delete && c.New == nil || c.Kind == Delete && c.Old == nil {
			t.Fatalf("%s without the row it needs: %#v", c.Kind, c)
		}
	})
}
