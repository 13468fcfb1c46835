package ids

import "errors"

var (
	// ErrNodeRange is returned for a node id outside the clinic or cloud range.
	ErrNodeRange = errors.New("ids: node id out of range")
	// ErrClockBehind is returned when the clock is further behind the persisted
	// high-water mark than the generator is willing to wait.
	ErrClockBehind = errors.New("ids: clock is behind the last issued id")
	// ErrSyntax is returned for text that is not a decimal id.
	ErrSyntax = errors.New("ids: invalid id")
	// ErrLeaseLost is reported when a cloud node's lease on its node id lapsed.
	ErrLeaseLost = errors.New("ids: node lease lost")
	// ErrNotReplicated is returned when a new node lease did not reach the
	// Redis replicas asked for (LeaseOptions.Replicas).
	ErrNotReplicated = errors.New("ids: node lease not replicated")
	// ErrNoFreeNode is returned when every cloud node id is leased.
	ErrNoFreeNode = errors.New("ids: no free cloud node id")
)
