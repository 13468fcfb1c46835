package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Retention modes of a clinic (M5, docs/retention.md).
const (
	// RetentionKeep keeps everything in the cloud (the default).
	RetentionKeep = "keep"
	// RetentionDelete takes dated records older than AfterDays out of the
	// cloud with an un-sync tombstone: the clinic keeps its copy.
	RetentionDelete = "delete"
	// RetentionBackup keeps the records and moves their files to cold
	// storage.
	RetentionBackup = "backup"
)

// Per-record retention states (Meta.RetentionState) and event actions.
const (
	RetentionBackedUp = "backed-up"
	RetentionDeleted  = "deleted"
	RetentionRestored = "restored"
)

// MaxRetentionDays bounds AfterDays (100 years).
const MaxRetentionDays = 36500

// ClinicRetention is a clinic's retention policy, set by the cloud admin.
// A clinic without a row keeps everything.
type ClinicRetention struct {
	ClinicID  ids.ID    `gorm:"primaryKey;autoIncrement:false" json:"clinic_id"`
	Mode      string    `gorm:"not null;default:keep" json:"mode"`
	AfterDays int       `gorm:"not null;default:0" json:"after_days"`
	UpdatedAt time.Time `json:"updated_at"`
	// RunAt is when a node last began applying the policy (the claim that
	// keeps nodes from applying it at once); LastError is that run's error.
	RunAt     *time.Time `json:"last_run_at,omitempty"`
	LastError string     `gorm:"not null;default:''" json:"last_error,omitempty"`
}

// TableName is clinic_retention.
func (ClinicRetention) TableName() string { return "clinic_retention" }

// RetentionEvent is the trail of what retention did to a record: backed
// up, deleted (with the cloud_seq of its un-sync tombstone) or restored
// (with the time until which retention leaves it alone).
type RetentionEvent struct {
	ID        int64      `gorm:"primaryKey" json:"id"`
	ClinicID  ids.ID     `gorm:"not null;index:retention_events_record,priority:1" json:"clinic_id"`
	Kind      wire.Kind  `gorm:"not null;index:retention_events_record,priority:2" json:"kind"`
	RecordID  ids.ID     `gorm:"not null;index:retention_events_record,priority:3" json:"record_id"`
	Action    string     `gorm:"not null" json:"action"`
	Actor     string     `gorm:"not null" json:"actor"` // retention, admin or clinic
	CloudSeq  int64      `gorm:"not null;default:0" json:"cloud_seq,omitempty"`
	Reason    string     `gorm:"not null;default:''" json:"reason,omitempty"`
	HoldUntil *time.Time `json:"hold_until,omitempty"`
	At        time.Time  `gorm:"not null" json:"at"`
}

// TableName is retention_events.
func (RetentionEvent) TableName() string { return "retention_events" }

// Validate checks a policy (keep ignores AfterDays).
func (p *ClinicRetention) Validate() error {
	switch p.Mode {
	case RetentionKeep:
		p.AfterDays = 0
		return nil
	case RetentionDelete, RetentionBackup:
		if p.AfterDays < 1 || p.AfterDays > MaxRetentionDays {
			return fmt.Errorf("%w: after_days must be 1..%d", ErrInvalidRetention, MaxRetentionDays)
		}
		return nil
	}
	return fmt.Errorf("%w: mode must be keep, delete or backup", ErrInvalidRetention)
}

// Retention returns clinic's policy (keep when none was set).
func (s *Store) Retention(ctx context.Context, clinic ids.ID) (ClinicRetention, error) {
	if _, err := s.ClinicByID(ctx, clinic); err != nil {
		return ClinicRetention{}, err
	}
	p := ClinicRetention{ClinicID: clinic, Mode: RetentionKeep}
	err := s.db.WithContext(ctx).Take(&p, "clinic_id = ?", clinic).Error
	if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
		return p, fmt.Errorf("store: retention of %s: %w", clinic, err)
	}
	return p, nil
}

