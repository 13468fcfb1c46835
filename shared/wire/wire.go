// Package wire defines what scsync sends between clinics and the cloud: the
// message envelope, the AMQP names it travels under, and the protocol version.
//
// Protocol history (bump Protocol on any change a peer must know about):
//
//	1: 2026-11 first version: change (clinic → cloud) and applied
//	   (cloud → clinic, in cloud_seq order) envelopes, gzip above 4 KiB.
//	2: 2026-11 every kind of M3; a message body is a Batch of envelopes
//	   (one or many changes of one clinic); envelopes name the conflict
//	   resolution the cloud applied and the record a conflict copy was
//	   made from, and carry the edit session's fencing token.
//	   Addition (issue 15): saved_by and saved_by_name, optional, name the
//	   person who saved the change (M18). Receivers decoded strictly, so a
//	   peer from before the addition refused envelopes that carried them:
//	   clinics and the cloud took that release together.
//	Ranges (issue 18, still protocol 2): each side speaks a range
//	   [MinProtocol, MaxProtocol()] and states it (AMQP headers
//	   x-scsync-protocol-min/max, the same HTTP headers on pulls and
//	   enrollment); a peer that states none speaks exactly 2 and decodes
//	   strictly (Legacy). The sender converts each envelope to the newest
//	   version both speak (Envelope.As, dropping what the older one lacks).
//	   Decoders ignore unknown fields, so a later addition of an optional
//	   field no longer breaks a peer; Validate still refuses an envelope
//	   that lacks a required one. docs/protocol.md has the policy.
//
// A new version: bump Protocol, add the step that converts it down to the
// previous one in downgrades (protocol.go), and raise MinProtocol only when
// no release the compatibility policy covers speaks the old one.
package wire

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

// Protocol is the newest version of the envelope this build speaks (see
// MaxProtocol for a test build's override, MinProtocol for the oldest).
const Protocol = 2

// Limits of what a peer accepts.
const (
	// MaxBody is the largest (decompressed) message body accepted.
	MaxBody = 4 << 20
	// CompressAbove is the body size above which Encode gzips.
	CompressAbove = 4 << 10
)

// Errors of Decode and Validate. A message that fails them is poison: it is
// dead-lettered with the error text, never retried.
var (
	ErrProtocol = errors.New("wire: unsupported protocol version")
	ErrInvalid  = errors.New("wire: invalid message")
	ErrTooLarge = errors.New("wire: message too large")
)

// Type says what an envelope means.
type Type string

const (
	// TypeChange is a clinic's proposed change, sent up to the cloud.
	TypeChange Type = "change"
	// TypeApplied is a change the cloud accepted into the clinic's sequence
	// (cloud_seq), sent down. For a change that came from this clinic it is the
	// acceptance that marks the record synced; otherwise it is applied.
	TypeApplied Type = "applied"
)

// Origin is the side a change was made on.
type Origin string

// The two sides.
const (
	OriginLocal Origin = "local"
	OriginCloud Origin = "cloud"
)

// Kind is the record kind a change is about.
type Kind string

// Record kinds (M3). shared/records holds their content and relations.
const (
	KindPatient        Kind = "patient"
	KindDoctor         Kind = "doctor"
	KindUser           Kind = "user"
	KindStudy          Kind = "study"
	KindImage          Kind = "image"
	KindCapture        Kind = "capture"
	KindProjectFile    Kind = "project_file"
	KindReport         Kind = "report"
	KindReportTemplate Kind = "report_template"
	KindSetting        Kind = "setting"
)

var knownKinds = map[Kind]bool{
	KindPatient: true, KindDoctor: true, KindUser: true, KindStudy: true, KindImage: true,
	KindCapture: true, KindProjectFile: true, KindReport: true, KindReportTemplate: true, KindSetting: true,
}

// Conflict resolutions named in an applied envelope (DESIGN.md, Replication).
const (
	ResolvedLocalWins = "local-wins"
	ResolvedCloudWins = "cloud-wins"
	ResolvedKeepBoth  = "keep-both"
)

// KnownKind reports whether k is a record kind this protocol version carries.
func KnownKind(k Kind) bool { return knownKinds[k] }

