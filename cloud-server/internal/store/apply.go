package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// clinicTx is one transaction holding a clinic's row lock: every accepted
// change of the clinic, from its queue or from the cloud API, is serialized
// by it, and cloud_seq is handed out under it.
type clinicTx struct {
	s   *Store
	tx  *gorm.DB
	c   Clinic
	res *UpResult
}

func (s *Store) inClinic(ctx context.Context, clinic ids.ID, fn func(ct *clinicTx) error) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var c Clinic
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&c, "id = ?", clinic).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrUnknownClinic
		}
		if err != nil {
			return err
		}
		ct := &clinicTx{s: s, tx: tx, c: c, res: &UpResult{}}
		start := c.LastSeq
		if err := fn(ct); err != nil {
			return err
		}
		if ct.c.LastSeq == start {
			return nil
		}
		return tx.Model(&Clinic{}).Where("id = ?", clinic).Update("last_seq", ct.c.LastSeq).Error
	})
}

func (ct *clinicTx) load(k kindOps, id ids.ID) (Record, bool, error) {
	rec := k.newRow()
	err := ct.tx.Take(rec, "clinic_id = ? AND id = ?", ct.c.ID, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		m := rec.meta()
		m.ClinicID, m.ID = ct.c.ID, id
		return rec, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	rec.meta().Kind = k.spec.Kind
	return rec, true, nil
}

// missingRef returns the first record c refers to that the clinic does not
// have (live is true: tombstones count as missing). References in had (the
// record's own, before this change) are not checked again.
func (ct *clinicTx) missingRef(c records.Content, live bool, had []records.Ref) (records.Ref, bool, error) {
	for _, ref := range c.Refs() {
		if slices.Contains(had, ref) {
			continue
		}
		k, err := opsFor(ref.Kind)
		if err != nil {
			return ref, false, err
		}
		db := ct.tx.Model(k.model).Where("clinic_id = ? AND id = ?", ct.c.ID, ref.ID)
		if live {
			db = db.Where("NOT deleted")
		}
		var n int64
		if err := db.Count(&n).Error; err != nil {
			return ref, false, err
		}
		if n == 0 {
			return ref, true, nil
		}
	}
	return records.Ref{}, false, nil
}

// accept writes rec (created when !exists) with the next cloud_seq, and the
// change and its outbox row; then it applies the changes parked on rec.
func (ct *clinicTx) accept(rec Record, exists bool, base version.V, at time.Time, resolution string) error {
	return ct.acceptChange(rec, exists, base, at, resolution, false)
}

// acceptChange is accept; unsync marks a tombstone that only takes the
// record out of the cloud (M7).
func (ct *clinicTx) acceptChange(rec Record, exists bool, base version.V, at time.Time, resolution string, unsync bool) error {
	ct.c.LastSeq++
	m := rec.meta()
	m.CloudSeq = ct.c.LastSeq
	if !m.Deleted && m.RetentionState == RetentionDeleted {
		m.RetentionState = "" // synced again after retention took it out
	}
	prevSHA, err := ct.storedSHA(m, exists)
	if err != nil {
		return err
	}
	if exists {
		err = ct.tx.Save(rec).Error
	} else {
		err = ct.tx.Create(rec).Error
	}
	if err != nil {
		return err
	}
	if err := ct.fileRefs(rec, prevSHA); err != nil {
		return err
	}
	ch := Change{
		ClinicID: m.ClinicID, CloudSeq: m.CloudSeq, ChangeID: m.LastChangeID, Kind: string(m.Kind),
		RecordID: m.ID, Origin: m.Origin, BaseVersion: base, NewVersion: m.Version,
		Deleted: m.Deleted, Conflict: resolution, ConflictOf: m.ConflictOf, At: at.UTC(), AcceptedAt: time.Now().UTC(),
		Fence: m.Fence, Unfenced: m.Unfenced, Session: m.EditSession, Unsync: unsync && m.Deleted,
	}
	if !m.Deleted {
		b, err := json.Marshal(rec.content())
		if err != nil {
			return err
		}
		ch.Payload = string(b)
	}
	if err := ct.tx.Create(&ch).Error; err != nil {
		return err
	}
	ct.res.Changes = append(ct.res.Changes, ch.Envelope())
	if err := ct.tx.Create(&Outbox{ClinicID: m.ClinicID, CloudSeq: m.CloudSeq}).Error; err != nil {
		return err
	}
	return ct.unpark(m.Kind, m.ID)
}

// UpResult counts what ApplyUp did with a batch.
type UpResult struct {
	// Changes lists every change written to the clinic's sequence (the
	// accepted ones, their resolutions and conflict copies), for viewers.
	Changes    []wire.Envelope
	Accepted   int // new changes accepted into the clinic's sequence
	Duplicates int // changes seen before (redeliveries)
	Parked     int // changes waiting for a record they refer to
	Unparked   int // parked changes applied because their record arrived
	Conflicts  int // concurrent changes resolved by the clinic's policy
	// Rejected lists changes that can never be applied (poison), each with
	// the reason; the rest of the batch is applied without them.
	Rejected []Rejected
}

// Rejected is a change ApplyUp refused.
type Rejected struct {
	Change wire.Envelope
	Err    error
}

// ApplyUp accepts a batch of a clinic's changes, in order, in one
// transaction: idempotent on change id; a change referring to a record the
// cloud does not have yet is parked until that record arrives (M26); a
// change concurrent with another is resolved by the clinic's conflict policy
// (DESIGN.md, Replication). Each accepted change gets the next cloud_seq and
// an outbox row. A database error aborts the whole batch (it is retried).
func (s *Store) ApplyUp(ctx context.Context, clinic ids.ID, changes []wire.Envelope) (UpResult, error) {
	type item struct {
		e wire.Envelope
		c records.Content
	}
	var rejected []Rejected
	items := make([]item, 0, len(changes))
	for _, e := range changes {
		c, err := checkUp(clinic, e)
		if err != nil {
			rejected = append(rejected, Rejected{Change: e, Err: err})
			continue
		}
		items = append(items, item{e, c})
	}
	var res UpResult
	err := s.inClinic(ctx, clinic, func(ct *clinicTx) error {
		for _, it := range items {
			if err := ct.applyUp(it.e, it.c); err != nil {
				return fmt.Errorf("change %s: %w", it.e.ChangeID, err)
			}
		}
		res = *ct.res
		return nil
	})
	if err != nil {
		return UpResult{}, fmt.Errorf("store: apply up: %w", err)
	}
	res.Rejected = rejected
	return res, nil
}

// checkUp validates a clinic's change and decodes its content (nil for a delete).
func checkUp(clinic ids.ID, e wire.Envelope) (records.Content, error) {
	if e.Clinic != clinic || e.Type != wire.TypeChange || e.Origin != wire.OriginLocal {
		return nil, fmt.Errorf("%w: %s change of clinic %s from %s on the queue of clinic %s", ErrInvalidChange, e.Type, e.Clinic, e.Origin, clinic)
	}
	if e.Deleted {
		return nil, nil
	}
	c, err := records.Decode(e.Kind, e.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidChange, err)
	}
	return c, nil
}

