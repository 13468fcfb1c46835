package store

import (
	"context"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/search"
	"github.com/scsync/scsync/shared/wire"
)

// searchKey is the indexed expression of each searched field
// (migration 00002_patient_search).
var searchKey = map[string]string{
	search.ByName:      "lower(name)",
	search.ByChartNo:   "lower(chart_no)",
	search.ByBirthDate: "birth_date",
}

// SearchPatients returns a page of the clinic's patients whose field q.By
// starts with q.Prefix, in the order of that field (folded) and id, after
// q.After; tombstones are left out. Each page is a range of one index.
func (s *Store) SearchPatients(ctx context.Context, q search.Query) ([]Record, search.Cursor, error) {
	k, err := opsFor(wire.KindPatient)
	if err != nil {
		return nil, search.Cursor{}, err
	}
	key, ok := searchKey[q.By]
	if !ok {
		return nil, search.Cursor{}, search.ErrInvalid
	}
	if q.Limit <= 0 {
		q.Limit = search.DefaultLimit
	}
	rs, err := k.find(search.Scope(s.rdb.WithContext(ctx).Where("deleted = ?", false), key, q))
	if err != nil || len(rs) < q.Limit {
		return rs, search.Cursor{}, err
	}
	return rs, cursorOf(q.By, rs[len(rs)-1]), nil
}

func cursorOf(by string, r Record) search.Cursor {
	p := r.(*Row[records.Patient])
	return search.Cursor{Key: search.Key(by, p.Data.Name, p.Data.ChartNo, p.Data.BirthDate), ID: p.ID}
}
