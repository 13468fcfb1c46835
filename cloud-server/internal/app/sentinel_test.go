package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/redisx"
	"github.com/scsync/scsync/shared/testenv"
)

// TestSentinelFailover: sc-cloud nodes on Redis Sentinel keep their node
// ids through a failover of the Redis master and keep serving; no two live
// nodes ever mint with the same node id; a node that starts while no
// replica could keep its lease is refused, and starts once one is back.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	rig := testenv.StartPrivateSentinel(t)
	cfg := cloudConfig(t)
	cfg.Redis.Addr = ""
	cfg.Redis.Sentinel = redisx.Sentinel{Addrs: rig.Sentinels, Master: testenv.SentinelMaster}
	cfg.Redis.LeaseTTL = 20 * time.Second // renewed every 6.7s: outlives the failover
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a Sentinel config without redis.addr: %v", err)
	}
	ctx := context.Background()
	a, b := startNode(t, cfg), startNode(t, cfg)
	nodeA, nodeB := mintedBy(t, a), mintedBy(t, b)
	if nodeA == nodeB || !ids.ValidCloudNode(nodeA) || !ids.ValidCloudNode(nodeB) {
		t.Fatalf("two live nodes mint with node ids %d and %d, want two distinct cloud node ids", nodeA, nodeB)
	}
	// A node uses its lease only once the replica has it.
	replica := redis.NewClient(&redis.Options{Addr: rig.Replica})
	defer func() { _ = replica.Close() }()
	for _, n := range []int64{nodeA, nodeB} {
		if got, err := replica.Exists(ctx, leaseKey(cfg.Redis.Prefix, n)).Result(); err != nil || got != 1 {
			t.Fatalf("lease of node %d on the replica: EXISTS = %d, %v; want 1", n, got, err)
		}
	}

	killed := time.Now()
	rig.KillMaster()
	for _, r := range []*running{a, b} {
		testenv.CheckFor(t, 90*time.Second, 200*time.Millisecond, func() error {
			if got := do(t, "GET", r.base+"/readyz", "", nil); got.status != 200 {
				return fmt.Errorf("readyz of %s = %d %s", r.base, got.status, got.body)
			}
			return nil
		})
	}
	rig.WaitPromoted(60 * time.Second)
	t.Logf("both nodes ready again %s after the master was killed", time.Since(killed).Round(time.Millisecond))

	// One lease TTL after the kill, a lease is there only if its node
	// renewed it on the new master.
	testenv.CheckFor(t, 2*cfg.Redis.LeaseTTL, 500*time.Millisecond, func() error {
		if d := time.Since(killed); d < cfg.Redis.LeaseTTL+time.Second {
			return fmt.Errorf("only %s since the failover", d)
		}
		return nil
	})
	for _, c := range []struct {
		r    *running
		node int64
	}{{a, nodeA}, {b, nodeB}} {
		select {
		case <-c.r.exited:
			t.Fatalf("node %d stopped after the failover: %v", c.node, c.r.err)
		default:
		}
		if ttl, err := replica.PTTL(ctx, leaseKey(cfg.Redis.Prefix, c.node)).Result(); err != nil || ttl <= 0 {
			t.Errorf("lease of node %d on the new master %s after one TTL: PTTL %v, %v; want renewed", c.node, rig.Replica, ttl, err)
		}
		if got := mintedBy(t, c.r); got != c.node {
			t.Errorf("node %d mints with node id %d after the failover, want its own", c.node, got)
		}
	}

	// The new master has no replica: a node starting now could lose its
	// lease in the next failover, so it refuses to start.
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := run(rctx, cfg, slog.New(slog.DiscardHandler), nil, nil)
	cancel()
	if !errors.Is(err, ids.ErrNotReplicated) {
		t.Fatalf("start without a Redis replica = %v, want ids.ErrNotReplicated", err)
	}
	// With the old master back as a replica, it starts with an id of its own.
	rig.RestartMaster(90 * time.Second)
	c := startNode(t, cfg)
	if nodeC := mintedBy(t, c); nodeC == nodeA || nodeC == nodeB || !ids.ValidCloudNode(nodeC) {
		t.Errorf("node started after the failover mints with node id %d; nodes before hold %d and %d", nodeC, nodeA, nodeB)
	}
	for _, r := range []*running{a, b, c} {
		testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			if got := do(t, "GET", r.base+"/readyz", "", nil); got.status != 200 {
				return fmt.Errorf("readyz of %s after the failover = %d %s", r.base, got.status, got.body)
			}
			return nil
		})
	}
}

// mintedBy returns the node id in an id the node just minted (a new
// clinic's).
func mintedBy(t *testing.T, r *running) int64 {
	t.Helper()
	return newClinic(t, r.base, testenv.Name("sentinel")).ID.Node()
}

func leaseKey(prefix string, node int64) string {
	return prefix + "node:" + strconv.FormatInt(node, 10)
}
