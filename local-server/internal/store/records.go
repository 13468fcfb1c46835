package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/rowscan"
	"github.com/scsync/scsync/shared/syncrules"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

var (
	// ErrStaleFence: the save's fencing token is lower than the last one
	// accepted for the record (its lock expired and someone else saved).
	ErrStaleFence = errors.New("store: stale fencing token")
	// ErrMissingRef: the content refers to a record that does not exist here.
	ErrMissingRef = errors.New("store: referenced record does not exist")
	// ErrInvalidChange: a down change whose content cannot be applied.
	ErrInvalidChange = errors.New("store: invalid change")
)

// Edit is a change made in the clinic.
type Edit struct {
	Kind wire.Kind
	// ID is the record; 0 creates a new record (its id is the change id).
	ID ids.ID
	// Base, when set, must be the current version (optimistic check).
	Base *version.V
	// Content is the new content; nil with Delete.
	Content records.Content
	Delete  bool
	// Session is the edit session saving (empty: a one-save session). A
	// further save in the session that saved last bumps B instead of A.
	Session string
	// Fence is the session's fencing token (0: none); a token lower than
	// the record's last accepted one is refused with ErrStaleFence.
	Fence int64
	// Unfenced marks a save made with the lock service unreachable.
	Unfenced bool
	// SessionVersion is the record's version when the session opened: an
	// unfenced save over a change that came after it collides.
	SessionVersion version.V
}

// The person a save is recorded as is the authenticated caller of its
// context (auth.SavedBy), never anything the client sent.

