package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
)

// Session is a person's login, stored by the hash of its token. In the
// cloud the table is in PostgreSQL, so a session works on every node.
type Session struct {
	TokenHash string    `gorm:"primaryKey;size:64"`
	ClinicID  ids.ID    `gorm:"not null;index"`
	UserID    ids.ID    `gorm:"not null;index"`
	CreatedAt time.Time `gorm:"not null"`
	LastSeen  time.Time `gorm:"not null"`
	// ExpiresAt bounds a session however active it is.
	ExpiresAt time.Time `gorm:"not null"`
}

// TableName is person_sessions.
func (Session) TableName() string { return "person_sessions" }

// Account is what login needs of a user record (the users table of either
// side: content columns next to the record's metadata).
type Account struct {
	ID           ids.ID `json:"id"`
	ClinicID     ids.ID `json:"clinic_id"`
	Username     string `json:"username"`
	DisplayName  string `json:"display_name,omitempty"`
	Role         string `json:"role"`
	Disabled     bool   `json:"disabled"`
	Deleted      bool   `json:"-"`
	PasswordHash string `json:"-"`
	// TOTP says whether the person has a confirmed second factor (cloud
	// account lists only; nil elsewhere).
	TOTP *bool `json:"totp,omitempty" gorm:"-"`
}

// SessionConfig bounds sessions.
type SessionConfig struct {
	// Idle ends a session nobody used for this long (automatic logoff).
	Idle time.Duration
	// Max ends a session this long after login however active.
	Max time.Duration
}

// Sessions stores sessions and looks up accounts in db.
type Sessions struct {
	db  *gorm.DB
	cfg SessionConfig
	now func() time.Time
}

// NewSessions returns the store of db's session table (made by the
// database's schema owner).
func NewSessions(ctx context.Context, db *gorm.DB, cfg SessionConfig) (*Sessions, error) {
	if cfg.Idle <= 0 {
		cfg.Idle = 15 * time.Minute
	}
	if cfg.Max <= 0 {
		cfg.Max = 12 * time.Hour
	}
	if !db.WithContext(ctx).Migrator().HasTable(&Session{}) {
		return nil, errors.New("auth: no person_sessions table (the database's schema owner migrates it first)")
	}
	return &Sessions{db: db, cfg: cfg, now: time.Now}, nil
}

// Idle is the idle expiry.
func (s *Sessions) Idle() time.Duration { return s.cfg.Idle }

// SetClock replaces the clock (tests of idle expiry).
func (s *Sessions) SetClock(now func() time.Time) { s.now = now }

// ErrNoUser: no live account of that name in the clinic.
var ErrNoUser = errors.New("auth: no such user")

// AccountByName finds a live account of clinic by username.
func (s *Sessions) AccountByName(ctx context.Context, clinic ids.ID, username string) (Account, error) {
	return s.account(ctx, "clinic_id = ? AND username = ? AND deleted = ?", clinic, username, false)
}

// AccountByID finds a live account of clinic by id.
func (s *Sessions) AccountByID(ctx context.Context, clinic, id ids.ID) (Account, error) {
	return s.account(ctx, "clinic_id = ? AND id = ? AND deleted = ?", clinic, id, false)
}

func (s *Sessions) account(ctx context.Context, where string, args ...any) (Account, error) {
	var a Account
	err := s.db.WithContext(ctx).Table("users").Select("id, clinic_id, username, display_name, role, disabled, deleted, password_hash").
		Where(where, args...).Order("id").Limit(1).Scan(&a).Error
	if err != nil {
		return Account{}, fmt.Errorf("auth: account: %w", err)
	}
	if a.ID == 0 {
		return Account{}, ErrNoUser
	}
	return a, nil
}

// Login checks username and password in clinic and opens a session. Every
// refusal is ErrBadCredentials (the caller cannot tell a wrong name from a
// wrong password or a disabled account); the account is returned when found.
func (s *Sessions) Login(ctx context.Context, clinic ids.ID, username, password string) (string, Account, error) {
	a, err := s.CheckLogin(ctx, clinic, username, password)
	if err != nil {
		return "", a, err
	}
	tok, err := s.Open(ctx, a)
	return tok, a, err
}

