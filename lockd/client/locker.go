package client

import (
	"context"
	"errors"
	"time"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/lock"
)

// Locker adapts c to the servers' edit sessions (shared/editing): lockd's
// errors become lock.LockedError, lock.ErrLockLost and
// lock.ErrLockUnavailable.
func (c *Client) Locker() lock.Locker { return locker{c} }

type locker struct{ c *Client }

func (l locker) Acquire(ctx context.Context, resource string, h lock.Holder, ttl time.Duration, version string) (lock.Grant, error) {
	g, err := l.c.Acquire(ctx, lockapi.AcquireRequest{
		Resource: resource, TTLMillis: ttl.Milliseconds(), Version: version,
		Holder: lockapi.Holder{Clinic: h.Clinic, Side: lockapi.Side(h.Side), Client: h.Client, User: h.User},
	})
	if err != nil {
		return lock.Grant{}, editingErr(err)
	}
	return lock.Grant{Fence: g.Token, Secret: g.Secret, ExpiresAt: g.ExpiresAt, SavedVersion: g.SavedVersion}, nil
}

func (l locker) Renew(ctx context.Context, clinic ids.ID, resource string, g lock.Grant, ttl time.Duration) (time.Time, error) {
	r, err := l.c.Renew(ctx, lockapi.RenewRequest{Resource: resource, Clinic: clinic, Token: g.Fence, Secret: g.Secret, TTLMillis: ttl.Milliseconds()})
	if err != nil {
		return time.Time{}, editingErr(err)
	}
	return r.ExpiresAt, nil
}

func (l locker) Release(ctx context.Context, clinic ids.ID, resource string, g lock.Grant, savedVersion string) error {
	err := l.c.Release(ctx, lockapi.ReleaseRequest{Resource: resource, Clinic: clinic, Token: g.Fence, Secret: g.Secret, SavedVersion: savedVersion})
	return editingErr(err)
}

func editingErr(err error) error {
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrHeld) && errors.As(err, &e) && e.Lock != nil:
		h := e.Lock.Holder
		return &lock.LockedError{Holder: lock.Holder{Clinic: h.Clinic, Side: string(h.Side), Client: h.Client, User: h.User}, Since: e.Lock.Since}
	case errors.Is(err, ErrHeld):
		return &lock.LockedError{}
	case errors.Is(err, ErrExpired), errors.Is(err, ErrNotYours), errors.Is(err, ErrNotHeld):
		return errors.Join(lock.ErrLockLost, err)
	case errors.Is(err, ErrUnavailable):
		return errors.Join(lock.ErrLockUnavailable, err)
	}
	// Anything else (a bad token, a bug) also means no lock can be had; the
	// clinic must still be able to choose to edit anyway.
	return errors.Join(lock.ErrLockUnavailable, err)
}
