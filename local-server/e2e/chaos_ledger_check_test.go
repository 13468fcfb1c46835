package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// TestChaosLedgerJudges: the soak's checks flag what they are there to
// flag, so a quiet soak means a sound system, not a blind check.
func TestChaosLedgerJudges(t *testing.T) {
	parallel(t)
	v := func(s string) version.V {
		x, err := version.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	patient := func() *entry {
		return &entry{kind: wire.KindPatient, id: "7", marker: "m", acked: []write{{v("1.0"), "a"}, {v("3.0"), "c"}, {v("2.0"), "b"}},
			doubt: map[string]bool{"d": true}}
	}
	tests := []struct {
		name string
		e    *entry
		side string
		got  *heldCopy
		want string // a part of the complaint; "" for none
	}{
		{"last acknowledged write", patient(), "clinic", &heldCopy{id: "7", tag: "c", version: v("3.0")}, ""},
		{"missing record", patient(), "cloud", nil, "lost"},
		{"older version", patient(), "cloud", &heldCopy{id: "7", tag: "b", version: v("2.0")}, "lost"},
		{"other content at the acknowledged version", patient(), "clinic", &heldCopy{id: "7", tag: "x", version: v("3.0")}, "acknowledged"},
		{"newer version from an unanswered write", patient(), "clinic", &heldCopy{id: "7", tag: "d", version: v("4.0")}, ""},
		{"newer version, same content (renumbered)", patient(), "cloud", &heldCopy{id: "7", tag: "c", version: v("5.0")}, ""},
		{"newer version nobody wrote", patient(), "clinic", &heldCopy{id: "7", tag: "x", version: v("4.0")}, "no unanswered write"},
		{"tombstone instead of content", patient(), "cloud", &heldCopy{id: "7", deleted: true, version: v("3.0")}, "acknowledged"},
		{"other id", patient(), "cloud", &heldCopy{id: "8", tag: "c", version: v("3.0")}, "holds id"},
		{"unanswered create absent", &entry{kind: wire.KindPatient, doubt: map[string]bool{"a": true}}, "cloud", nil, ""},
		{"un-synced, live in the cloud", &entry{kind: wire.KindPatient, id: "7", acked: []write{{v("1.0"), "a"}}, unsync: "acked"}, "cloud",
			&heldCopy{id: "7", tag: "a", version: v("1.0")}, "un-synced"},
		{"un-synced, clinic copy not excluded", &entry{kind: wire.KindPatient, id: "7", acked: []write{{v("1.0"), "a"}}, unsync: "acked"}, "clinic",
			&heldCopy{id: "7", tag: "a", version: v("1.0"), syncState: "synced"}, "un-synced"},
		{"image naming another file", &entry{kind: wire.KindImage, id: "9", acked: []write{{v("1.0"), "i"}}, sha: "aa"}, "cloud",
			&heldCopy{id: "9", sha: "bb", version: v("2.0")}, "names file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.e.judge(tt.side, tt.got)
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("judge(%s, %+v) = %q, want a complaint containing %q", tt.side, tt.got, got, tt.want)
			}
		})
	}

	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	lg := newLedger()
	e := &entry{kind: wire.KindPatient, id: "7"}
	lg.held(e, heldSession{holder: "a", fence: 10, opened: at(0), lastSave: at(100)})
	lg.held(e, heldSession{holder: "b", fence: 20, opened: at(50), lastSave: at(200)}) // opened before a's last save
	lg.fenced(e, fencedSave{holder: "a", fence: 10, version: v("2.0")})
	lg.fenced(e, fencedSave{holder: "b", fence: 20, version: v("3.0")})
	lg.fenced(e, fencedSave{holder: "a", fence: 10, version: v("3.1")}) // a stale holder's save accepted after b's
	problems, _, _ := lg.overlaps()
	if len(problems) != 2 || !strings.Contains(problems[0]+problems[1], "overlapping") || !strings.Contains(problems[0]+problems[1], "accepted after") {
		t.Errorf("overlaps() = %q, want the overlap and the fence going down", problems)
	}
}
