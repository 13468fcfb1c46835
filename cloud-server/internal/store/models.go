// Package store is the cloud's PostgreSQL state: clinics, their records of
// every kind, the per-clinic change log ordered by cloud_seq, changes parked
// until their parent arrives, and the outbox the relay publishes down from.
// Every table is keyed by clinic first, so no query can reach a row without
// naming its clinic.
package store

import (
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Conflict policies (DESIGN.md, Replication).
const (
	PolicyLocalWins = wire.ResolvedLocalWins
	PolicyCloudWins = wire.ResolvedCloudWins
	PolicyKeepBoth  = wire.ResolvedKeepBoth
)

// ValidPolicy reports whether p names a conflict policy.
func ValidPolicy(p string) bool {
	return p == PolicyLocalWins || p == PolicyCloudWins || p == PolicyKeepBoth
}

// Clinic is a tenant. LastSeq is its cloud_seq counter: the row lock taken to
// bump it serializes every accepted change of the clinic.
type Clinic struct {
	ID             ids.ID `gorm:"primaryKey;autoIncrement:false" json:"id"`
	Name           string `gorm:"not null" json:"name"`
	NodeID         int64  `gorm:"not null;uniqueIndex" json:"node_id"`
	TokenSHA256    string `gorm:"not null;uniqueIndex" json:"-"`
	ConflictPolicy string `gorm:"not null;default:local-wins" json:"conflict_policy"`
	LastSeq        int64  `gorm:"not null;default:0" json:"last_seq"`
	// AckedSeq is the highest cloud_seq the clinic said it had applied
	// (the since of its pulls). A pull from below it means the clinic came
	// back older than it was — restored from a backup, or wiped (M27,
	// M29): Rewinds counts those, and the answer re-sends what it lost.
	AckedSeq       int64      `gorm:"not null;default:0" json:"acked_seq"`
	Rewinds        int64      `gorm:"not null;default:0" json:"rewinds"`
	LastRewindAt   *time.Time `json:"last_rewind_at,omitempty"`
	LastRewindFrom int64      `gorm:"not null;default:0" json:"last_rewind_from,omitempty"`
	// BrokerUser is the clinic's own RabbitMQ login (empty: a clinic
	// enrolled before per-clinic identities, not provisioned yet); the
	// cloud dead-letters an up message whose user-id is not this one.
	BrokerUser string `gorm:"not null;default:''" json:"broker_user,omitempty"`
	// LockdTokenSHA256 is the digest of the clinic's lockd token (empty:
	// none issued, or revoked); the cloud puts the set back into lockd
	// when lockd's Redis lost it.
	LockdTokenSHA256 string `gorm:"not null;default:''" json:"-"`
	// DisabledAt: the operator disabled the clinic; none of its
	// credentials work until it is enabled again.
	DisabledAt *time.Time `json:"disabled_at,omitempty"`
	// Topology is the broker topology version the cloud last set up for
	// the clinic (0: not yet, or enrolled on the per-clinic quorum queues
	// of earlier versions); a node brings it to the current version
	// (replicate.TopologyVersion) once, migrating what it finds.
	Topology int `gorm:"not null;default:0" json:"-"`
	// ProtocolMin and ProtocolMax are the range of wire protocol versions
	// the clinic's sc-local last stated (at enrollment, on its pulls and on
	// its up messages); nil: it stated none — a release before ranges,
	// which speaks exactly wire.LegacyProtocol. The cloud sends it the
	// newest version both speak. They live in their own table,
	// clinic_protocols (ClinicProtocols), not in clinics: a node of the
	// release before reads clinics with cached prepared statements of
	// `SELECT *`, which PostgreSQL refuses ("cached plan must not change
	// result type") once a column is added under them — during a rolling
	// upgrade a new table is what an old node never notices.
	ProtocolMin *int      `gorm:"-" json:"protocol_min,omitempty"`
	ProtocolMax *int      `gorm:"-" json:"protocol_max,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// ClinicProtocols is the range of protocol versions a clinic stated (no
// row: none stated).
type ClinicProtocols struct {
	ClinicID    ids.ID `gorm:"primaryKey;autoIncrement:false"`
	ProtocolMin int    `gorm:"not null"`
	ProtocolMax int    `gorm:"not null"`
}

// TableName is clinic_protocols.
func (ClinicProtocols) TableName() string { return "clinic_protocols" }

// Protocols is the range the clinic speaks (wire.Legacy when it stated none).
func (c Clinic) Protocols() wire.Range { return protocols(c.ProtocolMin, c.ProtocolMax) }

func protocols(lo, hi *int) wire.Range {
	if lo == nil || hi == nil {
		return wire.Legacy()
	}
	return wire.Range{Min: *lo, Max: *hi}
}

// Meta is what every record of every kind carries in the cloud.
type Meta struct {
	ClinicID ids.ID    `gorm:"primaryKey;autoIncrement:false" json:"clinic_id"`
	ID       ids.ID    `gorm:"primaryKey;autoIncrement:false" json:"id"`
	Kind     wire.Kind `gorm:"-" json:"kind"`
	Version  version.V `gorm:"type:text;not null" json:"version"`
	Origin   string    `gorm:"not null" json:"origin"`
	Deleted  bool      `gorm:"not null;default:false" json:"deleted"`
	// Conflict flags a record a keep-both resolution touched, for a person
	// to look at; the next accepted change clears it. ConflictOf, on a
	// conflict copy, names the record it was copied from.
	Conflict   bool   `gorm:"not null;default:false" json:"conflict,omitempty"`
	ConflictOf ids.ID `gorm:"not null;default:0" json:"conflict_of,omitempty"`
	// LocalVersion is the version the clinic gave the record in its last
	// accepted change, while no cloud change came after it: a clinic change
	// based on it builds on the clinic's own accepted work and is no conflict,
	// even if the cloud renumbered the version.
	LocalVersion version.V `gorm:"type:text;not null;default:''" json:"-"`
	LastChangeID ids.ID    `gorm:"not null" json:"last_change_id"`
	CloudSeq     int64     `gorm:"not null" json:"cloud_seq"`
	// Fence is the highest lockd fencing token of a save accepted for the
	// record; a change with a lower one comes from an expired lock.
	Fence int64 `gorm:"not null;default:0" json:"fence,omitempty"`
	// EditSession is the cloud edit session of the last save: a further
	// save in it bumps B, a new session bumps A (M18).
	EditSession string `gorm:"not null;default:''" json:"-"`
	// Unfenced marks content saved with the lock service unreachable.
	Unfenced bool `gorm:"not null;default:false" json:"unfenced,omitempty"`
	// RetentionState is what the clinic's retention policy did to the
	// record (M5, M6): "" (nothing), backed-up (kept, its file in cold
	// storage) or deleted (taken out of the cloud by an un-sync tombstone).
	RetentionState string `gorm:"not null;default:''" json:"retention_state,omitempty"`
	// Unsynced marks a tombstone that only took the record out of the
	// cloud (M7): the clinic keeps its own copy, so the tombstone's
	// content is not compared (records.Digest).
	Unsynced  bool      `gorm:"not null;default:false" json:"unsynced,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `gorm:"index" json:"updated_at"`
}

// Row is a record of kind C: one table per kind.
type Row[C records.Content] struct {
	Meta
	Data C `gorm:"embedded" json:"data"`
}

// TableName is the kind's table.
func (Row[C]) TableName() string {
	var c C
	s, _ := records.SpecOf(c.Kind())
	return s.Table
}

// Change is one accepted change in a clinic's sequence. Payload is the
// record's full content after the change (state, not a diff), so applying a
// change anywhere is idempotent. The changes_record index finds a record's
// changes (its versions, and anti-entropy's last change of each record of a
// differing bucket) without reading the clinic's whole sequence.
type Change struct {
	ClinicID    ids.ID    `gorm:"primaryKey;autoIncrement:false;uniqueIndex:changes_clinic_change,priority:1;index:changes_record,priority:1"`
	CloudSeq    int64     `gorm:"primaryKey;autoIncrement:false;index:changes_record,priority:4"`
	ChangeID    ids.ID    `gorm:"not null;uniqueIndex:changes_clinic_change,priority:2"`
	Kind        string    `gorm:"not null;index:changes_record,priority:2"`
	RecordID    ids.ID    `gorm:"not null;index:changes_record,priority:3"`
	Origin      string    `gorm:"not null"`
	BaseVersion version.V `gorm:"type:text;not null"`
	NewVersion  version.V `gorm:"type:text;not null"`
	Deleted     bool      `gorm:"not null"`
	Conflict    string    `gorm:"not null;default:''"`
	ConflictOf  ids.ID    `gorm:"not null;default:0"`
	Fence       int64     `gorm:"not null;default:0"`
	Unfenced    bool      `gorm:"not null;default:false"`
	Session     string    `gorm:"not null;default:''"`
	Unsync      bool      `gorm:"not null;default:false"`
	// SavedBy and SavedByName are the person who saved the change (M18):
	// the authenticated caller of a cloud save, or what the clinic's
	// envelope named; 0 and "" for no person.
	SavedBy     ids.ID    `gorm:"not null;default:0"`
	SavedByName string    `gorm:"not null;default:''"`
	Payload     string    `gorm:"type:text"`
	At          time.Time `gorm:"not null"`
	AcceptedAt  time.Time `gorm:"not null"`
}

// Parked is a clinic change waiting for a record it refers to (M26): it is
// applied, in arrival order, as soon as that record exists in the cloud.
type Parked struct {
	ID        int64  `gorm:"primaryKey"`
	ClinicID  ids.ID `gorm:"not null;index:parked_wait,priority:1;index:parked_record,priority:1;uniqueIndex:parked_change,priority:1"`
	WaitKind  string `gorm:"not null;index:parked_wait,priority:2"`
	WaitID    ids.ID `gorm:"not null;index:parked_wait,priority:3"`
	Kind      string `gorm:"not null;index:parked_record,priority:2"`
	RecordID  ids.ID `gorm:"not null;index:parked_record,priority:3"`
	ChangeID  ids.ID `gorm:"not null;uniqueIndex:parked_change,priority:2"`
	Envelope  string `gorm:"type:text;not null"`
	CreatedAt time.Time
}

// TableName is "parked".
func (Parked) TableName() string { return "parked" }

// Outbox lists accepted changes not yet confirmed by the broker on the down
// exchange. It is written in the same transaction as the change.
type Outbox struct {
	ID        int64  `gorm:"primaryKey"`
	ClinicID  ids.ID `gorm:"not null"`
	CloudSeq  int64  `gorm:"not null"`
	CreatedAt time.Time
}

// TableName keeps the table name singular-free and obvious.
func (Outbox) TableName() string { return "outbox" }
