// Package lockapi holds the JSON types and error codes of lockd's HTTP API,
// shared by the server and by the client package. Changes are additive: a
// new field gets a zero value that keeps the old meaning.
package lockapi

import (
	"time"

	"github.com/scsync/scsync/shared/ids"
)

// Side says where a lock holder edits.
type Side string

// The two sides of scsync.
const (
	SideLocal Side = "local" // a clinic's sc-local and its viewers
	SideCloud Side = "cloud" // sc-cloud and its viewers
)

// Holder is who holds (or asks for) a lock. Clinic also scopes the lock:
// every lock belongs to exactly one clinic.
type Holder struct {
	Clinic ids.ID `json:"clinic"`
	Side   Side   `json:"side"`
	Client string `json:"client"` // the viewer or workstation
	User   string `json:"user"`
}

// AcquireRequest is the body of POST /v1/locks/acquire.
type AcquireRequest struct {
	Resource string `json:"resource"`
	Holder   Holder `json:"holder"`
	// TTLMillis is how long the lock lives without renewal; 0 asks for
	// the server's default.
	TTLMillis int64 `json:"ttl_ms,omitempty"`
	// Version is the record's A.B version when the lock is taken.
	Version string `json:"version"`
}

// Lock is a granted lock as anyone may see it (no secret).
type Lock struct {
	Resource string `json:"resource"`
	Holder   Holder `json:"holder"`
	// Token is the fencing token: it grows with every grant of the
	// resource, and a save carrying a token lower than the last accepted
	// one for the record must be rejected.
	Token     int64     `json:"token"`
	Since     time.Time `json:"since"`
	ExpiresAt time.Time `json:"expires_at"`
	Version   string    `json:"version"`
}

// Grant answers a successful acquire: the lock plus the secret that alone
// can renew or release it. Keep the secret out of logs.
type Grant struct {
	Lock
	Secret string `json:"secret"`
	// SavedVersion is the record version the last holder that saved left
	// (from its release), empty if none is known. A server whose copy of
	// the record is older has not received that save yet (replication
	// between clinic and cloud lags) and must not let its client edit.
	SavedVersion string `json:"saved_version,omitempty"`
}

// RenewRequest is the body of POST /v1/locks/renew.
type RenewRequest struct {
	Resource  string `json:"resource"`
	Clinic    ids.ID `json:"clinic"`
	Token     int64  `json:"token"`
	Secret    string `json:"secret"`
	TTLMillis int64  `json:"ttl_ms,omitempty"`
}

