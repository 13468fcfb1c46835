package ids

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

func TestLayout(t *testing.T) {
	if TimeBits+NodeBits+StepBits != 63 {
		t.Fatalf("layout uses %d bits, want 63", TimeBits+NodeBits+StepBits)
	}
	if MaxClinicNode-MinClinicNode+1 < 10000 {
		t.Fatalf("only %d clinic nodes", MaxClinicNode-MinClinicNode+1)
	}
	if MaxCloudNode-MinCloudNode+1 < 1000 {
		t.Fatalf("only %d cloud nodes", MaxCloudNode-MinCloudNode+1)
	}
	if perSec := maxIDsPerMilli * 1000; perSec < 100000 {
		t.Fatalf("%d ids/s per node, want ≥ 100000", perSec)
	}
	g, err := NewGenerator(12345, GeneratorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Millisecond)
	id := g.MustNext()
	if id.Node() != 12345 {
		t.Errorf("Node() = %d, want 12345", id.Node())
	}
	if ts := id.Time(); ts.Before(before.Truncate(time.Millisecond)) || ts.After(time.Now()) {
		t.Errorf("Time() = %v, want about %v", ts, before)
	}
}

func TestNodeRange(t *testing.T) {
	for _, n := range []int64{0, -1, MaxNode + 1} {
		if _, err := NewGenerator(n, GeneratorOptions{}); !errors.Is(err, ErrNodeRange) {
			t.Errorf("NewGenerator(%d) err = %v, want ErrNodeRange", n, err)
		}
	}
	if !ValidClinicNode(1) || ValidClinicNode(MinCloudNode) || !ValidCloudNode(MaxNode) || ValidCloudNode(MaxClinicNode) {
		t.Error("node range predicates disagree with the layout")
	}
}

func TestUniqueConcurrent(t *testing.T) {
	g, err := NewGenerator(7, GeneratorOptions{StateFile: filepath.Join(t.TempDir(), "ids.state")})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 20000
	var mu sync.Mutex
	seen := make(map[ID]bool, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]ID, 0, each)
			for range each {
				id, err := g.Next()
				if err != nil {
					t.Error(err)
					return
				}
				local = append(local, id)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate id %d", id)
				}
				seen[id] = true
			}
		}()
	}
	wg.Wait()
	if len(seen) != workers*each {
		t.Fatalf("%d unique ids, want %d", len(seen), workers*each)
	}
}

