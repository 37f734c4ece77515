package cdc

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"syscall"
	"time"
)

// While a backlog streams, the walsender sends one small message per change and flushes
// each. A reader that keeps up wakes for every one of them, and every wake-up costs the
// walsender too (measured: 360,000 messages woken one by one took the walsender 2.1 s of
// system time, against 0.5 s when they arrive in batches). So once messages flow, the
// socket's low-water mark (SO_RCVLOWAT) is raised: the kernel wakes the reader when a batch
// has gathered, or when gatherWait has passed and the reader comes back for what there is.
const (
	gatherBytes = 64 << 10
	gatherWait  = 2 * time.Millisecond
)

// gathering switches the low-water mark of the replication socket.
type gathering struct {
	raw syscall.RawConn // nil where the socket cannot be reached: gathering is then off
	on  bool
}

func newGathering(conn net.Conn) *gathering {
	if t, ok := conn.(*tls.Conn); ok {
		conn = t.NetConn()
	}
	g := &gathering{}
	if sc, ok := conn.(syscall.Conn); ok {
		g.raw, _ = sc.SyscallConn()
	}
	return g
}

// set raises the low-water mark (on) or puts it back to one byte.
func (g *gathering) set(on bool) error {
	if g.raw == nil || g.on == on {
		return nil
	}
	level := 1
	if on {
		level = gatherBytes
	}
	var setErr error
	err := g.raw.Control(func(fd uintptr) {
		setErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, level)
	})
	if err = cmp.Or(err, setErr); err != nil {
		return fmt.Errorf("set the low-water mark of the replication connection: %w", err)
	}
	g.on = on
	return nil
}
