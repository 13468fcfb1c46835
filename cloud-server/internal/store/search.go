package store

import (
	"context"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/search"
	"github.com/scsync/scsync/shared/wire"
)

// searchKey is the indexed expression of each searched field (migration
// 00003_patient_search): byte order ("C"), ASCII-only lower().
var searchKey = map[string]string{
	search.ByName:      `lower(name COLLATE "C")`,
	search.ByChartNo:   `lower(chart_no COLLATE "C")`,
	search.ByBirthDate: `(birth_date COLLATE "C")`,
}

// SearchPatients returns a page of clinic's patients whose field q.By
// starts with q.Prefix, in the order of that field (folded) and id, after
// q.After; tombstones are left out. Every condition names the clinic, so
// one clinic never sees another's patients, and each page is a range of
// one index.
func (s *Store) SearchPatients(ctx context.Context, clinic ids.ID, q search.Query) ([]Record, search.Cursor, error) {
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
	rs, err := k.find(search.Scope(s.db.WithContext(ctx).Where("clinic_id = ? AND NOT deleted", clinic), key, q))
	if err != nil || len(rs) < q.Limit {
		return rs, search.Cursor{}, err
	}
	p := rs[len(rs)-1].(*Row[records.Patient])
	return rs, search.Cursor{Key: search.Key(q.By, p.Data.Name, p.Data.ChartNo, p.Data.BirthDate), ID: p.ID}, nil
}
