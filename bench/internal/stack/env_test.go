package stack

import (
	"log/slog"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Env.Vhost makes a vhost guest can use, through the management API (so a
// user who may not run rabbitmqctl can run the benchmarks), and its cleanup
// deletes it.
func TestVhost(t *testing.T) {
	e := FromEnvironment(slog.New(slog.DiscardHandler))
	var cl Cleanup
	url, err := e.Vhost(t.Context(), &cl, "bench_test")
	if err != nil {
		cl.Close()
		t.Fatalf("Vhost() = %v", err)
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		cl.Close()
		t.Fatalf("dial the new vhost: %v", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		_, err = ch.QueueDeclare("q", false, true, false, false, nil)
	}
	_ = conn.Close()
	if err != nil {
		cl.Close()
		t.Fatalf("declare a queue in the new vhost: %v", err)
	}
	cl.Close()
	if c, err := amqp.Dial(url); err == nil {
		_ = c.Close()
		t.Errorf("the vhost still accepts connections after cleanup")
	}
}
