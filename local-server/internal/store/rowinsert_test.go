package store

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// TestRowInsertMatchesGorm inserts the same new row of every kind twice,
// once with gorm's Create and once with createRow, fully set and with its
// optional fields zero: both rows must read back the same, column by
// column, and both records must be left the same (the fields Create sets).
func TestRowInsertMatchesGorm(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	parents := map[wire.Kind]ids.ID{}
	next := ids.ID(1000)
	for i, spec := range records.Kinds {
		k := kinds[spec.Kind]
		for _, full := range []bool{true, false} {
			mk := func(id ids.ID) Record {
				rec := k.newRow()
				m := rec.meta()
				m.ID, m.ClinicID, m.Kind, m.Version, m.Origin = id, clinic, spec.Kind, version.First, string(wire.OriginLocal)
				m.SyncState, m.CreatedAt = StatePending, now
				if full {
					rec.setContent(records.Sample(spec.Kind, i, parents))
					m.Queued, m.SortDate, m.PendingChangeID, m.PendingSince, m.Fence, m.EditSession = true, "2026-01-02", id, &now, 7, "s1"
					m.CloudVersion, m.SyncChoice, m.Unfenced = version.First, ChoiceAlways, true
				}
				return rec
			}
			a, b := mk(next), mk(next+1)
			next += 2
			err := s.write(ctx, func(tx *gorm.DB) error {
				if err := tx.Create(a).Error; err != nil {
					return err
				}
				return createRow(tx, k, b)
			})
			if err != nil {
				t.Fatalf("%s (full %v): %v", spec.Kind, full, err)
			}
			// UpdatedAt is the insert's time: equal only in kind.
			am, bm := a.meta(), b.meta()
			if am.UpdatedAt.IsZero() != bm.UpdatedAt.IsZero() {
				t.Fatalf("%s: updated_at set by Create %v, by createRow %v", spec.Kind, am.UpdatedAt, bm.UpdatedAt)
			}
			bm.ID, bm.PendingChangeID, bm.UpdatedAt = am.ID, am.PendingChangeID, am.UpdatedAt
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s (full %v): records differ after the insert:\n gorm      %+v\n createRow %+v", spec.Kind, full, a, b)
			}
			var rows []map[string]any
			if err := s.db.Table(spec.Table).Where("id IN ?", []ids.ID{am.ID, am.ID + 1}).Order("id").Find(&rows).Error; err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 {
				t.Fatalf("%s: %d rows", spec.Kind, len(rows))
			}
			for col, va := range rows[0] {
				switch col {
				case "id", "pending_change_id", "updated_at":
					continue
				}
				if vb := rows[1][col]; fmt.Sprint(va) != fmt.Sprint(vb) || fmt.Sprintf("%T", va) != fmt.Sprintf("%T", vb) {
					t.Errorf("%s (full %v) column %s: gorm wrote %#v, createRow %#v", spec.Kind, full, col, va, vb)
				}
			}
			if len(rows[0]) != len(rows[1]) {
				t.Errorf("%s: %d columns vs %d", spec.Kind, len(rows[0]), len(rows[1]))
			}
		}
		parents[spec.Kind] = next - 2
	}
}
