package events

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire/wiretest"
)

// sameAsMarshal fails t unless e.AppendJSON appends exactly what
// json.Marshal(e) returns, or fails with its error and leaves b as it was.
func sameAsMarshal(t *testing.T, e Event) {
	t.Helper()
	wiretest.SameAsMarshal(t, e, e.AppendJSON)
}

// optionalEvent sets each of the event's optional (omitempty) fields whose
// bit is set in mask.
func optionalEvent(e Event, mask int) Event {
	set := func(bit int) bool { return mask&(1<<bit) != 0 }
	for i, f := range []func(){
		func() { e.Clinic = 1234567890123 }, func() { e.Kind = "patient" }, func() { e.Record = 383061948362752 },
		func() { e.Side = SideCloud }, func() { e.User = "dr.kim" }, func() { e.Client = "c1" },
		func() { e.Session = "s1" }, func() { e.Version = version.V{A: 2, B: 1} }, func() { e.Reason = ReasonSaved },
		func() { e.Unfenced = true },
		func() { e.Transfer = &Transfer{State: TransferUploading, BytesDone: 1 << 20, BytesTotal: 1 << 30} },
		func() {
			if e.Transfer != nil {
				e.Transfer.Reason = "disk full"
			}
		},
	} {
		if set(i) {
			f()
		}
	}
	return e
}

const optionalEventFields = 12

// anEvent is the clinic's event of an acceptance.
func anEvent() Event {
	return Event{Seq: 1764800000123456, Type: TypeChanged, At: time.Now().UTC()}
}

func TestAppendJSONMatchesMarshal(t *testing.T) {
	t.Parallel()
	t.Run("every set of optional fields", func(t *testing.T) {
		t.Parallel()
		for mask := range 1 << optionalEventFields {
			sameAsMarshal(t, optionalEvent(anEvent(), mask))
		}
	})
	t.Run("the zero event", func(t *testing.T) {
		t.Parallel()
		sameAsMarshal(t, Event{})
		sameAsMarshal(t, Event{Transfer: &Transfer{}})
		sameAsMarshal(t, Event{Version: version.V{B: 1}})
	})
	t.Run("strings", func(t *testing.T) {
		t.Parallel()
		for _, s := range wiretest.Strings {
			for _, f := range []func(*Event){
				func(e *Event) { e.Type = s }, func(e *Event) { e.Kind = s }, func(e *Event) { e.Side = s },
				func(e *Event) { e.User = s }, func(e *Event) { e.Client = s }, func(e *Event) { e.Session = s },
				func(e *Event) { e.Reason = s }, func(e *Event) { e.Transfer.State = s }, func(e *Event) { e.Transfer.Reason = s },
			} {
				e := optionalEvent(anEvent(), 1<<optionalEventFields-1)
				f(&e)
				sameAsMarshal(t, e)
			}
		}
	})
	t.Run("numbers", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int64{0, 1, -1, 1 << 53, 1<<63 - 1, -1 << 63} {
			e := optionalEvent(anEvent(), 1<<optionalEventFields-1)
			e.Seq, e.Clinic, e.Record, e.Transfer.BytesDone, e.Transfer.BytesTotal = n, ids.ID(n), ids.ID(n), n, n
			sameAsMarshal(t, e)
		}
		for _, v := range []version.V{{}, version.First, {B: 1}, {A: 3, B: 17}, {A: 1<<32 - 1, B: 1<<32 - 1}} {
			e := anEvent()
			e.Version = v
			sameAsMarshal(t, e)
		}
	})
	t.Run("times", func(t *testing.T) {
		t.Parallel()
		for _, at := range wiretest.Times() {
			e := optionalEvent(anEvent(), 1<<optionalEventFields-1)
			e.At = at
			sameAsMarshal(t, e)
		}
	})
}

// TestAppendJSONKnowsEveryField fails when Event or Transfer gains, loses
// or renames a field: appendFast must then write it too.
func TestAppendJSONKnowsEveryField(t *testing.T) {
	t.Parallel()
	want := []string{
		"Seq seq", "Type type", "Clinic clinic,omitempty", "Kind kind,omitempty", "Record record,omitempty",
		"Side side,omitempty", "User user,omitempty", "Client client,omitempty", "Session session,omitempty",
		"Version version,omitzero", "Reason reason,omitempty", "Unfenced unfenced,omitempty",
		"Transfer transfer,omitempty", "At at",
		"State state", "BytesDone bytes_done", "BytesTotal bytes_total", "Reason reason,omitempty",
	}
	if got := wiretest.JSONFields(reflect.TypeFor[Event](), reflect.TypeFor[Transfer]()); !slices.Equal(got, want) {
		t.Fatalf("Event's and Transfer's JSON fields = %q, appendFast writes %q: update appendFast and this list", got, want)
	}
}

func FuzzAppendJSON(f *testing.F) {
	wiretest.AddSeeds(f)
	f.Fuzz(func(t *testing.T, typ, text string, id, n int64, flags uint16, at int64, offset int, mono bool) {
		e := optionalEvent(Event{Seq: n, Type: typ, At: wiretest.Time(at, offset, 0, mono)}, int(flags))
		if flags&(1<<12) != 0 {
			e.Kind, e.User, e.Reason = text, typ, text
		}
		if flags&(1<<13) != 0 {
			e.Clinic, e.Record, e.Version = ids.ID(id), ids.ID(n), version.V{A: uint32(id), B: uint32(n)}
		}
		if e.Transfer != nil && flags&(1<<14) != 0 {
			e.Transfer.State, e.Transfer.BytesDone, e.Transfer.BytesTotal = text, id, n
		}
		if flags&(1<<15) != 0 {
			e.At = wiretest.Time(at, offset, int(n%20000), false)
		}
		sameAsMarshal(t, e)
	})
}

// BenchmarkEventJSON is the clinic's event of an acceptance encoded as the
// Hub did (json.Marshal) and does (AppendJSON into its buffer, copied out).
func BenchmarkEventJSON(b *testing.B) {
	e := Event{Seq: 1764800000123456, Type: TypeChanged, Clinic: 1234567890123, Kind: "patient",
		Record: 383061948362752, Version: version.First, At: time.Now().UTC()}
	var data []byte
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if data, err = json.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = e.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
			data = bytes.Clone(buf)
		}
	})
	_ = data
}
