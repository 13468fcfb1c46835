// Package store is the cloud's PostgreSQL state: clinics, their records, the
// per-clinic change log ordered by cloud_seq, and the outbox the relay
// publishes down from. Every table is keyed by clinic first, so no query can
// reach a row without naming its clinic.
package store

import (
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

// Conflict policies (DESIGN.md, Replication).
const (
	PolicyLocalWins = "local-wins"
	PolicyCloudWins = "cloud-wins"
	PolicyKeepBoth  = "keep-both"
)

// Clinic is a tenant. LastSeq is its cloud_seq counter: the row lock taken to
// bump it serializes every accepted change of the clinic.
type Clinic struct {
	ID             ids.ID    `gorm:"primaryKey;autoIncrement:false" json:"id"`
	Name           string    `gorm:"not null" json:"name"`
	NodeID         int64     `gorm:"not null;uniqueIndex" json:"node_id"`
	TokenSHA256    string    `gorm:"not null;uniqueIndex" json:"-"`
	ConflictPolicy string    `gorm:"not null;default:local-wins" json:"conflict_policy"`
	LastSeq        int64     `gorm:"not null;default:0" json:"last_seq"`
	CreatedAt      time.Time `json:"created_at"`
}

// Patient is the cloud's copy of a patient record.
type Patient struct {
	ClinicID     ids.ID    `gorm:"primaryKey;autoIncrement:false" json:"clinic_id"`
	ID           ids.ID    `gorm:"primaryKey;autoIncrement:false" json:"id"`
	Version      version.V `gorm:"type:text;not null" json:"version"`
	Origin       string    `gorm:"not null" json:"origin"`
	ChartNo      string    `gorm:"not null;default:''" json:"chart_no"`
	Name         string    `gorm:"not null" json:"name"`
	BirthDate    string    `gorm:"not null;default:''" json:"birth_date,omitempty"`
	Sex          string    `gorm:"not null;default:''" json:"sex,omitempty"`
	Phone        string    `gorm:"not null;default:''" json:"phone,omitempty"`
	Notes        string    `gorm:"not null;default:''" json:"notes,omitempty"`
	Deleted      bool      `gorm:"not null;default:false" json:"deleted"`
	LastChangeID ids.ID    `gorm:"not null" json:"last_change_id"`
	CloudSeq     int64     `gorm:"not null" json:"cloud_seq"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `gorm:"index" json:"updated_at"`
}

// Change is one accepted change in a clinic's sequence. Payload is the
// record's full content after the change (state, not a diff), so applying a
// change anywhere is idempotent.
type Change struct {
	ClinicID    ids.ID    `gorm:"primaryKey;autoIncrement:false;uniqueIndex:changes_clinic_change,priority:1"`
	CloudSeq    int64     `gorm:"primaryKey;autoIncrement:false"`
	ChangeID    ids.ID    `gorm:"not null;uniqueIndex:changes_clinic_change,priority:2"`
	Kind        string    `gorm:"not null"`
	RecordID    ids.ID    `gorm:"not null"`
	Origin      string    `gorm:"not null"`
	BaseVersion version.V `gorm:"type:text;not null"`
	NewVersion  version.V `gorm:"type:text;not null"`
	Deleted     bool      `gorm:"not null"`
	Payload     string    `gorm:"type:text"`
	At          time.Time `gorm:"not null"`
	AcceptedAt  time.Time `gorm:"not null"`
}

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
