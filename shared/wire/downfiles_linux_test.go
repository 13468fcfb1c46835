package wire

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

// TestDownQueuesHoldingMessagesKeepNoFiles: a clinic's down queue holding
// the cloud's (transient) down messages keeps no file open on the broker.
// After a burst and a cloud takeover at 10,000 clinics every down queue held
// a message; as persistent messages in classic v2 queues that was 2 open
// files per queue (measured on RabbitMQ 3.10: 3,000 queues +6,000 files),
// and the broker ran out of descriptors. Transient: +0.
func TestDownQueuesHoldingMessagesKeepNoFiles(t *testing.T) {
	t.Parallel()
	r := testenv.StartPrivateRabbit(t)
	const clinics = 300
	topo := BaseTopology()
	var keys []string
	for i := range clinics {
		c := ids.ID(1_000_000 + i)
		topo.Queues = append(topo.Queues, DownQueueSpec(c))
		topo.Bindings = append(topo.Bindings, amqpx.Binding{Queue: DownQueue(c), Exchange: DownExchange, Key: DownKey(c)})
		keys = append(keys, DownKey(c))
	}
	c, err := amqpx.New(amqpx.Config{URL: r.URL, ConnectionName: t.Name()}, topo, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, c.Ready)

	before := brokerFiles(t, r.ProcessGroup())
	if before == 0 {
		t.Fatal("counted no open files of the broker: the count does not work here")
	}
	for _, k := range keys {
		if err := c.Publish(t.Context(), DownExchange, k, amqpx.Message{Body: []byte(`{"changes":[]}`), Transient: true}); err != nil {
			t.Fatalf("Publish(%s) = %v", k, err)
		}
	}
	after := brokerFiles(t, r.ProcessGroup())
	t.Logf("broker open files: %d before, %d with %d down queues each holding a transient message", before, after, clinics)
	if after-before > clinics/20 {
		t.Errorf("broker opened %d files for %d down queues holding a message; want none per queue", after-before, clinics)
	}
	// For contrast (not checked: it depends on the broker's version), the
	// same with persistent messages.
	for _, k := range keys[:clinics/3] {
		if err := c.Publish(t.Context(), DownExchange, k, amqpx.Message{Body: []byte(`{"changes":[]}`)}); err != nil {
			t.Fatalf("Publish(%s) = %v", k, err)
		}
	}
	t.Logf("broker open files after a persistent message into %d of them: %d", clinics/3, brokerFiles(t, r.ProcessGroup()))
}

// brokerFiles counts the open file descriptors of the processes in group
// pgid.
func brokerFiles(t *testing.T, pgid int) int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join(p, "fd"))
		n += len(fds)
	}
	return n
}
