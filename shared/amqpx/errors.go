package amqpx

import "errors"

var (
	// ErrNacked means the broker refused responsibility for a published
	// message (basic.nack). The caller should retry.
	ErrNacked = errors.New("amqpx: message nacked by broker")

	// ErrUnroutable means a mandatory message matched no queue and came back
	// as basic.return. Retrying will not help until the topology changes.
	ErrUnroutable = errors.New("amqpx: message unroutable")

	// ErrClosed means the connection or channel went away before the broker
	// confirmed the message, or the Client has stopped. The message may or
	// may not have been enqueued; the caller should retry (duplicates are
	// acceptable, losses are not).
	ErrClosed = errors.New("amqpx: connection closed")

	// ErrConfirmTimeout means the broker did not confirm a message within
	// Config.ConfirmTimeout.
	ErrConfirmTimeout = errors.New("amqpx: publisher confirm timed out")

	// ErrNotConnected is returned by Ready while there is no connection.
	ErrNotConnected = errors.New("amqpx: not connected")

	// ErrBlocked is returned by Ready while the broker blocks publishing
	// (connection.blocked, usually a memory or disk alarm).
	ErrBlocked = errors.New("amqpx: connection blocked by broker")

	// ErrInvalidConfig wraps every Config and Topology validation error.
	ErrInvalidConfig = errors.New("amqpx: invalid config")

	// errNotSent marks publish failures where nothing reached the broker.
	errNotSent = errors.New("amqpx: message not sent")

	// errRunning is returned when Run is called while (or after) it ran.
	errRunning = errors.New("amqpx: Run called more than once")
)

// poisonError marks a handler error as permanent; see Poison.
type poisonError struct{ err error }

func (p *poisonError) Error() string { return p.err.Error() }
func (p *poisonError) Unwrap() error { return p.err }

// Poison marks a handler error as permanent: the message will never be
// processable, so Consume moves it to the queue's dead-letter exchange (with
// the error text as the reason) instead of redelivering it. Poison(nil) is nil.
func Poison(err error) error {
	if err == nil {
		return nil
	}
	return &poisonError{err: err}
}

// IsPoison reports whether err, or any error it wraps, was marked by Poison.
func IsPoison(err error) bool {
	var p *poisonError
	return errors.As(err, &p)
}
