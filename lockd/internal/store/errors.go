package store

import (
	"errors"
	"time"

	"github.com/scsync/scsync/lockd/lockapi"
)

var (
	// ErrHeld is returned (as a *HeldError) when someone else holds the lock.
	ErrHeld = errors.New("lockd: lock held")
	// ErrExpired is returned when the caller's lock or node lease is gone:
	// it expired, was released, or the resource was granted again since.
	ErrExpired = errors.New("lockd: lock expired")
	// ErrNotYours is returned when the token or secret do not match.
	ErrNotYours = errors.New("lockd: not yours")
	// ErrNotHeld is returned when nobody holds the lock.
	ErrNotHeld = errors.New("lockd: lock not held")
	// ErrNoFreeNode is returned (as a *NoFreeNodeError) when no cloud node
	// id can be leased now.
	ErrNoFreeNode = errors.New("lockd: no free cloud node id")
	// ErrUnavailable wraps every failure to talk to Redis.
	ErrUnavailable = errors.New("lockd: redis unavailable")
)

// HeldError carries the lock that someone else holds.
type HeldError struct{ Lock lockapi.Lock }

func (e *HeldError) Error() string { return ErrHeld.Error() }

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// NoFreeNodeError says how long to wait before asking again.
type NoFreeNodeError struct{ RetryAfter time.Duration }

func (e *NoFreeNodeError) Error() string { return ErrNoFreeNode.Error() }

// Is makes errors.Is(err, ErrNoFreeNode) true.
func (e *NoFreeNodeError) Is(target error) bool { return target == ErrNoFreeNode }