func TestClockRollbackGuard(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "ids.state")
	g, err := NewGenerator(3, GeneratorOptions{StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	last := g.MustNext()
	mark, err := readMark(state)
	if err != nil || mark < int64(last)>>timeShift {
		t.Fatalf("persisted mark %d does not cover last id time %d (err %v)", mark, int64(last)>>timeShift, err)
	}

	// A restart with the clock set back by less than MaxWait waits until the
	// clock passes the mark: every new id is newer than every old one.
	skew := 300 * time.Millisecond
	now := func() time.Time { return time.Now().Add(-skew) }
	start := time.Now()
	g2, err := NewGenerator(3, GeneratorOptions{StateFile: state, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < skew {
		t.Errorf("restart waited %v, want ≥ %v", waited, skew)
	}
	if next := g2.MustNext(); next <= last {
		t.Fatalf("after rollback Next() = %d, not after %d", next, last)
	}

	// Far behind: refuse to start with a clear error.
	far := func() time.Time { return time.Now().Add(-time.Hour) }
	if _, err := NewGenerator(3, GeneratorOptions{StateFile: state, Now: far}); !errors.Is(err, ErrClockBehind) {
		t.Fatalf("NewGenerator with clock 1h behind: err = %v, want ErrClockBehind", err)
	}

	if err := os.WriteFile(state, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewGenerator(3, GeneratorOptions{StateFile: state}); err == nil {
		t.Fatal("corrupt state file accepted")
	}
}

func TestJSONAndParse(t *testing.T) {
	id := ID(1<<62 + 5)
	b, err := json.Marshal(struct{ ID ID }{id})
	if err != nil || string(b) != `{"ID":"`+strconv.FormatInt(int64(id), 10)+`"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var back struct{ ID ID }
	if err := json.Unmarshal(b, &back); err != nil || back.ID != id {
		t.Fatalf("Unmarshal = %v, %v", back.ID, err)
	}
	if err := json.Unmarshal([]byte(`{"ID":42}`), &back); err != nil || back.ID != 42 {
		t.Fatalf("Unmarshal number = %v, %v", back.ID, err)
	}
	for _, bad := range []string{"", "x", "-3", "1.5", "99999999999999999999"} {
		if _, err := Parse(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) err = %v, want ErrSyntax", bad, err)
		}
	}
}

func TestLeaseCloudNode(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	a, err := LeaseCloudNode(ctx, rdb, LeaseOptions{Prefix: prefix, TTL: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LeaseCloudNode(ctx, rdb, LeaseOptions{Prefix: prefix, TTL: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Node() == b.Node() || !ValidCloudNode(a.Node()) || !ValidCloudNode(b.Node()) {
		t.Fatalf("leases %d and %d: want two distinct cloud node ids", a.Node(), b.Node())
	}
	// Renewal keeps the lease alive past its TTL.
	testenv.CheckFor(t, 10*time.Second, 200*time.Millisecond, func() error {
		ttl, err := rdb.PTTL(ctx, prefix+"node:"+strconv.FormatInt(a.Node(), 10)).Result()
		if err != nil {
			return err
		}
		if ttl < 2*time.Second {
			return errors.New("not renewed yet")
		}
		return nil
	})
	// A released id is quarantined, not handed straight to the next node.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := LeaseCloudNode(ctx, rdb, LeaseOptions{Prefix: prefix, TTL: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node() == a.Node() {
		t.Fatalf("released node %d reused immediately", a.Node())
	}
	// Someone else taking the key makes the holder notice the loss.
	if err := rdb.Set(ctx, prefix+"node:"+strconv.FormatInt(b.Node(), 10), "intruder", 0).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("lease loss not reported")
	}
	_ = c.Release(ctx)
}

// TestLeaseExpiredStaysQuarantined: an id whose holder stopped renewing
// (died, paused, lost Redis) is not leased again when its key expires, but
// only after the quarantine too, because the holder may still be minting.
func TestLeaseExpiredStaysQuarantined(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	opts := LeaseOptions{Prefix: prefix, TTL: 3 * time.Second, Quarantine: 3 * time.Second}
	hctx, stop := context.WithCancel(context.Background())
	held, err := LeaseCloudNode(hctx, rdb, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop() // renewal stops, nothing is released: as if the holder died
	key := prefix + "node:" + strconv.FormatInt(held.Node(), 10)
	ctx := context.Background()
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
			return fmt.Errorf("lease key still there (%d, %w)", n, err)
		}
		return nil
	})
	next, err := LeaseCloudNode(ctx, rdb, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = next.Release(ctx) }()
	if next.Node() == held.Node() {
		t.Fatalf("LeaseCloudNode right after the lease of %d expired = %d, want another id", held.Node(), next.Node())
	}
	if ttl, err := rdb.PTTL(ctx, key+":cooldown").Result(); err != nil || ttl <= 0 {
		t.Errorf("quarantine of the expired id: PTTL %v, %v; want it still running", ttl, err)
	}
}

// TestLeaseNotReplicated: with Replicas set, a lease that no replica
// acknowledges (a Redis without replicas here) is given back and refused.
func TestLeaseNotReplicated(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	_, err := LeaseCloudNode(ctx, rdb, LeaseOptions{Prefix: prefix, TTL: 3 * time.Second, Replicas: 1, ReplicaTimeout: 200 * time.Millisecond}, nil)
	if !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("LeaseCloudNode(Replicas: 1) on a Redis without replicas err = %v, want ErrNotReplicated", err)
	}
	key := prefix + "node:" + strconv.Itoa(MinCloudNode)
	if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Errorf("the refused lease %s is still held (%d, %v)", key, n, err)
	}
	if n, err := rdb.Exists(ctx, key+":cooldown").Result(); err != nil || n != 1 {
		t.Errorf("the refused id is not quarantined (%d, %v)", n, err)
	}
}
