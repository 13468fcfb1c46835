package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

func TestSplitIDsCoversTheRangeOnce(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		lo, hi ids.ID
		n      int
	}{{0, 1, 16}, {5, 20, 16}, {99, 100 + 16*7, 16}, {387622673929207807, 387999999999999999, 16}, {0, 1 << 62, 3}} {
		got := splitIDs(c.lo, c.hi, c.n)
		if len(got) == 0 || len(got) > c.n {
			t.Fatalf("splitIDs(%d, %d, %d) = %d ranges, want 1..%d", c.lo, c.hi, c.n, len(got), c.n)
		}
		from := c.lo
		for _, r := range got {
			if r[0] != from || r[1] <= r[0] {
				t.Fatalf("splitIDs(%d, %d, %d) = %v: range %v does not follow %d", c.lo, c.hi, c.n, got, r, from)
			}
			from = r[1]
		}
		if from != c.hi {
			t.Fatalf("splitIDs(%d, %d, %d) = %v: ends at %d", c.lo, c.hi, c.n, got, from)
		}
	}
}

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
