package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Store is the cloud database.
type Store struct {
	db *gorm.DB
}

// Open connects to PostgreSQL at url and migrates the schema.
func Open(ctx context.Context, url string) (*Store, error) {
	db, err := gorm.Open(postgres.Open(url), &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	sqlDB.SetMaxOpenConns(20)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	s := &Store{db: db}
	if err := s.migrate(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	// Several nodes may start at once: one migrates, the others wait.
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(4242001)").Error; err != nil {
			return fmt.Errorf("store: migrate lock: %w", err)
		}
		if err := tx.AutoMigrate(&Clinic{}, &Patient{}, &Change{}, &Outbox{}); err != nil {
			return fmt.Errorf("store: migrate: %w", err)
		}
		return nil
	})
}

// Close closes the pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// HashToken returns the stored form of an API token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CreateClinic enrolls a clinic: it gets id, the next free clinic node id
// and a fresh API token, returned once and stored only as a hash.
func (s *Store) CreateClinic(ctx context.Context, id ids.ID, name, policy string) (Clinic, string, error) {
	if policy == "" {
		policy = PolicyLocalWins
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	token := "sct_" + hex.EncodeToString(b[:])
	c := Clinic{ID: id, Name: name, TokenSHA256: HashToken(token), ConflictPolicy: policy}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(4242002)").Error; err != nil {
			return err
		}
		var maxNode int64
		if err := tx.Model(&Clinic{}).Select("COALESCE(MAX(node_id), 0)").Scan(&maxNode).Error; err != nil {
			return err
		}
		c.NodeID = maxNode + 1
		if !ids.ValidClinicNode(c.NodeID) {
			return ErrNoNodeID
		}
		return tx.Create(&c).Error
	})
	if err != nil {
		return Clinic{}, "", fmt.Errorf("store: create clinic: %w", err)
	}
	return c, token, nil
}

// ClinicByToken finds the clinic an API token belongs to.
func (s *Store) ClinicByToken(ctx context.Context, token string) (Clinic, error) {
	var c Clinic
	err := s.db.WithContext(ctx).Where("token_sha256 = ?", HashToken(token)).Take(&c).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return c, ErrUnknownClinic
	}
	return c, err
}

// ClinicByID returns a clinic.
func (s *Store) ClinicByID(ctx context.Context, id ids.ID) (Clinic, error) {
	var c Clinic
	err := s.db.WithContext(ctx).Take(&c, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return c, ErrUnknownClinic
	}
	return c, err
}

// Clinics lists every enrolled clinic.
func (s *Store) Clinics(ctx context.Context) ([]Clinic, error) {
	var cs []Clinic
	err := s.db.WithContext(ctx).Order("id").Find(&cs).Error
	return cs, err
}

// ApplyUp accepts a clinic's change into the cloud: idempotent on change id,
// it assigns the next cloud_seq, applies the record's new state, and writes
// the change and its outbox row in one transaction. It returns false when
// the change had been accepted before (a redelivery).
func (s *Store) ApplyUp(ctx context.Context, e wire.Envelope) (bool, error) {
	var fresh bool
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&Change{}).Where("clinic_id = ? AND change_id = ?", e.Clinic, e.ChangeID).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		seq, _, err := nextSeq(tx, e.Clinic)
		if err != nil {
			return err
		}
		var cur Patient
		err = tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&cur, "clinic_id = ? AND id = ?", e.Clinic, e.RecordID).Error
		exists := err == nil
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		base, newV := e.BaseVersion, e.NewVersion
		if exists && cur.Version != e.BaseVersion {
			// Concurrent change in the cloud. The clinic holds the originals and
			// local-wins is the default; the full policy set arrives with the
			// replication work. The result must be newer than both sides.
			base = cur.Version
			if !cur.Version.Less(newV) {
				newV = cur.Version.NextSession()
			}
		}
		p := Patient{ClinicID: e.Clinic, ID: e.RecordID}
		if exists {
			p = cur
		}
		if !e.Deleted {
			var content records.Patient
			if err := json.Unmarshal(e.Payload, &content); err != nil {
				return fmt.Errorf("%w: payload: %w", ErrInvalidChange, err)
			}
			if err := content.Validate(); err != nil {
				return fmt.Errorf("%w: %w", ErrInvalidChange, err)
			}
			setContent(&p, content)
		}
		p.Deleted = e.Deleted
		p.Version = newV
		p.Origin = string(wire.OriginLocal)
		p.LastChangeID = e.ChangeID
		p.CloudSeq = seq
		if err := tx.Save(&p).Error; err != nil {
			return err
		}
		ch := changeFor(p, seq, base, e.Origin, e.At)
		if err := tx.Create(&ch).Error; err != nil {
			return err
		}
		fresh = true
		return tx.Create(&Outbox{ClinicID: e.Clinic, CloudSeq: seq}).Error
	})
	if err != nil {
		return false, fmt.Errorf("store: apply change %s: %w", e.ChangeID, err)
	}
	return fresh, nil
}

