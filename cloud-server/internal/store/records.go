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
	// Session is the edit session saving (empty: a one-save session). A
	// further save in the session that saved last bumps B instead of A.
	Session string
	// Fence is the session's fencing token (0: none); a token lower than
	// the record's last accepted one is refused with ErrStaleFence.
	Fence int64
	// Unfenced marks a save made with the lock service unreachable.
	Unfenced bool
	// Unsync (with Delete) takes the record out of the cloud only: the
	// clinic keeps its copy, excluded from sync (M7).
	Unsync bool
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
		case ed.Fence > 0 && ed.Fence < m.Fence:
			return fmt.Errorf("%w: token %d, the record was saved under %d", ErrStaleFence, ed.Fence, m.Fence)
		case ed.Session != "" && m.EditSession == ed.Session:
			m.Version = m.Version.NextSave()
		default:
			m.Version = m.Version.NextSession()
		}
		m.EditSession = ed.Session
		m.Fence = max(m.Fence, ed.Fence)
		m.Unfenced = ed.Unfenced
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
		if err := ct.acceptChange(rec, exists, base, time.Now(), "", ed.Unsync); err != nil {
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
	// RetentionState, when set, keeps the records retention marked so
	// (backed-up, or deleted: then tombstones are included).
	RetentionState string
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
	if !q.WithDeleted && q.RetentionState != RetentionDeleted {
		db = db.Where("NOT deleted")
	}
	if q.ConflictOnly {
		db = db.Where("conflict")
	}
	if q.RetentionState != "" {
		db = db.Where("retention_state = ?", q.RetentionState)
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

// Versions lists the kept versions of a record (every accepted change),
// oldest first.
func (s *Store) Versions(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) ([]Change, error) {
	var chs []Change
	err := s.db.WithContext(ctx).Where("clinic_id = ? AND kind = ? AND record_id = ?", clinic, kind, id).Order("cloud_seq").Find(&chs).Error
	return chs, err
}

// VersionContent returns the content a record had at version v.
func (s *Store) VersionContent(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, v version.V) (records.Content, error) {
	var ch Change
	err := s.db.WithContext(ctx).Where("clinic_id = ? AND kind = ? AND record_id = ? AND new_version = ?", clinic, kind, id, v).
		Order("cloud_seq DESC").Take(&ch).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if ch.Deleted {
		return nil, fmt.Errorf("%w: version %s is a tombstone", ErrNotFound, v)
	}
	return records.Decode(kind, []byte(ch.Payload))
}
