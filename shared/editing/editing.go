// Package editing runs edit sessions (M12–M15, M18) for both servers: a
// client asks its server to edit a record, the server takes the record's
// lock in lockd, remembers the version at lock time, and tells every viewer
// on both sides "Editing by local/cloud"; saves inside the session carry the
// lock's fencing token and bump the version (A+1 on the session's first
// save, B+1 after); closing releases the lock. An idle session is warned and
// then closed; a crashed client's lock expires by its TTL.
//
// When lockd cannot be reached, Open fails with ErrLockUnavailable and the
// client may open an unfenced session instead ("edit anyway", M13); its
// saves are marked unfenced and, if they collide, go through the conflict
// policy.
//
// Sessions live in the server's own database (table edit_sessions), so any
// cloud node can serve any request of a session and the watchdog's warn and
// close are claimed with conditional updates (no double events).
package editing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/lock"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Errors of the session API. Servers map them to HTTP answers.
var (
	// ErrLocked: someone else edits the record; errors.As a *LockedError
	// to see who.
	ErrLocked = lock.ErrLocked
	// ErrLockUnavailable: lockd cannot be reached; the client may choose to
	// edit anyway (unfenced) or to view only.
	ErrLockUnavailable = lock.ErrLockUnavailable
	// ErrLockLost: the session's lock expired or was taken away.
	ErrLockLost = lock.ErrLockLost
	// ErrNoSession: no open session with that id for this clinic.
	ErrNoSession = errors.New("editing: no such open session")
	// ErrNotSynced: the last holder saved a version this server has not
	// received yet (replication between clinic and cloud lags); editing now
	// would lose that save. The client retries in a moment.
	ErrNotSynced = errors.New("editing: the latest save has not reached this server yet")
)

// The lock contract (package lock), under the names sessions use.
type (
	Holder      = lock.Holder
	Grant       = lock.Grant
	Locker      = lock.Locker
	LockedError = lock.LockedError
	NoLocker    = lock.NoLocker
)

