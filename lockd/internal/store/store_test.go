package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

const (
	nodeTTL    = time.Second
	quarantine = time.Second
)

// newStore returns a Store over the shared Redis under a prefix private to
// the test. With ready, node leasing starts at once (the epoch guard is
// satisfied), as it would on a Redis that has served leases before.
func newStore(t *testing.T, ready bool) (*Store, *redis.Client, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	if ready {
		if err := rdb.Set(context.Background(), prefix+"nodes:epoch", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return New(rdb, Options{Prefix: prefix, NodePrefix: prefix, Timeout: 2 * time.Second, NodeTTL: nodeTTL, Quarantine: quarantine}), rdb, prefix
}

func acquireReq(clinic ids.ID, resource, user string) lockapi.AcquireRequest {
	return lockapi.AcquireRequest{
		Resource: resource,
		Holder:   lockapi.Holder{Clinic: clinic, Side: lockapi.SideLocal, Client: "ws-" + user, User: user},
		Version:  "2.0",
	}
}

func TestLockLifecycle(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false)
	ctx := context.Background()

	before := time.Now().Add(-time.Second)
	g, err := s.Acquire(ctx, acquireReq(42, "patient/7", "anna"), 10*time.Second)
	if err != nil {
		t.Fatalf("Acquire = %v, want a grant", err)
	}
	if g.Token <= 0 || len(g.Secret) != 64 || g.Since.Before(before) || g.ExpiresAt.Sub(g.Since) != 10*time.Second || g.Version != "2.0" {
		t.Fatalf("Acquire = %+v, want token > 0, a secret, a 10s lease", g)
	}

	// Someone else is denied and told who holds it.
	_, err = s.Acquire(ctx, acquireReq(42, "patient/7", "bob"), 10*time.Second)
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) {
		t.Fatalf("second Acquire err = %v, want *HeldError", err)
	}
	if held.Lock.Holder.User != "anna" || held.Lock.Token != g.Token || !held.Lock.ExpiresAt.Equal(g.ExpiresAt) || !held.Lock.Since.Equal(g.Since) {
		t.Errorf("HeldError.Lock = %+v, want anna's lock %+v", held.Lock, g.Lock)
	}
	// The same holder asking again is denied too: only the secret proves a grant.
	if _, err := s.Acquire(ctx, acquireReq(42, "patient/7", "anna"), 10*time.Second); !errors.Is(err, ErrHeld) {
		t.Errorf("re-Acquire by the holder err = %v, want ErrHeld", err)
	}
	// Another clinic's resource of the same name is independent.
	if _, err := s.Acquire(ctx, acquireReq(43, "patient/7", "carl"), 10*time.Second); err != nil {
		t.Errorf("Acquire of clinic 43's patient/7 = %v, want a grant", err)
	}

	st, err := s.Inspect(ctx, 42, "patient/7")
	if err != nil || st.Holder != g.Holder || st.Token != g.Token || st.LastToken != g.Token || st.Version != "2.0" {
		t.Errorf("Inspect = %+v, %v, want anna's lock", st, err)
	}

	r, err := s.Renew(ctx, 42, "patient/7", g.Token, g.Secret, time.Minute)
	if err != nil || !r.ExpiresAt.After(g.ExpiresAt) {
		t.Errorf("Renew = %+v, %v, want a later expiry than %v", r, err, g.ExpiresAt)
	}
	if err := s.Release(ctx, 42, "patient/7", g.Token, g.Secret, ""); err != nil {
		t.Fatalf("Release = %v", err)
	}
	st, err = s.Inspect(ctx, 42, "patient/7")
	if !errors.Is(err, ErrNotHeld) || st.LastToken != g.Token {
		t.Errorf("Inspect after release = %+v, %v, want ErrNotHeld with last token %d", st, err, g.Token)
	}
	if err := s.Release(ctx, 42, "patient/7", g.Token, g.Secret, ""); !errors.Is(err, ErrExpired) {
		t.Errorf("second Release err = %v, want ErrExpired", err)
	}
	if _, err := s.Renew(ctx, 42, "patient/7", g.Token, g.Secret, time.Minute); !errors.Is(err, ErrExpired) {
		t.Errorf("Renew after release err = %v, want ErrExpired", err)
	}
}