// ErrInvalidChange: a change whose content cannot be applied (poison).
var ErrInvalidChange = errors.New("store: invalid change")

func nextSeq(tx *gorm.DB, clinic ids.ID) (int64, Clinic, error) {
	var c Clinic
	res := tx.Raw("UPDATE clinics SET last_seq = last_seq + 1 WHERE id = ? RETURNING *", clinic).Scan(&c)
	if res.Error != nil {
		return 0, c, res.Error
	}
	if res.RowsAffected == 0 {
		return 0, c, ErrUnknownClinic
	}
	return c.LastSeq, c, nil
}

func setContent(p *Patient, c records.Patient) {
	p.ChartNo, p.Name, p.BirthDate, p.Sex, p.Phone, p.Notes = c.ChartNo, c.Name, c.BirthDate, c.Sex, c.Phone, c.Notes
}

// Content returns the record's replicated content.
func (p Patient) Content() records.Patient {
	return records.Patient{ChartNo: p.ChartNo, Name: p.Name, BirthDate: p.BirthDate, Sex: p.Sex, Phone: p.Phone, Notes: p.Notes}
}

func changeFor(p Patient, seq int64, base version.V, origin wire.Origin, at time.Time) Change {
	ch := Change{
		ClinicID: p.ClinicID, CloudSeq: seq, ChangeID: p.LastChangeID, Kind: string(wire.KindPatient),
		RecordID: p.ID, Origin: string(origin), BaseVersion: base, NewVersion: p.Version,
		Deleted: p.Deleted, At: at.UTC(), AcceptedAt: time.Now().UTC(),
	}
	if !p.Deleted {
		b, _ := json.Marshal(p.Content())
		ch.Payload = string(b)
	}
	return ch
}

// SavePatient writes a change made in the cloud (origin cloud). A zero id
// creates the record with id newID at version 1.0; otherwise base must be the
// current version (the caller's optimistic check) and the version moves to a
// new session. The change and its outbox row commit with the record.
func (s *Store) SavePatient(ctx context.Context, clinic, id ids.ID, base version.V, content records.Patient, changeID ids.ID, deleted bool) (Patient, error) {
	var out Patient
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		seq, _, err := nextSeq(tx, clinic)
		if err != nil {
			return err
		}
		var p Patient
		err = tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&p, "clinic_id = ? AND id = ?", clinic, id).Error
		switch {
		case errors.Is(err, gorm.ErrRecordNotFound):
			if !base.IsZero() || deleted {
				return ErrNotFound
			}
			p = Patient{ClinicID: clinic, ID: id, Version: version.First}
		case err != nil:
			return err
		default:
			if p.Version != base {
				return fmt.Errorf("%w: current version is %s, not %s", ErrVersionConflict, p.Version, base)
			}
			if p.Deleted {
				return ErrNotFound
			}
			p.Version = p.Version.NextSession()
		}
		if !deleted {
			setContent(&p, content)
		}
		p.Deleted = deleted
		p.Origin = string(wire.OriginCloud)
		p.LastChangeID = changeID
		p.CloudSeq = seq
		if err := tx.Save(&p).Error; err != nil {
			return err
		}
		ch := changeFor(p, seq, base, wire.OriginCloud, time.Now())
		if err := tx.Create(&ch).Error; err != nil {
			return err
		}
		out = p
		return tx.Create(&Outbox{ClinicID: clinic, CloudSeq: seq}).Error
	})
	if err != nil {
		return Patient{}, fmt.Errorf("store: save patient: %w", err)
	}
	return out, nil
}