// SetRetention sets clinic's policy.
func (s *Store) SetRetention(ctx context.Context, clinic ids.ID, mode string, afterDays int) (ClinicRetention, error) {
	p := ClinicRetention{ClinicID: clinic, Mode: mode, AfterDays: afterDays, UpdatedAt: time.Now().UTC()}
	if err := p.Validate(); err != nil {
		return p, err
	}
	if _, err := s.ClinicByID(ctx, clinic); err != nil {
		return p, err
	}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "clinic_id"}},
		DoUpdates: clause.AssignmentColumns([]string{"mode", "after_days", "updated_at"}),
	}).Create(&p).Error
	if err != nil {
		return p, fmt.Errorf("store: set retention of %s: %w", clinic, err)
	}
	return s.Retention(ctx, clinic)
}

// RetentionPolicies lists the policies that do something (not keep).
func (s *Store) RetentionPolicies(ctx context.Context) ([]ClinicRetention, error) {
	var ps []ClinicRetention
	err := s.db.WithContext(ctx).Where("mode <> ?", RetentionKeep).Order("clinic_id").Find(&ps).Error
	return ps, err
}

// ClaimRetentionRun lets one node apply clinic's policy: it succeeds when no
// node began a run in the last gap, and records this one.
func (s *Store) ClaimRetentionRun(ctx context.Context, clinic ids.ID, gap time.Duration) (bool, error) {
	now := time.Now().UTC()
	res := s.db.WithContext(ctx).Model(&ClinicRetention{}).
		Where("clinic_id = ? AND (run_at IS NULL OR run_at <= ?)", clinic, now.Add(-gap)).
		Update("run_at", now)
	return res.RowsAffected == 1, res.Error
}

// EndRetentionRun records the outcome of a run ("" when it succeeded).
func (s *Store) EndRetentionRun(ctx context.Context, clinic ids.ID, errText string) error {
	return s.db.WithContext(ctx).Model(&ClinicRetention{}).Where("clinic_id = ?", clinic).Update("last_error", errText).Error
}

// Kinds retention handles, children before their study. Undated kinds
// (patients, doctors, users, templates, settings) are never touched.
var retentionKinds = []wire.Kind{wire.KindImage, wire.KindCapture, wire.KindProjectFile, wire.KindReport, wire.KindStudy}

// RetentionKinds lists the kinds retention handles, children first.
func RetentionKinds() []wire.Kind { return append([]wire.Kind(nil), retentionKinds...) }

// RetentionCandidates returns up to limit records of kind (with ids above
// after, in id order) that clinic's
// policy applies to: live, dated on or before cutoff (YYYY-MM-DD; a child
// is dated by its study, an image by its own study_date), in one of
// states, and not held by a recent restore. With noLiveChildren, a study
// is a candidate only once none of its children is live (a delete takes
// children out first).
func (s *Store) RetentionCandidates(ctx context.Context, clinic ids.ID, kind wire.Kind, cutoff string, states []string, noLiveChildren bool, after ids.ID, limit int) ([]ids.ID, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	t := k.spec.Table
	db := s.db.WithContext(ctx).Table(t+" AS r").Select("r.id").
		Where("r.clinic_id = ? AND r.id > ? AND NOT r.deleted AND r.retention_state IN ?", clinic, after, states).
		Where("NOT EXISTS (SELECT 1 FROM retention_events e WHERE e.clinic_id = r.clinic_id AND e.kind = ? AND e.record_id = r.id AND e.hold_until > ?)",
			kind, time.Now().UTC())
	switch kind {
	case wire.KindStudy, wire.KindImage:
		db = db.Where("r.study_date <> '' AND r.study_date <= ?", cutoff)
	default:
		db = db.Where("EXISTS (SELECT 1 FROM studies st WHERE st.clinic_id = r.clinic_id AND st.id = r.study_id AND st.study_date <> '' AND st.study_date <= ?)", cutoff)
	}
	if kind == wire.KindStudy && noLiveChildren {
		for _, child := range []string{"images", "captures", "project_files", "reports"} {
			db = db.Where("NOT EXISTS (SELECT 1 FROM " + child + " c WHERE c.clinic_id = r.clinic_id AND c.study_id = r.id AND NOT c.deleted)")
		}
	}
	var out []ids.ID
	err = db.Order("r.id").Limit(limit).Pluck("r.id", &out).Error
	return out, err
}

