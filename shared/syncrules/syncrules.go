// Package syncrules is the replication rules of scsync as pure functions:
// given a record's state on one side and a save or an incoming change, it
// decides what happens — apply, park, resolve under the clinic's conflict
// policy, or refuse — and which versions result. It has no database, broker
// or clock: the stores of both servers gather the facts (the record's row,
// whether a change id is known, whether a reference is missing), ask here,
// and execute the decision with their own (bulk) SQL. Because the rules live
// here once, they are property-tested without any service (see the tests:
// a model of a clinic and the cloud driven only through this package).
//
// The rules (docs/protocol.md, docs/editing.md):
//   - Saves (DecideSave): a new session bumps A, a further save of the
//     session that saved last bumps B (M18); a fencing token lower than the
//     record's is refused; a session's save over a change made elsewhere
//     after the session opened ("edit anyway", or a change in flight)
//     collides and goes through the conflict policy.
//   - Clinic changes in the cloud (DecideUp): a redelivery is a duplicate; a
//     change behind a parked one or missing a parent parks (M26); a change
//     whose base is not the cloud's version (nor the clinic's own accepted
//     version), or whose fence is stale, is concurrent and resolved by the
//     policy, to a version newer than both.
//   - Cloud changes in the clinic (DecideDown): in cloud_seq order from the
//     checkpoint; the acceptance of the pending change syncs it; a cloud
//     change never overwrites a newer pending local change.
package syncrules