func (ct *clinicTx) applyUp(e wire.Envelope, c records.Content) error {
	clinic := ct.c.ID
	var n int64
	if err := ct.tx.Model(&Change{}).Where("clinic_id = ? AND change_id = ?", clinic, e.ChangeID).Count(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		if err := ct.tx.Model(&Parked{}).Where("clinic_id = ? AND change_id = ?", clinic, e.ChangeID).Count(&n).Error; err != nil {
			return err
		}
	}
	if n > 0 {
		ct.res.Duplicates++
		return nil
	}
	// A change of a record with an earlier change still parked waits behind it.
	var p Parked
	err := ct.tx.Where("clinic_id = ? AND kind = ? AND record_id = ?", clinic, e.Kind, e.RecordID).Order("id").Take(&p).Error
	switch {
	case err == nil:
		return ct.park(e, wire.Kind(p.WaitKind), p.WaitID)
	case !errors.Is(err, gorm.ErrRecordNotFound):
		return err
	}
	if c != nil {
		ref, missing, err := ct.missingRef(c, false, nil)
		if err != nil {
			return err
		}
		if missing {
			return ct.park(e, ref.Kind, ref.ID)
		}
	}
	k, err := opsFor(e.Kind)
	if err != nil {
		return err
	}
	rec, exists, err := ct.load(k, e.RecordID)
	if err != nil {
		return err
	}
	m := rec.meta()
	m.Kind = e.Kind
	m.LastChangeID = e.ChangeID
	concurrent := exists && e.BaseVersion != m.Version && (m.LocalVersion.IsZero() || e.BaseVersion != m.LocalVersion)
	// A save under a lock that expired while someone else saved is
	// concurrent with that save whatever its base version.
	stale := exists && e.Fence > 0 && e.Fence < m.Fence
	concurrent = concurrent || stale
	m.Fence = max(m.Fence, e.Fence)
	m.Unfenced = e.Unfenced
	m.EditSession = ""
	if !concurrent {
		newV := e.NewVersion
		if exists && !m.Version.Less(newV) {
			// The clinic built on its own accepted change, which the cloud
			// had renumbered: keep versions moving forward.
			newV = m.Version.NextSession()
		}
		base := m.Version
		if c != nil {
			rec.setContent(c)
		}
		m.Deleted = e.Deleted
		m.Version, m.LocalVersion = newV, e.NewVersion
		m.Origin = string(wire.OriginLocal)
		m.Conflict = false
		ct.res.Accepted++
		return ct.acceptChange(rec, exists, base, e.At, "", e.Unsync)
	}

	// Concurrent: the record changed in the cloud (or by an earlier,
	// overruled clinic change) since the version this change was based on.
	ct.res.Accepted++
	ct.res.Conflicts++
	base := m.Version
	top := m.Version
	if top.Less(e.NewVersion) {
		top = e.NewVersion
	}
	m.Version = top.NextSession()
	policy := ct.c.ConflictPolicy
	switch policy {
	case PolicyCloudWins:
		m.LocalVersion = version.V{}
		return ct.accept(rec, exists, base, e.At, policy)
	case PolicyKeepBoth:
		m.LocalVersion = version.V{}
		m.Conflict = true
		if err := ct.accept(rec, exists, base, e.At, policy); err != nil {
			return err
		}
		if c == nil {
			return nil // the clinic deleted it: there is no other content to keep
		}
		return ct.conflictCopy(k, e, c)
	default: // local-wins
		if c != nil {
			rec.setContent(c)
		}
		m.Deleted = e.Deleted
		m.LocalVersion = e.NewVersion
		m.Origin = string(wire.OriginLocal)
		m.Conflict = false
		return ct.acceptChange(rec, exists, base, e.At, PolicyLocalWins, e.Unsync)
	}
}

