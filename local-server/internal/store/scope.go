package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// Scope says which records go to the cloud (M4). Records outside it stay
// here with sync state excluded; widening it backfills what it newly covers
// (newest first, M8). A record the cloud already has keeps replicating when
// the scope narrows: taking it out of the cloud is an explicit un-sync.
type Scope struct {
	// Kinds, when set, limits the record kinds that sync (patient, study,
	// image…); captures, reports and project files follow their study.
	Kinds []wire.Kind `json:"kinds,omitempty" yaml:"kinds"`
	// Modalities, when set, limits the images that sync (PANO, CBCT…).
	Modalities []string `json:"modalities,omitempty" yaml:"modalities"`
	// Since, when set (YYYY-MM-DD), limits studies and images to those of
	// that date or later; LastDays does the same relative to today.
	Since    string `json:"since,omitempty" yaml:"since"`
	LastDays int    `json:"last_days,omitempty" yaml:"last_days"`
}

// Validate checks s.
func (s Scope) Validate() error {
	for _, k := range s.Kinds {
		if _, ok := records.SpecOf(k); !ok {
			return fmt.Errorf("%w: scope: unknown kind %q", records.ErrInvalid, k)
		}
	}
	for _, m := range s.Modalities {
		if !slices.Contains(records.Modalities, m) {
			return fmt.Errorf("%w: scope: modality %q is not one of %s", records.ErrInvalid, m, strings.Join(records.Modalities, ", "))
		}
	}
	if s.Since != "" {
		if _, err := time.Parse(time.DateOnly, s.Since); err != nil {
			return fmt.Errorf("%w: scope: since must be YYYY-MM-DD", records.ErrInvalid)
		}
	}
	if s.LastDays < 0 || (s.LastDays > 0 && s.Since != "") {
		return fmt.Errorf("%w: scope: last_days must be positive and not combined with since", records.ErrInvalid)
	}
	return nil
}

// All reports whether s covers everything.
func (s Scope) All() bool {
	return len(s.Kinds) == 0 && len(s.Modalities) == 0 && s.Since == "" && s.LastDays == 0
}

// from is the first study date covered ("" for no limit).
func (s Scope) from(now time.Time) string {
	if s.LastDays > 0 {
		return now.AddDate(0, 0, -s.LastDays).Format(time.DateOnly)
	}
	return s.Since
}

func (s Scope) kind(k wire.Kind) bool { return len(s.Kinds) == 0 || slices.Contains(s.Kinds, k) }

// Sync choices of one record (M4: the user's per-record choice).
const (
	ChoiceAlways = "always"
	ChoiceNever  = "never"
)

const metaScope = "scope"

// Scope returns the clinic's sync scope (everything when never set).
func (s *Store) Scope(ctx context.Context) (Scope, error) {
	return s.scope(s.db.WithContext(ctx))
}

func (s *Store) scope(db *gorm.DB) (Scope, error) {
	var sc Scope
	v, err := s.meta(db, metaScope)
	if err != nil || v == "" {
		return sc, err
	}
	return sc, json.Unmarshal([]byte(v), &sc)
}

// scopeIn is the scope as tx (a write of the committer) sees it: kept in
// memory after it was read once, instead of a read and a JSON decode on
// every save. SetScope, which changes it in a write of its own, drops
// what was kept; so does a group commit that failed as a whole (commit.go),
// in case a write of it read a scope that did not commit.
func (s *Store) scopeIn(tx *gorm.DB) (Scope, error) {
	if sc := s.scopeKept.Load(); sc != nil {
		return *sc, nil
	}
	sc, err := s.scope(tx)
	if err != nil {
		return sc, err
	}
	s.scopeKept.Store(&sc)
	return sc, nil
}

// SetScope changes the sync scope. Records it newly covers are sent by the
// backfill; records it no longer covers and the cloud never had stay here.
func (s *Store) SetScope(ctx context.Context, sc Scope) error {
	if err := sc.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	// Through the committer, which runs every save: the saves before it
	// used the kept scope, those after it read the new one.
	return s.write(ctx, func(tx *gorm.DB) error {
		s.scopeKept.Store(nil)
		return setMeta(tx, metaScope, string(b))
	})
}

