package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Edit is a change made in the cloud (through the API).
type Edit struct {
	Kind wire.Kind
	ID   ids.ID // the record; for a create, its new id
	// Create makes a new record at version 1.0.
	Create bool
	// Base, when set, must be the current version (optimistic check).
	Base *version.V
	// Content is the new content; nil with Delete.
	Content records.Content
	Delete  bool
	// ChangeID identifies the change (a fresh Snowflake id).
	ChangeID ids.ID
	// SameSession bumps B instead of A (a further save in one edit session).
	SameSession bool
}

// Save writes a change made in the cloud (origin cloud) with its change log
// entry and outbox row, under the clinic's lock.
func (s *Store) Save(ctx context.Context, clinic ids.ID, ed Edit) (Record, error) {
	k, err := opsFor(ed.Kind)
	if err != nil {
		return nil, err
	}
	var out Record
	err = s.inClinic(ctx, clinic, func(ct *clinicTx) error {
		rec, exists, err := ct.load(k, ed.ID)
		if err != nil {
			return err
		}
		m := rec.meta()
		base := m.Version
		switch {
		case ed.Create:
			if exists {
				return ErrExists
			}
			m.Version = version.First
			base = version.V{}
		case !exists || m.Deleted:
			return ErrNotFound
		case ed.Base != nil && *ed.Base != m.Version:
			return fmt.Errorf("%w: current version is %s, not %s", ErrVersionConflict, m.Version, *ed.Base)
		case ed.SameSession:
			m.Version = m.Version.NextSave()
		default:
			m.Version = m.Version.NextSession()
		}
		if ed.Content != nil {
			var had []records.Ref
			if exists {
				had = rec.content().Refs()
			}
			if ref, missing, err := ct.missingRef(ed.Content, true, had); err != nil {
				return err
			} else if missing {
				return fmt.Errorf("%w: %s %s", ErrMissingRef, ref.Kind, ref.ID)
			}
			rec.setContent(ed.Content)
		}
		m.Kind = ed.Kind
		m.Deleted = ed.Delete
		m.Origin = string(wire.OriginCloud)
		m.Conflict = false
		m.LocalVersion = version.V{}
		m.LastChangeID = ed.ChangeID
		if err := ct.accept(rec, exists, base, time.Now(), ""); err != nil {
			return err
		}
		out = rec
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: save %s: %w", ed.Kind, err)
	}
	return out, nil
}

// Get returns one record of the clinic (tombstones included).
func (s *Store) Get(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (Record, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	rec := k.newRow()
	err = s.db.WithContext(ctx).Take(rec, "clinic_id = ? AND id = ?", clinic, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rec.meta().Kind = kind
	return rec, nil
}

// ListQuery pages through a clinic's records.
type ListQuery struct {
	UpdatedSince time.Time
	After        ids.ID // id of the last record of the previous page
	Limit        int
	WithDeleted  bool
	// Parent, when set, keeps the records of that parent (studies of a
	// patient, images of a study…).
	Parent ids.ID
	// ConflictOnly keeps records flagged by a keep-both conflict.
	ConflictOnly bool
}

// List returns a page of the clinic's records of one kind, in id order.
func (s *Store) List(ctx context.Context, clinic ids.ID, kind wire.Kind, q ListQuery) ([]Record, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	db := s.db.WithContext(ctx).Where("clinic_id = ? AND id > ?", clinic, q.After)
	if !q.UpdatedSince.IsZero() {
		db = db.Where("updated_at >= ?", q.UpdatedSince)
	}
	if !q.WithDeleted {
		db = db.Where("NOT deleted")
	}
	if q.ConflictOnly {
		db = db.Where("conflict")
	}
	if q.Parent != 0 {
		if k.spec.ParentField == "" {
			return nil, fmt.Errorf("%w: %s has no parent", records.ErrInvalid, kind)
		}
		db = db.Where(k.spec.ParentField+" = ?", q.Parent)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	return k.find(db.Order("id").Limit(q.Limit))
}

// Digest returns, for every record of the clinic (tombstones included), a
// hash of what both sides must agree on: version, deleted, conflict marks
// and content. Keys are "kind/id". Tests and the chaos soak compare it with
// the clinic's.
func (s *Store) Digest(ctx context.Context, clinic ids.ID) (map[string]string, error) {
	out := map[string]string{}
	for _, spec := range records.Kinds {
		var after ids.ID
		for {
			rs, err := s.List(ctx, clinic, spec.Kind, ListQuery{After: after, Limit: 1000, WithDeleted: true})
			if err != nil {
				return nil, err
			}
			for _, r := range rs {
				m := r.meta()
				out[string(spec.Kind)+"/"+m.ID.String()] = records.Digest(m.Version, m.Deleted, m.ConflictOf, r.content())
				after = m.ID
			}
			if len(rs) < 1000 {
				break
			}
		}
	}
	return out, nil
}
