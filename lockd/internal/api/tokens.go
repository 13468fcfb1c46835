package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// authenticate finds the caller: a token of the config first, then a clinic
// token the cloud registered in Redis (looked up on every request, so a new,
// rotated or revoked token takes effect on every replica at once).
func (s *Server) authenticate(r *http.Request) (principal, bool, error) {
	if p, ok := s.auth.authenticate(r); ok {
		return p, true, nil
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return principal{}, false, nil
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	clinic, ok, err := s.store.ClinicOfToken(r.Context(), hex.EncodeToString(sum[:]))
	if err != nil || !ok {
		return principal{}, false, err
	}
	return principal{role: roleClinic, clinic: clinic, name: "clinic " + clinic.String()}, true, nil
}

var digestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func pathClinic(r *http.Request) (ids.ID, error) {
	clinic, err := ids.Parse(r.PathValue("clinic"))
	if err != nil {
		return 0, invalid("clinic in the path must be a decimal id")
	}
	return clinic, validClinic(clinic, "clinic")
}

func (s *Server) setClinicToken(w http.ResponseWriter, r *http.Request, _ principal) (any, error) {
	clinic, err := pathClinic(r)
	if err != nil {
		return nil, err
	}
	var req lockapi.ClinicTokenRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return nil, err
	}
	if !digestRE.MatchString(req.SHA256) {
		return nil, invalid("sha256 must be 64 lower-case hex digits (the SHA-256 of the token)")
	}
	if err := s.store.SetClinicToken(r.Context(), clinic, req.SHA256); err != nil {
		return nil, err
	}
	s.log.Info("clinic token set", "clinic", clinic)
	return lockapi.ClinicToken{Clinic: clinic}, nil
}

func (s *Server) deleteClinicToken(_ http.ResponseWriter, r *http.Request, _ principal) (any, error) {
	clinic, err := pathClinic(r)
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteClinicToken(context.WithoutCancel(r.Context()), clinic); err != nil {
		return nil, err
	}
	s.log.Info("clinic token revoked", "clinic", clinic)
	return lockapi.ClinicToken{Clinic: clinic}, nil
}

func (s *Server) clinicTokensState(_ http.ResponseWriter, r *http.Request, _ principal) (any, error) {
	ok, err := s.store.ClinicTokensSynced(r.Context())
	if err != nil {
		return nil, err
	}
	return lockapi.ClinicTokensState{Synced: ok}, nil
}

// maxClinicTokens bounds one PUT of the whole set.
const maxClinicTokens = 200_000

func (s *Server) putClinicTokens(w http.ResponseWriter, r *http.Request, _ principal) (any, error) {
	// The whole set is larger than httpapi.MaxBody allows a request.
	var req lockapi.ClinicTokens
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, invalid("invalid JSON body: %v", err)
	}
	if len(req.Tokens) > maxClinicTokens {
		return nil, invalid("at most %d tokens", maxClinicTokens)
	}
	entries := make(map[ids.ID]string, len(req.Tokens))
	for _, e := range req.Tokens {
		if err := validClinic(e.Clinic, "tokens[].clinic"); err != nil {
			return nil, err
		}
		if !digestRE.MatchString(e.SHA256) {
			return nil, invalid("tokens[].sha256 must be 64 lower-case hex digits")
		}
		entries[e.Clinic] = e.SHA256
	}
	if err := s.store.PutClinicTokens(r.Context(), entries); err != nil {
		return nil, err
	}
	s.log.Info("clinic tokens restored", "clinics", len(entries))
	return lockapi.ClinicTokensState{Synced: true}, nil
}