// flip changes the first hex digit of s.
func flip(s string) string {
	if s[0] == '0' {
		return "1" + s[1:]
	}
	return "0" + s[1:]
}

func TestWrongSecretOrToken(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false)
	ctx := context.Background()
	g, err := s.Acquire(ctx, acquireReq(42, "study/1", "anna"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		token  int64
		secret string
		want   error
	}{
		{"wrong secret", g.Token, flip(g.Secret), ErrNotYours},
		{"empty secret", g.Token, "", ErrNotYours},
		{"higher token", g.Token + 1, g.Secret, ErrNotYours},
		{"older token", g.Token - 1, g.Secret, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Renew(ctx, 42, "study/1", tt.token, tt.secret, time.Minute); !errors.Is(err, tt.want) {
				t.Errorf("Renew(%s) err = %v, want %v", tt.name, err, tt.want)
			}
			if err := s.Release(ctx, 42, "study/1", tt.token, tt.secret, ""); !errors.Is(err, tt.want) {
				t.Errorf("Release(%s) err = %v, want %v", tt.name, err, tt.want)
			}
		})
	}
	// The rightful holder still holds it.
	if st, err := s.Inspect(ctx, 42, "study/1"); err != nil || st.Token != g.Token {
		t.Fatalf("Inspect = %+v, %v, want the lock intact", st, err)
	}
}

func TestFencingTokensOnlyGrow(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := newStore(t, false)
	ctx := context.Background()
	const res = "patient/9"
	var last int64
	grant := func(step string, ttl time.Duration) lockapi.Grant {
		t.Helper()
		g, err := s.Acquire(ctx, acquireReq(42, res, "anna"), ttl)
		if err != nil {
			t.Fatalf("%s: Acquire = %v", step, err)
		}
		if g.Token <= last {
			t.Fatalf("%s: token %d, want > %d", step, g.Token, last)
		}
		last = g.Token
		return g
	}

	g := grant("first", time.Minute)
	if err := s.Release(ctx, 42, res, g.Token, g.Secret, ""); err != nil {
		t.Fatal(err)
	}
	grant("after release", time.Minute)
	if _, err := s.ForceRelease(ctx, 42, res); err != nil {
		t.Fatal(err)
	}
	old := grant("after force-release", 200*time.Millisecond)
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, err := s.Inspect(ctx, 42, res); !errors.Is(err, ErrNotHeld) {
			return fmt.Errorf("lock still held (err %w)", err)
		}
		return nil
	})
	grant("after expiry", time.Minute)
	// The holder whose lock expired cannot renew or release the new grant.
	if _, err := s.Renew(ctx, 42, res, old.Token, old.Secret, time.Minute); !errors.Is(err, ErrExpired) {
		t.Errorf("Renew of the expired grant err = %v, want ErrExpired", err)
	}

	// Redis loses every key (a restart without persistence): tokens still
	// never go back, because they are floored at Redis's clock.
	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys under %s: %v %v", prefix, keys, err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	grant("after data loss", time.Minute)
}

func TestConcurrentAcquireOneWinner(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false)
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Acquire(context.Background(), acquireReq(42, "image/5", fmt.Sprint("user", i)), time.Minute)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrHeld):
			t.Errorf("Acquire err = %v, want nil or ErrHeld", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent acquires won, want exactly 1", won, n)
	}
}

