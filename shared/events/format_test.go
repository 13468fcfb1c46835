package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

func TestLabel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		e    Event
		want string
	}{
		{Event{Type: TypeEditing, Side: SideLocal, User: "ann"}, "Editing by local (ann)"},
		{Event{Type: TypeEditing, Side: SideCloud, User: "dr.kim"}, "Editing by cloud (dr.kim)"},
		{Event{Type: TypeEditing, Side: SideCloud}, "Editing by cloud"},
		{Event{Type: TypeSaved, Version: version.V{A: 2, B: 1}}, "Saved"},
		{Event{Type: TypeClosed, Reason: ReasonReleased}, "Closed"},
		{Event{Type: TypeClosed, Reason: ReasonSaved}, "Closed"},
		{Event{Type: TypeClosed, Reason: ReasonIdle}, "Closed (idle)"},
		{Event{Type: TypeClosed, Reason: ReasonExpired}, "Closed (expired)"},
		{Event{Type: TypeIdleWarning}, "Idle — closing soon"},
		{Event{Type: TypeTransfer, Transfer: &Transfer{State: TransferUploading, BytesDone: 450, BytesTotal: 1000}}, "Uploading 45%"},
		{Event{Type: TypeTransfer, Transfer: &Transfer{State: TransferDownloading, BytesDone: 1, BytesTotal: 10}}, "Downloading 10%"},
		{Event{Type: TypeTransfer, Transfer: &Transfer{State: TransferUploading}}, "Uploading"},
		{Event{Type: TypeTransfer, Transfer: &Transfer{State: TransferQueued}}, "Transfer queued"},
		{Event{Type: TypeTransfer, Transfer: &Transfer{State: TransferFailed, Reason: "disk full"}}, "Transfer failed"},
		{Event{Type: TypeTransfer, Transfer: &Transfer{State: TransferPresent, BytesDone: 9, BytesTotal: 9}}, ""},
		{Event{Type: TypeConflict, Reason: "keep_both"}, "Conflict"},
		{Event{Type: TypeChanged}, ""},
		{Event{Type: TypeReset}, ""},
	}
	for _, tt := range tests {
		if got := Label(tt.e); got != tt.want {
			t.Errorf("Label(%+v) = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 3, 12, 3, 4, 0, time.Local)
	rec := ids.ID(383061948362752)
	tests := []struct {
		e    Event
		want string
	}{
		{Event{Type: TypeEditing, Kind: "patient", Record: rec, Side: SideCloud, User: "dr.kim", Version: version.V{A: 2}, At: at},
			"12:03:04  patient 383061948362752  Editing by cloud (dr.kim)  v2.0"},
		{Event{Type: TypeEditing, Kind: "patient", Record: rec, Side: SideLocal, User: "ann", Version: version.V{A: 2}, Unfenced: true, At: at},
			"12:03:04  patient 383061948362752  Editing by local (ann)  v2.0  unfenced — conflict risk"},
		{Event{Type: TypeSaved, Kind: "patient", Record: rec, Side: SideCloud, User: "dr.kim", Version: version.V{A: 2, B: 1}, At: at},
			"12:03:04  patient 383061948362752  Saved v2.1  by cloud (dr.kim)"},
		{Event{Type: TypeClosed, Kind: "patient", Record: rec, Reason: ReasonIdle, At: at},
			"12:03:04  patient 383061948362752  Closed (idle)"},
		{Event{Type: TypeClosed, Kind: "patient", Record: rec, Reason: ReasonReleased, Side: SideLocal, User: "ann", At: at},
			"12:03:04  patient 383061948362752  Closed  by local (ann)"},
		{Event{Type: TypeIdleWarning, Kind: "patient", Record: rec, At: at},
			"12:03:04  patient 383061948362752  Idle — closing soon"},
		{Event{Type: TypeChanged, Kind: "study", Record: rec, Side: SideCloud, Version: version.V{A: 3}, At: at},
			"12:03:04  study 383061948362752  Changed v3.0  on cloud"},
		{Event{Type: TypeConflict, Kind: "patient", Record: rec, Reason: "keep_both", At: at},
			"12:03:04  patient 383061948362752  Conflict (keep_both)"},
		{Event{Type: TypeTransfer, Kind: "image", Record: rec, Transfer: &Transfer{State: TransferUploading, BytesDone: 450_000_000, BytesTotal: 1_000_000_000}, At: at},
			"12:03:04  image 383061948362752  Uploading 45% (450 MB of 1.0 GB)"},
		{Event{Type: TypeTransfer, Kind: "image", Record: rec, Transfer: &Transfer{State: TransferFailed, Reason: "checksum mismatch"}, At: at},
			"12:03:04  image 383061948362752  Transfer failed: checksum mismatch"},
		{Event{Type: TypeTransfer, Kind: "image", Record: rec, Transfer: &Transfer{State: TransferPresent, BytesTotal: 2048}, At: at},
			"12:03:04  image 383061948362752  File present (2.0 kB)"},
		{Event{Type: TypeReset, At: at}, "12:03:04  reset: events were missed, re-fetch the state"},
		{Event{Type: TypeSaved, Kind: "patient", Record: rec}, "--:--:--  patient 383061948362752  Saved"},
	}
	for _, tt := range tests {
		if got := Format(tt.e); got != tt.want {
			t.Errorf("Format(%+v) =\n%q, want\n%q", tt.e, got, tt.want)
		}
	}
}

func TestFormatTitled(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 3, 12, 3, 4, 0, time.Local)
	rec := ids.ID(383061948362752)
	long := strings.Repeat("가", MaxTitle+5)
	tests := []struct {
		e     Event
		title string
		want  string
	}{
		{Event{Type: TypeSaved, Kind: "patient", Record: rec, Side: SideCloud, User: "dr.kim", Version: version.V{A: 2, B: 1}, At: at}, "Kim Minji",
			`12:03:04  patient 383061948362752 "Kim Minji"  Saved v2.1  by cloud (dr.kim)`},
		{Event{Type: TypeChanged, Kind: "study", Record: rec, Version: version.V{A: 3}, At: at}, "  CBCT follow-up ",
			`12:03:04  study 383061948362752 "CBCT follow-up"  Changed v3.0`},
		{Event{Type: TypeConflict, Kind: "patient", Record: rec, Reason: "keep_both", At: at}, "Evil\x1b[2J\nName",
			`12:03:04  patient 383061948362752 "Evil\x1b[2J\nName"  Conflict (keep_both)`},
		{Event{Type: TypeEditing, Kind: "patient", Record: rec, At: at}, long,
			`12:03:04  patient 383061948362752 "` + strings.Repeat("가", MaxTitle-1) + `…"  Editing`},
		{Event{Type: TypeEditing, Kind: "patient", Record: rec, At: at}, "",
			"12:03:04  patient 383061948362752  Editing"},
		{Event{Type: TypeDivergence, Kind: "verify", Reason: "3 records", At: at}, "ignored without a record",
			"12:03:04  verify  Clinic and cloud differ: 3 records"},
	}
	for _, tt := range tests {
		if got := FormatTitled(tt.e, tt.title); got != tt.want {
			t.Errorf("FormatTitled(%+v, %q) =\n%q, want\n%q", tt.e, tt.title, got, tt.want)
		}
	}
}

func TestBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {999, "999 B"}, {1000, "1.0 kB"}, {1500, "1.5 kB"}, {45_000, "45 kB"},
		{999_999, "1.0 MB"}, {450_000_000, "450 MB"}, {1_000_000_000, "1.0 GB"}, {12_300_000_000, "12 GB"},
	}
	for _, tt := range tests {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestEventJSON(t *testing.T) {
	t.Parallel()
	e := Event{
		Seq: 7, Type: TypeEditing, Clinic: 1234567890123, Kind: "patient", Record: 383061948362752,
		Side: SideCloud, User: "dr.kim", Client: "c1", Session: "s1", Version: version.V{A: 2},
		Unfenced: true, At: time.Date(2026, 11, 3, 12, 3, 4, 0, time.UTC),
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":7,"type":"editing","clinic":"1234567890123","kind":"patient","record":"383061948362752","side":"cloud","user":"dr.kim","client":"c1","session":"s1","version":"2.0","unfenced":true,"at":"2026-11-03T12:03:04Z"}`
	if string(b) != want {
		t.Errorf("json.Marshal(event) =\n%s, want\n%s", b, want)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || back != e {
		t.Errorf("round trip = %+v, %v; want %+v", back, err, e)
	}
	tr, _ := json.Marshal(Event{Type: TypeTransfer, Transfer: &Transfer{State: TransferUploading, BytesDone: 1, BytesTotal: 2}})
	if !strings.Contains(string(tr), `"transfer":{"state":"uploading","bytes_done":1,"bytes_total":2}`) || strings.Contains(string(tr), `"version"`) {
		t.Errorf("json.Marshal(transfer event) = %s", tr)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Event{Type: TypeSaved, Clinic: 1, Kind: "patient", Record: 2, Side: SideLocal}
	tests := []struct {
		name string
		edit func(*Event)
		ok   bool
	}{
		{"valid", func(*Event) {}, true},
		{"record 0", func(e *Event) { e.Record = 0 }, true},
		{"reset is not publishable", func(e *Event) { e.Type = TypeReset }, false},
		{"unknown type", func(e *Event) { e.Type = "bogus" }, false},
		{"no clinic", func(e *Event) { e.Clinic = 0 }, false},
		{"kind with a dot", func(e *Event) { e.Kind = "a.b" }, false},
		{"kind wildcard", func(e *Event) { e.Kind = "#" }, false},
		{"bad side", func(e *Event) { e.Side = "moon" }, false},
		{"transfer without progress", func(e *Event) { e.Type = TypeTransfer }, false},
		{"bad transfer state", func(e *Event) { e.Type = TypeTransfer; e.Transfer = &Transfer{State: "lost"} }, false},
		{"transfer", func(e *Event) { e.Type = TypeTransfer; e.Transfer = &Transfer{State: TransferQueued} }, true},
	}
	for _, tt := range tests {
		e := ok
		tt.edit(&e)
		err := e.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidEvent)) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestRoutingKeys(t *testing.T) {
	t.Parallel()
	if got, want := RoutingKey(12, "patient", 34), "clinic.12.patient.34"; got != want {
		t.Errorf("RoutingKey() = %q, want %q", got, want)
	}
	if got, want := ClinicPattern(12), "clinic.12.#"; got != want {
		t.Errorf("ClinicPattern() = %q, want %q", got, want)
	}
	for key, want := range map[string]ids.ID{"clinic.12.patient.34": 12, "clinic.x.patient.1": 0, "other.12.a.1": 0, "clinic.12": 0, "clinic.0.a.1": 0} {
		got, ok := clinicOfKey(key)
		if got != want || ok != (want != 0) {
			t.Errorf("clinicOfKey(%q) = %d, %v; want %d", key, got, ok, want)
		}
	}
}