// Envelope is one change of one record.
type Envelope struct {
	Protocol    int             `json:"protocol"`
	Type        Type            `json:"type"`
	Clinic      ids.ID          `json:"clinic"`
	Origin      Origin          `json:"origin"`
	ChangeID    ids.ID          `json:"change_id"`
	Kind        Kind            `json:"kind"`
	RecordID    ids.ID          `json:"record_id"`
	BaseVersion version.V       `json:"base_version"`
	NewVersion  version.V       `json:"new_version"`
	Deleted     bool            `json:"deleted,omitempty"`
	CloudSeq    int64           `json:"cloud_seq,omitempty"`
	At          time.Time       `json:"at"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	// Conflict, on an applied envelope, names the policy the cloud applied
	// because the change was concurrent with another one (empty: none).
	Conflict string `json:"conflict,omitempty"`
	// ConflictOf, on an applied envelope, names the record this one is the
	// conflict copy of (keep-both).
	ConflictOf ids.ID `json:"conflict_of,omitempty"`
	// Fence is the lockd fencing token of the edit session that saved the
	// change (0: none). A change with a lower token than the last one the
	// receiver accepted for the record comes from a lock that expired.
	Fence int64 `json:"fence,omitempty"`
	// Unfenced marks a save made with the lock service unreachable ("edit
	// anyway"): it had no lock, and a collision goes through the conflict
	// policy.
	Unfenced bool `json:"unfenced,omitempty"`
	// Unsync marks a tombstone that takes the record out of the cloud only
	// (M7): the clinic keeps its copy, excluded from sync.
	Unsync bool `json:"unsync,omitempty"`
	// SavedBy is the person who saved the change: their user record's id
	// as the saving server authenticated them (0: no person — a machine,
	// the operator, an import or the server's own work). SavedByName is
	// that person's username at the time (M18: who saved which version).
	SavedBy     ids.ID `json:"saved_by,omitempty"`
	SavedByName string `json:"saved_by_name,omitempty"`
}

// Batch is the body of every message: one or more envelopes of one clinic,
// applied in order. Heavy traffic is batched (M28); a single change is a
// batch of one.
type Batch struct {
	Protocol int        `json:"protocol"`
	Clinic   ids.ID     `json:"clinic"`
	Changes  []Envelope `json:"changes"`
}

// MaxBatch is the largest number of changes in one message.
const MaxBatch = 500

// Validate checks that e is complete and consistent.
func (e *Envelope) Validate() error { return e.validate(false) }

// validate is Validate; decoded says e was just decoded from JSON, whose
// payload, a value of that JSON, is JSON then (the decoder checked the
// whole body before it stored anything): it is not scanned again.
func (e *Envelope) validate(decoded bool) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	switch {
	case !Local().Has(e.Protocol):
		return fmt.Errorf("%w: %d (this build speaks %s)", ErrProtocol, e.Protocol, Local())
	case e.Type != TypeChange && e.Type != TypeApplied:
		return bad("type %q", e.Type)
	case e.Clinic <= 0:
		return bad("missing clinic")
	case e.Origin != OriginLocal && e.Origin != OriginCloud:
		return bad("origin %q", e.Origin)
	case e.ChangeID <= 0:
		return bad("missing change_id")
	case !KnownKind(e.Kind):
		return bad("unknown kind %q", e.Kind)
	case e.RecordID <= 0:
		return bad("missing record_id")
	case e.NewVersion.IsZero():
		return bad("missing new_version")
	case !e.BaseVersion.Less(e.NewVersion):
		return bad("new_version %s is not after base_version %s", e.NewVersion, e.BaseVersion)
	case e.Type == TypeChange && e.Origin != OriginLocal:
		return bad("a change sent up must have origin local")
	case e.Type == TypeApplied && e.CloudSeq <= 0:
		return bad("applied change without cloud_seq")
	case !e.Deleted && len(e.Payload) == 0:
		return bad("missing payload")
	case !decoded && len(e.Payload) > 0 && !validJSON(e.Payload): // json.Valid, faster (valid.go)
		return bad("payload is not JSON")
	case e.Conflict != "" && e.Conflict != ResolvedLocalWins && e.Conflict != ResolvedCloudWins && e.Conflict != ResolvedKeepBoth:
		return bad("conflict %q", e.Conflict)
	case e.Type == TypeChange && (e.Conflict != "" || e.ConflictOf != 0):
		return bad("a change sent up cannot carry a conflict resolution")
	case e.Fence < 0:
		return bad("negative fence")
	case e.Fence > 0 && e.Unfenced:
		return bad("a change cannot be both fenced and unfenced")
	case e.Unsync && !e.Deleted:
		return bad("an unsync is a tombstone")
	case e.SavedBy < 0 || len(e.SavedByName) > 64 || (e.SavedBy == 0 && e.SavedByName != ""):
		return bad("saved_by %s %q", e.SavedBy, e.SavedByName)
	}
	return nil
}

// Validate checks the batch and every envelope in it.
func (b *Batch) Validate() error { return b.validate(false) }

// validate is Validate; decoded as Envelope.validate's.
func (b *Batch) validate(decoded bool) error {
	switch {
	case !Local().Has(b.Protocol):
		return fmt.Errorf("%w: %d (this build speaks %s)", ErrProtocol, b.Protocol, Local())
	case b.Clinic <= 0:
		return fmt.Errorf("%w: batch without clinic", ErrInvalid)
	case len(b.Changes) == 0:
		return fmt.Errorf("%w: empty batch", ErrInvalid)
	case len(b.Changes) > MaxBatch:
		return fmt.Errorf("%w: %d changes in one batch (at most %d)", ErrInvalid, len(b.Changes), MaxBatch)
	}
	for i := range b.Changes {
		e := &b.Changes[i]
		if err := e.validate(decoded); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		if e.Clinic != b.Clinic {
			return fmt.Errorf("%w: change %d is for clinic %s in a batch of clinic %s", ErrInvalid, i, e.Clinic, b.Clinic)
		}
	}
	return nil
}

// NewBatch wraps envelopes of one clinic (in this build's Protocol; Batch.As
// converts it for a peer).
func NewBatch(clinic ids.ID, es ...Envelope) Batch {
	return Batch{Protocol: Protocol, Clinic: clinic, Changes: es}
}

// Encode validates b and returns its body and content encoding ("" or
// "gzip": bodies larger than CompressAbove are compressed).
func Encode(batch Batch) (body []byte, contentEncoding string, err error) {
	if err := batch.Validate(); err != nil {
		return nil, "", err
	}
	// The bytes json.Marshal(batch) gives (encode.go), the payloads
	// written as they are: Validate has just checked they are JSON. They
	// are written into a pooled buffer: a body above CompressAbove (a
	// message of a few changes already) is only read by the compressor.
	buf := bodyBufs.Get().(*[]byte)
	if n := encodedSize(&batch); cap(*buf) < n {
		*buf = make([]byte, 0, n)
	}
	b, err := appendBatch((*buf)[:0], &batch, true)
	if cap(b) <= maxPooledBody {
		*buf = b[:0]
		defer bodyBufs.Put(buf)
	}
	if err != nil {
		return nil, "", fmt.Errorf("wire: encode: %w", err)
	}
	body, contentEncoding, err = finish(b)
	if err == nil && contentEncoding == "" {
		body = bytes.Clone(body)
	}
	return body, contentEncoding, err
}

// bodyBufs holds Encode's buffers, up to maxPooledBody each (a message of
// 500 backfilled studies is about 180 KB).
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

const maxPooledBody = 1 << 20

// finish bounds and, above CompressAbove, compresses an encoded body.
func finish(b []byte) (body []byte, contentEncoding string, err error) {
	if len(b) > MaxBody {
		return nil, "", fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	if len(b) <= CompressAbove {
		return b, "", nil
	}
	var buf bytes.Buffer
	buf.Grow(len(b) / 3)
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	_, _ = zw.Write(b)
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("wire: compress: %w", err)
	}
	return buf.Bytes(), "gzip", nil
}

// gzipWriters holds compressors for finish: each is about a megabyte of
// state, and at a backfill's rate both relays compress a message every few
// milliseconds. BestSpeed: on a message of 500 backfilled studies it
// compresses three times as fast as the default level (1.0 ms against 2.9
// here), to 15.6 KB instead of 12.3 of 179 KB; the default level took about
// a tenth of the cloud's CPU during a backfill.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

// Decode parses and validates a body produced by Encode.
func Decode(body []byte, contentEncoding string) (Batch, error) {
	var e Batch
	switch contentEncoding {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return e, fmt.Errorf("%w: gzip: %w", ErrInvalid, err)
		}
		b, err := io.ReadAll(io.LimitReader(zr, MaxBody+1))
		if err != nil {
			return e, fmt.Errorf("%w: gzip: %w", ErrInvalid, err)
		}
		body = b
	default:
		return e, fmt.Errorf("%w: content encoding %q", ErrInvalid, contentEncoding)
	}
	if len(body) > MaxBody {
		return e, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(body))
	}
	// A body as Encode writes it is read without reflection (decode.go);
	// any other goes through json.Decoder.
	if b, ok := decodeFast(body); ok {
		e = b
	} else {
		var err error
		if e, err = decodeJSON(body); err != nil {
			return e, err
		}
	}
	if err := e.validate(true); err != nil {
		return e, err
	}
	return e, nil
}

// decodeJSON is Decode's reading of a body with json.Decoder.
func decodeJSON(body []byte) (Batch, error) {
	var e Batch
	// Unknown fields are ignored: a newer peer's optional additions (it
	// converts to a version we speak, but an addition within a version
	// must not break us either); Validate refuses what lacks a required one.
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if dec.More() {
		return e, fmt.Errorf("%w: trailing data", ErrInvalid)
	}
	return e, nil
}

// Encoded is one message body ready to publish.
type Encoded struct {
	Body            []byte
	ContentEncoding string
	// Changes is how many changes the body carries.
	Changes int
}

// EncodeRawAll is EncodeAll for changes of clinic stored already encoded:
// each is the JSON of an Envelope of protocol version protocol that passed
// Validate (an outbox row, Envelope.AppendValid), so the relay sends them without decoding
// and encoding them again. The bodies are the ones EncodeAll would make of
// the decoded batch.
func EncodeRawAll(protocol int, clinic ids.ID, changes []json.RawMessage) ([]Encoded, error) {
	switch {
	case !Local().Has(protocol):
		return nil, fmt.Errorf("%w: %d (this build speaks %s)", ErrProtocol, protocol, Local())
	case clinic <= 0:
		return nil, fmt.Errorf("%w: batch without clinic", ErrInvalid)
	case len(changes) == 0:
		return nil, fmt.Errorf("%w: empty batch", ErrInvalid)
	case len(changes) > MaxBatch:
		return nil, fmt.Errorf("%w: %d changes in one batch (at most %d)", ErrInvalid, len(changes), MaxBatch)
	}
	// {"protocol":…,"clinic":…,"changes":[raw,…]}
	head := appendBatchHead(nil, protocol, clinic)
	return halving(changes, func(changes []json.RawMessage) ([]byte, string, error) {
		size := len(head) + len(changes) + 2
		for _, c := range changes {
			size += len(c)
		}
		b := make([]byte, 0, size)
		b = append(b, head...)
		b = append(b, '[')
		for i, c := range changes {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, c...)
		}
		b = append(b, ']', '}')
		return finish(b)
	})
}

// EncodeAll encodes b as one body or, when that would exceed MaxBody, as
// several bodies of consecutive changes, in order.
func EncodeAll(b Batch) ([]Encoded, error) {
	return halving(b.Changes, func(changes []Envelope) ([]byte, string, error) {
		return Encode(Batch{Protocol: b.Protocol, Clinic: b.Clinic, Changes: changes})
	})
}

// halving encodes items as one body with enc or, when that body would
// exceed MaxBody (ErrTooLarge), as the bodies of its two halves, each
// halved again as needed, in order.
func halving[T any](items []T, enc func([]T) ([]byte, string, error)) ([]Encoded, error) {
	body, ce, err := enc(items)
	if errors.Is(err, ErrTooLarge) && len(items) > 1 {
		half := len(items) / 2
		first, err := halving(items[:half], enc)
		if err != nil {
			return nil, err
		}
		rest, err := halving(items[half:], enc)
		if err != nil {
			return nil, err
		}
		return append(first, rest...), nil
	}
	if err != nil {
		return nil, err
	}
	return []Encoded{{Body: body, ContentEncoding: ce, Changes: len(items)}}, nil
}
