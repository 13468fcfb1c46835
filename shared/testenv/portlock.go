package testenv

import "sync"

// Ports handed out by freePortErr are reserved, so that no two servers of
// the project's tests are given the same port while one of them is still
// booting. A port is only free when asked: a private RabbitMQ binds its
// listener 10–90 s after its port was chosen, and in that window another
// test process (the modules' test runs are parallel) picked the same port
// for a TLS Redis, which then answered the broker's clients with another
// certificate (seen in CI: "x509: ECDSA verification failure" on a TLS
// node whose management API, on its own port, had answered).
//
// Within a process a set holds the ports given; across processes each port
// is a record lock on one byte of a shared lock file (reservePortAcross),
// which the kernel drops when the process ends, however it ends.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// reservePort reserves port for the life of this process: false when this
// process or another one reserved it already.
func reservePort(port int) bool {
	portsMu.Lock()
	defer portsMu.Unlock()
	if portsGiven[port] {
		return false
	}
	if !reservePortAcross(port) {
		return false
	}
	portsGiven[port] = true
	return true
}