import (
	"errors"

	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Errors of DecideSave. The stores wrap them in their own sentinels.
var (
	ErrNotFound        = errors.New("syncrules: record not found")
	ErrExists          = errors.New("syncrules: record exists")
	ErrVersionConflict = errors.New("syncrules: version conflict")
	ErrStaleFence      = errors.New("syncrules: stale fencing token")
	// ErrCollision: an unfenced save in the cloud collided with a clinic
	// change under local-wins: the clinic's content stays, the save is
	// refused and the user sees the record as it is now.
	ErrCollision = errors.New("syncrules: unfenced save collides with a change made elsewhere")
)

// Policies (DESIGN.md, Replication). The zero value is local-wins.
const (
	LocalWins = wire.ResolvedLocalWins
	CloudWins = wire.ResolvedCloudWins
	KeepBoth  = wire.ResolvedKeepBoth
)

// Policy normalises a clinic's configured policy ("" is local-wins).
func Policy(p string) string {
	switch p {
	case CloudWins, KeepBoth:
		return p
	}
	return LocalWins
}

// Record is a record's replication state on one side.
type Record struct {
	Exists  bool
	Version version.V
	Deleted bool
	// Fence is the highest fencing token of a save accepted for it.
	Fence int64
	// Session is the edit session that saved it last, while nothing came
	// from the other side after that save ("": none).
	Session string
	// LocalVersion (cloud only) is the version the clinic gave the record
	// in its last accepted change, while no cloud change came after it.
	LocalVersion version.V
}

// Save is a save made on the record's side, through the REST API or an
// edit session.
type Save struct {
	Create bool
	Delete bool
	// Base, when set, must be the current version (optimistic check).
	Base *version.V
	// Session is the edit session ("": a one-save session).
	Session string
	// SessionVersion is the record's version when the session opened.
	SessionVersion version.V
	Fence          int64
	Unfenced       bool
}

// SaveDecision is what a save does.
type SaveDecision struct {
	// Err refuses the save (one of the package's errors); nothing else is set.
	Err error
	// Version is the record's new version.
	Version version.V
	// Base is the version the change was based on, as sent to the other
	// side: the current version, or — when the save Collides — the
	// version its session opened at, so the cloud sees it concurrent.
	Base version.V
	// Collides: a session's save over a change made elsewhere after the
	// session opened (M13 for unfenced sessions): it goes through the
	// conflict policy.
	Collides bool
	// Fence is the record's fence after the save.
	Fence int64
}

// DecideSave decides a save on the record's own side.
func DecideSave(r Record, s Save) SaveDecision {
	switch {
	case s.Create && r.Exists:
		return SaveDecision{Err: ErrExists}
	case s.Create:
		return SaveDecision{Version: version.First, Fence: s.Fence}
	case !r.Exists || r.Deleted:
		return SaveDecision{Err: ErrNotFound}
	case s.Base != nil && *s.Base != r.Version:
		return SaveDecision{Err: ErrVersionConflict}
	case s.Fence > 0 && s.Fence < r.Fence:
		return SaveDecision{Err: ErrStaleFence}
	}
	d := SaveDecision{Base: r.Version, Fence: max(r.Fence, s.Fence)}
	if s.Session != "" && r.Session == s.Session {
		d.Version = r.Version.NextSave()
	} else {
		d.Version = r.Version.NextSession()
	}
	if Collides(r, s) {
		d.Collides = true
		d.Base = s.SessionVersion
	}
	return d
}

// Collides reports whether a session's save lands on a record that changed
// since the session opened, by a save or change not of this session. For
// an unfenced ("edit anyway") session that is the collision M13 warns of.
// A fenced session can meet one too: its lock keeps other sessions out,
// but not a change saved before it opened that was still on its way, nor
// a one-shot REST write; the person edited what they saw at opening, so
// overwriting the newer content silently would lose it.
func Collides(r Record, s Save) bool {
	return s.Session != "" && !s.SessionVersion.IsZero() &&
		r.Session != s.Session && r.Version != s.SessionVersion
}

// Resolution is how the cloud resolves an unfenced cloud save that
// collided with a clinic change (SaveDecision.Collides in the cloud).
type Resolution struct {
	// Err refuses the save (local-wins: ErrCollision).
	Err error
	// Conflict is the policy applied, named on the change.
	Conflict string
	// Flag marks the record for a person (keep-both).
	Flag bool
	// CopyCurrent keeps the record's current content (the clinic's) as a
	// conflict copy before the save overwrites it (keep-both).
	CopyCurrent bool
}

// ResolveCloudCollision applies the clinic's policy to an unfenced cloud
// save that collided: the same outcome as a concurrent clinic change —
// the record ends with the clinic's content (local-wins), the cloud's
// (cloud-wins), or the cloud's flagged with the clinic's kept as a copy
// (keep-both).
func ResolveCloudCollision(policy string) Resolution {
	switch Policy(policy) {
	case CloudWins:
		return Resolution{Conflict: CloudWins}
	case KeepBoth:
		return Resolution{Conflict: KeepBoth, Flag: true, CopyCurrent: true}
	}
	return Resolution{Err: ErrCollision}
}

// Outcome names what happens to an incoming change.
type Outcome int

// Outcomes.
const (
	// Apply: the change is taken as it is.
	Apply Outcome = iota + 1
	// Conflict: the change was concurrent; the policy decided (see Up).
	Conflict
	// Duplicate: seen before (a redelivery); nothing to do.
	Duplicate
	// Park: the change waits for a record it refers to, or behind an
	// earlier parked change of its record (M26).
	Park
	// Skip: (down) a newer local change is pending; the cloud judges it.
	Skip
	// Gap: (down) changes before this one are missing; pull them first.
	Gap
	// AcceptAsSent: (down) the cloud accepted this clinic's pending change
	// as it was sent: only the sync marks change.
	AcceptAsSent
	// Unsync: (down) the record left the cloud (M7); the clinic keeps its
	// copy, excluded.
	Unsync
)

// Change is a clinic change arriving in the cloud.
type Change struct {
	Base, New version.V
	Deleted   bool
	Unsync    bool
	Fence     int64
	Unfenced  bool
	// Known: the change id was accepted or parked before.
	Known bool
	// BehindParked: an earlier change of the record is parked.
	BehindParked bool
	// MissingRef: the content refers to a record the cloud does not have.
	MissingRef bool
}

// Up is the cloud's decision on a clinic change.
type Up struct {
	Outcome Outcome
	// Version is the record's version afterwards.
	Version version.V
	// LocalVersion is the record's LocalVersion afterwards.
	LocalVersion version.V
	// TakeChange: the record takes the change's content (or tombstone);
	// false keeps the cloud's.
	TakeChange bool
	// Conflict is the policy applied ("" when the change was not concurrent).
	Conflict string
	// Flag marks the record for a person (keep-both).
	Flag bool
	// Copy keeps the change's content as a new record, a conflict copy
	// at version 1.0 (keep-both, when the change has content).
	Copy bool
	// Fence is the record's fence afterwards.
	Fence int64
}

// DecideUp decides what the cloud does with a clinic change to r.
func DecideUp(r Record, c Change, policy string) Up {
	switch {
	case c.Known:
		return Up{Outcome: Duplicate}
	case c.BehindParked || c.MissingRef:
		return Up{Outcome: Park}
	}
	fence := max(r.Fence, c.Fence)
	if !Concurrent(r, c) {
		v := c.New
		if r.Exists && !r.Version.Less(v) {
			// The clinic built on its own accepted change, which the cloud
			// had renumbered: keep versions moving forward.
			v = r.Version.NextSession()
		}
		return Up{Outcome: Apply, Version: v, LocalVersion: c.New, TakeChange: true, Fence: fence}
	}
	top := r.Version
	if top.Less(c.New) {
		top = c.New
	}
	d := Up{Outcome: Conflict, Version: top.NextSession(), Conflict: Policy(policy), Fence: fence}
	switch d.Conflict {
	case CloudWins:
	case KeepBoth:
		d.Flag = true
		d.Copy = !c.Deleted
	default:
		d.TakeChange = true
		d.LocalVersion = c.New
	}
	return d
}

// Concurrent reports whether a clinic change is concurrent with the
// cloud's record: its base is neither the cloud's version nor the
// version the clinic gave the record in its last accepted change (with
// no cloud change after it), or it was saved under a fencing token
// lower than the record's (a lock that expired while someone else saved).
func Concurrent(r Record, c Change) bool {
	if !r.Exists {
		return false
	}
	if c.Fence > 0 && c.Fence < r.Fence {
		return true
	}
	return c.Base != r.Version && (r.LocalVersion.IsZero() || c.Base != r.LocalVersion)
}

// Local is a record's state in the clinic, as the down path needs it.
type Local struct {
	Exists bool
	// Pending is the local change waiting for its acceptance (0: none).
	Pending int64
	// Queued: a change of the record was sent up before.
	Queued  bool
	Version version.V
	Deleted bool
	Origin  wire.Origin
}

// Applied is a change the cloud accepted, arriving in the clinic.
type Applied struct {
	ChangeID   int64
	CloudSeq   int64
	New        version.V
	Deleted    bool
	Unsync     bool
	Conflict   string
	ConflictOf int64
	Origin     wire.Origin
}

// Down is the clinic's decision on an applied change.
type Down struct {
	Outcome Outcome
	// Own: the acceptance (or the cloud's resolution) of the change the
	// record waits for.
	Own bool
	// Conflicted: the record's sync state becomes conflict (a keep-both
	// resolution or a conflict copy).
	Conflicted bool
}

// Order places an applied change with cloud_seq seq after the clinic's
// checkpoint: Duplicate (at or below it), Gap (beyond the next one), or
// Apply (the next one).
func Order(checkpoint, seq int64) Outcome {
	switch {
	case seq <= checkpoint:
		return Duplicate
	case seq > checkpoint+1:
		return Gap
	}
	return Apply
}

// DecideDown decides what the clinic does with an applied change, given
// its checkpoint (the last cloud_seq applied).
func DecideDown(l Local, checkpoint int64, a Applied) Down {
	if o := Order(checkpoint, a.CloudSeq); o != Apply {
		return Down{Outcome: o}
	}
	own := l.Exists && l.Pending != 0 && l.Pending == a.ChangeID
	switch {
	case l.Exists && l.Pending != 0 && !own:
		return Down{Outcome: Skip}
	case a.Unsync:
		return Down{Outcome: Unsync, Own: own}
	case own && l.Queued && !a.Deleted && !l.Deleted && a.New == l.Version && a.Conflict == "" &&
		a.ConflictOf == 0 && a.Origin == l.Origin:
		return Down{Outcome: AcceptAsSent, Own: true}
	}
	return Down{Outcome: Apply, Own: own, Conflicted: a.Conflict == KeepBoth || a.ConflictOf != 0}
}