// createdAt is a creation time as it travels: in UTC, to the microsecond
// PostgreSQL keeps, so it reads back the same on both sides.
func createdAt(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Save writes a local change: the record with its new version, sync state
// pending, and the change in the outbox, in one transaction (a group commit
// with the other writes of the moment: commit.go).
func (s *Store) Save(ctx context.Context, ed Edit) (Record, error) {
	k, err := opsFor(ed.Kind)
	if err != nil {
		return nil, err
	}
	var out Record
	err = s.write(ctx, func(tx *gorm.DB) error {
		var err error
		if out, err = s.saveTx(ctx, tx, k, ed); err != nil {
			return err
		}
		return writeHook(ctx, tx, out)
	})
	if err != nil {
		return nil, fmt.Errorf("store: save %s: %w", ed.Kind, err)
	}
	return out, nil
}

// saveTx is Save's work in tx; ctx gives the person saving.
func (s *Store) saveTx(ctx context.Context, tx *gorm.DB, k kindOps, ed Edit) (Record, error) {
	var out Record
	err := func() error {
		changeID, err := s.ids.Next()
		if err != nil {
			return err
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		rec := k.newRow()
		m := rec.meta()
		exists := false
		if ed.ID != 0 {
			err := tx.Take(rec, "id = ? AND clinic_id = ?", ed.ID, s.clinic).Error
			if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
				return err
			}
			exists = err == nil
		}
		d := syncrules.DecideSave(syncrules.Record{Exists: exists, Version: m.Version, Deleted: m.Deleted, Fence: m.Fence, Session: m.EditSession},
			syncrules.Save{Create: ed.ID == 0, Delete: ed.Delete, Base: ed.Base, Session: ed.Session,
				SessionVersion: ed.SessionVersion, Fence: ed.Fence, Unfenced: ed.Unfenced})
		switch {
		case ed.ID == 0 && (ed.Delete || ed.Content == nil):
			return ErrNotFound
		case errors.Is(d.Err, syncrules.ErrNotFound), errors.Is(d.Err, syncrules.ErrExists):
			return ErrNotFound
		case errors.Is(d.Err, syncrules.ErrVersionConflict):
			return fmt.Errorf("%w: current version is %s, not %s", ErrVersionConflict, m.Version, *ed.Base)
		case errors.Is(d.Err, syncrules.ErrStaleFence):
			return fmt.Errorf("%w: token %d, the record was saved under %d", ErrStaleFence, ed.Fence, m.Fence)
		}
		// The base the cloud judges the change by: an unfenced save over a
		// change that came after its session opened is based on the
		// session's version, so the cloud sees it concurrent and applies
		// the clinic's policy (M13).
		prev := d.Base
		if ed.ID == 0 {
			m.ID, m.ClinicID, m.CreatedAt = changeID, s.clinic, now
		}
		m.Version = d.Version
		m.EditSession = ed.Session
		m.Fence = d.Fence
		m.Unfenced = ed.Unfenced
		if ed.Content != nil && !ed.Delete {
			var had []records.Ref
			if exists {
				had = rec.content().Refs()
			}
			if ref, missing, err := s.missingRef(tx, ed.Content, had); err != nil {
				return err
			} else if missing {
				return fmt.Errorf("%w: %s %s", ErrMissingRef, ref.Kind, ref.ID)
			}
			rec.setContent(ed.Content)
		}
		m.Kind = ed.Kind
		m.Deleted = ed.Delete
		m.Origin = string(wire.OriginLocal)
		if m.SortDate, err = s.sortDate(tx, rec.content()); err != nil {
			return err
		}
		at := now // the change's time; a record's first change carries its creation time
		// Scope (M4): a record never queued for the cloud that the scope
		// does not cover stays here (excluded); once queued, it replicates.
		sc, err := s.scopeIn(tx)
		if err != nil {
			return err
		}
		in, err := s.inScope(tx, sc, ed.Kind, rec.content(), m.SyncChoice)
		if err != nil {
			return err
		}
		if (!m.Queued && !in) || m.SyncChoice == ChoiceNever {
			m.SyncState, m.PendingChangeID, m.PendingSince = StateExcluded, 0, nil
		} else {
			if !m.Queued {
				prev = version.V{} // the cloud hears of it for the first time
				at = m.CreatedAt
			} else if m.PendingChangeID != 0 {
				// A backfill row still waiting for this record must go before
				// this change: it moves to the live lane (its older id keeps it first).
				if err := tx.Model(&Outbox{}).Where("change_id = ? AND lane = ?", m.PendingChangeID, LaneBackfill).
					Update("lane", LaneLive).Error; err != nil {
					return err
				}
			}
			m.Queued = true
			m.SyncState = StatePending
			m.PendingChangeID = changeID
			if m.PendingSince == nil {
				m.PendingSince = &now
			}
		}
		if exists {
			err = tx.Save(rec).Error
		} else {
			err = createRow(tx, k, rec)
		}
		if err != nil {
			return err
		}
		e := wire.Envelope{
			Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: s.clinic, Origin: wire.OriginLocal,
			ChangeID: changeID, Kind: ed.Kind, RecordID: m.ID, BaseVersion: prev,
			NewVersion: m.Version, Deleted: ed.Delete, At: now, Fence: ed.Fence, Unfenced: ed.Unfenced,
		}
		e.SavedBy, e.SavedByName = auth.SavedBy(ctx)
		if !ed.Delete {
			if e.Payload, err = json.Marshal(rec.content()); err != nil {
				return err
			}
			rec.setEncodedContent(e.Payload) // the API's answer reuses it
		}
		if err := keepVersion(tx, e, ed.Session); err != nil {
			return err
		}
		out = rec
		if m.SyncState == StateExcluded {
			return nil // nothing to tell the cloud: it never had the record
		}
		e.At = createdAt(at)
		return s.queue(tx, e, LaneLive)
	}()
	if err != nil {
		return nil, err
	}
	return out, nil
}

// queue writes e into the outbox lane.
func (s *Store) queue(tx *gorm.DB, e wire.Envelope, lane int) error {
	o, err := outboxOf(e, lane)
	if err != nil {
		return err
	}
	return execRaw(tx, insertOutbox, o.ChangeID, o.Lane, o.Envelope, time.Now().UTC())
}

// The statements of every save, run on the transaction's connection as
// they are (the driver keeps them prepared: stmtcache.go) rather than
// built by gorm from the models each time, which cost as much CPU as
// SQLite's own work of the insert.
const (
	insertOutbox  = "INSERT INTO outbox (change_id, lane, envelope, created_at) VALUES (?, ?, ?, ?)"
	insertVersion = "INSERT INTO versions (kind, record_id, version, deleted, origin, change_id, session, saved_by, saved_by_name, " +
		"fence, unfenced, content, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

// execRaw runs query with args on tx's connection.
func execRaw(tx *gorm.DB, query string, args ...any) error {
	ctx := tx.Statement.Context
	if ctx == nil {
		ctx = context.Background()
	}
	_, err := tx.Statement.ConnPool.ExecContext(ctx, query, args...)
	return err
}

// missingRef returns the first live record c refers to that is not here.
// References the record had already (had) are not checked again: a record
// may keep pointing at a parent deleted since.
func (s *Store) missingRef(tx *gorm.DB, c records.Content, had []records.Ref) (records.Ref, bool, error) {
	for _, ref := range c.Refs() {
		if slices.Contains(had, ref) {
			continue
		}
		k, err := opsFor(ref.Kind)
		if err != nil {
			return ref, false, err
		}
		var n int64
		if err := tx.Model(k.model).Where("id = ? AND clinic_id = ? AND deleted = ?", ref.ID, s.clinic, false).Count(&n).Error; err != nil {
			return ref, false, err
		}
		if n == 0 {
			return ref, true, nil
		}
	}
	return records.Ref{}, false, nil
}

// Get returns a record (tombstones included).
func (s *Store) Get(ctx context.Context, kind wire.Kind, id ids.ID) (Record, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	rec := k.newRow()
	err = s.db.WithContext(ctx).Take(rec, "id = ? AND clinic_id = ?", id, s.clinic).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rec.meta().Kind = kind
	return rec, nil
}

// ListQuery pages through records.
type ListQuery struct {
	UpdatedSince time.Time
	After        ids.ID
	Limit        int
	WithDeleted  bool
	SyncState    string
	// Parent, when set, keeps the records of that parent.
	Parent ids.ID
}

// List returns a page of records of one kind in id order.
func (s *Store) List(ctx context.Context, kind wire.Kind, q ListQuery) ([]Record, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	if q.Parent != 0 && k.spec.ParentField == "" {
		return nil, fmt.Errorf("%w: %s has no parent", records.ErrInvalid, kind)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	// page is the query's conditions but the state, in id order, a page.
	page := func() *gorm.DB {
		db := s.db.WithContext(ctx).Model(k.model).Where("clinic_id = ? AND id > ?", s.clinic, q.After)
		if !q.UpdatedSince.IsZero() {
			db = db.Where("updated_at >= ?", q.UpdatedSince)
		}
		if !q.WithDeleted {
			db = db.Where("deleted = ?", false)
		}
		if q.Parent != 0 {
			db = db.Where(k.spec.ParentField+" = ?", q.Parent)
		}
		return db.Order("id").Limit(q.Limit)
	}
	if q.SyncState == StateExcluded {
		few, err := s.neverQueuedFew(ctx, k.spec.Table)
		if err != nil {
			return nil, err
		}
		if few {
			// The excluded records lie in two indexes: those queued
			// once (taken out of the cloud) in the partial sync_state
			// index (its condition written as the index's), those
			// never queued in the backfill's (their ids taken first
			// and read in id order). Each part gives its first page,
			// and the page is the first of the two together: what the
			// table read in id order gives, without reading it.
			queued := page().Where(rareStates).Where(stateIs(StateExcluded))
			never := page().Where(stateIs(StateExcluded)).
				Where("id IN (SELECT id FROM `"+k.spec.Table+"` INDEXED BY `"+k.spec.Table+"_backfill` WHERE queued = 0 AND id > ?)", q.After)
			return k.find(s.db.WithContext(ctx).
				Table("(SELECT * FROM (?) UNION ALL SELECT * FROM (?)) AS excluded_page", queued, never).
				Order("id").Limit(q.Limit))
		}
	}
	db := page()
	if q.SyncState != "" {
		db = db.Where(stateIs(q.SyncState))
	}
	return k.find(db)
}

// fewNeverQueued is the count of a table's records never queued below
// which the excluded records' list reads them through the backfill's
// index, whose order is not id's: all their ids for every page, then the
// page's rows by id. At that many or more (a history not sent yet, or much
// the scope leaves out) the excluded are not rare, and the table read in
// id order finds a page about as soon (unless they lie together at its
// end). At a million studies spread evenly, 1,000 never queued list
// faster through the index, 5,000 slower (docs/performance.md, "The
// excluded records' list through its two indexes").
const fewNeverQueued = 2_000

// neverQueuedFew says whether table holds fewer than fewNeverQueued
// records never queued: a read of at most that many entries of the
// backfill's index (skipped over, not counted one by one: 0.1 ms at 2,000
// in the sqlite3 shell, against 0.2).
func (s *Store) neverQueuedFew(ctx context.Context, table string) (bool, error) {
	var many int64
	err := s.db.WithContext(ctx).Raw("SELECT count(*) FROM (SELECT 1 FROM `"+table+"` WHERE queued = 0 LIMIT 1 OFFSET ?)",
		cmp.Or(s.fewNeverQueuedAt, fewNeverQueued)-1).Scan(&many).Error
	return many == 0, err
}

// DownResult says what ApplyDown did with a batch.
type DownResult struct {
	// Changes lists the changes applied to a record here (for viewers'
	// "changed" events); acceptances of this clinic's own changes included.
	Changes    []wire.Envelope `json:"-"`
	Applied    int             // changes applied (the checkpoint moved past them)
	Duplicates int             // at or below the checkpoint: nothing to do
	Skipped    int             // content this build cannot apply (logged, checkpoint moved)
	// Gap is the cloud_seq of the first change that came before its
	// predecessors (lost while offline, or relayed out of order); it and
	// what followed it were not applied. 0: no gap.
	Gap int64
}

// ApplyDown applies changes from the cloud in cloud_seq order, together with
// the checkpoint, in one transaction:
//   - the acceptance of this clinic's own change marks the record synced
//     (M21) and is never taken for a new change (M20);
//   - a change from the cloud overwrites the record unless a newer local
//     change is pending, which the cloud will judge when it arrives there;
//   - nothing is written to the outbox, so nothing echoes (M23).
//
// Parents come before children because the cloud accepts a change only
// after every record it refers to (M26), and the order is cloud_seq.
func (s *Store) ApplyDown(ctx context.Context, es []wire.Envelope) (DownResult, error) {
	var res DownResult
	// In the group commit of the moment: the cloud's acceptances come back
	// as fast as the clinic saves. Many changes at once (a backfill's
	// acceptances, thousands a call) commit alone instead: under a group
	// commit's savepoint SQLite would copy each page they change to a
	// sub-journal first, for a rollback of this write alone.
	write := s.write
	if len(es) >= downAlone {
		write = s.writeAlone
	}
	err := write(ctx, func(tx *gorm.DB) error {
		res = DownResult{}
		cpS, err := s.meta(tx, metaCheckpoint)
		if err != nil {
			return err
		}
		cp, _ := strconv.ParseInt(cpS, 10, 64)
		start := cp
		now := time.Now().UTC()
		// Acceptances of this clinic's changes as sent need only the sync
		// columns; the other records the batch changes are read whole, in
		// one query per kind.
		asSent, err := s.acceptedAsSent(tx, es, cp)
		if err != nil {
			return err
		}
		cache := rowCache{}
		refs := make([]records.Ref, 0, len(es))
		for _, e := range es {
			ref := records.Ref{Kind: e.Kind, ID: e.RecordID}
			if _, ok := asSent[ref]; !ok && e.CloudSeq > cp {
				refs = append(refs, ref)
			}
		}
		if err := cache.load(tx, s.clinic, refs); err != nil {
			return err
		}
		p := pending{marks: newBulkUpdate("sync_state = ?, synced_at = ?, updated_at = ?, pending_change_id = 0, pending_since = NULL, "+
			"cloud_version = v.column2, cloud_seq = v.column3, fence = v.column4, unfenced = v.column5", 5, StateSynced, now, now)}
		for _, e := range es {
			switch syncrules.Order(cp, e.CloudSeq) {
			case syncrules.Duplicate:
				res.Duplicates++
				continue
			case syncrules.Gap:
				res.Gap = e.CloudSeq
			}
			if res.Gap != 0 {
				break
			}
			if fence, ok := asSent[records.Ref{Kind: e.Kind, ID: e.RecordID}]; ok {
				// applyOne's syncrules.AcceptAsSent, without the row.
				k, _ := opsFor(e.Kind)
				p.marks.add(k.spec.Table, e.RecordID, e.NewVersion.String(), e.CloudSeq, max(fence, e.Fence), e.Unfenced)
				res.Applied++
				res.Changes = append(res.Changes, e)
				cp = e.CloudSeq
				continue
			}
			applied, err := s.applyOne(tx, e, now, cache, &p)
			if err != nil {
				return err
			}
			if applied {
				res.Applied++
				res.Changes = append(res.Changes, e)
			} else {
				res.Skipped++
			}
			cp = e.CloudSeq
		}
		if cp == start {
			return nil
		}
		if err := p.marks.flush(tx, s.clinic); err != nil {
			return err
		}
		if err := p.flush(tx); err != nil {
			return err
		}
		return setMeta(tx, metaCheckpoint, strconv.FormatInt(cp, 10), metaLastContact, now.Format(time.RFC3339Nano))
	})
	if err != nil {
		return DownResult{}, fmt.Errorf("store: apply down: %w", err)
	}
	return res, nil
}

// downAlone is how many changes make ApplyDown a write of its own (a
// message holds up to wire.MaxBatch).
const downAlone = 100

// applyOne applies one change; false means its content could not be
// represented here and it was skipped.
func (s *Store) applyOne(tx *gorm.DB, e wire.Envelope, now time.Time, cache rowCache, p *pending) (bool, error) {
	if e.Clinic != s.clinic {
		return false, fmt.Errorf("%w: change of clinic %s", ErrInvalidChange, e.Clinic)
	}
	// A kind or content this build cannot represent (a newer peer) is
	// skipped, not fatal: the stream must go on, and the cloud keeps it.
	k, err := opsFor(e.Kind)
	if err != nil {
		return false, nil //nolint:nilerr // skipping is the documented outcome
	}
	rec, exists, err := cache.get(tx, s.clinic, k, e.RecordID)
	if err != nil {
		return false, err
	}
	if !exists {
		rec = k.newRow()
	}
	m := rec.meta()
	l := syncrules.Local{Exists: exists, Queued: m.Queued, Version: m.Version, Deleted: m.Deleted, Origin: wire.Origin(m.Origin)}
	if exists && m.SyncState == StatePending {
		l.Pending = int64(m.PendingChangeID)
	}
	d := syncrules.DecideDown(l, e.CloudSeq-1, syncrules.Applied{ChangeID: int64(e.ChangeID), CloudSeq: e.CloudSeq,
		New: e.NewVersion, Deleted: e.Deleted, Unsync: e.Unsync, Conflict: e.Conflict, ConflictOf: int64(e.ConflictOf), Origin: e.Origin})
	if d.Outcome == syncrules.Skip {
		// A newer local change is on its way up; the cloud decides when it
		// gets there and that decision comes back down.
		return true, nil
	}
	// The cloud accepted this clinic's own change as it was (the common
	// case, and every record of a backfill): content and version here are
	// that already.
	asSent := d.Outcome == syncrules.AcceptAsSent
	// A tombstone carries the content it keeps (newer clouds), so this
	// one ends identical to the cloud's, whoever deleted.
	var c records.Content
	if !asSent && !e.Unsync && len(e.Payload) > 0 {
		if c, err = records.Decode(e.Kind, e.Payload); err != nil && !e.Deleted {
			return false, nil //nolint:nilerr // skipping is the documented outcome
		} else if err != nil {
			c = nil // a tombstone's content this build cannot read: keep ours
		}
	}
	m.Queued = true // the cloud has it: local edits replicate whatever the scope
	m.CloudVersion = e.NewVersion
	own := d.Own
	if d.Outcome == syncrules.Unsync {
		// Taken out of the cloud (M7): the clinic keeps its copy, excluded;
		// only the version follows the cloud's tombstone.
		if !exists {
			return true, nil // nothing here to keep
		}
		m.Version, m.CloudSeq, m.EditSession = e.NewVersion, e.CloudSeq, ""
		m.SyncState, m.SyncChoice, m.SyncedAt = StateExcluded, ChoiceNever, &now
		m.PendingChangeID, m.PendingSince = 0, nil
		p.version(e, "")
		if err := p.marks.flush(tx, s.clinic); err != nil {
			return false, err
		}
		return true, tx.Save(rec).Error
	}
	if !own {
		m.EditSession = "" // a change from elsewhere ends the local session's chain
	}
	m.Fence = max(m.Fence, e.Fence)
	m.Unfenced = e.Unfenced
	if asSent {
		// Only the sync columns change: a full-row write would rewrite
		// every index of the table. The version is in the history
		// already: the change that made it was saved here.
		m.CloudVersion, m.SyncState, m.SyncedAt, m.CloudSeq = e.NewVersion, StateSynced, &now, e.CloudSeq
		m.PendingChangeID, m.PendingSince, m.UpdatedAt = 0, nil, now
		p.marks.add(k.spec.Table, m.ID, m.CloudVersion.String(), m.CloudSeq, m.Fence, m.Unfenced)
		return true, nil
	}
	p.version(e, m.EditSession)
	// Other writes keep their order with the queued ones.
	if err := p.marks.flush(tx, s.clinic); err != nil {
		return false, err
	}
	if !exists {
		// The first change of a record carries its creation time (the
		// origin's), so both sides show the same created_at.
		m.ID, m.ClinicID, m.CreatedAt = e.RecordID, s.clinic, e.At.UTC()
	}
	if c != nil {
		rec.setContent(c)
		if m.SortDate, err = s.sortDate(tx, c); err != nil {
			return false, err
		}
	}
	m.Kind = e.Kind
	m.Deleted = e.Deleted
	m.Version = e.NewVersion
	m.Origin = string(e.Origin)
	m.ConflictOf = e.ConflictOf
	m.SyncState = StateSynced
	if d.Conflicted {
		m.SyncState = StateConflict
	}
	m.SyncedAt = &now
	m.PendingChangeID = 0
	m.PendingSince = nil
	m.CloudSeq = e.CloudSeq
	if exists {
		return true, tx.Save(rec).Error
	}
	cache[records.Ref{Kind: e.Kind, ID: e.RecordID}] = rec
	return true, tx.Create(rec).Error
}

// Status is the clinic's replication summary.
type Status struct {
	Clinic           ids.ID     `json:"clinic"`
	Pending          int64      `json:"pending"`
	Synced           int64      `json:"synced"`
	Conflict         int64      `json:"conflict"`
	Excluded         int64      `json:"excluded"`
	Outbox           int64      `json:"outbox"`
	OldestPendingAge float64    `json:"oldest_pending_age_seconds"`
	Checkpoint       int64      `json:"checkpoint"`
	LastContact      *time.Time `json:"last_contact,omitempty"`
}

// stateCounts are one table's records by sync state.
type stateCounts struct{ pending, synced, conflict, excluded int64 }

// countStates counts table's records by sync state without reading the
// table: the two states a whole history can be in, synced and excluded
// never queued, are in no index of sync_state (schema migration 00004), so
// a GROUP BY sync_state would read every row (0.7 s at a million,
// docs/performance.md). The rare states are counted in the sync_state
// index (its own condition, written out, is what lets SQLite use it); the
// records never queued in the backfill's index, all of them excluded (a
// record leaves excluded only by being queued: a save, the backfill, a
// change from the cloud); synced is what is left of the table's count,
// which SQLite takes from the pages of its smallest index.
func countStates(db *gorm.DB, table string) (stateCounts, error) {
	var n stateCounts
	var rows []struct {
		SyncState string
		N         int64
	}
	if err := db.Table(table).Select("sync_state, COUNT(*) AS n").
		Where(rareStates).
		Group("sync_state").Scan(&rows).Error; err != nil {
		return n, err
	}
	var rare int64
	for _, r := range rows {
		switch r.SyncState {
		case StatePending:
			n.pending = r.N
		case StateConflict:
			n.conflict = r.N
		case StateExcluded:
			n.excluded = r.N
		}
		rare += r.N
	}
	var unqueued, all int64
	if err := db.Table(table).Where("queued = 0").Count(&unqueued).Error; err != nil {
		return n, err
	}
	if err := db.Table(table).Count(&all).Error; err != nil {
		return n, err
	}
	n.excluded += unqueued
	n.synced = all - rare - unqueued
	return n, nil
}

// Status counts records of every kind by sync state.
func (s *Store) Status(ctx context.Context) (Status, error) {
	st := Status{Clinic: s.clinic}
	db := s.db.WithContext(ctx)
	var oldest *time.Time
	for _, sp := range records.Kinds {
		k := kinds[sp.Kind]
		n, err := countStates(db, sp.Table)
		if err != nil {
			return st, err
		}
		st.Pending += n.pending
		st.Synced += n.synced
		st.Conflict += n.conflict
		st.Excluded += n.excluded
		var m Meta
		err = db.Model(k.model).Select("pending_since").Where(stateIs(StatePending)).Order("pending_since").Take(&m).Error
		if err == nil && m.PendingSince != nil && (oldest == nil || m.PendingSince.Before(*oldest)) {
			oldest = m.PendingSince
		}
	}
	if oldest != nil {
		st.OldestPendingAge = time.Since(*oldest).Seconds()
	}
	if err := db.Model(&Outbox{}).Count(&st.Outbox).Error; err != nil {
		return st, err
	}
	cp, err := s.Checkpoint(ctx)
	if err != nil {
		return st, err
	}
	st.Checkpoint = cp
	if v, err := s.meta(db, metaLastContact); err == nil && v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			st.LastContact = &t
		}
	}
	return st, nil
}

// Digest returns, for every record (tombstones included), the hash of its
// replicated state, keyed "kind/id", computed as the cloud computes it
// (GET /v1/digest, for tests; anti-entropy uses EachDigest, which holds no
// map).
func (s *Store) Digest(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	err := s.EachDigest(ctx, func(key, digest string) error {
		out[key] = digest
		return nil
	})
	return out, err
}

// EachDigest calls fn with every record the cloud should hold (tombstones
// included): its key ("kind/id") and digest. It reads a page of rows at a
// time on the read-only connections, so the writer is not held and the
// scan maps no file memory. The scan is CPU work (the driver's row
// decoding most of it), so each kind's ids are cut into ranges that
// digestWorkers goroutines scan at once, each on its own connection; the
// calls of fn are serialized but come in no particular order (anti-entropy
// adds them into order-free bucket sums).
func (s *Store) EachDigest(ctx context.Context, fn func(key, digest string) error) error {
	type span struct {
		kind   wire.Kind
		lo, hi ids.ID // the ids in (lo, hi]
	}
	var spans []span
	for _, sp := range records.Kinds {
		lo, hi, ok, err := s.idBounds(ctx, sp.Kind)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		for _, r := range rowscan.Split(lo-1, hi, digestRanges) {
			spans = append(spans, span{sp.Kind, r[0], r[1]})
		}
	}
	var mu sync.Mutex
	return rowscan.Parallel(ctx, min(digestWorkers, runtime.GOMAXPROCS(0)), spans, func(ctx context.Context, sp span) error {
		// A scan passes over each page once: a page cache would only
		// hold pages it will not read again. The connection's cache is
		// shrunk (which frees what it held) while the span is read.
		return s.rdb.WithContext(ctx).Connection(func(conn *gorm.DB) error {
			conn = conn.Session(&gorm.Session{}) // each statement from a clean one
			if err := conn.Exec("PRAGMA cache_size = " + strconv.Itoa(-scanCacheKiB)).Error; err != nil {
				return err
			}
			defer conn.WithContext(context.WithoutCancel(ctx)).Exec("PRAGMA cache_size = " + strconv.Itoa(-readerCacheKiB))
			return s.digestSpan(conn, sp.kind, sp.lo, sp.hi, func(key, digest string) error {
				mu.Lock()
				defer mu.Unlock()
				return fn(key, digest)
			})
		})
	})
}

// scanCacheKiB is the page cache of a connection while it reads every row
// (KiB): with the read-only connections' then 8 MB each kept while it ran,
// verify of a million records peaked 24 MiB higher in anonymous memory.
const scanCacheKiB = 1000

// digestWorkers is how many goroutines (and read-only connections: the
// pool holds two) a digest scan uses; digestRanges how many id ranges each
// kind is cut into, so that uneven ranges still share the work.
const (
	digestWorkers = 2
	digestRanges  = 16
)

// idBounds returns the smallest and the largest id of kind's table.
func (s *Store) idBounds(ctx context.Context, kind wire.Kind) (lo, hi ids.ID, ok bool, err error) {
	k := kinds[kind]
	var got []ids.ID
	for _, order := range []string{"id", "id DESC"} {
		var id []ids.ID
		if err := s.rdb.WithContext(ctx).Model(k.model).Where("clinic_id = ?", s.clinic).Order(order).Limit(1).Pluck("id", &id).Error; err != nil {
			return 0, 0, false, err
		}
		if len(id) == 0 {
			return 0, 0, false, nil
		}
		got = append(got, id[0])
	}
	return got[0], got[1], true, nil
}

// digestSpan calls fn with the digest of every record of kind with an id
// in (lo, hi], in id order, read through conn (one connection, with its
// context).
func (s *Store) digestSpan(conn *gorm.DB, kind wire.Kind, lo, hi ids.ID, fn func(key, digest string) error) error {
	k := kinds[kind]
	cols, err := rowscan.Columns(conn, k.model, "Data", digestMeta...)
	if err != nil {
		return err
	}
	ctx := conn.Statement.Context
	fetch := func(after ids.ID, limit int) ([]Record, error) {
		after = max(after, lo)
		return k.find(conn.Select(cols).Where("clinic_id = ? AND id > ? AND id <= ?", s.clinic, after, hi).Order("id").Limit(limit))
	}
	return rowscan.Walk(ctx, rowscan.PageSize, fetch, func(r Record) ids.ID { return r.meta().ID }, func(r Record) error {
		m := r.meta()
		key := string(kind) + "/" + m.ID.String()
		switch {
		case m.SyncState == StateExcluded && !m.Queued:
			return nil // the cloud never had it
		case m.SyncState == StateExcluded:
			// Un-synced: the cloud holds its tombstone, whose
			// content is not compared (the clinic keeps its own).
			return fn(key, records.Digest(m.CloudVersion, true, m.ConflictOf, m.CreatedAt, nil))
		default:
			return fn(key, records.Digest(m.Version, m.Deleted, m.ConflictOf, m.CreatedAt, r.content()))
		}
	})
}

// digestMeta are the metadata columns EachDigest reads besides the
// content (rowscan.Columns): what a digest covers and what decides it.
var digestMeta = []string{"id", "version", "deleted", "conflict_of", "created_at", "sync_state", "queued", "cloud_version"}

// keepVersion records e's version of its record in the version history,
// once (an acceptance of a version saved here adds nothing).
func keepVersion(tx *gorm.DB, e wire.Envelope, session string) error {
	v := versionOf(e, session)
	return execRaw(tx, insertVersion, v.Kind, v.RecordID, v.Version, v.Deleted, v.Origin, v.ChangeID, v.Session, v.SavedBy,
		v.SavedByName, v.Fence, v.Unfenced, v.Content, v.At)
}

// Versions lists the kept versions of a record, oldest first.
func (s *Store) Versions(ctx context.Context, kind wire.Kind, id ids.ID) ([]Version, error) {
	var vs []Version
	err := s.db.WithContext(ctx).Where("kind = ? AND record_id = ?", kind, id).Order("id").Find(&vs).Error
	return vs, err
}

// VersionContent returns the content a record had at version v.
func (s *Store) VersionContent(ctx context.Context, kind wire.Kind, id ids.ID, v version.V) (records.Content, error) {
	var row Version
	err := s.db.WithContext(ctx).Take(&row, "kind = ? AND record_id = ? AND version = ?", kind, id, v).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if row.Deleted {
		return nil, fmt.Errorf("%w: version %s is a tombstone", ErrNotFound, v)
	}
	return records.Decode(kind, []byte(row.Content))
}

// FileRef is a file a record names by content (image originals, captures,
// project files).
type FileRef struct {
	SHA256      string
	Size        int64
	ContentType string
}

// MissingFiles lists files live records name that no row of the transfer
// table (transfers, up or down) covers yet: the files to download.
func (s *Store) MissingFiles(ctx context.Context, transfers string, limit int) ([]FileRef, error) {
	var out []FileRef
	q := `SELECT sha256, MAX(size) AS size, MAX(content_type) AS content_type FROM (
		SELECT sha256, size, content_type FROM images WHERE sha256 <> '' AND deleted = false
		UNION ALL SELECT sha256, size, '' FROM captures WHERE sha256 <> '' AND deleted = false
		UNION ALL SELECT sha256, size, '' FROM project_files WHERE sha256 <> '' AND deleted = false
	) f WHERE sha256 NOT IN (SELECT sha256 FROM ` + transfers + `) GROUP BY sha256 LIMIT ?`
	err := s.db.WithContext(ctx).Raw(q, limit).Scan(&out).Error
	return out, err
}

// FileOfRecords is a file live records name, and whether the cloud should
// hold it (FileWanted's rule: one of them is queued for the cloud and not
// kept out by the user).
type FileOfRecords struct {
	SHA256 string
	Size   int64
	Wanted bool
}

// Files lists every file live records name (verify's file sweep), by
// SHA-256.
func (s *Store) Files(ctx context.Context) ([]FileOfRecords, error) {
	var out []FileOfRecords
	q := `SELECT sha256, MAX(size) AS size, MAX(wanted) AS wanted FROM (
		SELECT sha256, size, (queued AND sync_choice <> ?) AS wanted FROM images WHERE clinic_id = ? AND sha256 <> '' AND deleted = false
		UNION ALL SELECT sha256, size, (queued AND sync_choice <> ?) FROM captures WHERE clinic_id = ? AND sha256 <> '' AND deleted = false
		UNION ALL SELECT sha256, size, (queued AND sync_choice <> ?) FROM project_files WHERE clinic_id = ? AND sha256 <> '' AND deleted = false
	) f GROUP BY sha256 ORDER BY sha256`
	err := s.db.WithContext(ctx).Raw(q, ChoiceNever, s.clinic, ChoiceNever, s.clinic, ChoiceNever, s.clinic).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("store: files: %w", err)
	}
	return out, nil
}