// Renewal answers a successful renew.
type Renewal struct {
	Resource  string    `json:"resource"`
	Token     int64     `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ReleaseRequest is the body of POST /v1/locks/release.
type ReleaseRequest struct {
	Resource string `json:"resource"`
	Clinic   ids.ID `json:"clinic"`
	Token    int64  `json:"token"`
	Secret   string `json:"secret"`
	// SavedVersion, when the holder saved, is the record's version after
	// its last save; the next grant hands it on (Grant.SavedVersion).
	SavedVersion string `json:"saved_version,omitempty"`
}

// Released answers a successful release or force-release.
type Released struct {
	Resource string `json:"resource"`
	Released bool   `json:"released"`
	// Lock is the lock that was removed (force-release only).
	Lock *Lock `json:"lock,omitempty"`
}

// ForceReleaseRequest is the body of POST /v1/admin/locks/force-release.
type ForceReleaseRequest struct {
	Clinic   ids.ID `json:"clinic"`
	Resource string `json:"resource"`
}

// Status answers GET /v1/locks/{clinic}/{resource...} for a held lock.
type Status struct {
	Lock
	// LastToken is the newest fencing token ever granted for the resource
	// (equal to Token while the lock is held).
	LastToken int64 `json:"last_token"`
}

// NodeLeaseRequest is the body of POST /v1/nodes/lease.
type NodeLeaseRequest struct {
	// Owner names the leaser for operators (host name, pod name).
	Owner string `json:"owner"`
}

// NodeLease answers a node lease or renewal.
type NodeLease struct {
	Node      int64     `json:"node"`
	Secret    string    `json:"secret,omitempty"` // lease only
	ExpiresAt time.Time `json:"expires_at"`
	// TTLMillis is the lease's time to live; renew well within it (every
	// third of it) and stop minting ids when the lease is past ExpiresAt.
	TTLMillis int64 `json:"ttl_ms"`
}

// NodeRequest is the body of POST /v1/nodes/renew and /v1/nodes/release.
type NodeRequest struct {
	Node   int64  `json:"node"`
	Secret string `json:"secret"`
}

// NodeReleased answers a node release.
type NodeReleased struct {
	Node int64 `json:"node"`
	// QuarantinedUntil is when the id may be leased again.
	QuarantinedUntil time.Time `json:"quarantined_until"`
}

// Error is the body of every error answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Lock is the current lock (code held).
	Lock *Lock `json:"lock,omitempty"`
	// LastToken is the newest fencing token granted for the resource
	// (code not_held on inspect).
	LastToken int64 `json:"last_token,omitempty"`
	// RetryAfterMillis says when a node id may be free (code no_free_node).
	RetryAfterMillis int64 `json:"retry_after_ms,omitempty"`
}

// Stable error codes. The HTTP status of each is in docs/lockd.md.
const (
	CodeInvalid      = "invalid"      // 400: malformed JSON, missing or bad field
	CodeUnauthorized = "unauthorized" // 401: no or unknown bearer token
	CodeForbidden    = "forbidden"    // 403: the token may not act for that clinic or endpoint
	CodeNotYours     = "not_yours"    // 403: token or secret do not match the lock
	CodeNotHeld      = "not_held"     // 404: nobody holds the lock
	CodeNotFound     = "not_found"    // 404: no such endpoint
	CodeHeld         = "held"         // 409: someone else holds the lock
	CodeExpired      = "expired"      // 410: the lock or node lease is gone
	CodeTooLarge     = "too_large"    // 413: request body too large
	CodeInternal     = "internal"     // 500: a bug; see the server log
	CodeUnavailable  = "unavailable"  // 503: Redis cannot be reached
	CodeNoFreeNode   = "no_free_node" // 503: every cloud node id is leased or quarantined
)

// RenewRequest returns the request that renews g for ttlMillis (0: the
// server's default).
func (g Grant) RenewRequest(ttlMillis int64) RenewRequest {
	return RenewRequest{Resource: g.Resource, Clinic: g.Holder.Clinic, Token: g.Token, Secret: g.Secret, TTLMillis: ttlMillis}
}

// ReleaseRequest returns the request that releases g.
func (g Grant) ReleaseRequest() ReleaseRequest {
	return ReleaseRequest{Resource: g.Resource, Clinic: g.Holder.Clinic, Token: g.Token, Secret: g.Secret}
}

// ClinicTokenRequest registers a clinic's lockd token (service token only:
// sc-cloud issues clinic tokens at enrollment). Only the token's SHA-256
// travels and is stored; the new token replaces the clinic's previous one.
type ClinicTokenRequest struct {
	SHA256 string `json:"sha256"` // hex
}

// ClinicToken answers a registration or revocation.
type ClinicToken struct {
	Clinic ids.ID `json:"clinic"`
}

// ClinicTokens is the whole set of clinic token digests (service token):
// sc-cloud, which keeps them in PostgreSQL, puts it back when Synced says
// lockd's Redis lost them (a wipe or a new Redis).
type ClinicTokens struct {
	Tokens []ClinicTokenEntry `json:"tokens"`
}

// ClinicTokenEntry is one clinic's token digest.
type ClinicTokenEntry struct {
	Clinic ids.ID `json:"clinic"`
	SHA256 string `json:"sha256"`
}

// ClinicTokensState says whether lockd's Redis holds the set sc-cloud put.
type ClinicTokensState struct {
	Synced bool `json:"synced"`
}

// MaxBatch is the most operations a BatchRequest may carry.
const MaxBatch = 64

// BatchRequest is the body of POST /v1/locks/batch: acquires, renews and
// releases sent together, each run exactly as if it had been sent alone to
// its own endpoint (its own validation, authorization, Redis script and
// answer). The operations are independent: they run in no particular order
// relative to each other, and one failing does not stop the others. The Go
// client sends one when callers lock concurrently, to save the HTTP and
// Redis round trips of each.
type BatchRequest struct {
	Ops []BatchOp `json:"ops"`
}

// BatchOp is one operation of a batch: exactly one field is set.
type BatchOp struct {
	Acquire *AcquireRequest `json:"acquire,omitempty"`
	Renew   *RenewRequest   `json:"renew,omitempty"`
	Release *ReleaseRequest `json:"release,omitempty"`
}

// BatchResponse answers a batch (status 200): one result per operation, in
// the order of the request.
type BatchResponse struct {
	Results []BatchResult `json:"results"`
}

// BatchResult is what the operation's own endpoint would have answered:
// its HTTP status and either its body (the field of its kind) or Error.
type BatchResult struct {
	Status   int       `json:"status"`
	Grant    *Grant    `json:"grant,omitempty"`
	Renewal  *Renewal  `json:"renewal,omitempty"`
	Released *Released `json:"released,omitempty"`
	Error    *Error    `json:"error,omitempty"`
}
