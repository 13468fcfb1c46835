package store

import (
	"context"
	"fmt"
	"time"

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
// callers never could either. Like a single operation, a batch that arrives
// while another lock call is in flight waits for it and then goes with
// whatever else queued meanwhile (combine.go).
func (s *Store) Batch(ctx context.Context, ops []Op) []Result {
	res := make([]Result, len(ops))
	calls := make([]call, 0, len(ops))
	secrets := make([]string, len(ops))
	for i, op := range ops {
		var c call
		switch {
		case op.Acquire != nil:
			c, secrets[i] = s.acquireCall(*op.Acquire, op.TTL)
		case op.Renew != nil:
			r := op.Renew
			c = s.renewCall(r.Clinic, r.Resource, r.Token, r.Secret, op.TTL)
		case op.Release != nil:
			r := op.Release
			c = s.releaseCall(r.Clinic, r.Resource, r.Token, r.Secret, r.SavedVersion)
		default:
			res[i].Err = fmt.Errorf("%w: empty batch operation", ErrUnavailable)
			continue
		}
		calls = append(calls, c)
	}
	if len(calls) == 0 {
		return res
	}
	replies := s.exec(ctx, calls)
	j := 0
	for i, op := range ops {
		if res[i].Err != nil {
			continue
		}
		r := replies[j]
		j++
		switch {
		case r.err != nil:
			res[i].Err = r.err
		case op.Acquire != nil:
			res[i].Grant, res[i].Err = acquireResult(r.v, *op.Acquire, secrets[i])
		case op.Renew != nil:
			res[i].Renewal, res[i].Err = renewResult(r.v, op.Renew.Resource, op.Renew.Token)
		default:
			res[i].Err = outcome(r.v[0])
		}
	}
	return res
}
