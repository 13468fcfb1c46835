// Package store keeps lockd's state in Redis: locks, fencing counters and
// cloud node id leases. Each state change is one Lua script, so it is atomic
// across any number of lockd replicas; nothing is kept in memory.
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
)

// Options configure a Store.
type Options struct {
	// Prefix starts every lock and fencing key.
	Prefix string
	// NodePrefix starts every node lease key.
	NodePrefix string
	// Timeout bounds each operation, retries included.
	Timeout time.Duration
	// NodeTTL is the life of a node lease without renewal.
	NodeTTL time.Duration
	// Quarantine is how long a node id stays unleasable after its lease
	// ended (released or expired).
	Quarantine time.Duration
}

// Store is lockd's Redis state. It is safe for concurrent use.
type Store struct {
	rdb  redis.UniversalClient
	opts Options
	comb combiner // the lock scripts' calls to Redis (combine.go)
}

// New returns a Store over rdb.
func New(rdb redis.UniversalClient, opts Options) *Store {
	return &Store{rdb: rdb, opts: opts}
}

// lockKey is the hash of one lock. Clinic ids are decimal numbers, so the
// ':' after it cannot be confused with a character of the resource.
func (s *Store) lockKey(clinic ids.ID, resource string) string {
	return s.opts.Prefix + "lock:" + clinic.String() + ":" + resource
}

// fenceKey is the hash of the clinic's fencing counters, one field per
// resource. It never expires: tokens must only grow.
func (s *Store) fenceKey(clinic ids.ID) string {
	return s.opts.Prefix + "fence:" + clinic.String()
}

func (s *Store) nodeKey(node int64) string {
	return fmt.Sprintf("%snode:%d", s.opts.NodePrefix, node)
}

func (s *Store) epochKey() string { return s.opts.NodePrefix + "nodes:epoch" }

// run executes script within the operation timeout; every failure is
// ErrUnavailable.
func (s *Store) run(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	v, err := script.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: empty script reply", ErrUnavailable)
	}
	return v, nil
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	return s.rdb.Ping(ctx).Err()
}

// Acquire grants the lock on req.Resource to req.Holder for ttl, or returns
// a *HeldError naming the current holder.
func (s *Store) Acquire(ctx context.Context, req lockapi.AcquireRequest, ttl time.Duration) (lockapi.Grant, error) {
	c, secret := s.acquireCall(req, ttl)
	r := s.exec(ctx, []call{c})[0]
	if r.err != nil {
		return lockapi.Grant{}, r.err
	}
	return acquireResult(r.v, req, secret)
}

// call is one script run: what a single operation and a batch send alike.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
}

func (s *Store) acquireCall(req lockapi.AcquireRequest, ttl time.Duration) (call, string) {
	secret, hash := newSecret()
	h := req.Holder
	return call{acquireScript, []string{s.lockKey(h.Clinic, req.Resource), s.fenceKey(h.Clinic)},
		[]any{req.Resource, string(h.Side), h.Client, h.User, req.Version, hash, ttl.Milliseconds()}}, secret
}

func acquireResult(v []any, req lockapi.AcquireRequest, secret string) (lockapi.Grant, error) {
	h := req.Holder
	if num(v[0]) != 1 {
		l, err := parseLock(at(v, 1), h.Clinic, req.Resource)
		if err != nil {
			return lockapi.Grant{}, err
		}
		return lockapi.Grant{}, &HeldError{Lock: l}
	}
	return lockapi.Grant{
		Lock: lockapi.Lock{
			Resource:  req.Resource,
			Holder:    h,
			Token:     num(at(v, 1)),
			Since:     ms(num(at(v, 2))),
			ExpiresAt: ms(num(at(v, 3))),
			Version:   req.Version,
		},
		Secret:       secret,
		SavedVersion: str(at(v, 4)),
	}, nil
}

// Renew extends the lock identified by token and secret to ttl from now.
func (s *Store) Renew(ctx context.Context, clinic ids.ID, resource string, token int64, secret string, ttl time.Duration) (lockapi.Renewal, error) {
	c := s.renewCall(clinic, resource, token, secret, ttl)
	r := s.exec(ctx, []call{c})[0]
	if r.err != nil {
		return lockapi.Renewal{}, r.err
	}
	return renewResult(r.v, resource, token)
}

func (s *Store) renewCall(clinic ids.ID, resource string, token int64, secret string, ttl time.Duration) call {
	return call{renewScript, []string{s.lockKey(clinic, resource)}, []any{token, hashSecret(secret), ttl.Milliseconds()}}
}

func renewResult(v []any, resource string, token int64) (lockapi.Renewal, error) {
	if err := outcome(v[0]); err != nil {
		return lockapi.Renewal{}, err
	}
	return lockapi.Renewal{Resource: resource, Token: token, ExpiresAt: ms(num(at(v, 1)))}, nil
}

// Release frees the lock identified by token and secret; savedVersion,
// when not empty, is handed to the next grant.
func (s *Store) Release(ctx context.Context, clinic ids.ID, resource string, token int64, secret, savedVersion string) error {
	c := s.releaseCall(clinic, resource, token, secret, savedVersion)
	r := s.exec(ctx, []call{c})[0]
	if r.err != nil {
		return r.err
	}
	return outcome(r.v[0])
}

func (s *Store) releaseCall(clinic ids.ID, resource string, token int64, secret, savedVersion string) call {
	return call{releaseScript, []string{s.lockKey(clinic, resource), s.fenceKey(clinic)},
		[]any{token, hashSecret(secret), resource, savedVersion}}
}

