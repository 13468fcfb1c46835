package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/scsync/scsync/shared/ids"
)

// ErrEnrollment: the enrollment token is unknown, used or expired.
var ErrEnrollment = errors.New("store: enrollment token unknown, used or expired")

// Enrollment is a one-time token with which a clinic server registers
// itself (sc-local enroll), so the operator never handles the clinic's
// permanent credentials.
type Enrollment struct {
	TokenSHA256    string     `gorm:"primaryKey" json:"-"`
	Name           string     `gorm:"not null" json:"name"`
	ConflictPolicy string     `gorm:"not null" json:"conflict_policy"`
	ExpiresAt      time.Time  `gorm:"not null" json:"expires_at"`
	UsedAt         *time.Time `json:"used_at,omitempty"`
	ClinicID       ids.ID     `gorm:"not null;default:0" json:"clinic_id,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
}

// CreateEnrollment makes a one-time enrollment token for a clinic to come,
// valid for ttl; the token is returned once and stored only as a hash.
func (s *Store) CreateEnrollment(ctx context.Context, name, policy string, ttl time.Duration) (Enrollment, string, error) {
	if policy == "" {
		policy = PolicyLocalWins
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	token := "sce_" + hex.EncodeToString(b[:])
	e := Enrollment{TokenSHA256: HashToken(token), Name: name, ConflictPolicy: policy, ExpiresAt: time.Now().UTC().Add(ttl)}
	if err := s.db.WithContext(ctx).Create(&e).Error; err != nil {
		return Enrollment{}, "", fmt.Errorf("store: create enrollment: %w", err)
	}
	return e, token, nil
}

// Enroll uses a one-time token: it creates the clinic (id from newID, the
// next clinic node id, a fresh API token) and marks the token used. A used,
// expired or unknown token fails with ErrEnrollment. prepare (optional) runs
// once the token is claimed and before the clinic is created (the broker
// identity is made there); when it fails the token is given back.
func (s *Store) Enroll(ctx context.Context, token string, newID ids.ID, prepare func(context.Context) error) (Clinic, string, error) {
	now := time.Now().UTC()
	res := s.db.WithContext(ctx).Model(&Enrollment{}).
		Where("token_sha256 = ? AND used_at IS NULL AND expires_at > ?", HashToken(token), now).
		Updates(map[string]any{"used_at": now, "clinic_id": newID})
	if res.Error != nil {
		return Clinic{}, "", res.Error
	}
	if res.RowsAffected != 1 {
		return Clinic{}, "", ErrEnrollment
	}
	var e Enrollment
	if err := s.db.WithContext(ctx).Take(&e, "token_sha256 = ?", HashToken(token)).Error; err != nil {
		return Clinic{}, "", err
	}
	var (
		c   Clinic
		tok string
		err error
	)
	if prepare != nil {
		err = prepare(ctx)
	}
	if err == nil {
		c, tok, err = s.CreateClinic(ctx, newID, e.Name, e.ConflictPolicy)
	}
	if err != nil {
		// Give the token back so the clinic can try again.
		_ = s.db.WithContext(context.WithoutCancel(ctx)).Model(&Enrollment{}).Where("token_sha256 = ?", e.TokenSHA256).
			Updates(map[string]any{"used_at": nil, "clinic_id": 0}).Error
		return Clinic{}, "", err
	}
	return c, tok, nil
}
