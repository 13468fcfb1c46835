package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/scsync/scsync/cloud-server/internal/brokeradmin"
	"github.com/scsync/scsync/cloud-server/internal/replicate"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// Broker provisions clinics' own RabbitMQ identities (*brokeradmin.Admin).
type Broker interface {
	User(clinic ids.ID) string
	Provision(ctx context.Context, clinic ids.ID) (brokeradmin.Credentials, error)
	Revoke(ctx context.Context, clinic ids.ID) error
}

// LockdTokens issues and revokes clinics' lockd tokens (stored in lockd's
// Redis as hashes, so every replica knows them at once).
type LockdTokens interface {
	Issue(ctx context.Context, clinic ids.ID) (string, error)
	// Record keeps the token's digest on the clinic's row (enrollment
	// issues the token before the row exists).
	Record(ctx context.Context, clinic ids.ID, token string) error
	Revoke(ctx context.Context, clinic ids.ID) error
}

// LockdCredentials is where and how a clinic reaches lockd.
type LockdCredentials struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

// Identity wires the credential issuers; either may be nil (not configured:
// enrollment then hands out no such credential). lockdURL is the lockd URL
// clinics dial. onDisable is called after a clinic was disabled here (to
// close its WebSockets; other nodes notice within their refresh).
func (s *Server) Identity(b Broker, l LockdTokens, lockdURL string, onDisable func(ids.ID)) {
	s.broker, s.lockd, s.lockdURL, s.onDisable = b, l, lockdURL, onDisable
}

var errNotConfigured = httpapi.Errorf(http.StatusConflict, "not_configured", "this cloud does not issue that credential (see amqp.management_url and lockd.url)")

// provisionBroker makes the clinic's broker identity and records its user.
func (s *Server) provisionBroker(ctx context.Context, clinic ids.ID) (*brokeradmin.Credentials, error) {
	if s.broker == nil {
		return nil, nil
	}
	cr, err := s.broker.Provision(ctx, clinic)
	if err != nil {
		s.log.Error("broker identity not provisioned", "clinic", clinic, "err", err)
		return nil, httpapi.Errorf(http.StatusBadGateway, "broker_unavailable", "the broker's management API did not answer; try again")
	}
	return &cr, nil
}

// issueLockd makes the clinic's lockd token.
func (s *Server) issueLockd(ctx context.Context, clinic ids.ID) (*LockdCredentials, error) {
	if s.lockd == nil {
		return nil, nil
	}
	tok, err := s.lockd.Issue(ctx, clinic)
	if err != nil {
		s.log.Error("lockd token not issued", "clinic", clinic, "err", err)
		return nil, httpapi.Errorf(http.StatusBadGateway, "lockd_unavailable", "lockd did not answer; try again")
	}
	return &LockdCredentials{URL: s.lockdURL, Token: tok}, nil
}

// credentials issues every credential of a new clinic but its API token,
// before the clinic row exists (so a failure leaves nothing behind).
func (s *Server) credentials(ctx context.Context, clinic ids.ID, cr *ClinicCredentials) error {
	var err error
	if cr.AMQP, err = s.provisionBroker(ctx, clinic); err != nil {
		return err
	}
	if cr.Lockd, err = s.issueLockd(ctx, clinic); err != nil {
		s.undo(clinic)
		return err
	}
	return nil
}

// undo withdraws what credentials issued for a clinic that was not created.
func (s *Server) undo(clinic ids.ID) {
	ctx := context.Background()
	if s.broker != nil {
		if err := s.broker.Revoke(ctx, clinic); err != nil {
			s.log.Warn("broker identity of a failed enrollment not removed", "clinic", clinic, "err", err)
		}
	}
	if s.lockd != nil {
		if err := s.lockd.Revoke(ctx, clinic); err != nil {
			s.log.Warn("lockd token of a failed enrollment not removed", "clinic", clinic, "err", err)
		}
	}
}

// afterCreate records the broker user and the lockd token's digest on the
// new clinic row.
func (s *Server) afterCreate(ctx context.Context, cr *ClinicCredentials) error {
	if cr.Lockd != nil {
		if err := s.lockd.Record(ctx, cr.ID, cr.Lockd.Token); err != nil {
			return err
		}
	}
	if cr.AMQP == nil {
		return nil
	}
	cr.BrokerUser = cr.AMQP.User
	if err := s.st.SetBrokerUser(ctx, cr.ID, cr.AMQP.User); err != nil {
		return err
	}
	if !cr.AMQP.Current {
		return nil // the nodes set it up (or migrate it) at their next refresh
	}
	// Enrollment made the clinic's whole topology: recorded as current, the
	// nodes do not declare it all again (at 10,000 enrollments that was
	// 80,000 broker operations, one clinic at a time, after the fact).
	return s.st.SetTopology(ctx, cr.ID, replicate.TopologyVersion)
}

func (s *Server) registerIdentity(mux httpapi.Router) {
	mux.HandleFunc("POST /v1/admin/clinics/{clinic}/token", s.admin(s.rotateToken))
	mux.HandleFunc("POST /v1/admin/clinics/{clinic}/broker", s.admin(s.rotateBroker))
	mux.HandleFunc("DELETE /v1/admin/clinics/{clinic}/broker", s.admin(s.revokeBroker))
	mux.HandleFunc("POST /v1/admin/clinics/{clinic}/lockd", s.admin(s.rotateLockd))
	mux.HandleFunc("DELETE /v1/admin/clinics/{clinic}/lockd", s.admin(s.revokeLockd))
	mux.HandleFunc("POST /v1/admin/clinics/{clinic}/disable", s.admin(s.disable))
	mux.HandleFunc("POST /v1/admin/clinics/{clinic}/enable", s.admin(s.enable))
}

