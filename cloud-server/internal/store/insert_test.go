package store

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
)

// TestAcceptedChangesReadBackExactly: the change rows an accept writes in
// one statement of arrays (insertChanges) read back as the clinic sent
// them, whatever their text holds (quotes, backslashes, braces, commas,
// "NULL", non-ASCII; every row's conflict and session are empty) and to the microsecond.
func TestAcceptedChangesReadBackExactly(t *testing.T) {
	s := open(t)
	enroll(t, s, 300, "")
	names := []string{`Kim "the" Lee`, `back\slash\\`, `{a,b}`, "NULL", "Zoë 金", ` spaced `, `\"`}
	at := time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)
	for i, n := range names {
		e := change(300, ids.ID(i+1), ids.ID(700+i), version.V{}, version.First, n)
		e.At = at.Add(time.Duration(i) * time.Microsecond)
		e.SavedByName = n
		applyUp(t, s, 300, e)
	}
	got := feed(t, s, 300)
	if len(got) != len(names) {
		t.Fatalf("feed has %d changes, want %d", len(got), len(names))
	}
	for i, e := range got {
		var p records.Patient
		if err := json.Unmarshal(e.Payload, &p); err != nil || p.Name != names[i] {
			t.Fatalf("change %d: payload %s (%v), want name %q", i, e.Payload, err, names[i])
		}
		if e.SavedByName != names[i] {
			t.Fatalf("change %d: saved_by_name %q, want %q", i, e.SavedByName, names[i])
		}
		if want := at.Add(time.Duration(i) * time.Microsecond); !e.At.Equal(want) {
			t.Fatalf("change %d: at %v, want %v", i, e.At, want)
		}
		if e.ChangeID != ids.ID(i+1) || e.RecordID != ids.ID(700+i) || e.NewVersion != version.First || e.CloudSeq != int64(i+1) {
			t.Fatalf("change %d = %+v", i, e)
		}
	}
}
