package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// accept turns e, a change this clinic sent, into the cloud's acceptance
// with cloud_seq seq.
func accept(e wire.Envelope, seq int64) wire.Envelope {
	e.Type, e.CloudSeq = wire.TypeApplied, seq
	return e
}

// TestSessionSaveOverNewerChangeCollides (issue 16 #1): a session opened at
// 1.0 saves after a cloud change (2.0) arrived: the change goes up based on
// 1.0, so the cloud sees it concurrent and applies the policy.
func TestSessionSaveOverNewerChangeCollides(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p := save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Original"}})
	id := p.meta().ID
	created := drain(t, s)
	cloudEdit, _ := json.Marshal(records.Patient{Name: "Cloud edit"})
	if _, err := s.ApplyDown(ctx, []wire.Envelope{accept(created[0], 1), {Protocol: wire.Protocol, Type: wire.TypeApplied,
		Clinic: clinic, Origin: wire.OriginCloud, ChangeID: 77, Kind: wire.KindPatient, RecordID: id,
		BaseVersion: version.First, NewVersion: version.V{A: 2}, CloudSeq: 2, At: time.Now(), Payload: cloudEdit}}); err != nil {
		t.Fatal(err)
	}
	r := save(t, s, Edit{Kind: wire.KindPatient, ID: id, Content: records.Patient{Name: "Clinic edit"},
		Session: "s1", SessionVersion: version.First, Unfenced: true})
	up := drain(t, s)
	if len(up) != 1 || up[0].BaseVersion != version.First || up[0].NewVersion != (version.V{A: 3}) || r.meta().Version != (version.V{A: 3}) {
		t.Fatalf("colliding save sent %+v, want base 1.0 (the session's) and new 3.0", up)
	}
	// A second save of the same session builds on its own save: no collision.
	save(t, s, Edit{Kind: wire.KindPatient, ID: id, Content: records.Patient{Name: "Clinic edit 2"},
		Session: "s1", SessionVersion: version.First, Unfenced: true})
	up = drain(t, s)
	if len(up) != 1 || up[0].BaseVersion != (version.V{A: 3}) || up[0].NewVersion != (version.V{A: 3, B: 1}) {
		t.Fatalf("second save of the session sent %+v, want 3.0 → 3.1", up)
	}
}

// TestTombstoneTakesCloudContent (issue 16 #2): an applied tombstone's
// content replaces the clinic's (a losing edit does not stay in it), and
// the digest tells tombstones with different content apart.
func TestTombstoneTakesCloudContent(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p := save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Before delete"}})
	id := p.meta().ID
	created := drain(t, s)
	if _, err := s.ApplyDown(ctx, []wire.Envelope{accept(created[0], 1)}); err != nil {
		t.Fatal(err)
	}
	save(t, s, Edit{Kind: wire.KindPatient, ID: id, Content: records.Patient{Name: "Losing edit"}})
	edit := drain(t, s)[0]
	before, _ := s.Digest(ctx)
	payload, _ := json.Marshal(records.Patient{Name: "Before delete"})
	// cloud-wins: the cloud's tombstone, at 3.0, answers the clinic's edit.
	if _, err := s.ApplyDown(ctx, []wire.Envelope{{Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: clinic,
		Origin: wire.OriginCloud, ChangeID: edit.ChangeID, Kind: wire.KindPatient, RecordID: id, BaseVersion: version.V{A: 2},
		NewVersion: version.V{A: 3}, Deleted: true, CloudSeq: 2, At: time.Now(), Payload: payload, Conflict: wire.ResolvedCloudWins}}); err != nil {
		t.Fatal(err)
	}
	m, c := get(t, s, wire.KindPatient, id)
	if !m.Deleted || m.Version != (version.V{A: 3}) || c.(records.Patient).Name != "Before delete" {
		t.Fatalf("tombstone = %+v %+v, want the cloud's content, deleted at 3.0", m, c)
	}
	after, _ := s.Digest(ctx)
	key := "patient/" + id.String()
	if after[key] == before[key] || after[key] != records.Digest(version.V{A: 3}, true, 0, m.CreatedAt, records.Patient{Name: "Before delete"}) {
		t.Fatalf("digest of the tombstone does not cover its content")
	}
}

// TestCreatedAtTravels (issue 16 #3): a clinic record's first change carries
// its creation time; a cloud record arriving here takes the cloud's.
func TestCreatedAtTravels(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p := save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Offline"}})
	up := drain(t, s)
	if !up[0].At.Equal(p.meta().CreatedAt) {
		t.Fatalf("first change at %s, record created %s: want equal", up[0].At, p.meta().CreatedAt)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	payload, _ := json.Marshal(records.Patient{Name: "From the cloud"})
	if _, err := s.ApplyDown(ctx, []wire.Envelope{accept(up[0], 1), {Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: clinic,
		Origin: wire.OriginCloud, ChangeID: 99, Kind: wire.KindPatient, RecordID: 99, NewVersion: version.First,
		CloudSeq: 2, At: at, Payload: payload}}); err != nil {
		t.Fatal(err)
	}
	m, _ := get(t, s, wire.KindPatient, 99)
	if !m.CreatedAt.Equal(at) {
		t.Fatalf("cloud record created_at = %s, want the cloud's %s", m.CreatedAt, at)
	}
}
