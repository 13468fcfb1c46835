package replicate

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkAcceptShard measures how fast one node drains an up shard that
// holds a backlog, accepting each message alone (batch 1, as before
// batching) or together (the default): "takeover" is one single-change
// message from each of 2,000 clinics (what a node finds after another
// died, or a burst), "backfill" one clinic's 100 messages of 200 changes.
// It reports changes/s; b.N is not used (each run drains one backlog).
//
//	go test ./internal/replicate -run '^$' -bench AcceptShard -benchtime 1x
func BenchmarkAcceptShard(b *testing.B) {
	for _, sc := range []struct {
		name              string
		clinics, messages int
		changes           int // per message
	}{
		{"takeover", 2000, 1, 1},
		{"backfill", 1, 100, 200},
	} {
		for _, batch := range []int{1, DefaultAcceptBatch} {
			b.Run(fmt.Sprintf("%s/batch=%d", sc.name, batch), func(b *testing.B) {
				for range b.N {
					rate := drainShard(b, sc.clinics, sc.messages, sc.changes, batch)
					b.ReportMetric(rate, "changes/s")
				}
			})
		}
	}
}

// drainShard fills a shard with the backlog, starts a node and returns the
// rate at which it accepted all of it.
func drainShard(b *testing.B, clinics, messages, changes, batch int) float64 {
	b.Helper()
	ctx := context.Background()
	amqpURL, _ := testenv.RabbitVhost(b)
	st, err := store.Open(ctx, testenv.PostgresDB(b), &seqIDs{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	base := ids.ID(7_700_000_000_000)
	var cs []ids.ID
	for i := range clinics {
		c := base + ids.ID(i)
		if _, _, err := st.CreateClinic(ctx, c, fmt.Sprintf("clinic %d", c), store.PolicyLocalWins); err != nil {
			b.Fatal(err)
		}
		cs = append(cs, c)
	}
	// Set up as enrollment would (one shard, every clinic's key bound to
	// it), so the node has no topology work of its own.
	if err := st.DB().Exec("UPDATE clinics SET topology = ?", TopologyVersion).Error; err != nil {
		b.Fatal(err)
	}
	pub, err := amqpx.New(amqpx.Config{URL: amqpURL, ConnectionName: "bench"}, wire.BaseTopology(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	pctx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	go func() { _ = pub.Run(pctx) }()
	topo := wire.UpShardsTopology(1)
	topo.Bindings = append(topo.Bindings, amqpx.Binding{Queue: wire.UpShardQueue(0), Exchange: wire.UpExchange, Key: "clinic.*"})
	if err := pub.Declare(ctx, topo); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	work := make(chan ids.ID)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				for m := range messages {
					es := make([]wire.Envelope, changes)
					for k := range es {
						es[k] = edit(c, ids.ID(m*changes+k+1), 0)
						es[k].ChangeID = ids.ID(m*changes + k + 1)
					}
					msgs, err := wire.EncodeAll(wire.NewBatch(c, es...))
					for _, m := range msgs {
						if err == nil {
							err = pub.Publish(ctx, wire.UpExchange, wire.UpKey(c), amqpx.Message{Body: m.Body, ContentEncoding: m.ContentEncoding,
								ContentType: wire.ContentType, Type: string(wire.TypeChange)})
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for _, c := range cs {
		work <- c
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	total := int64(clinics * messages * changes)

	b.ResetTimer()
	start := time.Now()
	n := startBenchNode(b, amqpURL, st, batch)
	defer n()
	testenv.CheckFor(b, 10*time.Minute, 20*time.Millisecond, func() error {
		var sum int64
		if err := st.DB().Raw("SELECT COALESCE(sum(last_seq), 0) FROM clinics").Scan(&sum).Error; err != nil {
			return err
		}
		if sum < total {
			return fmt.Errorf("%d of %d accepted", sum, total)
		}
		return nil
	})
	took := time.Since(start)
	b.StopTimer()
	return float64(total) / took.Seconds()
}

// startBenchNode runs a node on one shard accepting batch messages at a
// time, and returns its stop.
func startBenchNode(b *testing.B, amqpURL string, st *store.Store, batch int) func() {
	b.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SCSYNC_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := amqpx.New(amqpx.Config{URL: amqpURL, ConnectionName: "node"}, wire.BaseTopology(), log, nil)
	if err != nil {
		b.Fatal(err)
	}
	r := New(st, c, log, nil)
	r.SetShards(1)
	r.SetAcceptBatch(batch)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	go func() { defer wg.Done(); _ = r.Run(ctx) }()
	return func() { cancel(); wg.Wait() }
}