// CheckLogin checks username and password in clinic without opening a
// session (a second factor may follow). Every refusal is ErrBadCredentials;
// the account is returned when found.
func (s *Sessions) CheckLogin(ctx context.Context, clinic ids.ID, username, password string) (Account, error) {
	a, err := s.AccountByName(ctx, clinic, username)
	if errors.Is(err, ErrNoUser) {
		CheckPassword(dummyHash, password) // same time as a real check
		return Account{}, ErrBadCredentials
	}
	if err != nil {
		return Account{}, err
	}
	if !CheckPassword(a.PasswordHash, password) || a.Disabled || ParseRole(a.Role) == RoleNone {
		return a, ErrBadCredentials
	}
	return a, nil
}

// dummyHash is checked when the user does not exist.
const dummyHash = "$argon2id$v=19$m=65536,t=3,p=2$c2FsdHNhbHRzYWx0c2FsdA$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE"

// Open starts a session for a (after a successful check) and returns its token.
func (s *Sessions) Open(ctx context.Context, a Account) (string, error) {
	tok, hash, err := NewToken()
	if err != nil {
		return "", err
	}
	now := s.now().UTC()
	row := Session{TokenHash: hash, ClinicID: a.ClinicID, UserID: a.ID, CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(s.cfg.Max)}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return "", fmt.Errorf("auth: open session: %w", err)
	}
	return tok, nil
}

// Check resolves a session token to its person. The account is read again on
// every request, so a disabled or demoted person is refused at once; an idle
// or expired session is removed.
func (s *Sessions) Check(ctx context.Context, token string) (Principal, error) {
	hash := HashToken(token)
	var row Session
	err := s.db.WithContext(ctx).Where("token_hash = ?", hash).Limit(1).Find(&row).Error
	if err != nil {
		return Principal{}, fmt.Errorf("auth: session: %w", err)
	}
	if row.TokenHash == "" {
		return Principal{}, ErrBadCredentials
	}
	now := s.now().UTC()
	if now.Sub(row.LastSeen) > s.cfg.Idle || now.After(row.ExpiresAt) {
		_ = s.db.WithContext(ctx).Where("token_hash = ?", hash).Delete(&Session{}).Error
		return Principal{}, ErrBadCredentials
	}
	a, err := s.AccountByID(ctx, row.ClinicID, row.UserID)
	if errors.Is(err, ErrNoUser) {
		return Principal{}, ErrBadCredentials
	}
	if err != nil {
		return Principal{}, err
	}
	role := ParseRole(a.Role)
	if a.Disabled || role == RoleNone {
		_ = s.db.WithContext(ctx).Where("user_id = ?", a.ID).Delete(&Session{}).Error
		return Principal{}, ErrBadCredentials
	}
	// Touch at most every few seconds: one write per request would double
	// the writes of a busy clinic for no gain in precision.
	if now.Sub(row.LastSeen) > min(s.cfg.Idle/10, 30*time.Second) {
		if err := s.db.WithContext(ctx).Model(&Session{}).Where("token_hash = ?", hash).Update("last_seen", now).Error; err != nil {
			return Principal{}, fmt.Errorf("auth: touch session: %w", err)
		}
	}
	return Principal{Kind: KindPerson, UserID: a.ID, Username: a.Username, Role: role, Clinic: a.ClinicID, SessionHash: hash}, nil
}

// Close ends the session of token.
func (s *Sessions) Close(ctx context.Context, token string) error {
	return s.db.WithContext(ctx).Where("token_hash = ?", HashToken(token)).Delete(&Session{}).Error
}

// CloseUser ends every session of a person (disabled or password changed).
func (s *Sessions) CloseUser(ctx context.Context, user ids.ID) error {
	return s.db.WithContext(ctx).Where("user_id = ?", user).Delete(&Session{}).Error
}