// conflictCopy keeps the clinic's losing content of a keep-both conflict as
// a new record, flagged, that names the record it was copied from.
func (ct *clinicTx) conflictCopy(k kindOps, e wire.Envelope, c records.Content) error {
	id, err := ct.s.ids.Next()
	if err != nil {
		return err
	}
	cp := k.newRow()
	cp.setContent(c)
	m := cp.meta()
	m.ClinicID, m.ID, m.Kind = ct.c.ID, id, e.Kind
	m.Version = version.First
	m.Origin = string(wire.OriginCloud)
	m.Conflict = true
	m.ConflictOf = e.RecordID
	m.LastChangeID = id
	return ct.accept(cp, false, version.V{}, time.Now(), PolicyKeepBoth)
}

func (ct *clinicTx) park(e wire.Envelope, waitKind wire.Kind, waitID ids.ID) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ct.res.Parked++
	return ct.tx.Create(&Parked{
		ClinicID: ct.c.ID, WaitKind: string(waitKind), WaitID: waitID, Kind: string(e.Kind),
		RecordID: e.RecordID, ChangeID: e.ChangeID, Envelope: string(b),
	}).Error
}

// unpark applies, in arrival order, the changes that waited for kind/id.
func (ct *clinicTx) unpark(kind wire.Kind, id ids.ID) error {
	var ps []Parked
	if err := ct.tx.Where("clinic_id = ? AND wait_kind = ? AND wait_id = ?", ct.c.ID, kind, id).Order("id").Find(&ps).Error; err != nil {
		return err
	}
	if len(ps) == 0 {
		return nil
	}
	// Take them all off first: changes of one record park together, and a
	// change must not wait behind its own successors.
	pids := make([]int64, len(ps))
	for i, p := range ps {
		pids[i] = p.ID
	}
	if err := ct.tx.Delete(&Parked{}, pids).Error; err != nil {
		return err
	}
	for _, p := range ps {
		ct.res.Unparked++
		var e wire.Envelope
		if err := json.Unmarshal([]byte(p.Envelope), &e); err != nil {
			return fmt.Errorf("parked change %s: %w", p.ChangeID, err)
		}
		c, err := checkUp(ct.c.ID, e)
		if err != nil {
			return fmt.Errorf("parked change %s: %w", p.ChangeID, err)
		}
		if err := ct.applyUp(e, c); err != nil {
			return err
		}
	}
	return nil
}

// ParkedCount counts the changes of a clinic waiting for a record.
func (s *Store) ParkedCount(ctx context.Context, clinic ids.ID) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&Parked{}).Where("clinic_id = ?", clinic).Count(&n).Error
	return n, err
}
