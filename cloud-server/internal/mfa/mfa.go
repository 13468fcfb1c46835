// Package mfa is the cloud's second factor for person logins: TOTP
// (RFC 6238: 6 digits, 30-second steps, HMAC-SHA1, what every authenticator
// app reads from an otpauth:// URL) made and checked with
// github.com/pquerna/otp.
//
// A factor lives in the cloud's PostgreSQL only (table person_totp), not in
// the user record, so it never replicates to the clinic: the clinic does
// not ask for it (its logins are on the clinic's own network), and a secret
// there would sit in the clinic PC's SQLite file and its backups for no use.
// The secret is sealed with AES-256-GCM under auth.totp_key (bound to the
// clinic and person, so a sealed secret copied to another row does not
// open) and is shown once, at enrolment.
//
// A code is used once (the last accepted time step is kept), a wrong code
// counts, and MaxFailures wrong codes in a row lock the factor for Lockout:
// the counter is a row in PostgreSQL, so every cloud node sees it.
package mfa

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/ids"
)

// Factor is a person's TOTP factor.
type Factor struct {
	ClinicID ids.ID `gorm:"primaryKey;autoIncrement:false"`
	UserID   ids.ID `gorm:"primaryKey;autoIncrement:false"`
	// Sealed is base64(nonce ‖ AES-256-GCM(secret)).
	Sealed string `gorm:"not null"`
	// ConfirmedAt is set once the person proved the app holds the secret
	// (a first valid code); before that the factor is pending and not asked.
	ConfirmedAt *time.Time
	// LastStep is the last time step whose code was accepted: a code is
	// good once.
	LastStep int64 `gorm:"not null;default:0"`
	// Failures counts wrong codes since the last good one.
	Failures    int `gorm:"not null;default:0"`
	LockedUntil *time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// TableName is person_totp.
func (Factor) TableName() string { return "person_totp" }

// Config tunes the factor.
type Config struct {
	// Key seals secrets (32 bytes). Without it no factor can be enrolled,
	// and a person who has one cannot log in (fail closed).
	Key []byte
	// Issuer names the service in the authenticator app (default scsync).
	Issuer string
	// MaxFailures wrong codes in a row lock the factor (default 5) for
	// Lockout (default 15 minutes).
	MaxFailures int
	Lockout     time.Duration
}

// Errors of enrolment and checks.
var (
	// ErrNotConfigured: no auth.totp_key.
	ErrNotConfigured = errors.New("mfa: no key configured (auth.totp_key)")
	// ErrEnrolled: the person has a confirmed factor (an admin resets it).
	ErrEnrolled = errors.New("mfa: a factor is enrolled")
	// ErrNotPending: there is no enrolment to confirm.
	ErrNotPending = errors.New("mfa: no enrolment to confirm")
	// ErrRequired: the person has a factor and sent no code.
	ErrRequired = errors.New("mfa: code required")
	// ErrInvalid: a wrong, malformed or already used code.
	ErrInvalid = errors.New("mfa: invalid code")
)

// LockedError: too many wrong codes; Until is when codes are taken again.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string {
	return "mfa: too many wrong codes; locked until " + e.Until.UTC().Format(time.RFC3339)
}

const (
	period = 30
	digits = otp.DigitsSix
	skew   = 1 // one step either side: a phone clock 30 s off still works
)

var opts = hotp.ValidateOpts{Digits: digits, Algorithm: otp.AlgorithmSHA1}

// Store keeps factors in db.
type Store struct {
	db   *gorm.DB
	aead cipher.AEAD
	cfg  Config
	now  func() time.Time
}

// Open migrates the factor table and returns the store.
func Open(ctx context.Context, db *gorm.DB, cfg Config) (*Store, error) {
	if cfg.Issuer == "" {
		cfg.Issuer = "scsync"
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.Lockout <= 0 {
		cfg.Lockout = 15 * time.Minute
	}
	s := &Store{db: db, cfg: cfg, now: time.Now}
	if len(cfg.Key) > 0 {
		if len(cfg.Key) != 32 {
			return nil, fmt.Errorf("mfa: the key must be 32 bytes, not %d", len(cfg.Key))
		}
		block, err := aes.NewCipher(cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("mfa: key: %w", err)
		}
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("mfa: key: %w", err)
		}
	}
	if !db.WithContext(ctx).Migrator().HasTable(&Factor{}) {
		return nil, errors.New("mfa: no person_totp table (the database's schema owner migrates it first)")
	}
	return s, nil
}

