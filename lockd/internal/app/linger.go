package app

import (
	"io"
	"net"
	"sync/atomic"
	"time"
)

// A connection lockd closes while its client is still sending (a head
// over the limit, a body a handler refused without reading it) is closed
// the way net/http's server closes one: its sending side first, then what
// the client still sends is read and dropped for a moment, and only then
// is the socket closed. Closed at once, the kernel would answer the unread
// bytes with a reset, and a client still writing its request would get
// "connection reset by peer" instead of lockd's JSON answer.

const (
	lingerFor = time.Second // as long as a client may still be sending
	lingerMax = 8 << 20     // dropped at most; past that the reset is the client's due
)

// lingerListener accepts connections that close gracefully when marked.
type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &lingerConn{Conn: c}
	if a := c.RemoteAddr(); a != nil {
		lc.remote = a.String()
	}
	return lc, nil
}

// lingerConn is a connection that may close gracefully.
type lingerConn struct {
	net.Conn
	linger atomic.Bool
	remote string // RemoteAddr().String(), once: each request's RemoteAddr
}

// markLinger asks c (or the connection c wraps, as a *tls.Conn does) to
// close gracefully.
func markLinger(c net.Conn) {
	for c != nil {
		switch v := c.(type) {
		case *lingerConn:
			v.linger.Store(true)
			return
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return
		}
	}
}

func (c *lingerConn) Close() error {
	if c.linger.Load() {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			if c.SetReadDeadline(time.Now().Add(lingerFor)) == nil {
				_, _ = io.CopyN(io.Discard, c.Conn, lingerMax)
			}
		}
	}
	return c.Conn.Close()
}
