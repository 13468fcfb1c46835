//go:build unix

package testenv

import (
	"sync"
	"syscall"
)

// brokerFiles is the open-file limit a private RabbitMQ node gets. A node
// holds files open for each classic queue with messages on disk: at
// 10,000 clinics a burst of down messages used more than this machine's
// 20,000 (emfile; queues crashed in a loop and the node stopped completing
// AMQP handshakes, so a restarted cloud node never came back). RabbitMQ's
// own packages give the server 65,536; production brokers need about two
// per queue with messages, plus connections (docs/cloud-ops.md).
const brokerFiles = 1 << 20

var raiseOnce sync.Once

// raiseFileLimit lifts this process's open-file limit, which the brokers
// it starts inherit, to brokerFiles: best effort (only root can raise the
// hard limit; others get their hard limit).
func raiseFileLimit() {
	raiseOnce.Do(func() {
		var l syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur >= brokerFiles {
			return
		}
		want := syscall.Rlimit{Cur: brokerFiles, Max: max(l.Max, brokerFiles)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
			want = syscall.Rlimit{Cur: l.Max, Max: l.Max}
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
		}
	})
}
