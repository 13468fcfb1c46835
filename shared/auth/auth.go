// Package auth gives both servers one way to know who calls: person
// accounts (argon2id password hashes, roles viewer < editor < admin),
// opaque session tokens stored hashed with an idle expiry, and a Guard that
// wraps a server's whole router so that every route is refused unless a
// policy names who may call it (fail closed), with a same-origin and
// JSON-only check on state-changing requests (CSRF).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/scsync/scsync/shared/ids"
)

// Role orders what a person may do: a higher role may do all a lower one may.
type Role int

// Roles, weakest first.
const (
	RoleNone Role = iota
	RoleViewer
	RoleEditor
	RoleAdmin
)

// ParseRole maps a user record's role to a Role. The record kind's older
// roles doctor and staff are editors.
func ParseRole(s string) Role {
	switch s {
	case "viewer":
		return RoleViewer
	case "editor", "doctor", "staff":
		return RoleEditor
	case "admin":
		return RoleAdmin
	}
	return RoleNone
}

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleEditor:
		return "editor"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// Principal kinds.
const (
	// KindPerson is a person logged in with a session.
	KindPerson = "person"
	// KindMachine is a clinic server with its cloud token (machine work only).
	KindMachine = "machine"
	// KindOperator is the cloud operator's admin token.
	KindOperator = "operator"
	// KindService is sc-local's own API token (the CLI on the clinic machine).
	KindService = "service"
)

// Principal is who a request acts as.
type Principal struct {
	Kind     string `json:"kind"`
	UserID   ids.ID `json:"user_id,omitempty"`
	Username string `json:"username,omitempty"`
	Role     Role   `json:"-"`
	Clinic   ids.ID `json:"clinic,omitempty"`
	// SessionHash is the stored hash of the person's session token.
	SessionHash string `json:"-"`
	// MustEnrol: the policy requires a second factor the person has not
	// enrolled yet; only routes of Rule.Enrolment may be called.
	MustEnrol bool `json:"-"`
}

// Actor is the principal as the audit log names it: a person's id, or the
// kind of credential for machines.
func (p Principal) Actor() string {
	switch p.Kind {
	case KindPerson:
		return p.UserID.String()
	case KindMachine:
		return "machine:" + p.Clinic.String()
	case "":
		return "anonymous"
	}
	return p.Kind
}

// SavedBy is who a save made under ctx is recorded as in the version
// history (M18): the logged-in person's user record id and username, never
// text the client sent; zero for the clinic's machine and service tokens,
// the operator and background work.
func SavedBy(ctx context.Context) (ids.ID, string) {
	p := From(ctx)
	if p.Kind != KindPerson {
		return 0, ""
	}
	return p.UserID, p.Username
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the principal of ctx (zero when none).
func From(ctx context.Context) Principal {
	p, _ := ctx.Value(ctxKey{}).(Principal)
	return p
}

// Errors of authentication.
var (
	// ErrNoCredentials: the request carries no token.
	ErrNoCredentials = errors.New("auth: no credentials")
	// ErrBadCredentials: unknown token, expired session, wrong password or a
	// disabled person.
	ErrBadCredentials = errors.New("auth: bad credentials")
)

// argon2id parameters (RFC 9106's second recommended option, with less
// memory so a clinic PC logs people in quickly).
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 2
	argonKeyLen  = 32
)

// HashPassword returns an encoded argon2id hash of pw.
func HashPassword(pw string) (string, error) {
	if len(pw) < 8 {
		return "", fmt.Errorf("%w: a password needs at least 8 characters", ErrWeakPassword)
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// ErrWeakPassword: the password is too short.
var ErrWeakPassword = errors.New("auth: weak password")

// CheckPassword reports whether pw matches the encoded hash.
func CheckPassword(encoded, pw string) bool {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m > 1<<20 || t > 16 || p == 0 {
		return false
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 || len(want) > 128 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// NewToken returns a random opaque token and the hash to store of it.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("auth: token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken is the stored form of a token (a token is random, so one round
// of SHA-256 suffices).
func HashToken(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// Equal compares two secrets in constant time.
func Equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
