package brokeradmin

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// On a broker configured as deployments/rabbitmq/rabbitmq.conf does (the
// management plugin's statistics collector off), provisioning creates the
// clinic's topology exactly as enrollment does — its key bound to its up
// shard, its one down queue bound to the down and events exchanges — and a
// user that reads that queue; rotating closes the clinic's open connection
// and revoking refuses its login, both at once.
func TestProvisionWithoutManagementStatistics(t *testing.T) {
	t.Parallel()
	rabbit := testenv.StartPrivateRabbitManagedConf(t, "management_agent.disable_metrics_collector = true")
	ctx := context.Background()
	const shards = 4
	cloud, err := amqpx.New(amqpx.Config{URL: rabbit.URL, ConnectionName: "cloud"}, wire.CloudTopology(shards), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = cloud.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := cloud.DeclareOnce(ctx, amqpx.Topology{Exchanges: []amqpx.Exchange{{Name: events.Exchange, Kind: "topic"}}}); err != nil {
		t.Fatal(err)
	}
	adm, err := New(Config{ManagementURL: rabbit.MgmtURL, User: "guest", Password: "guest", AMQPURL: rabbit.URL, UpShards: shards}, cloud, nil)
	if err != nil {
		t.Fatal(err)
	}
	clinic := ids.ID(387531931844083712)
	cr, err := adm.Provision(ctx, clinic)
	if err != nil {
		t.Fatal(err)
	}
	// The clinic's changes reach its shard; the cloud's changes and events
	// reach its down queue; another clinic's key routes nowhere.
	for _, p := range []struct {
		exchange, key string
		want          error
	}{
		{wire.UpExchange, wire.UpKey(clinic), nil},
		{wire.DownExchange, wire.DownKey(clinic), nil},
		{events.Exchange, events.RoutingKey(clinic, "patient", 1), nil},
		{wire.UpExchange, wire.UpKey(clinic + 1), amqpx.ErrUnroutable},
	} {
		if err := cloud.Publish(ctx, p.exchange, p.key, amqpx.Message{Body: []byte(`{}`)}); !errors.Is(err, p.want) {
			t.Errorf("publish to %s key %s: %v, want %v", p.exchange, p.key, err, p.want)
		}
	}
	for queue, want := range map[string]int{wire.UpShardQueue(wire.Shard(clinic, shards)): 1, wire.DownQueue(clinic): 2} {
		testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			st, ok, err := cloud.Inspect(ctx, queue)
			if err != nil || !ok || st.Messages != want {
				if err != nil {
					return err
				}
				return fmt.Errorf("%s: %+v (exists %v), want %d messages", queue, st, ok, want)
			}
			return nil
		})
	}

	conn, err := amqp.Dial(cr.URL)
	if err != nil {
		t.Fatalf("the clinic's login: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ch.Get(wire.DownQueue(clinic), true); err != nil || !ok {
		t.Fatalf("the clinic reads its down queue: %v %v", ok, err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	rotated, err := adm.Rotate(ctx, clinic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		t.Logf("rotating closed the connection: %v", e)
	case <-time.After(10 * time.Second):
		t.Fatal("rotating left the clinic's connection open")
	}
	c2, err := amqp.Dial(rotated.URL)
	if err != nil {
		t.Fatalf("the rotated login: %v", err)
	}
	closed = c2.NotifyClose(make(chan *amqp.Error, 1))
	if err := adm.Revoke(ctx, clinic); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		t.Logf("revoking closed the connection: %v", e)
	case <-time.After(10 * time.Second):
		t.Fatal("revoking left the clinic's connection open")
	}
	if c, err := amqp.Dial(rotated.URL); err == nil {
		c.Close()
		t.Fatal("a revoked login still connects")
	}
}