// FileOnlyInOld reports whether every live record of clinic naming file sha
// is dated on or before cutoff (so moving the file to cold storage takes it
// from no newer record).
func (s *Store) FileOnlyInOld(ctx context.Context, clinic ids.ID, sha, cutoff string) (bool, error) {
	var n int64
	err := s.db.WithContext(ctx).Raw(`SELECT
		(SELECT count(*) FROM images r WHERE r.clinic_id = @c AND r.sha256 = @sha AND NOT r.deleted AND NOT (r.study_date <> '' AND r.study_date <= @cut)) +
		(SELECT count(*) FROM captures r WHERE r.clinic_id = @c AND r.sha256 = @sha AND NOT r.deleted AND NOT EXISTS
			(SELECT 1 FROM studies st WHERE st.clinic_id = r.clinic_id AND st.id = r.study_id AND st.study_date <> '' AND st.study_date <= @cut)) +
		(SELECT count(*) FROM project_files r WHERE r.clinic_id = @c AND r.sha256 = @sha AND NOT r.deleted AND NOT EXISTS
			(SELECT 1 FROM studies st WHERE st.clinic_id = r.clinic_id AND st.id = r.study_id AND st.study_date <> '' AND st.study_date <= @cut))`,
		map[string]any{"c": clinic, "sha": sha, "cut": cutoff}).Scan(&n).Error
	return n == 0, err
}

// fileKinds are the kinds whose content names a file by its SHA-256.
var fileKinds = map[wire.Kind]string{wire.KindImage: "images", wire.KindCapture: "captures", wire.KindProjectFile: "project_files"}

// FileSHA returns the SHA-256 of the file c names ("" when none).
func FileSHA(c records.Content) string {
	switch v := c.(type) {
	case records.Image:
		return v.SHA256
	case records.Capture:
		return v.SHA256
	case records.ProjectFile:
		return v.SHA256
	}
	return ""
}

// Ref names one record.
type Ref struct {
	Kind wire.Kind `json:"kind"`
	ID   ids.ID    `json:"id"`
}

// RecordsNamingFile lists clinic's live records naming file sha.
func (s *Store) RecordsNamingFile(ctx context.Context, clinic ids.ID, sha string) ([]Ref, error) {
	var out []Ref
	for kind, table := range fileKinds {
		var idList []ids.ID
		if err := s.db.WithContext(ctx).Table(table).Where("clinic_id = ? AND sha256 = ? AND NOT deleted", clinic, sha).
			Pluck("id", &idList).Error; err != nil {
			return nil, err
		}
		for _, id := range idList {
			out = append(out, Ref{kind, id})
		}
	}
	return out, nil
}

