package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// SetBrokerUser records the clinic's own broker login (after the cloud
// provisioned it); from then on its up messages must name it as user-id.
func (s *Store) SetBrokerUser(ctx context.Context, clinic ids.ID, user string) error {
	res := s.db.WithContext(ctx).Model(&Clinic{}).Where("id = ?", clinic).Update("broker_user", user)
	if res.Error != nil {
		return fmt.Errorf("store: set broker user: %w", res.Error)
	}
	if res.RowsAffected != 1 {
		return ErrUnknownClinic
	}
	return nil
}

// RotateToken gives the clinic a new API token (returned once, stored as a
// hash); the old one stops working at once on every node.
func (s *Store) RotateToken(ctx context.Context, clinic ids.ID) (string, error) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	token := "sct_" + hex.EncodeToString(b[:])
	res := s.db.WithContext(ctx).Model(&Clinic{}).Where("id = ?", clinic).Update("token_sha256", HashToken(token))
	if res.Error != nil {
		return "", fmt.Errorf("store: rotate token: %w", res.Error)
	}
	if res.RowsAffected != 1 {
		return "", ErrUnknownClinic
	}
	return token, nil
}

// SetDisabled disables (or enables again) a clinic: a disabled clinic's API
// token is refused.
func (s *Store) SetDisabled(ctx context.Context, clinic ids.ID, disabled bool) (Clinic, error) {
	var at *time.Time
	if disabled {
		now := time.Now().UTC()
		at = &now
	}
	res := s.db.WithContext(ctx).Model(&Clinic{}).Where("id = ?", clinic).Update("disabled_at", at)
	if res.Error != nil {
		return Clinic{}, fmt.Errorf("store: set disabled: %w", res.Error)
	}
	if res.RowsAffected != 1 {
		return Clinic{}, ErrUnknownClinic
	}
	return s.ClinicByID(ctx, clinic)
}

// SetLockdDigest records the digest of the clinic's lockd token ("" when
// revoked).
func (s *Store) SetLockdDigest(ctx context.Context, clinic ids.ID, digest string) error {
	res := s.db.WithContext(ctx).Model(&Clinic{}).Where("id = ?", clinic).Update("lockd_token_sha256", digest)
	if res.Error != nil {
		return fmt.Errorf("store: set lockd digest: %w", res.Error)
	}
	return nil
}

// LockdDigests returns the lockd token digest of every enabled clinic that
// has one.
func (s *Store) LockdDigests(ctx context.Context) (map[ids.ID]string, error) {
	var cs []Clinic
	err := s.db.WithContext(ctx).Select("id", "lockd_token_sha256").
		Where("lockd_token_sha256 <> '' AND disabled_at IS NULL").Find(&cs).Error
	if err != nil {
		return nil, fmt.Errorf("store: lockd digests: %w", err)
	}
	out := make(map[ids.ID]string, len(cs))
	for _, c := range cs {
		out[c.ID] = c.LockdTokenSHA256
	}
	return out, nil
}

// ClinicState is what a cloud node keeps of each clinic to check its up
// messages and set up its broker topology.
type ClinicState struct {
	ID         ids.ID
	BrokerUser string
	DisabledAt *time.Time
	Topology   int
	// ProtocolMin and ProtocolMax: Clinic's.
	ProtocolMin *int
	ProtocolMax *int
}

// Protocols is the range the clinic speaks (wire.Legacy when it stated none).
func (c ClinicState) Protocols() wire.Range { return protocols(c.ProtocolMin, c.ProtocolMax) }

// SetProtocols records the range of protocol versions the clinic stated
// (stated false: it stated none, a release before ranges — a clinic
// rolled back to one). It writes only when the range changed, and reports
// whether it did.
func (s *Store) SetProtocols(ctx context.Context, clinic ids.ID, r wire.Range, stated bool) (bool, error) {
	db := s.db.WithContext(ctx)
	var res *gorm.DB
	if stated {
		res = db.Exec(`INSERT INTO clinic_protocols (clinic_id, protocol_min, protocol_max) VALUES (?, ?, ?)
			ON CONFLICT (clinic_id) DO UPDATE SET protocol_min = EXCLUDED.protocol_min, protocol_max = EXCLUDED.protocol_max
			WHERE clinic_protocols.protocol_min <> EXCLUDED.protocol_min OR clinic_protocols.protocol_max <> EXCLUDED.protocol_max`,
			clinic, r.Min, r.Max)
	} else {
		res = db.Exec("DELETE FROM clinic_protocols WHERE clinic_id = ?", clinic)
	}
	if res.Error != nil {
		return false, fmt.Errorf("store: set protocols: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// ClinicStates lists every clinic's state (a narrow read: at 10,000
// clinics a few hundred kilobytes).
func (s *Store) ClinicStates(ctx context.Context) ([]ClinicState, error) {
	var cs []ClinicState
	err := s.db.WithContext(ctx).Table("clinics").
		Select("clinics.id, clinics.broker_user, clinics.disabled_at, clinics.topology, cp.protocol_min, cp.protocol_max").
		Joins("LEFT JOIN clinic_protocols cp ON cp.clinic_id = clinics.id").Order("clinics.id").Scan(&cs).Error
	if err != nil {
		return nil, fmt.Errorf("store: clinic states: %w", err)
	}
	return cs, nil
}

// ClinicTopology returns the broker topology version set up for the clinic.
func (s *Store) ClinicTopology(ctx context.Context, clinic ids.ID) (int, error) {
	var c Clinic
	err := s.db.WithContext(ctx).Select("topology").Take(&c, "id = ?", clinic).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return 0, ErrUnknownClinic
	}
	if err != nil {
		return 0, fmt.Errorf("store: clinic topology: %w", err)
	}
	return c.Topology, nil
}

// SetTopology records the broker topology version set up for the clinic.
func (s *Store) SetTopology(ctx context.Context, clinic ids.ID, version int) error {
	res := s.db.WithContext(ctx).Model(&Clinic{}).Where("id = ?", clinic).Update("topology", version)
	if res.Error != nil {
		return fmt.Errorf("store: set topology: %w", res.Error)
	}
	return nil
}

// clinicLockClass is the first key of the clinic advisory locks.
const clinicLockClass = 4242100

// WithClinicLock runs f while this node holds the clinic's advisory lock
// (one node at a time sets up a clinic's broker topology). When another
// node holds it, it returns false without running f. The lock is held by a
// transaction on one pooled connection for as long as f runs; f must not
// use that transaction (it has none) and may use the store freely.
func (s *Store) WithClinicLock(ctx context.Context, clinic ids.ID, f func(ctx context.Context) error) (bool, error) {
	ran := false
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var got bool
		key := int32(uint32(uint64(clinic) ^ uint64(clinic)>>32)) // a hash of the id: collisions only serialise two clinics
		if err := tx.Raw("SELECT pg_try_advisory_xact_lock(?, ?)", clinicLockClass, key).Scan(&got).Error; err != nil {
			return fmt.Errorf("store: clinic lock: %w", err)
		}
		if !got {
			return nil
		}
		ran = true
		return f(ctx)
	})
	return ran, err
}
