package store

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrNotFound: no such record (or clinic) for this caller.
	ErrNotFound = errors.New("store: not found")
	// ErrVersionConflict: the caller's base version is not the current one.
	ErrVersionConflict = errors.New("store: version conflict")
	// ErrUnknownClinic: no clinic with that id or token.
	ErrUnknownClinic = errors.New("store: unknown clinic")
	// ErrNoNodeID: every clinic node id is taken.
	ErrNoNodeID = errors.New("store: no clinic node id left")
	// ErrInvalidChange: a change whose content cannot be applied (poison).
	ErrInvalidChange = errors.New("store: invalid change")
	// ErrExists: a record with that id exists already.
	ErrExists = errors.New("store: record exists")
	// ErrStaleFence: the save's fencing token is lower than the last one
	// accepted for the record (its lock expired and someone else saved).
	ErrStaleFence = errors.New("store: stale fencing token")
	// ErrMissingRef: the content refers to a record that does not exist.
	ErrMissingRef = errors.New("store: referenced record does not exist")
	// ErrCollision: an unfenced ("edit anyway") save over a clinic change
	// that came after its session opened, under local-wins: the clinic's
	// content stays (M13).
	ErrCollision = errors.New("store: unfenced save collides with a clinic change")
	// ErrNotCommitted: a transaction's commit rolled it back (a statement
	// of it had failed).
	ErrNotCommitted = errors.New("store: transaction not committed")
)

// errPinnedTx: gorm asked a pinned transaction to commit or roll back;
// only its commit batch or its release ends it.
var errPinnedTx = errors.New("store: a pinned transaction ends with its commit batch or its release")

// ErrInvalidRetention: a retention policy that is not one of the modes, or
// a day count out of range.
var ErrInvalidRetention = errors.New("store: invalid retention policy")

// IsRefusedContent reports whether err is PostgreSQL refusing the data a
// change carries (SQLSTATE class 22, data exception: a NUL byte in a text,
// a value out of range…). Applying the same change again fails the same
// way, so its message is poison, not a transient failure.
func IsRefusedContent(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && strings.HasPrefix(pg.Code, "22")
}
