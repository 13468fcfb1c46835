package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// The parallel scan visits every record the cloud should hold exactly
// once, with the digest records.Digest gives its row.
func TestEachDigestVisitsEveryRecordOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	pids, err := s.Import(ctx, []Import{{Kind: wire.KindPatient, Content: records.Patient{Name: "P"}}})
	if err != nil {
		t.Fatal(err)
	}
	var items []Import
	for i := range 3000 {
		items = append(items, Import{Kind: wire.KindStudy, Content: records.Study{PatientID: pids[0], StudyDate: "2025-01-02", Description: fmt.Sprintf("Study %d", i)}})
	}
	if _, err := s.Import(ctx, items); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Exec("UPDATE studies SET sync_state = 'synced', queued = true").Error; err != nil {
		t.Fatal(err)
	}
	if err := s.db.Exec("UPDATE patients SET sync_state = 'synced', queued = true").Error; err != nil {
		t.Fatal(err)
	}
	var rows []Row[records.Study]
	if err := s.db.Where("clinic_id = ?", s.clinic).Order("id").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, r := range rows {
		want["study/"+r.ID.String()] = records.Digest(r.Version, r.Deleted, r.ConflictOf, r.CreatedAt, r.Data)
	}
	seen := map[string]int{}
	studies := 0
	err = s.EachDigest(ctx, func(key, digest string) error {
		seen[key]++
		if w, ok := want[key]; ok {
			studies++
			if digest != w {
				t.Errorf("%s: digest %s, want %s", key, digest, w)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if studies != len(rows) || len(seen) != len(rows)+1 {
		t.Fatalf("EachDigest visited %d studies of %d and %d keys, want every study and the patient", studies, len(rows), len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s visited %d times", k, n)
		}
	}
}
