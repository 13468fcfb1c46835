package api

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/shared/ids"
)

// role is what a bearer token may do; each role includes the ones below it.
type role int

const (
	roleClinic  role = iota + 1 // acts for its own clinic only
	roleService                 // sc-cloud: acts for any clinic, leases node ids
	roleAdmin                   // also force-releases
)

// principal is the authenticated caller. name identifies the token in logs
// without revealing it.
type principal struct {
	role   role
	clinic ids.ID // roleClinic only
	name   string
}

// mayActFor reports whether p may touch clinic's locks.
func (p principal) mayActFor(clinic ids.ID) bool {
	return p.role >= roleService || p.clinic == clinic
}

// auth maps the SHA-256 of each configured token to its principal. Tokens
// are compared by digest, so the comparison time says nothing about the
// token, and a config may hold digests instead of tokens.
type auth map[[sha256.Size]byte]principal

func newAuth(c config.Auth) (auth, error) {
	a := auth{}
	add := func(token string, p principal) error {
		var d [sha256.Size]byte
		if h, ok := strings.CutPrefix(token, "sha256:"); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != sha256.Size {
				return fmt.Errorf("%s: a sha256: token needs 64 hex digits", p.name)
			}
			copy(d[:], b)
		} else {
			d = sha256.Sum256([]byte(token))
		}
		if prev, dup := a[d]; dup {
			return fmt.Errorf("%s repeats the token of %s", p.name, prev.name)
		}
		a[d] = p
		return nil
	}
	if c.AdminToken != "" {
		if err := add(c.AdminToken, principal{role: roleAdmin, name: "admin"}); err != nil {
			return nil, err
		}
	}
	for i, t := range c.ServiceTokens {
		if err := add(t, principal{role: roleService, name: fmt.Sprintf("service[%d]", i)}); err != nil {
			return nil, err
		}
	}
	for t, cl := range c.ClinicTokens {
		id, err := ids.Parse(cl)
		if err != nil || id <= 0 {
			return nil, fmt.Errorf("auth.clinic_tokens: clinic %q is not a positive decimal id", cl)
		}
		if err := add(t, principal{role: roleClinic, clinic: id, name: "clinic " + id.String()}); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// authenticate finds the principal of the request's bearer token.
func (a auth) authenticate(r *http.Request) (principal, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return principal{}, false
	}
	p, ok := a[sha256.Sum256([]byte(strings.TrimSpace(token)))]
	return p, ok
}
