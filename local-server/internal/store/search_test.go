package store

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/search"
	"github.com/scsync/scsync/shared/wire"
)

// TestSearchPatients: prefix search on each field, ASCII case folded, keyset
// pages that together return every match exactly once in order, tombstones
// left out, and each query answered from its index.
func TestSearchPatients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	var items []Import
	for i := range 1000 {
		items = append(items, Import{Kind: wire.KindPatient, Content: records.Patient{
			Name: fmt.Sprintf("%s %04d", []string{"Kim", "Lee", "Park", "kimura"}[i%4], i), ChartNo: fmt.Sprintf("C-%05d", i),
			BirthDate: fmt.Sprintf("19%02d-%02d-%02d", 50+i%40, 1+i%12, 1+i%28)}})
	}
	if _, err := s.Import(ctx, items); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		by, q string
		want  int
	}{
		{search.ByName, "kim", 500}, // Kim and kimura
		{search.ByName, "KIM 00", 25},
		{search.ByName, "park", 250},
		{search.ByName, "", 1000},
		{search.ByChartNo, "c-001", 100},
		{search.ByBirthDate, "1955", 25},
		{search.ByBirthDate, "1955-06-", 9}, // i ≡ 5 mod 40 and mod 12
		{search.ByName, "zz", 0},
	}
	for _, tt := range tests {
		t.Run(tt.by+"="+tt.q, func(t *testing.T) {
			q, err := search.Parse(tt.by, tt.q, "", 37)
			if err != nil {
				t.Fatal(err)
			}
			var got []Record
			pages := 0
			for {
				page, next, err := s.SearchPatients(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, page...)
				pages++
				if next.IsZero() {
					break
				}
				q.After = next
				if pages > 100 {
					t.Fatal("paging does not end")
				}
			}
			if len(got) != tt.want {
				t.Fatalf("SearchPatients(%s %q) = %d patients over %d pages, want %d", tt.by, tt.q, len(got), pages, tt.want)
			}
			seen := map[string]bool{}
			prev := ""
			for _, r := range got {
				p := r.(*Row[records.Patient])
				key := search.Key(tt.by, p.Data.Name, p.Data.ChartNo, p.Data.BirthDate) + "\x00" + fmt.Sprintf("%020d", p.ID)
				if !strings.HasPrefix(key, search.Fold(tt.q)) || key <= prev || seen[key] {
					t.Fatalf("SearchPatients(%s %q): %q after %q, want increasing keys starting with the query", tt.by, tt.q, key, prev)
				}
				seen[key], prev = true, key
			}
		})
	}
	// A tombstone is not found.
	q, _ := search.Parse(search.ByChartNo, "C-00007", "", 10)
	rs, _, err := s.SearchPatients(ctx, q)
	if err != nil || len(rs) != 1 {
		t.Fatalf("SearchPatients(C-00007) = %d, %v, want 1", len(rs), err)
	}
	if _, err := s.Save(ctx, Edit{Kind: wire.KindPatient, ID: RecordMeta(rs[0]).ID, Delete: true}); err != nil {
		t.Fatal(err)
	}
	if rs, _, err = s.SearchPatients(ctx, q); err != nil || len(rs) != 0 {
		t.Errorf("SearchPatients(C-00007) after delete = %d, %v, want 0", len(rs), err)
	}
	// Every field's search is a range of its index, never a scan.
	for by, key := range searchKey {
		var plan []string
		err := func() error {
			rows, err := s.rdb.Raw("EXPLAIN QUERY PLAN SELECT * FROM patients WHERE deleted = 0 AND "+key+" >= ? AND "+key+" < ? AND ("+key+", id) > (?, ?) ORDER BY "+key+", id LIMIT 50", "a", "b", "a", 1).Rows()
			if err != nil {
				return err
			}
			defer func() { _ = rows.Close() }()
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					return err
				}
				plan = append(plan, detail)
			}
			return rows.Err()
		}()
		if err != nil {
			t.Fatal(err)
		}
		if p := strings.Join(plan, "; "); !strings.Contains(p, "USING INDEX patients_search_"+by) || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("search by %s plan = %q, want a range of patients_search_%s and no sort", by, p, by)
		}
	}
}
