package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgleap/pgleap/internal/pg"
)

// Relation is a published table as pgoutput describes it.
type Relation struct {
	ID           uint32
	Schema, Name string
	Columns      []Column
	// Identity is pg_class.relreplident: 'd' primary key, 'i' an index, 'f' every column,
	// 'n' nothing.
	Identity byte
	// qualified is the quoted name, made once: every change looks it up.
	qualified string
	// selected: the migration's selection takes the relation, once judged (applier.selects).
	selected, judged bool
}

// QualifiedName is the relation's quoted name.
func (r *Relation) QualifiedName() string {
	if r.qualified == "" {
		r.qualified = pg.QualifiedName(r.Schema, r.Name)
	}
	return r.qualified
}

// Column is one published column.
type Column struct {
	Name    string
	TypeOID uint32
	TypeMod int32
	Key     bool // part of the replica identity
}

// Value kinds, as pgoutput's tuple data marks them.
const (
	ValueNull      = 'n'
	ValueUnchanged = 'u' // a TOASTed value the change left alone: pgoutput does not resend it
	ValueText      = 't'
	ValueBinary    = 'b'
)

// Value is one column's value in a change.
type Value struct {
	Kind byte
	Data []byte // the value's text form for ValueText
}

// ChangeKind says what a change does.
type ChangeKind int

const (
	Insert ChangeKind = iota + 1
	Update
	Delete
	Truncate
)

func (k ChangeKind) String() string {
	switch k {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	}
	return fmt.Sprintf("change kind %d", int(k))
}

// Change is one row change, or one TRUNCATE.
type Change struct {
	Kind ChangeKind
	Rel  *Relation
	// Old is the replica identity of the row before an update or delete: its key columns,
	// or all columns with REPLICA IDENTITY FULL. nil for an update that kept the key.
	Old []Value
	New []Value // after an insert or update
	// Truncated, Cascade and RestartIdentity describe a TRUNCATE.
	Truncated                []*Relation
	Cascade, RestartIdentity bool
}

// Message is what the decoder makes of one pgoutput message.
type Message interface{ isMessage() }

// Begin starts a source transaction.
type Begin struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN // where its commit record is
	CommitTime time.Time
}

// Commit ends it.
type Commit struct {
	CommitLSN  pglogrepl.LSN
	EndLSN     pglogrepl.LSN // the end of the commit record: where streaming resumes after it
	CommitTime time.Time
}

func (Begin) isMessage()     {}
func (Commit) isMessage()    {}
func (Change) isMessage()    {}
func (*Relation) isMessage() {}

// ErrUnknownRelation is returned for a change to a relation no Relation message described:
// a protocol violation, or a decoder that started mid-stream.
var ErrUnknownRelation = errors.New("change to a relation pgoutput did not describe")

// Decoder turns pgoutput messages (protocol version 1) into Messages. It keeps the
// relations pgoutput describes, which come before the first change to each and again
// whenever one changes.
type Decoder struct {
	relations map[uint32]*Relation
}

// NewDecoder returns a decoder that knows no relation yet.
func NewDecoder() *Decoder { return &Decoder{relations: map[uint32]*Relation{}} }

