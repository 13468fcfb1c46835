package api

import (
	"net/http"

	"github.com/scsync/scsync/lockd/internal/store"
	"github.com/scsync/scsync/lockd/lockapi"
)

// batch runs acquires, renews and releases sent together (see
// lockapi.BatchRequest): each is validated and authorized on its own, as its
// own endpoint would, and the valid ones go to Redis as one pipeline. Each
// result carries the status and body (or error) its own endpoint would have
// answered; the batch itself fails only when it cannot be read.
func (s *Server) batch(w http.ResponseWriter, r *http.Request, p principal) (any, error) {
	var req lockapi.BatchRequest
	if err := decodeLock(w, r, &req); err != nil {
		return nil, err
	}
	if len(req.Ops) == 0 || len(req.Ops) > lockapi.MaxBatch {
		return nil, invalid("ops must hold 1 to %d operations", lockapi.MaxBatch)
	}
	results := make([]lockapi.BatchResult, len(req.Ops))
	ops := make([]store.Op, 0, len(req.Ops))
	at := make([]int, 0, len(req.Ops)) // index in req.Ops of each of ops
	for i, o := range req.Ops {
		op, err := s.checkOp(p, o)
		if err != nil {
			results[i] = s.failed(opName(o), p, err)
			continue
		}
		ops = append(ops, op)
		at = append(at, i)
	}
	if len(ops) > 0 {
		for j, res := range s.store.Batch(r.Context(), ops) {
			i, op := at[j], ops[j]
			if res.Err != nil {
				results[i] = s.failed(opName(req.Ops[i]), p, res.Err)
				continue
			}
			out := &results[i]
			out.Status = http.StatusOK
			switch {
			case op.Acquire != nil:
				s.granted(r.Context(), p, *op.Acquire, res.Grant)
				out.Grant = &res.Grant
				s.m.batchOK[0].Inc()
			case op.Renew != nil:
				s.m.renewals.Inc()
				out.Renewal = &res.Renewal
				s.m.batchOK[1].Inc()
			default:
				s.released(r.Context(), p, *op.Release)
				out.Released = &lockapi.Released{Resource: op.Release.Resource, Released: true}
				s.m.batchOK[2].Inc()
			}
		}
	}
	return lockapi.BatchResponse{Results: results}, nil
}

// checkOp validates and authorizes one operation of a batch.
func (s *Server) checkOp(p principal, o lockapi.BatchOp) (store.Op, error) {
	n := 0
	for _, set := range []bool{o.Acquire != nil, o.Renew != nil, o.Release != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return store.Op{}, invalid("each operation must have exactly one of acquire, renew and release")
	}
	var (
		op  = store.Op{Acquire: o.Acquire, Renew: o.Renew, Release: o.Release}
		err error
	)
	switch {
	case o.Acquire != nil:
		op.TTL, err = s.checkAcquire(p, o.Acquire)
	case o.Renew != nil:
		op.TTL, err = s.checkRenew(p, o.Renew)
	default:
		err = checkRelease(p, o.Release)
	}
	return op, err
}

// failed is the result of a failed operation of a batch, counted and logged
// as the operation alone would be.
func (s *Server) failed(op string, p principal, err error) lockapi.BatchResult {
	e := s.fail(op, p, err)
	body := e.body
	return lockapi.BatchResult{Status: e.status, Error: &body}
}

// opName is the operation's name in metrics and logs: that of its endpoint.
func opName(o lockapi.BatchOp) string {
	switch {
	case o.Acquire != nil && o.Renew == nil && o.Release == nil:
		return "acquire"
	case o.Renew != nil && o.Acquire == nil && o.Release == nil:
		return "renew"
	case o.Release != nil && o.Acquire == nil && o.Renew == nil:
		return "release"
	}
	return "batch"
}
