//go:build !(aix || darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd || solaris)

package client

import "net"

// canCheckConns says that alive cannot look at the socket here (Windows):
// a kept connection that the server or a load balancer closed would fail
// the next request sent on it, so a Client does not use the inline
// transport.
const canCheckConns = false

func alive(net.Conn) bool { return true }
