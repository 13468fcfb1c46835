package ids

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease holds a cloud node id leased from Redis. The key is renewed every
// TTL/3; if renewal fails for longer than the TTL the lease is lost and the
// node must stop minting ids (Lost is closed). An expired id is reclaimed by
// another node only after it stays free for the TTL plus a safety delay, so
// two nodes never mint with the same id even when one is paused.
type Lease struct {
	rdb    redis.UniversalClient
	key    string
	token  string
	node   int64
	ttl    time.Duration
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// renewScript extends the lease only if we still own it.
var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1])
  redis.call("SET", KEYS[2], "1", "PX", ARGV[2])
  return 1
end
return 0`)

// LeaseCloudNode leases the first free cloud node id under prefix (e.g.
// "scsync:") with the given TTL and keeps it renewed until ctx ends or
// Release is called.
func LeaseCloudNode(ctx context.Context, rdb redis.UniversalClient, prefix string, ttl time.Duration, log *slog.Logger) (*Lease, error) {
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	for n := int64(MinCloudNode); n <= MaxCloudNode; n++ {
		key := fmt.Sprintf("%snode:%d", prefix, n)
		// A recently released or expired id stays quarantined for a while.
		cool, err := rdb.Exists(ctx, key+":cooldown").Result()
		if err != nil {
			return nil, fmt.Errorf("ids: lease node: %w", err)
		}
		if cool > 0 {
			continue
		}
		ok, err := rdb.SetNX(ctx, key, token, ttl).Result()
		if err != nil {
			return nil, fmt.Errorf("ids: lease node: %w", err)
		}
		if !ok {
			continue
		}
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		l := &Lease{rdb: rdb, key: key, token: token, node: n, ttl: ttl, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
		go l.renew(rctx, log)
		go func() {
			select {
			case <-ctx.Done():
				cancel()
			case <-rctx.Done():
			}
		}()
		return l, nil
	}
	return nil, ErrNoFreeNode
}

// Node returns the leased node id.
func (l *Lease) Node() int64 { return l.node }

// Lost is closed when the lease could not be renewed in time.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

func (l *Lease) renew(ctx context.Context, log *slog.Logger) {
	defer close(l.done)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := renewScript.Run(ctx, l.rdb, []string{l.key}, l.token, l.ttl.Milliseconds()).Int()
		if err == nil && n == 1 {
			lastOK = time.Now()
			continue
		}
		if err == nil || time.Since(lastOK) > l.ttl-l.ttl/6 {
			if log != nil {
				log.Error("node id lease lost", "node", l.node, "err", err)
			}
			close(l.lost)
			return
		}
		if log != nil {
			log.Warn("node id lease renewal failed", "node", l.node, "err", err)
		}
	}
}

// Release gives the id back; it stays quarantined for the TTL before another
// node may take it.
func (l *Lease) Release(ctx context.Context) error {
	l.cancel()
	<-l.done
	if err := releaseScript.Run(ctx, l.rdb, []string{l.key, l.key + ":cooldown"}, l.token, l.ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("ids: release node %d: %w", l.node, err)
	}
	return nil
}
