package store

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/search"
	"github.com/scsync/scsync/shared/wire"
)

// TestSearchPatients: prefix search on each field, ASCII case folded, keyset
// pages that together return every match once in order, tombstones left out,
// another clinic's patients never found, and each query an index range.
func TestSearchPatients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	enroll(t, s, 100, "local-wins")
	enroll(t, s, 200, "local-wins")
	const n = 240
	for i := range n {
		for _, clinic := range []ids.ID{100, 200} {
			id := ids.ID(int64(clinic)*10_000 + int64(i) + 1)
			p := records.Patient{Name: fmt.Sprintf("%s %04d", []string{"Kim", "Lee", "Park", "kimura"}[i%4], i),
				ChartNo: fmt.Sprintf("C-%05d", i), BirthDate: fmt.Sprintf("19%02d-%02d-%02d", 50+i%40, 1+i%12, 1+i%28)}
			if _, err := s.Save(ctx, clinic, Edit{Kind: wire.KindPatient, ID: id, Create: true, ChangeID: id, Content: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		by, q string
		want  int
	}{
		{search.ByName, "kim", 120},
		{search.ByName, "KIM 00", 25},
		{search.ByName, "", n},
		{search.ByChartNo, "c-001", 100},
		{search.ByBirthDate, "1955", 6},
		{search.ByName, "zz", 0},
	}
	for _, tt := range tests {
		t.Run(tt.by+"="+tt.q, func(t *testing.T) {
			q, err := search.Parse(tt.by, tt.q, "", 17)
			if err != nil {
				t.Fatal(err)
			}
			var got []Record
			for pages := 0; ; pages++ {
				page, next, err := s.SearchPatients(ctx, 100, q)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, page...)
				if next.IsZero() {
					break
				}
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				q.After = next
			}
			if len(got) != tt.want {
				t.Fatalf("SearchPatients(100, %s %q) = %d patients, want %d", tt.by, tt.q, len(got), tt.want)
			}
			prev := ""
			for _, r := range got {
				p := r.(*Row[records.Patient])
				if p.ClinicID != 100 {
					t.Fatalf("SearchPatients(100) found a patient of clinic %d", p.ClinicID)
				}
				key := search.Key(tt.by, p.Data.Name, p.Data.ChartNo, p.Data.BirthDate) + "\x00" + fmt.Sprintf("%020d", p.ID)
				if !strings.HasPrefix(key, search.Fold(tt.q)) || key <= prev {
					t.Fatalf("SearchPatients(%s %q): %q after %q, want increasing keys starting with the query", tt.by, tt.q, key, prev)
				}
				prev = key
			}
		})
	}
	q, _ := search.Parse(search.ByChartNo, "C-00007", "", 10)
	if _, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: 100*10_000 + 8, ChangeID: 5_000_001, Delete: true}); err != nil {
		t.Fatal(err)
	}
	if rs, _, err := s.SearchPatients(ctx, 100, q); err != nil || len(rs) != 0 {
		t.Errorf("SearchPatients(C-00007) after delete = %d, %v, want 0", len(rs), err)
	}
	if rs, _, err := s.SearchPatients(ctx, 200, q); err != nil || len(rs) != 1 {
		t.Errorf("SearchPatients(200, C-00007) = %d, %v, want clinic 200's own 1", len(rs), err)
	}
	// The planner answers from the search index (sequential scans off, as
	// on a big table where it would pick the index anyway).
	for by, key := range searchKey {
		var plan []string
		err := s.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Exec("SET LOCAL enable_seqscan = off").Error; err != nil {
				return err
			}
			return tx.Raw("EXPLAIN SELECT * FROM patients WHERE clinic_id = ? AND NOT deleted AND "+key+" >= ? AND "+key+" < ? AND ("+key+", id) > (?, ?) ORDER BY "+key+", id LIMIT 50",
				100, "a", "b", "a", 1).Scan(&plan).Error
		})
		if err != nil {
			t.Fatal(err)
		}
		if p := strings.Join(plan, "; "); !strings.Contains(p, "patients_search_"+by) || strings.Contains(p, "Sort") {
			t.Errorf("search by %s plan = %q, want a range of patients_search_%s and no sort", by, p, by)
		}
	}
}
