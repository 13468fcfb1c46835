package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/mfa"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// WithTOTP turns on the second factor of cloud logins (after WithAuth): a
// person with a confirmed factor needs its code to log in; with require
// every person needs one, and one without it may only enrol after logging
// in with the password.
func (s *Server) WithTOTP(f *mfa.Store, require bool) *Server {
	s.mfa, s.requireTOTP = f, require
	if s.people != nil {
		s.people.SecondFactor = s.secondFactor
		s.people.Factors = f.ConfirmedIn
	}
	return s
}

// Errors of the second factor (stable codes).
var (
	errTOTPRequired      = httpapi.Errorf(http.StatusUnauthorized, "totp_required", "this account needs the 6-digit code from its authenticator app (send it as \"code\")")
	errTOTPInvalid       = httpapi.Errorf(http.StatusUnauthorized, "totp_invalid", "the code is wrong, expired or already used")
	errTOTPUnavailable   = httpapi.Errorf(http.StatusServiceUnavailable, "totp_unavailable", "this account has a second factor but the cloud cannot check it (auth.totp_key is not set or changed); ask the operator")
	errTOTPNotConfigured = httpapi.Errorf(http.StatusConflict, "totp_not_configured", "this cloud has no auth.totp_key: second factors cannot be enrolled")
	errTOTPEnrolled      = httpapi.Errorf(http.StatusConflict, "totp_enrolled", "a second factor is enrolled already; an admin can reset it")
	errTOTPNotPending    = httpapi.Errorf(http.StatusConflict, "totp_not_pending", "no enrolment to confirm: POST /v1/me/totp first")
	errTOTPBadCode       = httpapi.Errorf(http.StatusBadRequest, "totp_invalid", "the code is wrong or expired: enter the current code the app shows")
	errPersonOnly        = httpapi.Errorf(http.StatusForbidden, "person_only", "only a logged-in person has a second factor")
)

func totpLocked(le *mfa.LockedError) error {
	return httpapi.Errorf(http.StatusTooManyRequests, "totp_locked", "too many wrong codes: try again after %s",
		le.Until.UTC().Format(time.RFC3339))
}

// secondFactor is the login's second step (auth.People.SecondFactor).
func (s *Server) secondFactor(r *http.Request, a auth.Account, code string) (bool, error) {
	has, err := s.mfa.Check(r.Context(), a.ClinicID, a.ID, code)
	var le *mfa.LockedError
	switch {
	case errors.As(err, &le):
		return false, totpLocked(le)
	case errors.Is(err, mfa.ErrRequired):
		return false, errTOTPRequired
	case errors.Is(err, mfa.ErrInvalid):
		return false, errTOTPInvalid
	case errors.Is(err, mfa.ErrNotConfigured):
		return false, errTOTPUnavailable
	case err != nil:
		s.log.Error("second factor not checked", "clinic", a.ClinicID, "user", a.ID, "err", err)
		return false, errTOTPUnavailable
	}
	return !has && s.requireTOTP, nil
}

// mustEnrol reports whether p may only enrol a factor (require_totp and
// none confirmed yet).
func (s *Server) mustEnrol(r *http.Request, p auth.Principal) (bool, error) {
	if s.mfa == nil || !s.requireTOTP || p.Kind != auth.KindPerson {
		return false, nil
	}
	has, err := s.mfa.Confirmed(r.Context(), p.Clinic, p.UserID)
	return !has, err
}

func (s *Server) registerTOTP(mux httpapi.Router) {
	if s.mfa == nil {
		return
	}
	mux.HandleFunc("GET /v1/me/totp", s.public(s.totpStatus))
	mux.HandleFunc("POST /v1/me/totp", s.public(s.totpBegin))
	mux.HandleFunc("POST /v1/me/totp/confirm", s.public(s.totpConfirm))
	mux.HandleFunc("DELETE /v1/clinics/{clinic}/users/{id}/totp", s.clinic(s.totpReset))
}

func person(r *http.Request) (auth.Principal, error) {
	p := auth.From(r.Context())
	if p.Kind != auth.KindPerson {
		return p, errPersonOnly
	}
	return p, nil
}