// inScope reports whether a record with content c (kind k) and the user's
// choice is covered by sc.
func (s *Store) inScope(tx *gorm.DB, sc Scope, k wire.Kind, c records.Content, choice string) (bool, error) {
	switch choice {
	case ChoiceAlways:
		return true, nil
	case ChoiceNever:
		return false, nil
	}
	if img, ok := c.(records.Image); ok {
		// The images of a study the user keeps out stay out too.
		var never int64
		if err := tx.Model(&Row[records.Study]{}).Where("id = ? AND clinic_id = ? AND sync_choice = ?", img.StudyID, s.clinic, ChoiceNever).
			Count(&never).Error; err != nil {
			return false, err
		}
		if never > 0 {
			return false, nil
		}
	}
	if sc.All() {
		if _, child := c.(records.Image); !child && k != wire.KindCapture && k != wire.KindReport && k != wire.KindProjectFile {
			return true, nil
		}
	}
	if !sc.kind(k) {
		return false, nil
	}
	from := sc.from(time.Now())
	switch v := c.(type) {
	case records.Study:
		return from == "" || v.StudyDate >= from, nil
	case records.Image:
		if len(sc.Modalities) > 0 && !slices.Contains(sc.Modalities, v.Modality) {
			return false, nil
		}
		return from == "" || v.StudyDate >= from, nil
	case records.Capture, records.Report, records.ProjectFile:
		// They follow their study.
		var study Row[records.Study]
		refs := c.Refs()
		if len(refs) == 0 || refs[0].Kind != wire.KindStudy {
			return true, nil
		}
		err := tx.Take(&study, "id = ? AND clinic_id = ?", refs[0].ID, s.clinic).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return s.inScope(tx, sc, wire.KindStudy, study.Data, study.SyncChoice)
	}
	return true, nil
}

// SetChoice records the user's per-record choice (always, never, or ""
// for the scope's rule). A record brought into scope is sent by the
// backfill; one taken out that the cloud has keeps its cloud copy until it
// is un-synced.
func (s *Store) SetChoice(ctx context.Context, kind wire.Kind, id ids.ID, choice string) (Record, error) {
	if choice != "" && choice != ChoiceAlways && choice != ChoiceNever {
		return nil, fmt.Errorf("%w: choice must be always, never or empty", records.ErrInvalid)
	}
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	var out Record
	err = s.write(ctx, func(tx *gorm.DB) error {
		rec := k.newRow()
		if err := tx.Take(rec, "id = ? AND clinic_id = ?", id, s.clinic).Error; errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		m := rec.meta()
		m.Kind = kind
		m.SyncChoice = choice
		sc, err := s.scope(tx)
		if err != nil {
			return err
		}
		in, err := s.inScope(tx, sc, kind, rec.content(), choice)
		if err != nil {
			return err
		}
		switch {
		case !in && !m.Queued:
			m.SyncState = StateExcluded // the cloud never had it: it stays here
		case choice == ChoiceNever && m.SyncState != StateExcluded:
			// The cloud has it: never means taking it out of the cloud.
			if err := s.unsyncLocked(ctx, tx, rec); err != nil {
				return err
			}
		case in && m.Queued && m.SyncState == StateExcluded:
			// Re-sync of an un-synced record: it goes back up from the
			// cloud's tombstone version, so nothing is stuck.
			if err := s.resyncLocked(ctx, tx, rec); err != nil {
				return err
			}
		}
		if err := tx.Save(rec).Error; err != nil {
			return err
		}
		out = rec
		return nil
	})
	return out, err
}

// Unsync takes a record out of the cloud (M7): the cloud keeps a tombstone,
// the clinic keeps its copy, excluded from sync, until the user syncs it
// again (SetChoice "" or always).
func (s *Store) Unsync(ctx context.Context, kind wire.Kind, id ids.ID) (Record, error) {
	return s.SetChoice(ctx, kind, id, ChoiceNever)
}

// unsyncLocked queues the tombstone that takes rec out of the cloud.
func (s *Store) unsyncLocked(ctx context.Context, tx *gorm.DB, rec Record) error {
	m := rec.meta()
	if m.Deleted {
		return fmt.Errorf("%w: %s %s is deleted", ErrNotFound, m.Kind, m.ID)
	}
	changeID, err := s.ids.Next()
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	prev := m.Version
	m.Version = m.Version.NextSession()
	m.SyncState, m.PendingChangeID, m.PendingSince, m.EditSession = StatePending, changeID, &now, ""
	e := wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: s.clinic, Origin: wire.OriginLocal,
		ChangeID: changeID, Kind: m.Kind, RecordID: m.ID, BaseVersion: prev, NewVersion: m.Version,
		Deleted: true, Unsync: true, At: now}
	e.SavedBy, e.SavedByName = auth.SavedBy(ctx)
	if err := keepVersion(tx, e, ""); err != nil {
		return err
	}
	return s.queue(tx, e, LaneLive)
}

// resyncLocked queues rec's content again over the cloud's tombstone.
func (s *Store) resyncLocked(ctx context.Context, tx *gorm.DB, rec Record) error {
	m := rec.meta()
	changeID, err := s.ids.Next()
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	// From the cloud's tombstone, to a version newer than both.
	prev := m.CloudVersion
	top := m.Version
	if top.Less(prev) {
		top = prev
	}
	m.Version = top.NextSession()
	m.SyncState, m.PendingChangeID, m.PendingSince = StatePending, changeID, &now
	e := wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: s.clinic, Origin: wire.OriginLocal,
		ChangeID: changeID, Kind: m.Kind, RecordID: m.ID, BaseVersion: prev, NewVersion: m.Version, At: now}
	e.SavedBy, e.SavedByName = auth.SavedBy(ctx)
	if e.Payload, err = json.Marshal(rec.content()); err != nil {
		return err
	}
	if err := keepVersion(tx, e, ""); err != nil {
		return err
	}
	return s.queue(tx, e, LaneLive)
}