// RecordOfFile names the live record whose file has that SHA-256 (an
// image, capture or project file), for transfer events; ok is false when
// none does.
func (s *Store) RecordOfFile(ctx context.Context, sha256 string) (wire.Kind, ids.ID, bool, error) {
	for _, k := range []wire.Kind{wire.KindImage, wire.KindCapture, wire.KindProjectFile} {
		ops := kinds[k]
		var found []Meta
		err := s.db.WithContext(ctx).Model(ops.model).Select("id").
			Where("clinic_id = ? AND sha256 = ? AND deleted = ?", s.clinic, sha256, false).Limit(1).Find(&found).Error
		if err != nil {
			return "", 0, false, err
		}
		if len(found) > 0 {
			return k, found[0].ID, true, nil
		}
	}
	return "", 0, false, nil
}

// FileWant says whether the cloud should get a file: Wanted when a live
// record naming it is (or will be) in the cloud — queued for it and not
// kept out by the user; Live when one of those was sent by a live change
// rather than by the backfill (its file goes at once).
type FileWant struct {
	Wanted, Live bool
}

// FileWanted tells whether the cloud should get the file with that SHA-256
// (M4: a file of a record outside the scope stays here).
func (s *Store) FileWanted(ctx context.Context, sha256 string) (FileWant, error) {
	var w FileWant
	for _, k := range []wire.Kind{wire.KindImage, wire.KindCapture, wire.KindProjectFile} {
		var rows []struct {
			Backfilled bool
		}
		err := s.db.WithContext(ctx).Model(kinds[k].model).Select("backfilled").
			Where("clinic_id = ? AND sha256 = ? AND deleted = ? AND queued = ? AND sync_choice <> ?", s.clinic, sha256, false, true, ChoiceNever).
			Scan(&rows).Error
		if err != nil {
			return w, err
		}
		for _, r := range rows {
			w.Wanted = true
			w.Live = w.Live || !r.Backfilled
		}
	}
	return w, nil
}

// FileOf is the SHA-256 of the file a record names ("" for none).
func FileOf(r Record) string {
	switch c := r.content().(type) {
	case records.Image:
		return c.SHA256
	case records.Capture:
		return c.SHA256
	case records.ProjectFile:
		return c.SHA256
	}
	return ""
}
