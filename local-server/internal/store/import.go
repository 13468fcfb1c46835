package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/auth"
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

// BeginImport marks a bulk import in progress until the returned function
// is called; the backfill waits meanwhile (Importing).
func (s *Store) BeginImport() (end func()) {
	s.importing.Add(1)
	return func() { s.importing.Add(-1) }
}

// Importing reports whether a bulk import is in progress.
func (s *Store) Importing() bool { return s.importing.Load() > 0 }

// Import writes items as new records in one transaction, in order (an item
// may refer to an earlier one), and returns their ids. Imported records are
// history, not live changes: they are written excluded and never queued, so
// the backfill (M8) sends those the scope covers, newest first, behind live
// changes. Either every item is written or none. An import commits in a
// transaction of its own, in turn with the group commits of other writes.
func (s *Store) Import(ctx context.Context, items []Import) ([]ids.ID, error) {
	out := make([]ids.ID, 0, len(items))
	err := s.writeAlone(ctx, func(tx *gorm.DB) error {
		out = out[:0]
		now := time.Now().UTC()
		// The records the items refer to, read in one query per kind; the
		// items' own records are written together at the end (an item may
		// refer to an earlier one: the cache knows it by then).
		cache := rowCache{}
		var refs []records.Ref
		for _, it := range items {
			if it.Content != nil {
				refs = append(refs, it.Content.Refs()...)
			}
		}
		if err := cache.load(tx, s.clinic, refs); err != nil {
			return err
		}
		var p pending
		byKind := map[wire.Kind][]Record{}
		var order []wire.Kind
		for i, it := range items {
			rec, err := s.importOne(tx, it, now, cache, &p)
			if err != nil {
				return &ImportError{Index: i, Err: err}
			}
			if byKind[it.Kind] == nil {
				order = append(order, it.Kind)
			}
			byKind[it.Kind] = append(byKind[it.Kind], rec)
			out = append(out, rec.meta().ID)
		}
		for _, kind := range order {
			if err := kinds[kind].createAll(tx, byKind[kind]); err != nil {
				return err
			}
		}
		by, byName := auth.SavedBy(ctx) // the person importing, on the clinic's history
		for i := range p.versions {
			p.versions[i].SavedBy, p.versions[i].SavedByName = by, byName
		}
		return p.flush(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("store: import: %w", err)
	}
	return out, nil
}

// importOne checks one item and makes its record and version (written by
// Import).
func (s *Store) importOne(tx *gorm.DB, it Import, now time.Time, cache rowCache, p *pending) (Record, error) {
	k, err := opsFor(it.Kind)
	if err != nil {
		return nil, err
	}
	if it.Content == nil || it.Content.Kind() != it.Kind {
		return nil, fmt.Errorf("%w: content of kind %s expected", records.ErrInvalid, it.Kind)
	}
	if err := it.Content.Validate(); err != nil {
		return nil, err
	}
	for _, ref := range it.Content.Refs() {
		rk, err := opsFor(ref.Kind)
		if err != nil {
			return nil, err
		}
		parent, ok, err := cache.get(tx, s.clinic, rk, ref.ID)
		if err != nil {
			return nil, err
		}
		if !ok || parent.meta().Deleted {
			return nil, fmt.Errorf("%w: %s %s", ErrMissingRef, ref.Kind, ref.ID)
		}
	}
	id, err := s.ids.Next()
	if err != nil {
		return nil, err
	}
	rec := k.newRow()
	m := rec.meta()
	m.ID, m.ClinicID, m.Kind, m.Version = id, s.clinic, it.Kind, version.First
	m.Origin = string(wire.OriginLocal)
	m.SyncState = StateExcluded
	rec.setContent(it.Content)
	m.SortDate = sortDateIn(cache, it.Content)
	payload, err := json.Marshal(it.Content)
	if err != nil {
		return nil, err
	}
	cache[records.Ref{Kind: it.Kind, ID: id}] = rec
	p.version(wire.Envelope{Kind: it.Kind, RecordID: id, NewVersion: version.First, Origin: wire.OriginLocal,
		ChangeID: id, At: now, Payload: payload}, "")
	return rec, nil
}