// pathClinic is an existing clinic named by the path.
func (s *Server) pathClinic(r *http.Request) (ids.ID, error) {
	clinic, err := ids.Parse(r.PathValue("clinic"))
	if err != nil {
		return 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "clinic must be a numeric id")
	}
	if _, err := s.st.ClinicByID(r.Context(), clinic); err != nil {
		return 0, err
	}
	return clinic, nil
}

// Rotated is the answer of a rotation: the new credential, handed out once.
type Rotated struct {
	Clinic ids.ID                   `json:"clinic"`
	Token  string                   `json:"token,omitempty"`
	AMQP   *brokeradmin.Credentials `json:"amqp,omitempty"`
	Lockd  *LockdCredentials        `json:"lockd,omitempty"`
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request) error {
	clinic, err := s.pathClinic(r)
	if err != nil {
		return err
	}
	tok, err := s.st.RotateToken(r.Context(), clinic)
	if err != nil {
		return err
	}
	s.log.Info("clinic api token rotated", "clinic", clinic)
	httpapi.WriteJSON(w, http.StatusOK, Rotated{Clinic: clinic, Token: tok})
	return nil
}

// rotateBroker gives the clinic a new broker secret (its connections with
// the old one are closed); for a clinic enrolled before per-clinic
// identities it is the migration: it creates the identity.
func (s *Server) rotateBroker(w http.ResponseWriter, r *http.Request) error {
	clinic, err := s.pathClinic(r)
	if err != nil {
		return err
	}
	if s.broker == nil {
		return errNotConfigured
	}
	cr, err := s.provisionBroker(r.Context(), clinic)
	if err != nil {
		return err
	}
	if err := s.st.SetBrokerUser(r.Context(), clinic, cr.User); err != nil {
		return err
	}
	s.log.Info("clinic broker secret rotated", "clinic", clinic)
	httpapi.WriteJSON(w, http.StatusOK, Rotated{Clinic: clinic, AMQP: cr})
	return nil
}

func (s *Server) revokeBroker(w http.ResponseWriter, r *http.Request) error {
	clinic, err := s.pathClinic(r)
	if err != nil {
		return err
	}
	if s.broker == nil {
		return errNotConfigured
	}
	if err := s.broker.Revoke(r.Context(), clinic); err != nil {
		return fmt.Errorf("revoke broker identity: %w", err)
	}
	s.log.Info("clinic broker identity revoked", "clinic", clinic)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateLockd(w http.ResponseWriter, r *http.Request) error {
	clinic, err := s.pathClinic(r)
	if err != nil {
		return err
	}
	if s.lockd == nil {
		return errNotConfigured
	}
	lc, err := s.issueLockd(r.Context(), clinic)
	if err != nil {
		return err
	}
	s.log.Info("clinic lockd token rotated", "clinic", clinic)
	httpapi.WriteJSON(w, http.StatusOK, Rotated{Clinic: clinic, Lockd: lc})
	return nil
}

func (s *Server) revokeLockd(w http.ResponseWriter, r *http.Request) error {
	clinic, err := s.pathClinic(r)
	if err != nil {
		return err
	}
	if s.lockd == nil {
		return errNotConfigured
	}
	if err := s.lockd.Revoke(r.Context(), clinic); err != nil {
		return fmt.Errorf("revoke lockd token: %w", err)
	}
	s.log.Info("clinic lockd token revoked", "clinic", clinic)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// disable stops every credential of the clinic at once: its API token is
// refused (every node reads it per request), its broker user is deleted and
// its connections closed, its lockd token removed, and its WebSockets are
// closed (here now, on other nodes within their clinic refresh).
func (s *Server) disable(w http.ResponseWriter, r *http.Request) error {
	clinic, err := s.pathClinic(r)
	if err != nil {
		return err
	}
	c, err := s.st.SetDisabled(r.Context(), clinic, true)
	if err != nil {
		return err
	}
	var errs []error
	if s.broker != nil {
		errs = append(errs, s.broker.Revoke(r.Context(), clinic))
	}
	if s.lockd != nil {
		errs = append(errs, s.lockd.Revoke(r.Context(), clinic))
	}
	if s.onDisable != nil {
		s.onDisable(clinic)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clinic disabled, but not every credential was withdrawn (call again): %w", err)
	}
	s.log.Info("clinic disabled", "clinic", clinic)
	httpapi.WriteJSON(w, http.StatusOK, c)
	return nil
}

// enable lets a disabled clinic in again with its API token, and issues it
// a new broker secret and lockd token (disabling withdrew the old ones).
func (s *Server) enable(w http.ResponseWriter, r *http.Request) error {
	clinic, err := s.pathClinic(r)
	if err != nil {
		return err
	}
	out := Rotated{Clinic: clinic}
	if out.AMQP, err = s.provisionBroker(r.Context(), clinic); err != nil {
		return err
	}
	if out.AMQP != nil {
		if err := s.st.SetBrokerUser(r.Context(), clinic, out.AMQP.User); err != nil {
			return err
		}
	}
	if out.Lockd, err = s.issueLockd(r.Context(), clinic); err != nil {
		return err
	}
	if _, err := s.st.SetDisabled(r.Context(), clinic, false); err != nil {
		return err
	}
	s.log.Info("clinic enabled", "clinic", clinic)
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}
