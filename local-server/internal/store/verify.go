package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// InFlight lists the records ("kind/id") with a local change the cloud has
// not accepted yet: they differ from the cloud for a good reason, and
// anti-entropy leaves them to replication.
func (s *Store) InFlight(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	for _, sp := range records.Kinds {
		var idList []ids.ID
		if err := s.db.WithContext(ctx).Model(kinds[sp.Kind].model).Where("clinic_id = ?", s.clinic).Where(stateIs(StatePending)).
			Pluck("id", &idList).Error; err != nil {
			return nil, err
		}
		for _, id := range idList {
			out[string(sp.Kind)+"/"+id.String()] = true
		}
	}
	return out, nil
}

// TakeCloud repairs a record from the cloud's copy (anti-entropy): e is the
// cloud's record as an applied change; it goes through the down path's
// apply, without moving the checkpoint, and the record takes the cloud's
// creation time.
func (s *Store) TakeCloud(ctx context.Context, e wire.Envelope, created time.Time) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := time.Now().UTC()
		cache := rowCache{}
		if err := cache.load(tx, s.clinic, []records.Ref{{Kind: e.Kind, ID: e.RecordID}}); err != nil {
			return err
		}
		if r := cache[records.Ref{Kind: e.Kind, ID: e.RecordID}]; r != nil && r.meta().CloudSeq > e.CloudSeq {
			return nil // a newer change of the cloud's arrived meanwhile
		}
		p := pending{marks: newBulkUpdate("sync_state = ?, synced_at = ?, updated_at = ?, pending_change_id = 0, pending_since = NULL, "+
			"cloud_version = v.column2, cloud_seq = v.column3, fence = v.column4, unfenced = v.column5", 5, StateSynced, now, now)}
		ok, err := s.applyOne(tx, e, now, cache, &p)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: the cloud's %s %s cannot be applied here", ErrInvalidChange, e.Kind, e.RecordID)
		}
		if err := p.marks.flush(tx, s.clinic); err != nil {
			return err
		}
		if err := p.flush(tx); err != nil {
			return err
		}
		k, err := opsFor(e.Kind)
		if err != nil {
			return err
		}
		return tx.Model(k.model).Where("id = ? AND clinic_id = ?", e.RecordID, s.clinic).Update("created_at", created.UTC()).Error
	})
	if err != nil {
		return fmt.Errorf("store: take cloud %s %s: %w", e.Kind, e.RecordID, err)
	}
	return nil
}

// Resend repairs the cloud's copy of a record from the clinic's
// (anti-entropy): a new change of the record's content (or tombstone),
// based on the cloud's version (zero: the cloud has no such record), goes
// up like any change, so the cloud takes it without a conflict.
func (s *Store) Resend(ctx context.Context, kind wire.Kind, id ids.ID, cloud version.V) error {
	k, err := opsFor(kind)
	if err != nil {
		return err
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		rec := k.newRow()
		if err := tx.Take(rec, "id = ? AND clinic_id = ?", id, s.clinic).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return ErrNotFound
			}
			return err
		}
		m := rec.meta()
		m.Kind = kind
		changeID, err := s.ids.Next()
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		top := m.Version
		if top.Less(cloud) {
			top = cloud
		}
		at := now
		if cloud.IsZero() {
			at = createdAt(m.CreatedAt) // new to the cloud: its creation time
		}
		m.Version = top.NextSession()
		m.EditSession = ""
		m.Queued, m.SyncState, m.PendingChangeID, m.PendingSince = true, StatePending, changeID, &now
		if err := tx.Save(rec).Error; err != nil {
			return err
		}
		e := wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: s.clinic, Origin: wire.OriginLocal,
			ChangeID: changeID, Kind: kind, RecordID: id, BaseVersion: cloud, NewVersion: m.Version, Deleted: m.Deleted, At: now}
		// A tombstone carries its content too: the repair is of the content.
		if e.Payload, err = json.Marshal(rec.content()); err != nil {
			return err
		}
		if err := keepVersion(tx, e, ""); err != nil {
			return err
		}
		e.At = at
		return s.queue(tx, e, LaneLive)
	})
	if err != nil {
		return fmt.Errorf("store: resend %s %s: %w", kind, id, err)
	}
	return nil
}
