package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/scsync/scsync/lockd/lockapi"
)

// Sentinels to match with errors.Is. Every error answer of lockd is an
// *Error, which matches the sentinel of its code; errors.As gives its details
// (the current lock for ErrHeld, the last token for ErrNotHeld).
var (
	// ErrHeld: someone else holds the lock; the *Error's Lock names them.
	ErrHeld = errors.New("lockd: lock held")
	// ErrExpired: the lock (or node lease) is gone: it expired, was
	// released or force-released, or was granted to someone else since.
	ErrExpired = errors.New("lockd: lock expired")
	// ErrNotYours: token or secret do not match the holder.
	ErrNotYours = errors.New("lockd: lock not yours")
	// ErrNotHeld: nobody holds the lock (inspect, force-release).
	ErrNotHeld = errors.New("lockd: lock not held")
	// ErrUnavailable: lockd could not be reached, timed out, or answered
	// 5xx (its Redis is down). For a clinic this is an everyday state:
	// offer "edit anyway (conflict risk)" and save unfenced.
	ErrUnavailable = errors.New("lockd: unavailable")
	// ErrNoFreeNode: no cloud node id is free now; the *Error's
	// RetryAfterMillis says when to ask again.
	ErrNoFreeNode = errors.New("lockd: no free cloud node id")
	// ErrUnauthorized: the bearer token is missing or unknown.
	ErrUnauthorized = errors.New("lockd: unauthorized")
	// ErrForbidden: the token may not act for that clinic or call that
	// endpoint.
	ErrForbidden = errors.New("lockd: forbidden")
	// ErrInvalid: the request was malformed (a bug in the caller).
	ErrInvalid = errors.New("lockd: invalid request")
)

var byCode = map[string]error{
	lockapi.CodeHeld:         ErrHeld,
	lockapi.CodeExpired:      ErrExpired,
	lockapi.CodeNotYours:     ErrNotYours,
	lockapi.CodeNotHeld:      ErrNotHeld,
	lockapi.CodeNoFreeNode:   ErrNoFreeNode,
	lockapi.CodeUnauthorized: ErrUnauthorized,
	lockapi.CodeForbidden:    ErrForbidden,
	lockapi.CodeInvalid:      ErrInvalid,
	lockapi.CodeTooLarge:     ErrInvalid,
}

// Error is an error answer of lockd.
type Error struct {
	Status  int    // HTTP status
	Code    string // lockapi.Code*; empty when the answer was not lockd's
	Message string
	// Lock is the current lock (ErrHeld).
	Lock *lockapi.Lock
	// LastToken is the newest fencing token of the resource (ErrNotHeld
	// from Inspect).
	LastToken int64
	// RetryAfter says when to ask again (ErrNoFreeNode).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("lockd: %d %s: %s", e.Status, e.Code, e.Message)
}

// Is matches the sentinel of the error's code; any 5xx other than
// no_free_node is ErrUnavailable.
func (e *Error) Is(target error) bool {
	if target == ErrUnavailable {
		return e.Status >= 500 && e.Code != lockapi.CodeNoFreeNode
	}
	s, ok := byCode[e.Code]
	return ok && s == target
}

// HeldBy returns the current lock when err is ErrHeld.
func HeldBy(err error) (lockapi.Lock, bool) {
	var e *Error
	if errors.As(err, &e) && e.Code == lockapi.CodeHeld && e.Lock != nil {
		return *e.Lock, true
	}
	return lockapi.Lock{}, false
}
