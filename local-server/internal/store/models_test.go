package store

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
	"github.com/scsync/scsync/shared/wire/wiretest"
)

// sameMetaAsMarshal fails t unless appendMeta appends json.Marshal(m)'s
// bytes but for the closing brace, or fails, with b as it was, where
// json.Marshal fails.
func sameMetaAsMarshal(t *testing.T, m Meta) {
	t.Helper()
	wiretest.SameAsMarshal(t, &m, func(b []byte) ([]byte, error) {
		out, ok := appendMeta(b, &m)
		if !ok {
			return out, wiretest.ErrRefused
		}
		return append(out, '}'), nil
	})
}

// optionalMeta sets each of Meta's optional (omitempty, pointer) fields
// whose bit is set in mask, and the booleans.
func optionalMeta(m Meta, mask int) Meta {
	set := func(bit int) bool { return mask&(1<<bit) != 0 }
	at := time.Date(2026, 12, 7, 6, 50, 1, 987654321, time.UTC)
	m.Deleted, m.Unfenced = set(0), set(1)
	if set(2) {
		m.ConflictOf = 7_000_000_000_001
	}
	if set(3) {
		m.SyncChoice = "always"
	}
	if set(4) {
		m.SyncedAt = &at
	}
	if set(5) {
		m.PendingSince = &at
	}
	if set(6) {
		m.Fence = 12
	}
	return m
}

const optionalMetaFields = 7

// aMeta is a record's metadata as a create answers it.
func aMeta() Meta {
	now := time.Now()
	return Meta{
		ID: 383061948362752, ClinicID: 1234567890123, Kind: "patient", Version: version.First, Origin: "local",
		SyncState: StatePending, CloudSeq: 0, CreatedAt: now, UpdatedAt: now,
		// Neither column is in the answer (json:"-").
		Queued: true, SortDate: "9999-12-31", CloudVersion: version.V{A: 3}, PendingChangeID: 99, EditSession: "s",
	}
}

func TestAppendMetaMatchesMarshal(t *testing.T) {
	t.Parallel()
	t.Run("every set of optional fields", func(t *testing.T) {
		t.Parallel()
		for mask := range 1 << optionalMetaFields {
			sameMetaAsMarshal(t, optionalMeta(aMeta(), mask))
		}
	})
	t.Run("the zero meta", func(t *testing.T) {
		t.Parallel()
		sameMetaAsMarshal(t, Meta{})
		sameMetaAsMarshal(t, optionalMeta(Meta{}, 1<<optionalMetaFields-1))
	})
	t.Run("strings", func(t *testing.T) {
		t.Parallel()
		for _, s := range wiretest.Strings {
			for _, f := range []func(*Meta){
				func(m *Meta) { m.Kind = wire.Kind(s) },
				func(m *Meta) { m.Origin = s },
				func(m *Meta) { m.SyncState = s },
				func(m *Meta) { m.SyncChoice = s },
			} {
				m := optionalMeta(aMeta(), 1<<optionalMetaFields-1)
				f(&m)
				sameMetaAsMarshal(t, m)
			}
		}
	})
	t.Run("numbers", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int64{0, 1, -1, 1 << 53, 1<<63 - 1, -1 << 63} {
			m := optionalMeta(aMeta(), 1<<optionalMetaFields-1)
			m.ID, m.ClinicID, m.ConflictOf, m.CloudSeq, m.Fence = ids.ID(n), ids.ID(n), ids.ID(n), n, n
			sameMetaAsMarshal(t, m)
		}
		for _, v := range []version.V{{}, version.First, {A: 3, B: 17}, {A: 1<<32 - 1, B: 1<<32 - 1}} {
			m := aMeta()
			m.Version = v
			sameMetaAsMarshal(t, m)
		}
	})
	t.Run("times", func(t *testing.T) {
		t.Parallel()
		for _, at := range wiretest.Times() {
			for _, f := range []func(*Meta){
				func(m *Meta) { m.SyncedAt = &at },
				func(m *Meta) { m.PendingSince = &at },
				func(m *Meta) { m.CreatedAt = at },
				func(m *Meta) { m.UpdatedAt = at },
			} {
				m := aMeta()
				f(&m)
				sameMetaAsMarshal(t, m)
			}
		}
	})
}

// TestAppendMetaKnowsEveryField fails when Meta gains, loses or renames a
// field: appendMeta must then write it too.
func TestAppendMetaKnowsEveryField(t *testing.T) {
	t.Parallel()
	want := []string{
		"ID id", "ClinicID clinic_id", "Kind kind", "Version version", "Origin origin", "Deleted deleted",
		"ConflictOf conflict_of,omitempty", "SyncState sync_state", "SyncChoice sync_choice,omitempty",
		"SyncedAt synced_at,omitempty", "PendingSince pending_since,omitempty", "CloudSeq cloud_seq",
		"Fence fence,omitempty", "Unfenced unfenced,omitempty", "CreatedAt created_at", "UpdatedAt updated_at",
	}
	if got := wiretest.JSONFields(reflect.TypeFor[Meta]()); !slices.Equal(got, want) {
		t.Fatalf("Meta's JSON fields = %q, appendMeta writes %q: update appendMeta and this list", got, want)
	}
}

func FuzzAppendMeta(f *testing.F) {
	wiretest.AddSeeds(f)
	f.Fuzz(func(t *testing.T, kind, state string, id, n int64, flags uint16, at int64, offset int, mono bool) {
		flag := func(bit int) bool { return flags&(1<<bit) != 0 }
		m := optionalMeta(Meta{
			ID: ids.ID(id), ClinicID: ids.ID(n), Kind: wire.Kind(kind), Version: version.V{A: uint32(id), B: uint32(n)},
			Origin: state + kind, SyncState: state, CloudSeq: n,
			CreatedAt: wiretest.Time(at, offset, 0, mono), UpdatedAt: wiretest.Time(at+n, offset, 0, false),
		}, int(flags))
		if flag(8) {
			m.SyncChoice = kind
		}
		if flag(9) {
			synced := wiretest.Time(at, offset, int(n%20000), false)
			m.SyncedAt = &synced
		}
		if flag(10) {
			m.Fence, m.ConflictOf = id, ids.ID(n)
		}
		sameMetaAsMarshal(t, m)
	})
}

// BenchmarkRecordAnswer is the answer of a REST create of a 1 KB patient
// (AppendRecordJSON, its content's JSON encoded by the save), its metadata
// by json.Marshal as before and by appendMeta now.
func BenchmarkRecordAnswer(b *testing.B) {
	pending := time.Now()
	r := &Row[records.Patient]{Meta: aMeta()}
	r.PendingSince = &pending
	r.encoded = fmt.Appendf(nil, `{"chart_no":"B-000001","name":"Bench Patient 1","notes":%q}`, strings.Repeat("x", 900))
	buf := make([]byte, 0, 2048)
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, err := json.Marshal(r.meta())
			if err != nil {
				b.Fatal(err)
			}
			out := append(append(buf[:0], m[:len(m)-1]...), `,"data":`...)
			buf = append(append(out, r.encoded...), '}', '\n')
		}
	})
	b.Run("AppendRecordJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if buf, err = AppendRecordJSON(buf[:0], r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
