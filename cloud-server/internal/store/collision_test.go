package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// TestCloudSessionCollision (issue 16 #1, the cloud's side): a cloud
// session opened at 1.0 saves after a clinic change (2.0) was accepted;
// the clinic's policy decides: local-wins refuses the save, cloud-wins
// takes it naming the policy, keep-both takes it flagged and keeps the
// clinic's content as a conflict copy.
func TestCloudSessionCollision(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	for i, policy := range []string{PolicyLocalWins, PolicyCloudWins, PolicyKeepBoth} {
		t.Run(policy, func(t *testing.T) {
			clinic := ids.ID(700 + i)
			enroll(t, s, clinic, policy)
			rec := ids.ID(7000 + i)
			created := time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC)
			first := change(clinic, ids.ID(71000+i), rec, version.V{}, version.First, "Original")
			first.At = created
			applyUp(t, s, clinic, first, change(clinic, ids.ID(72000+i), rec, version.First, version.V{A: 2}, "Clinic edit"))
			if m, _ := patient(t, s, clinic, rec); !m.CreatedAt.Equal(created) {
				t.Fatalf("created_at = %s, want the clinic's %s", m.CreatedAt, created)
			}
			_, err := s.Save(ctx, clinic, Edit{Kind: wire.KindPatient, ID: rec, Content: records.Patient{Name: "Cloud edit"},
				ChangeID: ids.ID(73000 + i), Session: "c1", SessionVersion: version.First, Unfenced: true})
			m, p := patient(t, s, clinic, rec)
			switch policy {
			case PolicyLocalWins:
				if !errors.Is(err, ErrCollision) || p.Name != "Clinic edit" {
					t.Fatalf("Save = %v, record %q; want ErrCollision and the clinic's content kept", err, p.Name)
				}
				return
			case PolicyCloudWins:
				if err != nil || p.Name != "Cloud edit" || m.Conflict {
					t.Fatalf("Save = %v, record %q conflict=%v; want the cloud's save", err, p.Name, m.Conflict)
				}
			case PolicyKeepBoth:
				if err != nil || p.Name != "Cloud edit" || !m.Conflict {
					t.Fatalf("Save = %v, record %q conflict=%v; want the cloud's save, flagged", err, p.Name, m.Conflict)
				}
			}
			var copies, named int
			for _, e := range feed(t, s, clinic) {
				if e.ConflictOf == rec {
					copies++
				}
				if e.RecordID == rec && e.Conflict == policy {
					named++
				}
			}
			if want := map[string]int{PolicyCloudWins: 0, PolicyKeepBoth: 1}[policy]; copies != want || named != 1 {
				t.Fatalf("feed has %d conflict copies and %d changes naming %s, want %d and 1", copies, named, policy, want)
			}
		})
	}
}
