package events

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Event types.
const (
	TypeEditing     = "editing"
	TypeSaved       = "saved"
	TypeClosed      = "closed"
	TypeIdleWarning = "idle_warning"
	TypeChanged     = "changed"
	TypeConflict    = "conflict"
	TypeTransfer    = "transfer"
	// TypeDivergence: anti-entropy found the clinic and the cloud holding
	// different records (Kind "verify", Record 0; Reason says how many).
	TypeDivergence = "divergence"
	// TypeReset is sent by a Hub to one client only, never published: the
	// client missed events and must re-fetch its state; Seq is the position
	// live events continue from.
	TypeReset = "reset"
)

// Sides: where the client that caused an event is.
const (
	SideLocal = "local"
	SideCloud = "cloud"
)

// Reasons of a closed event.
const (
	ReasonReleased = "released"
	ReasonIdle     = "idle"
	ReasonExpired  = "expired"
	ReasonSaved    = "saved"
)

// Transfer states.
const (
	TransferQueued      = "queued"
	TransferUploading   = "uploading"
	TransferPresent     = "present"
	TransferDownloading = "downloading"
	TransferFailed      = "failed"
)

// Event is one live notification about a record.
type Event struct {
	// Seq is the event's position in the stream of the Hub that sent it;
	// the Hub assigns it (publishers leave it 0). Resume with since=Seq.
	Seq  int64  `json:"seq"`
	Type string `json:"type"`
	// Clinic owns the record; it decides who may see the event.
	Clinic ids.ID `json:"clinic,omitempty"`
	// Kind is the record kind ("patient", "study", …).
	Kind   string `json:"kind,omitempty"`
	Record ids.ID `json:"record,omitempty"`
	// Side is where the editing client is: "local" or "cloud".
	Side    string `json:"side,omitempty"`
	User    string `json:"user,omitempty"`
	Client  string `json:"client,omitempty"`
	Session string `json:"session,omitempty"`
	// Version is the record's version: at lock time (editing), the new one
	// (saved, changed).
	Version version.V `json:"version,omitzero"`
	// Reason is why: for closed "released", "idle", "expired" or "saved";
	// for conflict the policy applied.
	Reason string `json:"reason,omitempty"`
	// Unfenced marks an "edit anyway" session, opened while the lock service
	// was unreachable (conflict risk, M13).
	Unfenced bool      `json:"unfenced,omitempty"`
	Transfer *Transfer `json:"transfer,omitempty"`
	At       time.Time `json:"at"`

	// origin is the Bus the event came through (its own for the events
	// published through it), not sent: the Hub keeps it with an open
	// session, so a gap in what came from one origin forgets that origin's
	// sessions (Hub.Publish of a reset).
	origin string `json:"-"`
}

