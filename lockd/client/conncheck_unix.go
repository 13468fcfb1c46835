//go:build aix || darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd || solaris

package client

import (
	"crypto/tls"
	"net"
	"syscall"
)

// canCheckConns says that alive looks at the socket.
const canCheckConns = true

// alive reports whether a kept connection is still open and has nothing
// to read: one non-blocking read on its socket. net/http's Transport learns
// the same from the goroutine that always reads its idle connections; the
// inline transport has none, so it asks before reusing one (go-redis does
// the same for its pool).
func alive(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, err := syscall.Read(int(fd), b[:])
		// EAGAIN: open, nothing to read. 0 bytes: closed by the server.
		// Anything read: not an answer to anything we sent.
		_ = n
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && ok
}
