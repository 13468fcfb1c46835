// Package lock is the contract between the servers' edit sessions
// (shared/editing) and a lock service (lockd's client implements Locker):
// holders, grants with fencing tokens, and the three ways a lock can fail.
// It has no dependencies beyond ids, so a lock client need not pull in the
// servers' database code.
package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/scsync/scsync/shared/ids"
)

// Errors a Locker returns (and servers map to HTTP answers).
var (
	// ErrLocked: someone else edits the record; errors.As a *LockedError
	// to see who.
	ErrLocked = errors.New("lock: record is being edited")
	// ErrLockUnavailable: lockd cannot be reached; the client may choose to
	// edit anyway (unfenced) or to view only.
	ErrLockUnavailable = errors.New("lock: lock service unreachable")
	// ErrLockLost: the session's lock expired or was taken away.
	ErrLockLost = errors.New("lock: the lock is gone")
)

// Holder is who holds (or wants) a record's lock.
type Holder struct {
	Clinic ids.ID `json:"clinic"`
	Side   string `json:"side"`
	Client string `json:"client"`
	User   string `json:"user"`
}

// LockedError says who holds the lock.
type LockedError struct {
	Holder Holder
	Since  time.Time
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("lock: record is being edited by %s on the %s side since %s", e.Holder.User, e.Holder.Side, e.Since.Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Unwrap() error { return ErrLocked }

// Grant is a lock lockd granted.
type Grant struct {
	Fence     int64
	Secret    string
	ExpiresAt time.Time
	// SavedVersion is the version the last holder that saved left the
	// record at ("" when unknown).
	SavedVersion string
}

// Locker is what sessions need of lockd. Implementations return a
// *LockedError (held), ErrLockLost (expired, not ours) or ErrLockUnavailable
// (lockd unreachable or failing).
type Locker interface {
	Acquire(ctx context.Context, resource string, h Holder, ttl time.Duration, version string) (Grant, error)
	Renew(ctx context.Context, clinic ids.ID, resource string, g Grant, ttl time.Duration) (time.Time, error)
	// Release frees the lock; savedVersion ("" for none) is the record's
	// version after the session's last save, handed to the next holder.
	Release(ctx context.Context, clinic ids.ID, resource string, g Grant, savedVersion string) error
}

// NoLocker is the Locker of a server configured without lockd: every lock
// is unavailable, so every edit is an "edit anyway" (unfenced) session.
type NoLocker struct{}

// Acquire fails with ErrLockUnavailable.
func (NoLocker) Acquire(context.Context, string, Holder, time.Duration, string) (Grant, error) {
	return Grant{}, fmt.Errorf("%w: no lock service configured", ErrLockUnavailable)
}

// Renew fails with ErrLockUnavailable.
func (NoLocker) Renew(context.Context, ids.ID, string, Grant, time.Duration) (time.Time, error) {
	return time.Time{}, fmt.Errorf("%w: no lock service configured", ErrLockUnavailable)
}

// Release fails with ErrLockUnavailable.
func (NoLocker) Release(context.Context, ids.ID, string, Grant, string) error {
	return fmt.Errorf("%w: no lock service configured", ErrLockUnavailable)
}