// Inspect returns the lock on resource and the last token granted for it.
// When nobody holds it, it returns ErrNotHeld with the status's LastToken set.
func (s *Store) Inspect(ctx context.Context, clinic ids.ID, resource string) (lockapi.Status, error) {
	v, err := s.run(ctx, inspectScript, []string{s.lockKey(clinic, resource), s.fenceKey(clinic)}, resource)
	if err != nil {
		return lockapi.Status{}, err
	}
	st := lockapi.Status{LastToken: num(at(v, 1))}
	st.Resource = resource
	if num(v[0]) != 1 {
		return st, ErrNotHeld
	}
	if st.Lock, err = parseLock(at(v, 2), clinic, resource); err != nil {
		return lockapi.Status{}, err
	}
	return st, nil
}

// ForceRelease deletes the lock whoever holds it and returns what it was.
// The fencing counter is kept, so the next grant gets a higher token.
func (s *Store) ForceRelease(ctx context.Context, clinic ids.ID, resource string) (lockapi.Lock, error) {
	v, err := s.run(ctx, forceReleaseScript, []string{s.lockKey(clinic, resource)})
	if err != nil {
		return lockapi.Lock{}, err
	}
	if num(v[0]) != 1 {
		return lockapi.Lock{}, ErrNotHeld
	}
	return parseLock(at(v, 1), clinic, resource)
}

// LeaseNode leases the lowest free cloud node id to owner.
func (s *Store) LeaseNode(ctx context.Context, owner string) (lockapi.NodeLease, error) {
	secret, hash := newSecret()
	v, err := s.run(ctx, leaseNodeScript, []string{s.epochKey()},
		s.opts.NodePrefix, ids.MinCloudNode, ids.MaxCloudNode, hash, owner,
		s.opts.NodeTTL.Milliseconds(), s.opts.Quarantine.Milliseconds())
	if err != nil {
		return lockapi.NodeLease{}, err
	}
	if num(v[0]) != 1 {
		return lockapi.NodeLease{}, &NoFreeNodeError{RetryAfter: time.Duration(num(at(v, 1))) * time.Millisecond}
	}
	return lockapi.NodeLease{
		Node:      num(at(v, 1)),
		Secret:    secret,
		ExpiresAt: ms(num(at(v, 2))),
		TTLMillis: s.opts.NodeTTL.Milliseconds(),
	}, nil
}

// RenewNode extends the lease on node for another TTL.
func (s *Store) RenewNode(ctx context.Context, node int64, secret string) (lockapi.NodeLease, error) {
	key := s.nodeKey(node)
	v, err := s.run(ctx, renewNodeScript, []string{key, key + ":cooldown"},
		hashSecret(secret), s.opts.NodeTTL.Milliseconds(), s.opts.Quarantine.Milliseconds())
	if err != nil {
		return lockapi.NodeLease{}, err
	}
	if err := outcome(v[0]); err != nil {
		return lockapi.NodeLease{}, err
	}
	return lockapi.NodeLease{Node: node, ExpiresAt: ms(num(at(v, 1))), TTLMillis: s.opts.NodeTTL.Milliseconds()}, nil
}

// ReleaseNode ends the lease on node; the id stays quarantined.
func (s *Store) ReleaseNode(ctx context.Context, node int64, secret string) (lockapi.NodeReleased, error) {
	key := s.nodeKey(node)
	v, err := s.run(ctx, releaseNodeScript, []string{key, key + ":cooldown"}, hashSecret(secret), s.opts.Quarantine.Milliseconds())
	if err != nil {
		return lockapi.NodeReleased{}, err
	}
	if err := outcome(v[0]); err != nil {
		return lockapi.NodeReleased{}, err
	}
	return lockapi.NodeReleased{Node: node, QuarantinedUntil: ms(num(at(v, 1)))}, nil
}

// outcome maps a script's status (1, -1, -2) to an error.
func outcome(v any) error {
	switch num(v) {
	case 1:
		return nil
	case -1:
		return ErrExpired
	case -2:
		return ErrNotYours
	}
	return fmt.Errorf("%w: unexpected script status %v", ErrUnavailable, v)
}

// parseLock reads a holder tuple {side, client, user, version, token,
// since, expires} of the lock scripts.
func parseLock(v any, clinic ids.ID, resource string) (lockapi.Lock, error) {
	t, ok := v.([]any)
	if !ok || len(t) != 7 {
		return lockapi.Lock{}, fmt.Errorf("%w: malformed lock reply %v", ErrUnavailable, v)
	}
	return lockapi.Lock{
		Resource:  resource,
		Holder:    lockapi.Holder{Clinic: clinic, Side: lockapi.Side(str(t[0])), Client: str(t[1]), User: str(t[2])},
		Version:   str(t[3]),
		Token:     num(t[4]),
		Since:     ms(num(t[5])),
		ExpiresAt: ms(num(t[6])),
	}, nil
}

func at(v []any, i int) any {
	if i < len(v) {
		return v[i]
	}
	return nil
}

func num(v any) int64 {
	n, _ := v.(int64)
	return n
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func ms(n int64) time.Time { return time.UnixMilli(n).UTC() }

// newSecret returns a random secret and the hash Redis keeps of it: Redis
// (and its backups) never holds a usable secret.
func newSecret() (secret, hash string) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	secret = hex.EncodeToString(b[:])
	return secret, hashSecret(secret)
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}