// GetPatient returns one record of the clinic (tombstones included).
func (s *Store) GetPatient(ctx context.Context, clinic, id ids.ID) (Patient, error) {
	var p Patient
	err := s.db.WithContext(ctx).Take(&p, "clinic_id = ? AND id = ?", clinic, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return p, ErrNotFound
	}
	return p, err
}

// ListQuery pages through a clinic's records.
type ListQuery struct {
	UpdatedSince time.Time
	After        ids.ID // id of the last record of the previous page
	Limit        int
	WithDeleted  bool
}

// ListPatients returns a page of the clinic's records in id order.
func (s *Store) ListPatients(ctx context.Context, clinic ids.ID, q ListQuery) ([]Patient, error) {
	db := s.db.WithContext(ctx).Where("clinic_id = ? AND id > ?", clinic, q.After)
	if !q.UpdatedSince.IsZero() {
		db = db.Where("updated_at >= ?", q.UpdatedSince)
	}
	if !q.WithDeleted {
		db = db.Where("NOT deleted")
	}
	var ps []Patient
	err := db.Order("id").Limit(q.Limit).Find(&ps).Error
	return ps, err
}

// ChangesSince returns the clinic's accepted changes with cloud_seq > since,
// in order, at most limit.
func (s *Store) ChangesSince(ctx context.Context, clinic ids.ID, since int64, limit int) (wire.ChangesPage, error) {
	page := wire.ChangesPage{Next: since, Changes: []wire.Envelope{}}
	c, err := s.ClinicByID(ctx, clinic)
	if err != nil {
		return page, err
	}
	page.Head = c.LastSeq
	var chs []Change
	if err := s.db.WithContext(ctx).Where("clinic_id = ? AND cloud_seq > ?", clinic, since).
		Order("cloud_seq").Limit(limit + 1).Find(&chs).Error; err != nil {
		return page, err
	}
	if len(chs) > limit {
		page.More = true
		chs = chs[:limit]
	}
	for _, ch := range chs {
		page.Changes = append(page.Changes, ch.Envelope())
		page.Next = ch.CloudSeq
	}
	return page, nil
}

// Envelope is the down message for an accepted change.
func (ch Change) Envelope() wire.Envelope {
	e := wire.Envelope{
		Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: ch.ClinicID, Origin: wire.Origin(ch.Origin),
		ChangeID: ch.ChangeID, Kind: wire.Kind(ch.Kind), RecordID: ch.RecordID, BaseVersion: ch.BaseVersion,
		NewVersion: ch.NewVersion, Deleted: ch.Deleted, CloudSeq: ch.CloudSeq, At: ch.At,
	}
	if ch.Payload != "" {
		e.Payload = json.RawMessage(ch.Payload)
	}
	return e
}

// RelayBatch hands up to limit unpublished changes to publish, in outbox
// order, holding their outbox rows locked (other nodes skip them). The rows
// of the changes publish confirmed are deleted; on error the rest stay for
// the next round. It returns how many were published.
func (s *Store) RelayBatch(ctx context.Context, limit int, publish func(context.Context, wire.Envelope) error) (int, error) {
	done := 0
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []Outbox
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"}).
			Order("id").Limit(limit).Find(&rows).Error; err != nil {
			return err
		}
		var perr error
		var sent []int64
		for _, o := range rows {
			var ch Change
			if err := tx.Take(&ch, "clinic_id = ? AND cloud_seq = ?", o.ClinicID, o.CloudSeq).Error; err != nil {
				perr = err
				break
			}
			if err := publish(ctx, ch.Envelope()); err != nil {
				perr = err
				break
			}
			sent = append(sent, o.ID)
		}
		if len(sent) > 0 {
			if err := tx.Delete(&Outbox{}, sent).Error; err != nil {
				return err
			}
		}
		done = len(sent)
		if perr != nil && done == 0 {
			return perr
		}
		return nil
	})
	return done, err
}

// OutboxLen counts unpublished changes (a metric and a test hook).
func (s *Store) OutboxLen(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&Outbox{}).Count(&n).Error
	return n, err
}
