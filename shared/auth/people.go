package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
)

// UserStore writes user records through a server's own store (so they
// replicate like every record).
type UserStore interface {
	CreateUser(ctx context.Context, clinic ids.ID, u records.User) (ids.ID, error)
	// UpdateUser changes the current content of user id with edit.
	UpdateUser(ctx context.Context, clinic, id ids.ID, edit func(*records.User) error) error
}

// People serves login, logout, who-am-I and the person accounts of a clinic.
type People struct {
	Sessions *Sessions
	Users    UserStore
	// Audit records a login, logout or account change (nil: none).
	Audit func(r *http.Request, p Principal, action, target string, status int)
	Log   *slog.Logger
	// SecondFactor, when set, is asked after a correct password with the
	// code the person sent (the cloud's TOTP). An error refuses the login
	// (an *httpapi.Error with a stable code: totp_required, totp_invalid,
	// totp_locked; audited as login.<code>); mustEnrol opens a session that
	// may only enrol a factor (the policy requires one and the person has
	// none yet).
	SecondFactor func(r *http.Request, a Account, code string) (mustEnrol bool, err error)
	// Factors, when set, says which accounts of clinic have a confirmed
	// second factor (shown by ListUsers).
	Factors func(ctx context.Context, clinic ids.ID) (map[ids.ID]bool, error)
	// ClinicName, when set, names the caller's clinic in GET /v1/me (the
	// viewer's title).
	ClinicName func(ctx context.Context, clinic ids.ID) string
}

type loginReq struct {
	// Clinic is needed in the cloud (usernames are per clinic).
	Clinic   ids.ID `json:"clinic,omitempty"`
	Username string `json:"username"`
	Password string `json:"password"`
	// Code is the second factor's one-time code (cloud, when enrolled).
	Code string `json:"code,omitempty"`
}

// LoginAnswer is a new session.
type LoginAnswer struct {
	Token string `json:"token"`
	// IdleSeconds is how long the session lives unused.
	IdleSeconds int     `json:"idle_seconds"`
	User        Account `json:"user"`
	// TOTPEnrolmentRequired: the session may only enrol a second factor
	// (POST /v1/me/totp, then …/confirm) until one is confirmed.
	TOTPEnrolmentRequired bool `json:"totp_enrolment_required,omitempty"`
}

var errLogin = httpapi.Errorf(http.StatusUnauthorized, "login_failed", "wrong username or password, or the account is disabled")

// Login checks a person's password in clinic (0: the clinic named in the
// body) and opens a session: the token in the answer and in an HttpOnly,
// SameSite=Strict cookie for the viewer pages.
func (pp *People) Login(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req loginReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if clinic == 0 {
		clinic = req.Clinic
	}
	username := strings.TrimSpace(strings.ToLower(req.Username))
	a, err := pp.Sessions.CheckLogin(r.Context(), clinic, username, req.Password)
	p := Principal{Kind: KindPerson, UserID: a.ID, Username: username, Clinic: clinic}
	if errors.Is(err, ErrBadCredentials) {
		pp.audit(r, p, "login", a.ID.String(), http.StatusUnauthorized)
		return errLogin
	}
	if err != nil {
		return err
	}
	mustEnrol := false
	if pp.SecondFactor != nil {
		mustEnrol, err = pp.SecondFactor(r, a, strings.TrimSpace(req.Code))
		if he, ok := errors.AsType[*httpapi.Error](err); ok {
			pp.audit(r, p, "login."+he.Code, a.ID.String(), he.Status)
			return err
		}
		if err != nil {
			return err
		}
	}
	tok, err := pp.Sessions.Open(r.Context(), a)
	if err != nil {
		return err
	}
	pp.audit(r, p, "login", a.ID.String(), http.StatusOK)
	idle := int(pp.Sessions.Idle().Seconds())
	SetCookie(w, r, tok, 0)
	httpapi.WriteJSON(w, http.StatusOK, LoginAnswer{Token: tok, IdleSeconds: idle, User: a, TOTPEnrolmentRequired: mustEnrol})
	return nil
}

func (pp *People) audit(r *http.Request, p Principal, action, target string, status int) {
	if pp.Audit != nil {
		pp.Audit(r, p, action, target, status)
	}
}

// Logout ends the caller's session.
func (pp *People) Logout(w http.ResponseWriter, r *http.Request) error {
	p := From(r.Context())
	if tok := RequestToken(r); tok != "" && p.Kind == KindPerson {
		if err := pp.Sessions.Close(r.Context(), tok); err != nil {
			return err
		}
	}
	pp.audit(r, p, "logout", p.UserID.String(), http.StatusOK)
	SetCookie(w, r, "", -1)
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
	return nil
}