func TestForceRelease(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false)
	ctx := context.Background()
	if _, err := s.ForceRelease(ctx, 42, "report/1"); !errors.Is(err, ErrNotHeld) {
		t.Errorf("ForceRelease of a free lock err = %v, want ErrNotHeld", err)
	}
	g, err := s.Acquire(ctx, acquireReq(42, "report/1", "anna"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.ForceRelease(ctx, 42, "report/1")
	if err != nil || l.Token != g.Token || l.Holder.User != "anna" {
		t.Fatalf("ForceRelease = %+v, %v, want anna's lock", l, err)
	}
	if err := s.Release(ctx, 42, "report/1", g.Token, g.Secret, ""); !errors.Is(err, ErrExpired) {
		t.Errorf("Release after force-release err = %v, want ErrExpired", err)
	}
}

func TestNodeLeasesUnique(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, true)
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	leases := make([]lockapi.NodeLease, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = s.LeaseNode(ctx, fmt.Sprint("node", i))
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatalf("LeaseNode = %v", errs[i])
		}
		if !ids.ValidCloudNode(l.Node) || seen[l.Node] {
			t.Fatalf("lease %d: node %d is a duplicate or outside the cloud range", i, l.Node)
		}
		seen[l.Node] = true
	}

	a := leases[0]
	if _, err := s.RenewNode(ctx, a.Node, "bad"+a.Secret); !errors.Is(err, ErrNotYours) {
		t.Errorf("RenewNode with a wrong secret err = %v, want ErrNotYours", err)
	}
	if r, err := s.RenewNode(ctx, a.Node, a.Secret); err != nil || r.ExpiresAt.Before(a.ExpiresAt) {
		t.Errorf("RenewNode = %+v, %v, want a later expiry", r, err)
	}
	if _, err := s.ReleaseNode(ctx, a.Node, "bad"+a.Secret); !errors.Is(err, ErrNotYours) {
		t.Errorf("ReleaseNode with a wrong secret err = %v, want ErrNotYours", err)
	}
}

// leaseUntil leases ids until it gets want and returns when that happened.
func leaseUntil(t *testing.T, s *Store, want int64) time.Time {
	t.Helper()
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		l, err := s.LeaseNode(context.Background(), "poll")
		if err != nil {
			return err
		}
		if l.Node != want {
			return fmt.Errorf("leased %d, waiting for %d to leave quarantine", l.Node, want)
		}
		return nil
	})
	return time.Now()
}

func TestNodeQuarantineAfterRelease(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, true)
	ctx := context.Background()
	a, err := s.LeaseNode(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := s.ReleaseNode(ctx, a.Node, a.Secret)
	released := time.Now()
	if err != nil || time.Until(rel.QuarantinedUntil) < quarantine/2 {
		t.Fatalf("ReleaseNode = %+v, %v, want quarantine about %s", rel, err, quarantine)
	}
	if _, err := s.RenewNode(ctx, a.Node, a.Secret); !errors.Is(err, ErrExpired) {
		t.Errorf("RenewNode after release err = %v, want ErrExpired", err)
	}
	if b, err := s.LeaseNode(ctx, "b"); err != nil || b.Node == a.Node {
		t.Fatalf("LeaseNode right after release = %d, %v, want an id other than %d", b.Node, err, a.Node)
	}
	// a is the lowest id, so it comes back as soon as its quarantine ends.
	if waited := leaseUntil(t, s, a.Node).Sub(released); waited < quarantine-50*time.Millisecond {
		t.Errorf("released id leased again after %s, want ≥ quarantine %s", waited, quarantine)
	}
}

func TestNodeQuarantineAfterExpiry(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := newStore(t, true)
	ctx := context.Background()
	a, err := s.LeaseNode(ctx, "a")
	leased := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	// The holder dies: no renewal, the lease expires.
	key := fmt.Sprintf("%snode:%d", prefix, a.Node)
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
			return fmt.Errorf("lease of %d not expired yet (%w)", a.Node, err)
		}
		return nil
	})
	if _, err := s.RenewNode(ctx, a.Node, a.Secret); !errors.Is(err, ErrExpired) {
		t.Errorf("RenewNode after expiry err = %v, want ErrExpired", err)
	}
	if b, err := s.LeaseNode(ctx, "b"); err != nil || b.Node == a.Node {
		t.Fatalf("LeaseNode right after expiry = %d, %v, want an id other than %d", b.Node, err, a.Node)
	}
	if waited := leaseUntil(t, s, a.Node).Sub(leased); waited < nodeTTL+quarantine-50*time.Millisecond {
		t.Errorf("expired id leased again after %s, want ≥ ttl+quarantine %s", waited, nodeTTL+quarantine)
	}
}

