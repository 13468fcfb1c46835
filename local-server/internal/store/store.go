// Package store is the clinic's SQLite database: its records with their sync
// state, the outbox of changes not yet confirmed by the broker, and the
// checkpoint (last applied cloud_seq). Every write that must replicate commits
// together with its outbox row; applying a change from the cloud never writes
// one (no echo).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Sync states of a local record (M6, M21).
const (
	StatePending  = "pending"  // changed here, not yet accepted by the cloud
	StateSynced   = "synced"   // the cloud accepted the current version
	StateConflict = "conflict" // needs a person
	StateExcluded = "excluded" // outside the sync scope
)

var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("store: not found")
	// ErrVersionConflict: the caller's base version is not the current one.
	ErrVersionConflict = errors.New("store: version conflict")
)

// Patient is the clinic's patient record.
type Patient struct {
	ID              ids.ID     `gorm:"primaryKey;autoIncrement:false" json:"id"`
	ClinicID        ids.ID     `gorm:"not null;index" json:"clinic_id"`
	Version         version.V  `gorm:"type:text;not null" json:"version"`
	Origin          string     `gorm:"not null" json:"origin"`
	ChartNo         string     `gorm:"not null;default:''" json:"chart_no"`
	Name            string     `gorm:"not null" json:"name"`
	BirthDate       string     `gorm:"not null;default:''" json:"birth_date,omitempty"`
	Sex             string     `gorm:"not null;default:''" json:"sex,omitempty"`
	Phone           string     `gorm:"not null;default:''" json:"phone,omitempty"`
	Notes           string     `gorm:"not null;default:''" json:"notes,omitempty"`
	Deleted         bool       `gorm:"not null;default:false" json:"deleted"`
	SyncState       string     `gorm:"not null;index" json:"sync_state"`
	SyncedAt        *time.Time `json:"synced_at,omitempty"`
	PendingChangeID ids.ID     `gorm:"not null;default:0" json:"-"`
	PendingSince    *time.Time `json:"pending_since,omitempty"`
	CloudSeq        int64      `gorm:"not null;default:0" json:"cloud_seq"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `gorm:"index" json:"updated_at"`
}

// Content returns the replicated part of the record.
func (p Patient) Content() records.Patient {
	return records.Patient{ChartNo: p.ChartNo, Name: p.Name, BirthDate: p.BirthDate, Sex: p.Sex, Phone: p.Phone, Notes: p.Notes}
}

func (p *Patient) setContent(c records.Patient) {
	p.ChartNo, p.Name, p.BirthDate, p.Sex, p.Phone, p.Notes = c.ChartNo, c.Name, c.BirthDate, c.Sex, c.Phone, c.Notes
}

// Outbox holds an encoded up message until the broker confirmed it.
type Outbox struct {
	ID              int64  `gorm:"primaryKey"`
	ChangeID        ids.ID `gorm:"not null;uniqueIndex"`
	Body            []byte `gorm:"not null"`
	ContentEncoding string `gorm:"not null;default:''"`
	CreatedAt       time.Time
}

// TableName is "outbox".
func (Outbox) TableName() string { return "outbox" }

// Meta is a small key/value table (checkpoint, last contact).
type Meta struct {
	Key   string `gorm:"primaryKey"`
	Value string `gorm:"not null"`
}

// TableName is "meta".
func (Meta) TableName() string { return "meta" }

const (
	metaCheckpoint  = "checkpoint"
	metaLastContact = "last_contact"
)

// Store is the clinic database.
type Store struct {
	db     *gorm.DB
	clinic ids.ID
	ids    *ids.Generator
}

// Open opens (creating if needed) the SQLite database at path for clinic,
// minting ids with gen.
func Open(path string, clinic ids.ID, gen *ids.Generator) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"
	db, err := gorm.Open(sqlite.Open(dsn), &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: SQLite has one writer, and this keeps transactions
	// strictly serialized instead of failing with SQLITE_BUSY.
	sqlDB.SetMaxOpenConns(1)
	if err := db.AutoMigrate(&Patient{}, &Outbox{}, &Meta{}); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	return &Store{db: db, clinic: clinic, ids: gen}, nil
}

// Close closes the database.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.db.WithContext(ctx).Exec("SELECT 1").Error
}

// Clinic is the clinic this database belongs to.
func (s *Store) Clinic() ids.ID { return s.clinic }

// SavePatient creates (id 0) or changes a patient made here, as a local
// change: new version, state pending, and the up message in the outbox, all
// in one transaction. base, when not nil, must equal the current version.
func (s *Store) SavePatient(ctx context.Context, id ids.ID, base *version.V, content records.Patient, deleted bool) (Patient, error) {
	var out Patient
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		changeID, err := s.ids.Next()
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		var p Patient
		var prev version.V
		if id == 0 {
			if deleted {
				return ErrNotFound
			}
			p = Patient{ID: changeID, ClinicID: s.clinic, Version: version.First}
		} else {
			err := tx.Take(&p, "id = ? AND clinic_id = ?", id, s.clinic).Error
			if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && p.Deleted) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			if base != nil && *base != p.Version {
				return fmt.Errorf("%w: current version is %s, not %s", ErrVersionConflict, p.Version, *base)
			}
			prev = p.Version
			p.Version = p.Version.NextSession()
		}
		if !deleted {
			p.setContent(content)
		}
		p.Deleted = deleted
		p.Origin = string(wire.OriginLocal)
		p.SyncState = StatePending
		p.PendingChangeID = changeID
		if p.PendingSince == nil {
			p.PendingSince = &now
		}
		if err := tx.Save(&p).Error; err != nil {
			return err
		}
		e := wire.Envelope{
			Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: s.clinic, Origin: wire.OriginLocal,
			ChangeID: changeID, Kind: wire.KindPatient, RecordID: p.ID, BaseVersion: prev,
			NewVersion: p.Version, Deleted: deleted, At: now,
		}
		if !deleted {
			b, err := json.Marshal(p.Content())
			if err != nil {
				return err
			}
			e.Payload = b
		}
		body, enc, err := wire.Encode(e)
		if err != nil {
			return err
		}
		if err := tx.Create(&Outbox{ChangeID: changeID, Body: body, ContentEncoding: enc}).Error; err != nil {
			return err
		}
		out = p
		return nil
	})
	if err != nil {
		return Patient{}, fmt.Errorf("store: save patient: %w", err)
	}
	return out, nil
}

// GetPatient returns a record (tombstones included).
func (s *Store) GetPatient(ctx context.Context, id ids.ID) (Patient, error) {
	var p Patient
	err := s.db.WithContext(ctx).Take(&p, "id = ? AND clinic_id = ?", id, s.clinic).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return p, ErrNotFound
	}
	return p, err
}

// ListQuery pages through records.
type ListQuery struct {
	UpdatedSince time.Time
	After        ids.ID
	Limit        int
	WithDeleted  bool
	SyncState    string
}

// ListPatients returns a page of records in id order.
func (s *Store) ListPatients(ctx context.Context, q ListQuery) ([]Patient, error) {
	db := s.db.WithContext(ctx).Where("clinic_id = ? AND id > ?", s.clinic, q.After)
	if !q.UpdatedSince.IsZero() {
		db = db.Where("updated_at >= ?", q.UpdatedSince)
	}
	if !q.WithDeleted {
		db = db.Where("deleted = ?", false)
	}
	if q.SyncState != "" {
		db = db.Where("sync_state = ?", q.SyncState)
	}
	var ps []Patient
	err := db.Order("id").Limit(q.Limit).Find(&ps).Error
	return ps, err
}

// NextOutbox returns up to limit unpublished messages, oldest first.
func (s *Store) NextOutbox(ctx context.Context, limit int) ([]Outbox, error) {
	var rows []Outbox
	err := s.db.WithContext(ctx).Order("id").Limit(limit).Find(&rows).Error
	return rows, err
}

// DeleteOutbox removes a message the broker confirmed.
func (s *Store) DeleteOutbox(ctx context.Context, id int64) error {
	return s.db.WithContext(ctx).Delete(&Outbox{}, id).Error
}

// Checkpoint is the last cloud_seq applied here.
func (s *Store) Checkpoint(ctx context.Context) (int64, error) {
	v, err := s.meta(s.db.WithContext(ctx), metaCheckpoint)
	if err != nil || v == "" {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

func (s *Store) meta(db *gorm.DB, key string) (string, error) {
	var m Meta
	err := db.Take(&m, "key = ?", key).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", nil
	}
	return m.Value, err
}

func setMeta(db *gorm.DB, key, value string) error {
	return db.Save(&Meta{Key: key, Value: value}).Error
}

// TouchContact records that the cloud was heard from.
func (s *Store) TouchContact(ctx context.Context) error {
	return setMeta(s.db.WithContext(ctx), metaLastContact, time.Now().UTC().Format(time.RFC3339Nano))
}

// ApplyResult says what ApplyDown did.
type ApplyResult int

// ApplyDown outcomes.
const (
	Applied   ApplyResult = iota // applied and checkpoint advanced
	Duplicate                    // cloud_seq at or below the checkpoint: nothing to do
	Gap                          // cloud_seq beyond checkpoint+1: earlier changes are missing
)

// ApplyDown applies one change from the cloud in cloud_seq order, together
// with the checkpoint, in one transaction:
//   - the acceptance of this clinic's own change marks the record synced
//     (M21) and is never taken for a new change (M20);
//   - a change from the cloud overwrites the record unless a newer local
//     change is pending, which the cloud will judge when it arrives there;
//   - nothing is written to the outbox, so nothing echoes (M23).
func (s *Store) ApplyDown(ctx context.Context, e wire.Envelope) (ApplyResult, error) {
	res := Applied
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		cpS, err := s.meta(tx, metaCheckpoint)
		if err != nil {
			return err
		}
		cp, _ := strconv.ParseInt(cpS, 10, 64)
		switch {
		case e.CloudSeq <= cp:
			res = Duplicate
			return nil
		case e.CloudSeq > cp+1:
			res = Gap
			return nil
		}
		now := time.Now().UTC()
		var p Patient
		err = tx.Take(&p, "id = ? AND clinic_id = ?", e.RecordID, s.clinic).Error
		exists := err == nil
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		pendingOther := exists && p.SyncState == StatePending && p.PendingChangeID != e.ChangeID
		switch {
		case pendingOther:
			// A newer local change is on its way up; the cloud decides when it
			// gets there and that decision comes back down.
		default:
			if !exists {
				p = Patient{ID: e.RecordID, ClinicID: s.clinic}
			}
			if !e.Deleted {
				var c records.Patient
				if err := json.Unmarshal(e.Payload, &c); err != nil {
					return fmt.Errorf("%w: payload: %w", ErrInvalidChange, err)
				}
				p.setContent(c)
			}
			p.Deleted = e.Deleted
			p.Version = e.NewVersion
			p.Origin = string(e.Origin)
			p.SyncState = StateSynced
			p.SyncedAt = &now
			p.PendingChangeID = 0
			p.PendingSince = nil
			p.CloudSeq = e.CloudSeq
			if err := tx.Save(&p).Error; err != nil {
				return err
			}
		}
		if err := setMeta(tx, metaCheckpoint, strconv.FormatInt(e.CloudSeq, 10)); err != nil {
			return err
		}
		return setMeta(tx, metaLastContact, now.Format(time.RFC3339Nano))
	})
	if err != nil {
		return res, fmt.Errorf("store: apply cloud_seq %d: %w", e.CloudSeq, err)
	}
	return res, nil
}

// ErrInvalidChange: a down change whose content cannot be applied.
var ErrInvalidChange = errors.New("store: invalid change")

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

// Status counts records by sync state.
func (s *Store) Status(ctx context.Context) (Status, error) {
	st := Status{Clinic: s.clinic}
	db := s.db.WithContext(ctx)
	var rows []struct {
		SyncState string
		N         int64
	}
	if err := db.Model(&Patient{}).Select("sync_state, COUNT(*) AS n").Group("sync_state").Scan(&rows).Error; err != nil {
		return st, err
	}
	for _, r := range rows {
		switch r.SyncState {
		case StatePending:
			st.Pending = r.N
		case StateSynced:
			st.Synced = r.N
		case StateConflict:
			st.Conflict = r.N
		case StateExcluded:
			st.Excluded = r.N
		}
	}
	if err := db.Model(&Outbox{}).Count(&st.Outbox).Error; err != nil {
		return st, err
	}
	var oldest Patient
	err := db.Where("sync_state = ?", StatePending).Order("pending_since").Take(&oldest).Error
	if err == nil && oldest.PendingSince != nil {
		st.OldestPendingAge = time.Since(*oldest.PendingSince).Seconds()
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
