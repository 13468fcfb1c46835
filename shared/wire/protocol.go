package wire

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// MinProtocol is the oldest protocol version this build still speaks. It
// is raised only once no release the compatibility policy covers
// (docs/protocol.md: the cloud accepts clinics at least two releases old)
// speaks anything older.
const MinProtocol = 2

// LegacyProtocol is what a peer that states no range speaks: releases
// before ranges (up to commit edfbac7) speak exactly protocol 2 and decode
// strictly, so they must receive protocol 2 envelopes with no field they do
// not know.
const LegacyProtocol = 2

// maxOverride, set at link time, makes a test build speak versions newer
// than Protocol (-ldflags "-X github.com/scsync/scsync/shared/wire.maxOverride=3"):
// those versions carry nothing new — a change converted down to Protocol
// only has its number rewritten — so an end-to-end test can run a cloud or
// a clinic that speaks a newer protocol against one that does not
// (local-server/e2e/protocol_bump_test.go). Empty in every release build.
var maxOverride string

// MaxProtocol is the newest protocol version this build speaks: Protocol,
// or the test override when it is higher.
func MaxProtocol() int {
	if maxOverride == "" {
		return Protocol // without strconv's error for "", an allocation per call
	}
	if n, err := strconv.Atoi(maxOverride); err == nil && n > Protocol {
		return n
	}
	return Protocol
}

// Range is the span of protocol versions a peer speaks.
type Range struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// Local is the range this build speaks.
func Local() Range { return Range{Min: MinProtocol, Max: MaxProtocol()} }

// Legacy is the range of a peer that states none.
func Legacy() Range { return Range{Min: LegacyProtocol, Max: LegacyProtocol} }

// Valid reports whether r is a range at all.
func (r Range) Valid() bool { return r.Min >= 1 && r.Min <= r.Max }

// Has reports whether r includes version v.
func (r Range) Has(v int) bool { return v >= r.Min && v <= r.Max }

func (r Range) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(r.Min)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// Negotiate returns the newest version both ranges include; ErrProtocol
// when they have none in common (one side is too old for the other: the
// message names both ranges, for the operator).
func Negotiate(ours, theirs Range) (int, error) {
	v := min(ours.Max, theirs.Max)
	if !ours.Valid() || !theirs.Valid() || v < max(ours.Min, theirs.Min) {
		return 0, fmt.Errorf("%w: this side speaks %s, the peer %s", ErrProtocol, ours, theirs)
	}
	return v, nil
}

// The range a peer states. AMQP messages carry it in the headers (an
// earlier release ignores headers it does not know, while it refuses any
// unknown JSON field), HTTP requests and answers in the HTTP headers of
// the same names.
const (
	HeaderProtocolMin = "x-scsync-protocol-min"
	HeaderProtocolMax = "x-scsync-protocol-max"
)

// maxStated bounds a stated version, so a garbled header cannot make a
// range no build will ever reach.
const maxStated = 1000

// ParseRange reads a stated range; ok is false when min and max are both
// absent (a peer of a release before ranges: treat it as Legacy).
func ParseRange(minS, maxS string) (r Range, ok bool, err error) {
	minS, maxS = strings.TrimSpace(minS), strings.TrimSpace(maxS)
	if minS == "" && maxS == "" {
		return Legacy(), false, nil
	}
	lo, err1 := strconv.Atoi(minS)
	hi, err2 := strconv.Atoi(maxS)
	r = Range{Min: lo, Max: hi}
	if err1 != nil || err2 != nil || !r.Valid() || hi > maxStated {
		return Legacy(), true, fmt.Errorf("%w: stated range %q-%q", ErrInvalid, minS, maxS)
	}
	return r, true, nil
}

// RangeOfHeaders reads the range stated in AMQP message headers.
func RangeOfHeaders(h map[string]any) (Range, bool, error) {
	str := func(k string) string {
		switch v := h[k].(type) {
		case nil:
			return ""
		case string:
			return v
		case []byte:
			return string(v)
		default:
			return fmt.Sprint(v)
		}
	}
	return ParseRange(str(HeaderProtocolMin), str(HeaderProtocolMax))
}

// Headers states r in AMQP message headers.
func (r Range) Headers() map[string]any {
	return map[string]any{HeaderProtocolMin: int32(r.Min), HeaderProtocolMax: int32(r.Max)}
}

// RangeOfHTTP reads the range stated in an HTTP request's or answer's headers.
func RangeOfHTTP(h http.Header) (Range, bool, error) {
	return ParseRange(h.Get(HeaderProtocolMin), h.Get(HeaderProtocolMax))
}

// SetHTTP states r in HTTP headers.
func (r Range) SetHTTP(h http.Header) {
	h.Set(HeaderProtocolMin, strconv.Itoa(r.Min))
	h.Set(HeaderProtocolMax, strconv.Itoa(r.Max))
}

// downgrades[n] converts an envelope of version n into version n-1: it
// clears (or folds into older fields) what version n added. A version a
// release adds registers its step here; a version a test build speaks
// beyond Protocol (maxOverride) adds nothing, so it needs none.
var downgrades = map[int]func(*Envelope){}

// As returns e in protocol version v: down through each version's step
// (dropping what an older peer does not know), or up by the number alone
// (a newer version only adds optional fields, whose zero value means what
// the older version meant).
func (e Envelope) As(v int) (Envelope, error) {
	if v < MinProtocol || v > MaxProtocol() {
		return e, fmt.Errorf("%w: %d (this build speaks %s)", ErrProtocol, v, Local())
	}
	for n := e.Protocol; n > v; n-- {
		if f := downgrades[n]; f != nil {
			f(&e)
		} else if n <= Protocol {
			return e, fmt.Errorf("%w: no conversion from %d to %d", ErrProtocol, n, n-1)
		}
	}
	e.Protocol = v
	return e, nil
}

// As returns b with every change in protocol version v (Envelope.As).
func (b Batch) As(v int) (Batch, error) {
	out := Batch{Protocol: v, Clinic: b.Clinic, Changes: make([]Envelope, len(b.Changes))}
	for i, e := range b.Changes {
		c, err := e.As(v)
		if err != nil {
			return b, err
		}
		out.Changes[i] = c
	}
	return out, nil
}