// Configured reports whether factors can be enrolled and checked.
func (s *Store) Configured() bool { return s.aead != nil }

// SetClock replaces the clock (tests).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// ParseKey decodes auth.totp_key (base64 of 32 random bytes, as
// `openssl rand -base64 32` prints).
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) != 32 {
		return nil, errors.New("auth.totp_key must be 32 random bytes in base64 (openssl rand -base64 32)")
	}
	return k, nil
}

func aad(clinic, user ids.ID) []byte {
	return []byte("scsync person_totp " + clinic.String() + "/" + user.String())
}

func (s *Store) seal(clinic, user ids.ID, secret string) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("mfa: nonce: %w", err)
	}
	return base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(secret), aad(clinic, user))), nil
}

func (s *Store) open(f Factor) (string, error) {
	if s.aead == nil {
		return "", ErrNotConfigured
	}
	b, err := base64.StdEncoding.DecodeString(f.Sealed)
	n := s.aead.NonceSize()
	if err != nil || len(b) < n {
		return "", errors.New("mfa: sealed secret is damaged")
	}
	pt, err := s.aead.Open(nil, b[:n], b[n:], aad(f.ClinicID, f.UserID))
	if err != nil {
		return "", errors.New("mfa: sealed secret does not open with auth.totp_key (changed key?)")
	}
	return string(pt), nil
}

// Enrolment is a new factor's secret, shown once.
type Enrolment struct {
	Secret string `json:"secret"`
	// URL is the otpauth:// URL an authenticator app reads (as a QR code).
	URL     string `json:"url"`
	Issuer  string `json:"issuer"`
	Account string `json:"account"`
	Digits  int    `json:"digits"`
	Period  int    `json:"period"`
}

// Begin makes a new secret for the person (replacing a pending one); it
// counts once the person confirms it with a code. account names the
// person in the app.
func (s *Store) Begin(ctx context.Context, clinic, user ids.ID, account string) (Enrolment, error) {
	if s.aead == nil {
		return Enrolment{}, ErrNotConfigured
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: s.cfg.Issuer, AccountName: account, Period: period,
		SecretSize: 20, Digits: digits, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return Enrolment{}, fmt.Errorf("mfa: generate: %w", err)
	}
	sealed, err := s.seal(clinic, user, key.Secret())
	if err != nil {
		return Enrolment{}, err
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var f Factor
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("clinic_id = ? AND user_id = ?", clinic, user).Limit(1).Find(&f).Error
		if err != nil {
			return err
		}
		if f.ConfirmedAt != nil {
			return ErrEnrolled
		}
		now := s.now().UTC()
		return tx.Save(&Factor{ClinicID: clinic, UserID: user, Sealed: sealed, CreatedAt: now, UpdatedAt: now}).Error
	})
	if err != nil {
		return Enrolment{}, err
	}
	return Enrolment{Secret: key.Secret(), URL: key.URL(), Issuer: s.cfg.Issuer, Account: account, Digits: digits.Length(), Period: period}, nil
}

// match returns the time step code is valid for (within the skew) after
// last, or false.
func (s *Store) match(secret, code string, last int64) (int64, bool, error) {
	if len(code) != digits.Length() || strings.Trim(code, "0123456789") != "" {
		return 0, false, nil
	}
	now := s.now().Unix() / period
	for step := now - skew; step <= now+skew; step++ {
		if step <= last || step < 0 {
			continue // used already: a code is good once
		}
		ok, err := hotp.ValidateCustom(code, uint64(step), secret, opts) // constant-time compare
		if err != nil {
			return 0, false, fmt.Errorf("mfa: validate: %w", err)
		}
		if ok {
			return step, true, nil
		}
	}
	return 0, false, nil
}

// Confirm makes a pending factor count, given a first valid code.
func (s *Store) Confirm(ctx context.Context, clinic, user ids.ID, code string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		f, found, err := s.lock(tx, clinic, user)
		if err != nil {
			return err
		}
		switch {
		case !found:
			return ErrNotPending
		case f.ConfirmedAt != nil:
			return ErrEnrolled
		}
		secret, err := s.open(f)
		if err != nil {
			return err
		}
		step, ok, err := s.match(secret, code, f.LastStep)
		if err != nil {
			return err
		}
		if !ok {
			return ErrInvalid
		}
		now := s.now().UTC()
		return tx.Model(&Factor{}).Where("clinic_id = ? AND user_id = ?", clinic, user).
			Updates(map[string]any{"confirmed_at": now, "last_step": step, "failures": 0, "locked_until": nil, "updated_at": now}).Error
	})
}