// Records is what sessions need of the server's store.
type Records interface {
	// Version is the record's current version (an error wrapping the
	// store's not-found when it does not exist or is deleted).
	Version(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (version.V, error)
	// Save writes content as a save of session s (its id, fencing token
	// and unfenced mark) and returns the new version.
	Save(ctx context.Context, s Session, content records.Content) (version.V, error)
}

// Note is a session event for viewers (Editing, Saved, Closed, idle warning).
type Note struct {
	Type     string // editing, saved, closed, idle_warning
	Session  Session
	Version  version.V
	Reason   string // closed: released, idle, expired
	Unfenced bool
}

// Note types.
const (
	NoteEditing     = "editing"
	NoteSaved       = "saved"
	NoteClosed      = "closed"
	NoteIdleWarning = "idle_warning"
)

// Close reasons.
const (
	ReasonReleased = "released"
	ReasonIdle     = "idle"
	ReasonExpired  = "expired"
)

// Session is one edit session.
type Session struct {
	ID            string     `gorm:"primaryKey" json:"session"`
	ClinicID      ids.ID     `gorm:"not null;index:edit_sessions_record,priority:1" json:"clinic"`
	Kind          wire.Kind  `gorm:"not null;index:edit_sessions_record,priority:2" json:"kind"`
	RecordID      ids.ID     `gorm:"not null;index:edit_sessions_record,priority:3" json:"record"`
	Side          string     `gorm:"not null" json:"side"`
	User          string     `gorm:"not null" json:"user"`
	Client        string     `gorm:"not null" json:"client"`
	Fence         int64      `gorm:"not null;default:0" json:"fence"`
	Secret        string     `gorm:"not null;default:''" json:"-"`
	VersionAtLock version.V  `gorm:"type:text;not null" json:"version"`
	Unfenced      bool       `gorm:"not null;default:false" json:"unfenced"`
	Saves         int        `gorm:"not null;default:0" json:"saves"`
	StartedAt     time.Time  `gorm:"not null" json:"started_at"`
	LastActivity  time.Time  `gorm:"not null" json:"last_activity"`
	ExpiresAt     time.Time  `gorm:"not null" json:"expires_at"`
	WarnedAt      *time.Time `json:"warned_at,omitempty"`
	ClosedAt      *time.Time `gorm:"index" json:"closed_at,omitempty"`
	CloseReason   string     `gorm:"not null;default:''" json:"close_reason,omitempty"`
}

// TableName is "edit_sessions".
func (Session) TableName() string { return "edit_sessions" }

// Resource is the lock name of a record (lockd scopes it by clinic).
func Resource(kind wire.Kind, id ids.ID) string { return string(kind) + "/" + id.String() }

func (s Session) resource() string { return Resource(s.Kind, s.RecordID) }

func (s Session) grant() Grant {
	return Grant{Fence: s.Fence, Secret: s.Secret, ExpiresAt: s.ExpiresAt}
}

// Config tunes sessions.
type Config struct {
	// Side is "local" or "cloud": the side this server's clients edit on.
	Side string
	// LockTTL is how long a lock lives without a heartbeat (a crashed
	// client's lock expires after it). Default 60s.
	LockTTL time.Duration
	// IdleWarn is how long a session may go without user activity before
	// the warning (M15). Default 5m.
	IdleWarn time.Duration
	// IdleGrace is the time between the warning and the close. Default 1m.
	IdleGrace time.Duration
	// Tick is the watchdog period. Default 1s.
	Tick time.Duration
}

func (c Config) withDefaults() Config {
	if c.LockTTL <= 0 {
		c.LockTTL = time.Minute
	}
	if c.IdleWarn <= 0 {
		c.IdleWarn = 5 * time.Minute
	}
	if c.IdleGrace <= 0 {
		c.IdleGrace = time.Minute
	}
	if c.Tick <= 0 {
		c.Tick = time.Second
	}
	return c
}

// Manager runs a server's edit sessions.
type Manager struct {
	db     *gorm.DB
	lock   Locker
	recs   Records
	notify func(context.Context, Note)
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Manager over db, whose schema owner made the edit_sessions
// table. notify receives every session event.
func New(ctx context.Context, db *gorm.DB, lock Locker, recs Records, notify func(context.Context, Note), cfg Config, log *slog.Logger) (*Manager, error) {
	if !db.WithContext(ctx).Migrator().HasTable(&Session{}) {
		return nil, errors.New("editing: no edit_sessions table (the database's schema owner migrates it first)")
	}
	return &Manager{db: db, lock: lock, recs: recs, notify: notify, cfg: cfg.withDefaults(), log: log, now: time.Now}, nil
}

// Config returns the effective configuration.
func (m *Manager) Config() Config { return m.cfg }

// Open starts a session on a record for user at client. With anyway, a
// lockd that cannot be reached yields an unfenced session instead of
// ErrLockUnavailable.
func (m *Manager) Open(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, user, client string, anyway bool) (Session, error) {
	v, err := m.recs.Version(ctx, clinic, kind, id)
	if err != nil {
		return Session{}, err
	}
	now := m.now().UTC()
	s := Session{
		ID: newID(), ClinicID: clinic, Kind: kind, RecordID: id, Side: m.cfg.Side, User: user, Client: client,
		VersionAtLock: v, StartedAt: now, LastActivity: now,
	}
	h := Holder{Clinic: clinic, Side: m.cfg.Side, Client: client, User: user}
	g, err := m.lock.Acquire(ctx, s.resource(), h, m.cfg.LockTTL, v.String())
	switch {
	case err == nil:
		s.Fence, s.Secret, s.ExpiresAt = g.Fence, g.Secret, g.ExpiresAt
		if saved, perr := version.Parse(g.SavedVersion); perr == nil && v.Less(saved) {
			// The last holder (on the other side) saved a version this server
			// has not received yet: editing now would build on stale data.
			_ = m.lock.Release(context.WithoutCancel(ctx), clinic, s.resource(), g, "")
			return Session{}, fmt.Errorf("%w: version %s was saved, this server has %s", ErrNotSynced, saved, v)
		}
	case errors.Is(err, ErrLockUnavailable) && anyway:
		// Edit anyway (M13): no lock; this server at least refuses a second
		// session on the record it knows of.
		if other, err := m.openOn(ctx, clinic, kind, id); err != nil {
			return Session{}, err
		} else if other != nil {
			return Session{}, &LockedError{Holder: Holder{Clinic: clinic, Side: other.Side, Client: other.Client, User: other.User}, Since: other.StartedAt}
		}
		s.Unfenced = true
		s.ExpiresAt = now.Add(m.cfg.IdleWarn + m.cfg.IdleGrace)
	default:
		return Session{}, err
	}
	if err := m.db.WithContext(ctx).Create(&s).Error; err != nil {
		if !s.Unfenced {
			_ = m.lock.Release(context.WithoutCancel(ctx), clinic, s.resource(), s.grant(), "")
		}
		return Session{}, fmt.Errorf("editing: record session: %w", err)
	}
	m.notify(ctx, Note{Type: NoteEditing, Session: s, Version: v, Unfenced: s.Unfenced})
	return s, nil
}

// openOn returns the open session of a record on this server, if any.
func (m *Manager) openOn(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (*Session, error) {
	var ss []Session
	err := m.db.WithContext(ctx).Where("clinic_id = ? AND kind = ? AND record_id = ? AND closed_at IS NULL", clinic, kind, id).
		Order("started_at DESC").Limit(1).Find(&ss).Error
	if err != nil || len(ss) == 0 {
		return nil, err
	}
	return &ss[0], nil
}

// Get returns an open session of the clinic.
func (m *Manager) Get(ctx context.Context, clinic ids.ID, id string) (Session, error) {
	var s Session
	err := m.db.WithContext(ctx).Take(&s, "id = ? AND clinic_id = ? AND closed_at IS NULL", id, clinic).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return s, ErrNoSession
	}
	return s, err
}

// Open lists the clinic's open sessions (what viewers show as Editing).
func (m *Manager) OpenSessions(ctx context.Context, clinic ids.ID) ([]Session, error) {
	var ss []Session
	err := m.db.WithContext(ctx).Where("clinic_id = ? AND closed_at IS NULL", clinic).Order("started_at").Find(&ss).Error
	return ss, err
}

// Heartbeat keeps a session's lock alive; activity says the user did
// something (it resets the idle clock). Clients send one every few seconds
// while the record is open.
func (m *Manager) Heartbeat(ctx context.Context, clinic ids.ID, id string, activity bool) (Session, error) {
	s, err := m.Get(ctx, clinic, id)
	if err != nil {
		return s, err
	}
	if err := m.renew(ctx, &s, false); err != nil {
		return s, err
	}
	upd := map[string]any{"expires_at": s.ExpiresAt}
	if activity {
		s.LastActivity, s.WarnedAt = m.now().UTC(), nil
		upd["last_activity"], upd["warned_at"] = s.LastActivity, nil
	}
	if err := m.db.WithContext(ctx).Model(&Session{}).Where("id = ?", s.ID).Updates(upd).Error; err != nil {
		return s, err
	}
	return s, nil
}

// renew extends a fenced session's lock. A lock that is gone closes the
// session (ErrLockLost). An unreachable lockd is tolerated for a heartbeat
// (the lock may still be held; the watchdog closes the session once it
// would have expired) but not for a save (strict): the lock may have
// expired and been granted to someone else, so the save is refused with
// ErrLockUnavailable and the user may choose to edit anyway (M13).
func (m *Manager) renew(ctx context.Context, s *Session, strict bool) error {
	if s.Unfenced {
		s.ExpiresAt = m.now().UTC().Add(m.cfg.IdleWarn + m.cfg.IdleGrace)
		return nil
	}
	exp, err := m.lock.Renew(ctx, s.ClinicID, s.resource(), s.grant(), m.cfg.LockTTL)
	switch {
	case err == nil:
		s.ExpiresAt = exp
		return nil
	case errors.Is(err, ErrLockUnavailable) && strict:
		return err
	case errors.Is(err, ErrLockUnavailable):
		m.log.Warn("lock renew failed; lockd unreachable", "session", s.ID, "err", err)
		return nil
	case errors.Is(err, ErrLockLost):
		m.finish(context.WithoutCancel(ctx), *s, ReasonExpired)
		return err
	default:
		return err
	}
}

// Save writes content inside the session: the first save of the session
// bumps A, later ones bump B (M18); the lock is confirmed first and the
// store refuses a fencing token lower than the record's last.
func (m *Manager) Save(ctx context.Context, clinic ids.ID, id string, content records.Content) (Session, version.V, error) {
	s, err := m.Get(ctx, clinic, id)
	if err != nil {
		return s, version.V{}, err
	}
	if content.Kind() != s.Kind {
		return s, version.V{}, fmt.Errorf("%w: %s content for a %s session", records.ErrInvalid, content.Kind(), s.Kind)
	}
	if err := m.renew(ctx, &s, true); err != nil {
		return s, version.V{}, err
	}
	v, err := m.recs.Save(ctx, s, content)
	if err != nil {
		return s, version.V{}, err
	}
	s.Saves++
	s.LastActivity, s.WarnedAt = m.now().UTC(), nil
	if err := m.db.WithContext(ctx).Model(&Session{}).Where("id = ?", s.ID).
		Updates(map[string]any{"saves": s.Saves, "last_activity": s.LastActivity, "warned_at": nil, "expires_at": s.ExpiresAt}).Error; err != nil {
		return s, v, err
	}
	m.notify(ctx, Note{Type: NoteSaved, Session: s, Version: v, Unfenced: s.Unfenced})
	return s, v, nil
}

// Close ends the session and releases its lock. A session with no save
// changed no version (M12).
func (m *Manager) Close(ctx context.Context, clinic ids.ID, id string) error {
	s, err := m.Get(ctx, clinic, id)
	if err != nil {
		return err
	}
	m.finish(ctx, s, ReasonReleased)
	return nil
}

// finish closes s once (the conditional update makes concurrent closers on
// several nodes agree on one), releases its lock and tells viewers.
func (m *Manager) finish(ctx context.Context, s Session, reason string) {
	now := m.now().UTC()
	res := m.db.WithContext(ctx).Model(&Session{}).Where("id = ? AND closed_at IS NULL", s.ID).
		Updates(map[string]any{"closed_at": now, "close_reason": reason})
	if res.Error != nil {
		m.log.Warn("close session failed", "session", s.ID, "err", res.Error)
		return
	}
	if res.RowsAffected == 0 {
		return
	}
	v, err := m.recs.Version(ctx, s.ClinicID, s.Kind, s.RecordID)
	if err != nil {
		v = s.VersionAtLock
	}
	if !s.Unfenced && reason != ReasonExpired {
		saved := ""
		if s.Saves > 0 {
			saved = v.String()
		}
		if err := m.lock.Release(ctx, s.ClinicID, s.resource(), s.grant(), saved); err != nil && !errors.Is(err, ErrLockLost) {
			// The lock expires by its TTL anyway.
			m.log.Warn("lock release failed", "session", s.ID, "err", err)
		}
	}
	s.ClosedAt, s.CloseReason = &now, reason
	m.notify(ctx, Note{Type: NoteClosed, Session: s, Version: v, Reason: reason, Unfenced: s.Unfenced})
}

// Run is the watchdog (M15): it warns sessions idle for IdleWarn, closes
// them IdleGrace later, and closes sessions whose lock expired (a crashed
// client). It runs until ctx ends; every node may run it.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := m.sweep(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("session watchdog failed", "err", err)
		}
	}
}

func (m *Manager) sweep(ctx context.Context) error {
	var ss []Session
	if err := m.db.WithContext(ctx).Where("closed_at IS NULL").Order("started_at").Limit(1000).Find(&ss).Error; err != nil {
		return err
	}
	now := m.now().UTC()
	for _, s := range ss {
		idle := now.Sub(s.LastActivity)
		switch {
		case !s.Unfenced && now.After(s.ExpiresAt):
			m.finish(ctx, s, ReasonExpired)
		case idle >= m.cfg.IdleWarn+m.cfg.IdleGrace:
			m.finish(ctx, s, ReasonIdle)
		case idle >= m.cfg.IdleWarn && s.WarnedAt == nil:
			res := m.db.WithContext(ctx).Model(&Session{}).Where("id = ? AND warned_at IS NULL AND closed_at IS NULL", s.ID).Update("warned_at", now)
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected == 1 {
				m.notify(ctx, Note{Type: NoteIdleWarning, Session: s, Version: s.VersionAtLock, Unfenced: s.Unfenced})
			}
		}
	}
	return nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "es_" + hex.EncodeToString(b[:])
}
