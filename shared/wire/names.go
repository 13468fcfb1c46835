package wire

import (
	"strings"

	"github.com/scsync/scsync/shared/ids"
)

// AMQP names. Every clinic has its own up and down queue; the routing key and
// the queue name carry the clinic id, so a per-clinic RabbitMQ user can be
// limited to its own keys with topic permissions.
const (
	// UpExchange takes clinics' changes (topic; key UpKey(clinic)).
	UpExchange = "scsync.up"
	// DownExchange takes the cloud's applied changes (topic; key DownKey(clinic)).
	DownExchange = "scsync.down"
	// DeadExchange receives poison messages with the reason in a header.
	DeadExchange = "scsync.dead"
	// DeadQueue holds every dead-lettered message for an operator to inspect.
	DeadQueue = "scsync.dead"
	// ContentType of every envelope.
	ContentType = "application/json"
)

// UpKey is the routing key of a clinic's changes.
func UpKey(clinic ids.ID) string { return "clinic." + clinic.String() }

// DownKey is the routing key of the changes the cloud sends to a clinic.
func DownKey(clinic ids.ID) string { return "clinic." + clinic.String() }

// UpQueue is the quorum queue the cloud nodes consume a clinic's changes from
// (single active consumer: one node at a time, so the clinic's order holds).
func UpQueue(clinic ids.ID) string { return "scsync.up." + clinic.String() }

// DownQueue is the quorum queue a clinic consumes its applied changes from.
func DownQueue(clinic ids.ID) string { return "scsync.down." + clinic.String() }

// ClinicOfQueue returns the clinic a per-clinic queue belongs to.
func ClinicOfQueue(queue string) (ids.ID, bool) {
	for _, p := range []string{"scsync.up.", "scsync.down."} {
		if rest, ok := strings.CutPrefix(queue, p); ok {
			id, err := ids.Parse(rest)
			return id, err == nil
		}
	}
	return 0, false
}

// ChangesPage is one page of the pull API (`changes since cloud_seq`), used to
// fill a gap in the down stream and to re-sync a new or wiped clinic.
type ChangesPage struct {
	Changes []Envelope `json:"changes"`
	// Next is the cloud_seq to ask from for the following page.
	Next int64 `json:"next"`
	// More is true when further changes exist after this page.
	More bool `json:"more"`
	// Head is the clinic's latest cloud_seq when the page was read.
	Head int64 `json:"head"`
}
