package store

import "errors"

var (
	// ErrNotFound: no such record for this clinic.
	ErrNotFound = errors.New("store: not found")
	// ErrVersionConflict: the caller's base version is not the current one.
	ErrVersionConflict = errors.New("store: version conflict")
	// ErrUnknownClinic: the clinic is not enrolled.
	ErrUnknownClinic = errors.New("store: unknown clinic")
	// ErrNoNodeID: every clinic node id is taken.
	ErrNoNodeID = errors.New("store: no clinic node id left")
)