// Transfer is the progress of a file transfer (M16).
type Transfer struct {
	State      string `json:"state"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Reason     string `json:"reason,omitempty"`
}

// Percent is how much of the transfer is done, 0..100 (0 when the size is
// unknown).
func (t Transfer) Percent() int {
	if t.BytesTotal <= 0 || t.BytesDone <= 0 {
		return 0
	}
	if t.BytesDone >= t.BytesTotal {
		return 100
	}
	return int(t.BytesDone * 100 / t.BytesTotal)
}

var (
	publishable = map[string]bool{
		TypeEditing: true, TypeSaved: true, TypeClosed: true, TypeIdleWarning: true,
		TypeChanged: true, TypeConflict: true, TypeTransfer: true, TypeDivergence: true,
	}
	transferStates = map[string]bool{
		TransferQueued: true, TransferUploading: true, TransferPresent: true,
		TransferDownloading: true, TransferFailed: true,
	}
	// kindRE keeps a kind a single routing-key word without wildcards.
	kindRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// Validate checks that e can be published: a known type, a clinic, a kind
// that is one routing-key word, a known side and transfer state.
func (e Event) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, a...))
	}
	switch {
	case !publishable[e.Type]:
		return bad("type %q", e.Type)
	case e.Clinic <= 0:
		return bad("no clinic")
	case !kindRE.MatchString(e.Kind):
		return bad("kind %q", e.Kind)
	case e.Record < 0:
		return bad("record %d", e.Record)
	case e.Side != "" && e.Side != SideLocal && e.Side != SideCloud:
		return bad("side %q", e.Side)
	case e.Type == TypeTransfer && e.Transfer == nil:
		return bad("transfer event without transfer")
	case e.Transfer != nil && !transferStates[e.Transfer.State]:
		return bad("transfer state %q", e.Transfer.State)
	case e.Transfer != nil && (e.Transfer.BytesDone < 0 || e.Transfer.BytesTotal < 0):
		return bad("negative transfer size")
	}
	return nil
}

// Exchange is the topic exchange events travel on.
const Exchange = "scsync.events"

// QueuePrefix starts the name of every server's event queue.
const QueuePrefix = "scsync.events."

// UpExchange is the topic exchange clinics publish their events to (a
// clinic's broker identity may write only there, and only under its own
// clinic.<id>. keys); cloud nodes consume it. Only the cloud publishes to
// Exchange, which feeds every clinic's queue.
const UpExchange = "scsync.events.up"

// LegacyClinicQueue is the event queue of a clinic of its own, which builds
// before events shared the clinic's down queue had; the cloud deletes it
// when it sets the clinic up (replicate: Finish).
func LegacyClinicQueue(clinic ids.ID) string { return QueuePrefix + "clinic." + clinic.String() }

// ClinicTopology is what the cloud declares for a clinic's events: the
// binding of the clinic's down queue (wire.DownQueue, a classic queue of at
// most 10,000 messages, oldest dropped) to Exchange with ClinicPattern. A
// clinic's events and its down changes share its one queue — a queue per
// clinic less is what keeps a broker under 1 GiB at 10,000 clinics
// (docs/architecture.md) — and the clinic's down consumer hands the events
// (type MessageType) to its Bus (Bus.Handle). Events carry a time-to-live
// of an hour (EventTTL), so a clinic offline for long does not get old
// notices when it is back. The down queue must exist (the cloud declares it
// first).
func ClinicTopology(clinic ids.ID) amqpx.Topology {
	return amqpx.Topology{
		Exchanges: []amqpx.Exchange{{Name: Exchange, Kind: "topic"}, {Name: UpExchange, Kind: "topic"}},
		Bindings:  []amqpx.Binding{{Queue: wire.DownQueue(clinic), Exchange: Exchange, Key: ClinicPattern(clinic)}},
	}
}

// EventTTL is the time-to-live of an event message in a queue.
const EventTTL = time.Hour

// RoutingKey is the key an event about a record is published under:
// clinic.<clinic>.<kind>.<record>.
func RoutingKey(clinic ids.ID, kind string, record ids.ID) string {
	return "clinic." + clinic.String() + "." + kind + "." + record.String()
}

// BatchKey is the key a message carrying several events of a clinic is
// published under: clinic.<clinic>.batch (it matches ClinicPattern).
func BatchKey(clinic ids.ID) string { return "clinic." + clinic.String() + ".batch" }

// ClinicPattern is the binding key of one clinic's events: clinic.<id>.#.
func ClinicPattern(clinic ids.ID) string { return "clinic." + clinic.String() + ".#" }

// AllClinics is the binding key of every clinic's events.
const AllClinics = "clinic.#"

// clinicOfKey returns the clinic a routing key names.
func clinicOfKey(key string) (ids.ID, bool) {
	rest, ok := strings.CutPrefix(key, "clinic.")
	if !ok {
		return 0, false
	}
	s, _, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, false
	}
	id, err := ids.Parse(s)
	return id, err == nil && id > 0
}