func (s *Server) totpAudit(r *http.Request, clinic ids.ID, action string, target ids.ID, status int) {
	p := auth.From(r.Context())
	s.record(r.Context(), clinic, audit.Entry{Actor: p.Actor(), Username: p.Username, Action: action, Kind: "users",
		Target: target.String(), Remote: r.RemoteAddr, Outcome: status})
}

// TOTPStatus is GET /v1/me/totp.
type TOTPStatus struct {
	mfa.Status
	// Required: the cloud requires a second factor of every person.
	Required bool `json:"required"`
	// Available: the cloud can enrol factors (auth.totp_key is set).
	Available bool `json:"available"`
}

func (s *Server) totpStatus(w http.ResponseWriter, r *http.Request) error {
	p, err := person(r)
	if err != nil {
		return err
	}
	st, err := s.mfa.StatusOf(r.Context(), p.Clinic, p.UserID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, TOTPStatus{Status: st, Required: s.requireTOTP, Available: s.mfa.Configured()})
	return nil
}

// totpBegin makes the person a new secret, shown this once; it counts after
// POST /v1/me/totp/confirm with a code.
func (s *Server) totpBegin(w http.ResponseWriter, r *http.Request) error {
	p, err := person(r)
	if err != nil {
		return err
	}
	account := p.Username
	if c, err := s.st.ClinicByID(r.Context(), p.Clinic); err == nil {
		account = fmt.Sprintf("%s@%s", p.Username, c.Name)
	}
	e, err := s.mfa.Begin(r.Context(), p.Clinic, p.UserID, account)
	switch {
	case errors.Is(err, mfa.ErrNotConfigured):
		return errTOTPNotConfigured
	case errors.Is(err, mfa.ErrEnrolled):
		s.totpAudit(r, p.Clinic, "totp.enrol", p.UserID, http.StatusConflict)
		return errTOTPEnrolled
	case err != nil:
		return err
	}
	s.totpAudit(r, p.Clinic, "totp.enrol", p.UserID, http.StatusOK)
	httpapi.WriteJSON(w, http.StatusOK, e)
	return nil
}

type codeReq struct {
	Code string `json:"code"`
}

func (s *Server) totpConfirm(w http.ResponseWriter, r *http.Request) error {
	p, err := person(r)
	if err != nil {
		return err
	}
	var req codeReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	err = s.mfa.Confirm(r.Context(), p.Clinic, p.UserID, req.Code)
	switch {
	case errors.Is(err, mfa.ErrNotPending):
		return errTOTPNotPending
	case errors.Is(err, mfa.ErrEnrolled):
		return errTOTPEnrolled
	case errors.Is(err, mfa.ErrNotConfigured):
		return errTOTPNotConfigured
	case errors.Is(err, mfa.ErrInvalid):
		s.totpAudit(r, p.Clinic, "totp.confirm", p.UserID, http.StatusBadRequest)
		return errTOTPBadCode
	case err != nil:
		return err
	}
	s.totpAudit(r, p.Clinic, "totp.confirm", p.UserID, http.StatusOK)
	st, err := s.mfa.StatusOf(r.Context(), p.Clinic, p.UserID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, TOTPStatus{Status: st, Required: s.requireTOTP, Available: true})
	return nil
}

// totpReset removes a person's factor (clinic admin or operator: a lost
// phone) and ends their sessions; the person logs in with the password
// alone (or, under require_totp, enrols a new factor first).
func (s *Server) totpReset(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	if _, err := s.sessions.AccountByID(r.Context(), clinic, id); errors.Is(err, auth.ErrNoUser) {
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such person")
	} else if err != nil {
		return err
	}
	had, err := s.mfa.Reset(r.Context(), clinic, id)
	if err != nil {
		return err
	}
	if err := s.sessions.CloseUser(r.Context(), id); err != nil {
		return err
	}
	s.totpAudit(r, clinic, "totp.reset", id, http.StatusOK)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user": id, "had_factor": had, "totp": false})
	return nil
}