// Me is who the caller is.
func (pp *People) Me(w http.ResponseWriter, r *http.Request) error {
	p := From(r.Context())
	out := map[string]any{"kind": p.Kind, "user_id": p.UserID, "username": p.Username,
		"role": p.Role.String(), "clinic": p.Clinic, "idle_seconds": int(pp.Sessions.Idle().Seconds()),
		"totp_enrolment_required": p.MustEnrol}
	if pp.ClinicName != nil && p.Clinic != 0 {
		if name := pp.ClinicName(r.Context(), p.Clinic); name != "" {
			out["clinic_name"] = name
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// ListUsers lists the clinic's accounts (never their hashes).
func (pp *People) ListUsers(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var out []Account
	err := pp.Sessions.db.WithContext(r.Context()).Table("users").
		Select("id, clinic_id, username, display_name, role, disabled").
		Where("clinic_id = ? AND deleted = ?", clinic, false).Order("username").Limit(5000).Scan(&out).Error
	if err != nil {
		return err
	}
	if pp.Factors != nil {
		has, err := pp.Factors(r.Context(), clinic)
		if err != nil {
			return err
		}
		for i := range out {
			v := has[out[i].ID]
			out[i].TOTP = &v
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": out})
	return nil
}

// UserReq creates or changes an account; empty fields are left as they are
// on a change.
type UserReq struct {
	Username    string `json:"username,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
	Role        string `json:"role,omitempty"`
	Password    string `json:"password,omitempty"`
	Disabled    *bool  `json:"disabled,omitempty"`
}

func badUser(msg string) error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRecord, "%s", msg)
}

// CreateUser adds an account.
func (pp *People) CreateUser(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req UserReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	req.Username = strings.TrimSpace(strings.ToLower(req.Username))
	if ParseRole(req.Role) == RoleNone {
		return badUser("role must be viewer, editor or admin")
	}
	hash, err := HashPassword(req.Password)
	if errors.Is(err, ErrWeakPassword) {
		return badUser("a password needs at least 8 characters")
	}
	if err != nil {
		return err
	}
	if _, err := pp.Sessions.AccountByName(r.Context(), clinic, req.Username); err == nil {
		return httpapi.Errorf(http.StatusConflict, "exists", "an account of that username exists")
	}
	u := records.User{Username: req.Username, DisplayName: req.DisplayName, Role: req.Role, PasswordHash: hash}
	if req.Disabled != nil {
		u.Disabled = *req.Disabled
	}
	id, err := pp.Users.CreateUser(r.Context(), clinic, u)
	if err != nil {
		return err
	}
	a, err := pp.Sessions.AccountByID(r.Context(), clinic, id)
	if err != nil {
		return err
	}
	pp.audit(r, From(r.Context()), "user.create", id.String(), http.StatusCreated)
	httpapi.WriteJSON(w, http.StatusCreated, a)
	return nil
}

// UpdateUser changes an account (role, name, password, disabled); a
// disabled account or a new password ends the person's sessions here at once.
func (pp *People) UpdateUser(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	var req UserReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if req.Role != "" && ParseRole(req.Role) == RoleNone {
		return badUser("role must be viewer, editor or admin")
	}
	var hash string
	if req.Password != "" {
		if hash, err = HashPassword(req.Password); errors.Is(err, ErrWeakPassword) {
			return badUser("a password needs at least 8 characters")
		} else if err != nil {
			return err
		}
	}
	err = pp.Users.UpdateUser(r.Context(), clinic, id, func(u *records.User) error {
		if req.Username != "" && req.Username != u.Username {
			return badUser("a username cannot change")
		}
		if req.DisplayName != "" {
			u.DisplayName = req.DisplayName
		}
		if req.Role != "" {
			u.Role = req.Role
		}
		if hash != "" {
			u.PasswordHash = hash
		}
		if req.Disabled != nil {
			u.Disabled = *req.Disabled
		}
		return nil
	})
	if err != nil {
		return err
	}
	if hash != "" || (req.Disabled != nil && *req.Disabled) || req.Role != "" {
		if err := pp.Sessions.CloseUser(r.Context(), id); err != nil {
			return err
		}
	}
	a, err := pp.Sessions.AccountByID(r.Context(), clinic, id)
	if err != nil {
		return err
	}
	pp.audit(r, From(r.Context()), "user.update", id.String(), http.StatusOK)
	httpapi.WriteJSON(w, http.StatusOK, a)
	return nil
}
