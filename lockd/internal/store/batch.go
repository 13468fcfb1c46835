package store

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/lockapi"
)

// Op is one operation of a Batch: exactly one of Acquire, Renew and
// Release is set, already validated. TTL applies to Acquire and Renew.
type Op struct {
	Acquire *lockapi.AcquireRequest
	Renew   *lockapi.RenewRequest
	Release *lockapi.ReleaseRequest
	TTL     time.Duration
}

// Result is the outcome of one Op: Grant (acquire) or Renewal (renew) when
// Err is nil; Err is what the single operation would return.
type Result struct {
	Grant   lockapi.Grant
	Renewal lockapi.Renewal
	Err     error
}

// Batch runs ops as one Redis pipeline: one round trip (and one
// write and read on each side) for all of them instead of one each. Each op
// is still its own script, atomic by itself, with exactly the outcome it
// would have alone; ops do not see a common snapshot, which independent
// callers never could either.
func (s *Store) Batch(ctx context.Context, ops []Op) []Result {
	res := make([]Result, len(ops))
	calls := make([]call, len(ops))
	secrets := make([]string, len(ops))
	for i, op := range ops {
		switch {
		case op.Acquire != nil:
			calls[i], secrets[i] = s.acquireCall(*op.Acquire, op.TTL)
		case op.Renew != nil:
			r := op.Renew
			calls[i] = s.renewCall(r.Clinic, r.Resource, r.Token, r.Secret, op.TTL)
		case op.Release != nil:
			r := op.Release
			calls[i] = s.releaseCall(r.Clinic, r.Resource, r.Token, r.Secret, r.SavedVersion)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(ops))
	for i, c := range calls {
		if c.script != nil {
			cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
	}
	_, _ = pipe.Exec(ctx) // errors are per command, read below
	for i, op := range ops {
		if cmds[i] == nil {
			res[i].Err = fmt.Errorf("%w: empty batch operation", ErrUnavailable)
			continue
		}
		v, err := cmds[i].Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis lost its script cache (a restart, SCRIPT FLUSH): this
			// script did not run; run it alone, which loads it.
			v, err = calls[i].script.Run(ctx, s.rdb, calls[i].keys, calls[i].args...).Slice()
		}
		switch {
		case err != nil:
			res[i].Err = fmt.Errorf("%w: %w", ErrUnavailable, err)
			continue
		case len(v) == 0:
			res[i].Err = fmt.Errorf("%w: empty script reply", ErrUnavailable)
			continue
		}
		switch {
		case op.Acquire != nil:
			res[i].Grant, res[i].Err = acquireResult(v, *op.Acquire, secrets[i])
		case op.Renew != nil:
			res[i].Renewal, res[i].Err = renewResult(v, op.Renew.Resource, op.Renew.Token)
		default:
			res[i].Err = outcome(v[0])
		}
	}
	return res
}