// liveFileRefs counts, inside the clinic's transaction, the live records
// naming file sha.
func (ct *clinicTx) liveFileRefs(sha string) (int64, error) {
	// The records this batch created count too.
	if err := ct.flushCreated(); err != nil {
		return 0, err
	}
	var total int64
	for _, table := range fileKinds {
		var n int64
		if err := ct.tx.Table(table).Where("clinic_id = ? AND sha256 = ? AND NOT deleted", ct.c.ID, sha).Count(&n).Error; err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// storedSHA is the file a record names before this change ("" for kinds
// without files or a new record).
func (ct *clinicTx) storedSHA(m *Meta, exists bool) (string, error) {
	table, ok := fileKinds[m.Kind]
	if !ok || !exists {
		return "", nil
	}
	if sha, ok := ct.stored[records.Ref{Kind: m.Kind, ID: m.ID}]; ok {
		return sha, nil
	}
	var shas []string
	err := ct.tx.Table(table).Where("clinic_id = ? AND id = ?", m.ClinicID, m.ID).Pluck("sha256", &shas).Error
	if err != nil || len(shas) == 0 {
		return "", err
	}
	return shas[0], nil
}

// flushSynced marks the files that records of the batch named synced
// (fileRefs), one statement for all of them.
func (ct *clinicTx) flushSynced() error {
	if len(ct.synced) == 0 {
		return nil
	}
	slices.Sort(ct.synced)
	err := files.MarkSynced(ct.tx, ct.c.ID, slices.Compact(ct.synced)...)
	ct.synced = nil
	return err
}

// fileRefs keeps the files table's un-synced marks true after a change of
// rec (M7): the file a live record names is reachable; a file no live
// record names any more (the record was deleted or un-synced, or names
// another file now) is marked un-synced: no download, and deletion from
// S3 after the grace period.
func (ct *clinicTx) fileRefs(rec Record, prev string) error {
	m := rec.meta()
	if _, ok := fileKinds[m.Kind]; !ok {
		return nil
	}
	cur := FileSHA(rec.content())
	if cur != "" && !m.Deleted {
		if ct.buffer {
			// Marked with the batch's others (flushSynced): a statement
			// per batch, not per record.
			ct.synced = append(ct.synced, cur)
		} else if err := files.MarkSynced(ct.tx, m.ClinicID, cur); err != nil {
			return err
		}
	}
	lost := []string{}
	if prev != "" && prev != cur {
		lost = append(lost, prev)
	}
	if cur != "" && m.Deleted {
		lost = append(lost, cur)
	}
	if len(lost) > 0 {
		// The marks keep their order: the files marked synced so far
		// first.
		if err := ct.flushSynced(); err != nil {
			return err
		}
	}
	for _, sha := range lost {
		n, err := ct.liveFileRefs(sha)
		if err != nil {
			return err
		}
		if n == 0 {
			if err := files.MarkUnsynced(ct.tx, m.ClinicID, sha, time.Now()); err != nil {
				return err
			}
		}
	}
	return nil
}

// RetentionUnsync takes one record out of the cloud for clinic's delete
// retention: an un-sync tombstone like the cloud API's (the clinic keeps
// its copy, excluded from sync), marked retention-deleted, with an event
// naming the tombstone's cloud_seq. A record already deleted is left
// alone (ErrNotFound), so a retried run changes nothing twice.
func (s *Store) RetentionUnsync(ctx context.Context, clinic ids.ID, kind wire.Kind, id, changeID ids.ID, reason string) (Record, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	var out Record
	err = s.inClinic(ctx, clinic, func(ct *clinicTx) error {
		rec, exists, err := ct.load(k, id)
		if err != nil {
			return err
		}
		m := rec.meta()
		if !exists || m.Deleted {
			return ErrNotFound
		}
		base := m.Version
		m.Version = m.Version.NextSession()
		m.Kind = kind
		m.Deleted = true
		m.RetentionState = RetentionDeleted
		m.Origin = string(wire.OriginCloud)
		m.Conflict = false
		m.LocalVersion = version.V{}
		m.EditSession = ""
		m.LastChangeID = changeID
		if err := ct.acceptChange(rec, true, base, time.Now(), "", true, Person{}); err != nil {
			return err
		}
		out = rec
		return ct.tx.Create(&RetentionEvent{ClinicID: clinic, Kind: kind, RecordID: id, Action: RetentionDeleted,
			Actor: "retention", CloudSeq: m.CloudSeq, Reason: reason, At: time.Now().UTC()}).Error
	})
	if err != nil {
		return nil, fmt.Errorf("store: retention unsync %s %s: %w", kind, id, err)
	}
	return out, nil
}

// MarkBackedUp marks a live record of clinic backed-up (its file, if any,
// is in cold storage). It reports false when the record is not live or
// was marked already.
func (s *Store) MarkBackedUp(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, reason string) (bool, error) {
	return s.setRetentionState(ctx, clinic, kind, id, "", RetentionBackedUp, RetentionEvent{Action: RetentionBackedUp, Actor: "retention", Reason: reason})
}

// MarkRestored brings a backed-up record back to the live state; the
// retention job leaves it alone until hold has passed. actor is admin or
// clinic. It reports false when the record was not backed up.
func (s *Store) MarkRestored(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, actor string, hold time.Duration) (bool, error) {
	until := time.Now().UTC().Add(hold)
	return s.setRetentionState(ctx, clinic, kind, id, RetentionBackedUp, "", RetentionEvent{Action: RetentionRestored, Actor: actor, HoldUntil: &until})
}

// setRetentionState moves a live record from one retention state to
// another under the clinic's lock (so no concurrent save overwrites it)
// and writes the event. No change is replicated: the state is the
// cloud's own.
func (s *Store) setRetentionState(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, from, to string, ev RetentionEvent) (bool, error) {
	k, err := opsFor(kind)
	if err != nil {
		return false, err
	}
	done := false
	err = s.inClinic(ctx, clinic, func(ct *clinicTx) error {
		res := ct.tx.Table(k.spec.Table).Where("clinic_id = ? AND id = ? AND NOT deleted AND retention_state = ?", clinic, id, from).
			Update("retention_state", to)
		if res.Error != nil || res.RowsAffected == 0 {
			return res.Error
		}
		done = true
		ev.ClinicID, ev.Kind, ev.RecordID, ev.At = clinic, kind, id, time.Now().UTC()
		return ct.tx.Create(&ev).Error
	})
	if err != nil {
		return false, fmt.Errorf("store: retention state of %s %s: %w", kind, id, err)
	}
	return done, nil
}

// RetentionCount is one kind's records by retention state.
type RetentionCount struct {
	Kind wire.Kind `json:"kind"`
	// Live counts live records not backed up; BackedUp live backed-up
	// ones; Deleted records retention took out of the cloud; Tombstones
	// the other deleted records (deleted or un-synced otherwise).
	Live       int64 `json:"live"`
	BackedUp   int64 `json:"backed_up"`
	Deleted    int64 `json:"retention_deleted"`
	Tombstones int64 `json:"tombstones"`
}

// RetentionCounts counts clinic's dated records by retention state.
func (s *Store) RetentionCounts(ctx context.Context, clinic ids.ID) ([]RetentionCount, error) {
	out := make([]RetentionCount, 0, len(retentionKinds))
	for _, kind := range retentionKinds {
		k, _ := opsFor(kind)
		var rows []struct {
			Deleted        bool
			RetentionState string
			N              int64
		}
		if err := s.db.WithContext(ctx).Table(k.spec.Table).Where("clinic_id = ?", clinic).
			Select("deleted, retention_state, count(*) AS n").Group("deleted, retention_state").Scan(&rows).Error; err != nil {
			return nil, err
		}
		c := RetentionCount{Kind: kind}
		for _, r := range rows {
			switch {
			case r.Deleted && r.RetentionState == RetentionDeleted:
				c.Deleted += r.N
			case r.Deleted:
				c.Tombstones += r.N
			case r.RetentionState == RetentionBackedUp:
				c.BackedUp += r.N
			default:
				c.Live += r.N
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// RetentionEvents returns clinic's latest retention events, newest first.
func (s *Store) RetentionEvents(ctx context.Context, clinic ids.ID, limit int) ([]RetentionEvent, error) {
	var evs []RetentionEvent
	err := s.db.WithContext(ctx).Where("clinic_id = ?", clinic).Order("id DESC").Limit(limit).Find(&evs).Error
	return evs, err
}
