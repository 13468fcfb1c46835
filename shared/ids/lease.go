package ids

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease holds a cloud node id leased from Redis. The key is renewed every
// TTL/3; if renewal fails for longer than the TTL the lease is lost and the
// node must stop minting ids (Lost is closed). The id stays quarantined for
// the TTL plus LeaseOptions.Quarantine after its last lease or renewal (and
// for the quarantine after a release), so an id whose holder died, paused or
// lost Redis is not handed to another node while the holder may still mint
// with it.
type Lease struct {
	rdb    redis.UniversalClient
	key    string
	token  string
	node   int64
	ttl    time.Duration
	quar   time.Duration
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// LeaseOptions configure LeaseCloudNode.
type LeaseOptions struct {
	// Prefix is the key prefix (e.g. "scsync:"); the lease of id n is
	// <prefix>node:<n>, its quarantine <prefix>node:<n>:cooldown (the same
	// scheme as lockd's node leases, which may share the prefix).
	Prefix string
	// TTL is the lease time to live (default 30s).
	TTL time.Duration
	// Quarantine is how long an id stays unleasable after its lease ended
	// (default: the TTL).
	Quarantine time.Duration
	// Replicas, when above 0, is how many Redis replicas must hold a new
	// lease (WAIT) before it is used. With Sentinel, a lease the promoted
	// replica never saw could be taken by another node after a failover
	// while its holder mints with it; such a lease is given back and
	// LeaseCloudNode fails with ErrNotReplicated.
	Replicas int
	// ReplicaTimeout bounds the wait for the replicas (default 5s).
	ReplicaTimeout time.Duration
}

// leaseScript takes the lowest id with neither a lease nor a quarantine.
// KEYS none. ARGV prefix, min, max, token, ttl ms, ttl+quarantine ms.
// Returns the id, or 0 when none is free.
var leaseScript = redis.NewScript(`
for n = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local key = ARGV[1] .. 'node:' .. string.format('%d', n)
  if redis.call('EXISTS', key, key .. ':cooldown') == 0 then
    redis.call('SET', key, ARGV[4], 'PX', ARGV[5])
    redis.call('SET', key .. ':cooldown', '1', 'PX', ARGV[6])
    return n
  end
end
return 0`)

// renewScript extends the lease and its quarantine only if we still own it.
// KEYS lease, cooldown. ARGV token, ttl ms, ttl+quarantine ms.
var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("SET", KEYS[2], "1", "PX", ARGV[3])
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// releaseScript ends the lease; the id stays quarantined.
// KEYS lease, cooldown. ARGV token, quarantine ms.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1])
  redis.call("SET", KEYS[2], "1", "PX", ARGV[2])
  return 1
end
return 0`)

// LeaseCloudNode leases the first free cloud node id and keeps it renewed
// until ctx ends or Release is called.
func LeaseCloudNode(ctx context.Context, rdb redis.UniversalClient, opts LeaseOptions, log *slog.Logger) (*Lease, error) {
	if opts.TTL <= 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.Quarantine <= 0 {
		opts.Quarantine = opts.TTL
	}
	if opts.ReplicaTimeout <= 0 {
		opts.ReplicaTimeout = 5 * time.Second
	}
	// WAIT blocks on the connection: it must answer before the client's
	// read timeout (go-redis: 3 s unless set), or the whole pipeline fails
	// with an i/o timeout instead of a count of replicas.
	if c, ok := rdb.(interface{ Options() *redis.Options }); ok {
		rt := c.Options().ReadTimeout
		if rt == 0 {
			rt = 3 * time.Second
		}
		if rt > 0 && opts.ReplicaTimeout > rt*3/4 {
			opts.ReplicaTimeout = rt * 3 / 4
		}
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	// WAIT counts the replicas that have this connection's writes: the
	// script and WAIT go down one connection in one pipeline.
	pipe := rdb.Pipeline()
	got := leaseScript.Eval(ctx, pipe, nil, opts.Prefix, MinCloudNode, MaxCloudNode, token,
		opts.TTL.Milliseconds(), (opts.TTL + opts.Quarantine).Milliseconds())
	var wait *redis.Cmd
	if opts.Replicas > 0 {
		wait = pipe.Do(ctx, "WAIT", opts.Replicas, opts.ReplicaTimeout.Milliseconds())
	}
	_, execErr := pipe.Exec(ctx)
	n, err := got.Int64()
	if err != nil {
		if wait != nil && isTimeout(err) {
			// The replicas did not answer in time; whatever the script
			// leased expires with its TTL.
			return nil, fmt.Errorf("%w: %w", ErrNotReplicated, err)
		}
		return nil, fmt.Errorf("ids: lease node: %w", err)
	}
	if n == 0 {
		return nil, ErrNoFreeNode
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &Lease{rdb: rdb, key: fmt.Sprintf("%snode:%d", opts.Prefix, n), token: token, node: n,
		ttl: opts.TTL, quar: opts.Quarantine, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	acks, waitErr := int64(0), execErr
	if wait != nil && waitErr == nil {
		acks, waitErr = wait.Int64()
	}
	if wait != nil && (waitErr != nil || acks < int64(opts.Replicas)) {
		// Leased but not known to survive a failover: give it back.
		close(l.done)
		if err := l.Release(context.WithoutCancel(ctx)); err != nil && log != nil {
			log.Warn("node id release failed", "node", n, "err", err)
		}
		if waitErr != nil {
			return nil, fmt.Errorf("%w: node %d: %w", ErrNotReplicated, n, waitErr)
		}
		return nil, fmt.Errorf("%w: node %d reached %d of %d replicas", ErrNotReplicated, n, acks, opts.Replicas)
	}
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
		n, err := renewScript.Run(ctx, l.rdb, []string{l.key, l.key + ":cooldown"}, l.token,
			l.ttl.Milliseconds(), (l.ttl + l.quar).Milliseconds()).Int()
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

// Release gives the id back; it stays quarantined before another node may
// take it.
func (l *Lease) Release(ctx context.Context) error {
	l.cancel()
	<-l.done
	if err := releaseScript.Run(ctx, l.rdb, []string{l.key, l.key + ":cooldown"}, l.token, l.quar.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("ids: release node %d: %w", l.node, err)
	}
	return nil
}

// isTimeout tells a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