// Decode reads one message. A relation message is kept and returned as its *Relation, so
// the caller can check it against the target. It returns nil, nil for messages that carry
// nothing to apply (type, origin and logical decoding messages).
func (d *Decoder) Decode(data []byte) (Message, error) {
	if len(data) == 0 {
		return nil, errors.New("decode pgoutput message: empty")
	}
	// data is the connection's buffer, which its next read overwrites: nothing may point
	// into it after Decode. pglogrepl copies column values and names out of it; the one
	// thing it leaves pointing in, a logical decoding message's content, is not kept.
	msg, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("decode pgoutput message %q: %w", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		return Begin{Xid: m.Xid, CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}, nil
	case *pglogrepl.CommitMessage:
		return Commit{CommitLSN: m.CommitLSN, EndLSN: m.TransactionEndLSN, CommitTime: m.CommitTime}, nil
	case *pglogrepl.RelationMessage:
		rel := &Relation{ID: m.RelationID, Schema: m.Namespace, Name: m.RelationName, Identity: m.ReplicaIdentity}
		rel.qualified = pg.QualifiedName(rel.Schema, rel.Name)
		for _, c := range m.Columns {
			rel.Columns = append(rel.Columns, Column{Name: c.Name, TypeOID: c.DataType, TypeMod: c.TypeModifier, Key: c.Flags&1 != 0})
		}
		d.relations[m.RelationID] = rel
		return rel, nil
	case *pglogrepl.InsertMessage:
		rel, err := d.relation(m.RelationID, m.Tuple)
		if err != nil {
			return nil, err
		}
		return Change{Kind: Insert, Rel: rel, New: values(m.Tuple)}, nil
	case *pglogrepl.UpdateMessage:
		rel, err := d.relation(m.RelationID, m.NewTuple)
		if err != nil {
			return nil, err
		}
		c := Change{Kind: Update, Rel: rel, New: values(m.NewTuple)}
		if m.OldTuple != nil {
			if len(m.OldTuple.Columns) != len(rel.Columns) {
				return nil, fmt.Errorf("update of %s: old row has %d columns, the relation %d", rel.QualifiedName(), len(m.OldTuple.Columns), len(rel.Columns))
			}
			c.Old = values(m.OldTuple)
		}
		return c, nil
	case *pglogrepl.DeleteMessage:
		rel, err := d.relation(m.RelationID, m.OldTuple)
		if err != nil {
			return nil, err
		}
		return Change{Kind: Delete, Rel: rel, Old: values(m.OldTuple)}, nil
	case *pglogrepl.TruncateMessage:
		c := Change{Kind: Truncate, Cascade: m.Option&1 != 0, RestartIdentity: m.Option&2 != 0}
		for _, id := range m.RelationIDs {
			rel, ok := d.relations[id]
			if !ok {
				return nil, fmt.Errorf("truncate of relation %d: %w", id, ErrUnknownRelation)
			}
			c.Truncated = append(c.Truncated, rel)
		}
		return c, nil
	}
	return nil, nil
}

// relation finds the relation of a change and checks the tuple fits it.
func (d *Decoder) relation(id uint32, tuple *pglogrepl.TupleData) (*Relation, error) {
	rel, ok := d.relations[id]
	if !ok {
		return nil, fmt.Errorf("relation %d: %w", id, ErrUnknownRelation)
	}
	if tuple == nil {
		return nil, fmt.Errorf("change to %s without a row", rel.QualifiedName())
	}
	if len(tuple.Columns) != len(rel.Columns) {
		return nil, fmt.Errorf("change to %s has %d columns, the relation %d", rel.QualifiedName(), len(tuple.Columns), len(rel.Columns))
	}
	return rel, nil
}

// values takes a tuple's values; their data stays in the message Decode copied.
func values(t *pglogrepl.TupleData) []Value {
	if t == nil {
		return nil
	}
	vs := make([]Value, len(t.Columns))
	for i, c := range t.Columns {
		vs[i] = Value{Kind: c.DataType}
		if c.DataType == ValueText || c.DataType == ValueBinary {
			vs[i].Data = c.Data
		}
	}
	return vs
}

// ErrMalformed is returned for a message too short for what it declares.
var ErrMalformed = errors.New("malformed message")

// parse is pglogrepl.Parse made safe for malformed input, on which it indexes past the end
// of the message (found by FuzzDecode): a bad message from the server must stop the stream
// with an error, not crash pgleap.
func parse(data []byte) (msg pglogrepl.Message, err error) {
	// A TRUNCATE's relation count is trusted for an allocation: check it against the
	// message first, or a corrupt count asks for gigabytes.
	if data[0] == 'T' && len(data) >= 5 && int64(binary.BigEndian.Uint32(data[1:5]))*4 > int64(len(data)) {
		return nil, fmt.Errorf("%w: truncate of %d relations in %d bytes", ErrMalformed, binary.BigEndian.Uint32(data[1:5]), len(data))
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	return pglogrepl.Parse(data)
}

// parseV2 is pglogrepl.ParseV2, made safe like parse, for the stream control messages of
// protocol version 2.
func parseV2(data []byte) (msg pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	return pglogrepl.ParseV2(data, false)
}
