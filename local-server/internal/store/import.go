package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Import is one record of a bulk import: existing history brought into
// sc-local (from an older PACS, or a clinic's previous system).
type Import struct {
	Kind    wire.Kind
	Content records.Content
}

// ImportError names the item of a bulk import that failed.
type ImportError struct {
	Index int // 0-based position in the batch
	Err   error
}

func (e *ImportError) Error() string { return fmt.Sprintf("item %d: %v", e.Index, e.Err) }

func (e *ImportError) Unwrap() error { return e.Err }

// Import writes items as new records in one transaction, in order (an item
// may refer to an earlier one), and returns their ids. Imported records are
// history, not live changes: they are written excluded and never queued, so
// the backfill (M8) sends those the scope covers, newest first, behind live
// changes. Either every item is written or none.
func (s *Store) Import(ctx context.Context, items []Import) ([]ids.ID, error) {
	out := make([]ids.ID, 0, len(items))
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		out = out[:0]
		now := time.Now().UTC()
		for i, it := range items {
			id, err := s.importOne(tx, it, now)
			if err != nil {
				return &ImportError{Index: i, Err: err}
			}
			out = append(out, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: import: %w", err)
	}
	return out, nil
}

func (s *Store) importOne(tx *gorm.DB, it Import, now time.Time) (ids.ID, error) {
	k, err := opsFor(it.Kind)
	if err != nil {
		return 0, err
	}
	if it.Content == nil || it.Content.Kind() != it.Kind {
		return 0, fmt.Errorf("%w: content of kind %s expected", records.ErrInvalid, it.Kind)
	}
	if err := it.Content.Validate(); err != nil {
		return 0, err
	}
	if ref, missing, err := s.missingRef(tx, it.Content, nil); err != nil {
		return 0, err
	} else if missing {
		return 0, fmt.Errorf("%w: %s %s", ErrMissingRef, ref.Kind, ref.ID)
	}
	id, err := s.ids.Next()
	if err != nil {
		return 0, err
	}
	rec := k.newRow()
	m := rec.meta()
	m.ID, m.ClinicID, m.Kind, m.Version = id, s.clinic, it.Kind, version.First
	m.Origin = string(wire.OriginLocal)
	m.SyncState = StateExcluded
	rec.setContent(it.Content)
	if err := tx.Create(rec).Error; err != nil {
		return 0, err
	}
	payload, err := json.Marshal(it.Content)
	if err != nil {
		return 0, err
	}
	e := wire.Envelope{Kind: it.Kind, RecordID: id, NewVersion: version.First, Origin: wire.OriginLocal,
		ChangeID: id, At: now, Payload: payload}
	return id, keepVersion(tx, e, "")
}
