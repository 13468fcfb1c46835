package events

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidEvent: the event cannot be published (Event.Validate).
	ErrInvalidEvent = errors.New("events: invalid event")

	// ErrInvalidConfig wraps every configuration error of NewBus.
	ErrInvalidConfig = errors.New("events: invalid config")

	// ErrRejected: the server refused the WebSocket handshake with a status
	// that retrying will not change (401, 403, 404…); Watch gives up.
	ErrRejected = errors.New("events: connection rejected")
)

// RejectedError is the error Watch returns when the server refused the
// connection for good; it wraps ErrRejected.
type RejectedError struct {
	Status int // HTTP status of the refused handshake
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("events: connection rejected with HTTP status %d", e.Status)
}

// Unwrap makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Unwrap() error { return ErrRejected }