func (s *Store) lock(tx *gorm.DB, clinic, user ids.ID) (Factor, bool, error) {
	var f Factor
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("clinic_id = ? AND user_id = ?", clinic, user).Limit(1).Find(&f).Error
	if err != nil {
		return f, false, fmt.Errorf("mfa: factor: %w", err)
	}
	return f, f.UserID != 0, nil
}

// Check is the login's second step: it returns whether the person has a
// confirmed factor, and an error when they have one and code does not
// satisfy it (ErrRequired, ErrInvalid, *LockedError, ErrNotConfigured).
// A wrong code counts towards the lockout; a good one resets the count.
func (s *Store) Check(ctx context.Context, clinic, user ids.ID, code string) (bool, error) {
	var result error
	has := false
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		f, found, err := s.lock(tx, clinic, user)
		if err != nil || !found || f.ConfirmedAt == nil {
			return err
		}
		has = true
		now := s.now().UTC()
		if f.LockedUntil != nil && now.Before(*f.LockedUntil) {
			result = &LockedError{Until: *f.LockedUntil}
			return nil
		}
		if code == "" {
			result = ErrRequired
			return nil
		}
		secret, err := s.open(f)
		if err != nil {
			return err
		}
		step, ok, err := s.match(secret, code, f.LastStep)
		if err != nil {
			return err
		}
		set := map[string]any{"updated_at": now}
		if ok {
			set["last_step"], set["failures"], set["locked_until"] = step, 0, nil
		} else {
			f.Failures++
			result = ErrInvalid
			if f.Failures >= s.cfg.MaxFailures {
				until := now.Add(s.cfg.Lockout)
				set["locked_until"], f.Failures = until, 0
				result = &LockedError{Until: until}
			}
			set["failures"] = f.Failures
		}
		return tx.Model(&Factor{}).Where("clinic_id = ? AND user_id = ?", clinic, user).Updates(set).Error
	})
	if err != nil {
		return has, err
	}
	return has, result
}

// Confirmed reports whether the person has a confirmed factor.
func (s *Store) Confirmed(ctx context.Context, clinic, user ids.ID) (bool, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&Factor{}).Where("clinic_id = ? AND user_id = ? AND confirmed_at IS NOT NULL", clinic, user).Count(&n).Error
	if err != nil {
		return false, fmt.Errorf("mfa: factor: %w", err)
	}
	return n > 0, nil
}

// ConfirmedIn lists the people of clinic with a confirmed factor.
func (s *Store) ConfirmedIn(ctx context.Context, clinic ids.ID) (map[ids.ID]bool, error) {
	var users []ids.ID
	err := s.db.WithContext(ctx).Model(&Factor{}).Where("clinic_id = ? AND confirmed_at IS NOT NULL", clinic).Pluck("user_id", &users).Error
	if err != nil {
		return nil, fmt.Errorf("mfa: factors: %w", err)
	}
	out := make(map[ids.ID]bool, len(users))
	for _, u := range users {
		out[u] = true
	}
	return out, nil
}

// Status is what a person may know of their own factor (never the secret).
type Status struct {
	Enrolled    bool       `json:"enrolled"`
	Pending     bool       `json:"pending"`
	ConfirmedAt *time.Time `json:"confirmed_at,omitempty"`
	LockedUntil *time.Time `json:"locked_until,omitempty"`
}

// StatusOf is the person's factor status.
func (s *Store) StatusOf(ctx context.Context, clinic, user ids.ID) (Status, error) {
	var f Factor
	if err := s.db.WithContext(ctx).Where("clinic_id = ? AND user_id = ?", clinic, user).Limit(1).Find(&f).Error; err != nil {
		return Status{}, fmt.Errorf("mfa: factor: %w", err)
	}
	if f.UserID == 0 {
		return Status{}, nil
	}
	st := Status{Enrolled: f.ConfirmedAt != nil, Pending: f.ConfirmedAt == nil, ConfirmedAt: f.ConfirmedAt}
	if f.LockedUntil != nil && s.now().Before(*f.LockedUntil) {
		st.LockedUntil = f.LockedUntil
	}
	return st, nil
}

// Reset removes the person's factor (an admin's action: lost phone); it
// reports whether there was one.
func (s *Store) Reset(ctx context.Context, clinic, user ids.ID) (bool, error) {
	res := s.db.WithContext(ctx).Where("clinic_id = ? AND user_id = ?", clinic, user).Delete(&Factor{})
	if res.Error != nil {
		return false, fmt.Errorf("mfa: reset: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}
