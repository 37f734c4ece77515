package schema

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Sections of a dump, as pg_dump numbers them.
const (
	SectionNone     = 1
	SectionPreData  = 2
	SectionData     = 3
	SectionPostData = 4
)

// Entry is one item of a pg_dump archive's table of contents: an object with the SQL that
// creates it and the entries it depends on.
type Entry struct {
	DumpID     int
	TableOID   uint32 // the catalog the object lives in (pg_class, pg_constraint, ...)
	OID        uint32 // the object's OID on the source
	Tag        string // its name, as pg_restore -l prints it
	Desc       string // its kind: TABLE, INDEX, FK CONSTRAINT, ACL, ...
	Section    int    // as recorded; SectionNone entries take their place in the TOC's order
	Defn       string // the SQL that creates it
	Namespace  string
	Tablespace string
	Owner      string
	Deps       []int
}

// Archive is the table of contents of a custom-format (pg_dump -Fc) archive.
type Archive struct {
	Version     string // archive format, such as 1.14
	DumpVersion string // the pg_dump that wrote it
	Entries     []Entry
}

// ErrBadArchive is returned for input that is not a custom-format archive pgleap can read.
var ErrBadArchive = errors.New("not a readable pg_dump custom-format archive")

// Archive format versions that changed what ReadToc reads (pg_backup_archiver.h).
const (
	archiveV1_12 = 1<<16 | 12<<8 // oldest written by the pg_dump majors pgleap accepts
	archiveV1_14 = 1<<16 | 14<<8 // table access method per entry
	archiveV1_15 = 1<<16 | 15<<8 // compression algorithm byte in the header
	archiveV1_16 = 1<<16 | 16<<8 // relkind per entry
	archiveV1_17 = 1<<16 | 17<<8
)

// ReadArchive reads the table of contents of a custom-format archive. Data blocks are not
// read: pgleap dumps schema only.
func ReadArchive(raw []byte) (*Archive, error) {
	r := &archiveReader{buf: raw}
	a, err := r.read()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	return a, nil
}

type archiveReader struct {
	buf            []byte
	pos            int
	intSize, offSz int
	version        int
}

func (r *archiveReader) read() (*Archive, error) {
	if !bytes.HasPrefix(r.buf, []byte("PGDMP")) {
		return nil, errors.New("no PGDMP header")
	}
	r.pos = 5
	vmaj, vmin, vrev := r.byte(), r.byte(), r.byte()
	r.version = int(vmaj)<<16 | int(vmin)<<8 | int(vrev)
	if r.version < archiveV1_12 || r.version >= archiveV1_17 {
		return nil, fmt.Errorf("archive version %d.%d is not one pgleap reads (1.12 to 1.16)", vmaj, vmin)
	}
	r.intSize, r.offSz = int(r.byte()), int(r.byte())
	if r.intSize < 1 || r.intSize > 8 || r.offSz < 1 || r.offSz > 8 {
		return nil, fmt.Errorf("implausible integer sizes %d and %d", r.intSize, r.offSz)
	}
	if format := r.byte(); format != 1 {
		return nil, fmt.Errorf("archive format %d, want 1 (custom)", format)
	}
	if r.version >= archiveV1_15 {
		r.byte() // compression algorithm
	} else {
		r.int() // compression level
	}
	for range 7 { // creation time
		r.int()
	}
	r.str() // database name
	r.str() // server version
	a := &Archive{Version: fmt.Sprintf("%d.%d", vmaj, vmin)}
	a.DumpVersion, _ = r.str()
	count := r.int()
	if count < 0 || count > len(r.buf) {
		return nil, fmt.Errorf("implausible entry count %d", count)
	}
	for range count {
		e, err := r.entry()
		if err != nil {
			return nil, err
		}
		a.Entries = append(a.Entries, e)
	}
	if r.pos > len(r.buf) {
		return nil, errors.New("archive ends inside its table of contents")
	}
	return a, nil
}

func (r *archiveReader) entry() (Entry, error) {
	var e Entry
	e.DumpID = r.int()
	r.int() // hadDumper
	tableOID, _ := r.str()
	oid, _ := r.str()
	t, _ := strconv.ParseUint(tableOID, 10, 32)
	o, _ := strconv.ParseUint(oid, 10, 32)
	e.TableOID, e.OID = uint32(t), uint32(o)
	e.Tag, _ = r.str()
	e.Desc, _ = r.str()
	e.Section = r.int()
	e.Defn, _ = r.str()
	r.str() // drop statement
	r.str() // copy statement
	e.Namespace, _ = r.str()
	e.Tablespace, _ = r.str()
	if r.version >= archiveV1_14 {
		r.str() // table access method
	}
	if r.version >= archiveV1_16 {
		r.int() // relkind
	}
	e.Owner, _ = r.str()
	r.str() // "false": tables WITH OIDS are gone
	for {
		dep, ok := r.str()
		if !ok {
			break
		}
		id, err := strconv.Atoi(dep)
		if err != nil {
			return Entry{}, fmt.Errorf("entry %d: dependency %q is not a number", e.DumpID, dep)
		}
		e.Deps = append(e.Deps, id)
		if r.pos > len(r.buf) {
			return Entry{}, errors.New("archive ends inside a dependency list")
		}
	}
	// The custom format follows each entry with its data block's position.
	r.byte()
	r.pos += r.offSz
	if r.pos > len(r.buf) || e.DumpID <= 0 {
		return Entry{}, fmt.Errorf("entry %d is cut short or out of range", e.DumpID)
	}
	return e, nil
}

func (r *archiveReader) byte() byte {
	if r.pos >= len(r.buf) {
		r.pos++
		return 0
	}
	b := r.buf[r.pos]
	r.pos++
	return b
}

// int reads pg_dump's integer: a sign byte, then intSize bytes, least significant first.
func (r *archiveReader) int() int {
	negative := r.byte() != 0
	var value uint64
	for i := range r.intSize {
		value |= uint64(r.byte()) << (8 * i)
	}
	if r.pos > len(r.buf) {
		return 0
	}
	n := int(value & (1<<62 - 1))
	if negative {
		return -n
	}
	return n
}

// str reads a length-prefixed string; a negative length is NULL (ok false).
func (r *archiveReader) str() (string, bool) {
	n := r.int()
	if n < 0 || r.pos > len(r.buf) {
		return "", false
	}
	end := r.pos + n
	if end > len(r.buf) || end < r.pos {
		r.pos = len(r.buf) + 1
		return "", false
	}
	s := string(r.buf[r.pos:end])
	r.pos = end
	return s, true
}

// placeSections gives each SectionNone entry (ACL, COMMENT, ...) the section of the entry
// before it, as pg_restore does when it picks sections.
func (a *Archive) placeSections() []int {
	sections := make([]int, len(a.Entries))
	current := SectionPreData
	for i, e := range a.Entries {
		if e.Section != SectionNone {
			current = e.Section
		}
		sections[i] = current
	}
	return sections
}
