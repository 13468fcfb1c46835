package app

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/redisx"
	"github.com/scsync/scsync/shared/testenv"
)

// TestSentinelFailover: lockd over Sentinel keeps its guarantees when the
// Redis master dies. Every request during the failover either succeeds or is
// refused with 503 unavailable; a lock granted (and replicated) before holds
// on the new master; fencing tokens granted after are higher than every one
// granted before, even for a lock whose last write may have been lost.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	rig := testenv.StartPrivateSentinel(t)
	cfg := testConfig("", "lockd:")
	cfg.Redis.Sentinel = redisx.Sentinel{Addrs: rig.Sentinels, Master: testenv.SentinelMaster}
	cfg.Nodes.TTL = 10 * time.Second // outlives the failover
	cfg.Nodes.Quarantine = 10 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a Sentinel config without redis.addr: %v", err)
	}
	base := start(t, cfg, nil)
	c := client.New(base, serviceToken, nil)
	ctx := context.Background()

	held, err := c.Acquire(ctx, acquireReq(clinicA, "patient/1", "anna", lockapi.SideCloud))
	if err != nil {
		t.Fatal(err)
	}
	// A fresh Redis hands out node ids only after one lease TTL plus the
	// quarantine (it cannot know which ids were in use before): retry.
	var node lockapi.NodeLease
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		node, err = c.LeaseNode(ctx, "node-before")
		return err
	})
	// Make sure the replica has it, as a deployment that runs WAIT (or
	// min-replicas-to-write) would (docs/cloud-ops.md: the replication caveat).
	mc := redis.NewClient(&redis.Options{Addr: rig.Master})
	if n, err := mc.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d, %v", n, err)
	}
	_ = mc.Close()
	// The last grant before the crash may or may not reach the replica.
	maybe, err := c.Acquire(ctx, acquireReq(clinicA, "patient/2", "anna", lockapi.SideCloud))
	if err != nil {
		t.Fatal(err)
	}
	rig.KillMaster()

	// Through the failover: granted, or refused with 503 — nothing else.
	var after lockapi.Grant
	var refused int
	testenv.CheckFor(t, 90*time.Second, 100*time.Millisecond, func() error {
		g, err := c.Acquire(ctx, acquireReq(clinicA, "patient/3", "bob", lockapi.SideCloud))
		if err != nil {
			if !errors.Is(err, client.ErrUnavailable) || status(err) != "503 unavailable" {
				t.Fatalf("acquire during failover: %v, want success or 503 unavailable", err)
			}
			refused++
			return err
		}
		after = g
		return nil
	})
	t.Logf("refused %d acquires during the failover", refused)
	rig.WaitPromoted(60 * time.Second)
	if after.Token <= maybe.Token || after.Token <= held.Token {
		t.Errorf("token after the failover %d, want above %d and %d from before", after.Token, held.Token, maybe.Token)
	}

	// The replicated lock still excludes others and still belongs to its holder.
	if _, err := c.Acquire(ctx, acquireReq(clinicA, "patient/1", "bob", lockapi.SideCloud)); status(err) != "409 held" {
		t.Errorf("acquire of the lock held before the failover: %v, want 409 held", status(err))
	}
	if _, err := c.Renew(ctx, held.RenewRequest(0)); err != nil {
		t.Errorf("renew of the lock held before the failover: %v", err)
	}
	if err := c.Release(ctx, held.ReleaseRequest()); err != nil {
		t.Fatal(err)
	}
	again, err := c.Acquire(ctx, acquireReq(clinicA, "patient/1", "bob", lockapi.SideCloud))
	if err != nil {
		t.Fatal(err)
	}
	if again.Token <= held.Token {
		t.Errorf("patient/1 token %d after the failover, want above %d", again.Token, held.Token)
	}
	// The unreplicated one: either still held, or granted with a higher token.
	g2, err := c.Acquire(ctx, acquireReq(clinicA, "patient/2", "bob", lockapi.SideCloud))
	switch {
	case err == nil && g2.Token <= maybe.Token:
		t.Errorf("patient/2 granted again with token %d, not above %d", g2.Token, maybe.Token)
	case err != nil && status(err) != "409 held":
		t.Errorf("patient/2 after the failover: %v", err)
	}
	// The node lease made before survives and renews; a new lease (once
	// allowed) never gets the same id.
	if _, err := c.RenewNode(ctx, node.Node, node.Secret); err != nil {
		t.Errorf("renew of the node lease made before the failover: %v", err)
	}
	var other lockapi.NodeLease
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		other, err = c.LeaseNode(ctx, "node-after")
		return err
	})
	if other.Node == node.Node {
		t.Errorf("node id %d leased twice", node.Node)
	}
	if code, _ := readyz(t, base); code != 200 {
		t.Errorf("readyz after the failover = %d, want 200", code)
	}
}
