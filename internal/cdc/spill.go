package cdc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Streamed transactions. From major 14 on, pgoutput (protocol version 2, streaming on) sends
// a large transaction in blocks while it is still running, interleaved with other
// transactions, and says at the end whether it committed. pgleap writes each block's
// messages to a file of the transaction's own (so memory stays bounded whatever the
// transaction's size), drops the changes of subtransactions that roll back, and at the
// commit reads the file back and applies it like any other transaction, in commit order.

// spill holds the streamed transactions in progress, one file each.
type spill struct {
	dir  string
	txns map[uint32]*spilledTxn
}

type spilledTxn struct {
	file    *os.File
	w       *bufio.Writer
	aborted map[uint32]bool // subtransactions rolled back
}

func newSpill() (*spill, error) {
	sweepSpills()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", spillPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("create a directory for streamed transactions: %w", err)
	}
	return &spill{dir: dir, txns: map[uint32]*spilledTxn{}}, nil
}

// add keeps one message of transaction xid, sent for its (sub)transaction subxid. msg is
// the message as protocol version 1 writes it (without the xid streaming adds).
func (s *spill) add(xid, subxid uint32, msg []byte) error {
	t := s.txns[xid]
	if t == nil {
		f, err := os.CreateTemp(s.dir, fmt.Sprintf("xid-%d-", xid))
		if err != nil {
			return fmt.Errorf("spill streamed transaction %d: %w", xid, err)
		}
		t = &spilledTxn{file: f, w: bufio.NewWriterSize(f, 256<<10), aborted: map[uint32]bool{}}
		s.txns[xid] = t
	}
	var header [8]byte
	binary.BigEndian.PutUint32(header[:4], subxid)
	binary.BigEndian.PutUint32(header[4:], uint32(len(msg)))
	if _, err := t.w.Write(header[:]); err != nil {
		return fmt.Errorf("spill streamed transaction %d: %w", xid, err)
	}
	if _, err := t.w.Write(msg); err != nil {
		return fmt.Errorf("spill streamed transaction %d: %w", xid, err)
	}
	return nil
}

// abort forgets a rolled-back subtransaction, or the whole transaction when subxid is xid.
func (s *spill) abort(xid, subxid uint32) {
	t := s.txns[xid]
	if t == nil {
		return
	}
	if xid == subxid {
		s.drop(xid)
		return
	}
	t.aborted[subxid] = true
}

// replay hands each kept message of a committed transaction to apply, in the order it was
// sent, and forgets the transaction.
func (s *spill) replay(xid uint32, apply func(msg []byte) error) error {
	t := s.txns[xid]
	if t == nil {
		return nil // streamed without a change pgleap applies
	}
	defer s.drop(xid)
	if err := t.w.Flush(); err != nil {
		return fmt.Errorf("spill streamed transaction %d: %w", xid, err)
	}
	if _, err := t.file.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read streamed transaction %d: %w", xid, err)
	}
	r := bufio.NewReaderSize(t.file, 256<<10)
	var header [8]byte
	var msg []byte
	for {
		if _, err := io.ReadFull(r, header[:]); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read streamed transaction %d: %w", xid, err)
		}
		subxid, n := binary.BigEndian.Uint32(header[:4]), binary.BigEndian.Uint32(header[4:])
		msg = append(msg[:0], make([]byte, n)...)
		if _, err := io.ReadFull(r, msg); err != nil {
			return fmt.Errorf("read streamed transaction %d: %w", xid, err)
		}
		if t.aborted[subxid] {
			continue
		}
		if err := apply(msg); err != nil {
			return err
		}
	}
}

func (s *spill) drop(xid uint32) {
	if t := s.txns[xid]; t != nil {
		t.file.Close()
		os.Remove(t.file.Name())
		delete(s.txns, xid)
	}
}

// close removes every file.
func (s *spill) close() {
	for xid := range s.txns {
		s.drop(xid)
	}
	os.RemoveAll(s.dir)
}

const spillPrefix = "pgleap-stream-"

// sweepSpills removes what pgleap processes that no longer run (killed, crashed) left in
// the temporary directory; each names its directory after its pid.
func sweepSpills() {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), spillPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}