func TestNodeLeaseWaitsAfterDataLoss(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false) // no epoch: as after a Redis data loss
	ctx := context.Background()
	start := time.Now()
	_, err := s.LeaseNode(ctx, "early")
	var nf *NoFreeNodeError
	if !errors.As(err, &nf) || nf.RetryAfter <= nodeTTL || nf.RetryAfter > nodeTTL+quarantine {
		t.Fatalf("LeaseNode on a fresh Redis err = %v, want ErrNoFreeNode for about ttl+quarantine", err)
	}
	testenv.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		_, err := s.LeaseNode(ctx, "later")
		return err
	})
	if waited := time.Since(start); waited < nodeTTL+quarantine-100*time.Millisecond {
		t.Errorf("first lease after %s, want after ttl+quarantine %s", waited, nodeTTL+quarantine)
	}
}

// TestNodeLeasesCoexistWithSharedIDs: lockd's node leases and those taken
// directly with shared/ids.LeaseCloudNode under the same prefix never give
// out the same id.
func TestNodeLeasesCoexistWithSharedIDs(t *testing.T) {
	t.Parallel()
	s, rdb, prefix := newStore(t, true)
	ctx := context.Background()
	direct, err := ids.LeaseCloudNode(ctx, rdb, ids.LeaseOptions{Prefix: prefix, TTL: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = direct.Release(ctx) }()
	l, err := s.LeaseNode(ctx, "via-lockd")
	if err != nil {
		t.Fatal(err)
	}
	if l.Node == direct.Node() {
		t.Fatalf("lockd leased %d, which shared/ids already holds", l.Node)
	}
	if _, err := s.RenewNode(ctx, direct.Node(), l.Secret); !errors.Is(err, ErrNotYours) {
		t.Errorf("RenewNode of the directly leased id err = %v, want ErrNotYours", err)
	}
	direct2, err := ids.LeaseCloudNode(ctx, rdb, ids.LeaseOptions{Prefix: prefix, TTL: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = direct2.Release(ctx) }()
	if direct2.Node() == l.Node {
		t.Fatalf("shared/ids leased %d, which lockd holds", l.Node)
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	s := New(rdb, Options{Prefix: "x:", NodePrefix: "x:", Timeout: time.Second, NodeTTL: nodeTTL, Quarantine: quarantine})
	start := time.Now()
	if _, err := s.Acquire(context.Background(), acquireReq(42, "patient/1", "anna"), time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire with Redis down err = %v, want ErrUnavailable", err)
	}
	if _, err := s.LeaseNode(context.Background(), "n"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("LeaseNode with Redis down err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("failing took %s, want fast", d)
	}
}

// TestSavedVersionHandedOn: a holder that saved releases with the record's
// version; the next grant carries it, so a server whose copy of the record
// is older knows it has not received that save yet.
func TestSavedVersionHandedOn(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false)
	ctx := context.Background()
	g, err := s.Acquire(ctx, acquireReq(42, "study/9", "anna"), 10*time.Second)
	if err != nil || g.SavedVersion != "" {
		t.Fatalf("first Acquire = %+v, %v; want no saved version", g, err)
	}
	if err := s.Release(ctx, 42, "study/9", g.Token, g.Secret, "3.1"); err != nil {
		t.Fatal(err)
	}
	g, err = s.Acquire(ctx, acquireReq(42, "study/9", "bob"), 10*time.Second)
	if err != nil || g.SavedVersion != "3.1" {
		t.Fatalf("Acquire after a saving release = %+v, %v; want saved version 3.1", g, err)
	}
	// A session without saves leaves the last saved version as it was.
	if err := s.Release(ctx, 42, "study/9", g.Token, g.Secret, ""); err != nil {
		t.Fatal(err)
	}
	if g, err = s.Acquire(ctx, acquireReq(42, "study/9", "cleo"), 10*time.Second); err != nil || g.SavedVersion != "3.1" {
		t.Fatalf("Acquire after a release without saves = %+v, %v; want 3.1 still", g, err)
	}
	// Another clinic's record of the same name knows nothing of it.
	if g, err := s.Acquire(ctx, acquireReq(43, "study/9", "dan"), 10*time.Second); err != nil || g.SavedVersion != "" {
		t.Fatalf("other clinic's Acquire = %+v, %v", g, err)
	}
}
