package store

import (
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Meta is what every record of every kind carries in the clinic.
type Meta struct {
	ID       ids.ID    `gorm:"primaryKey;autoIncrement:false" json:"id"`
	ClinicID ids.ID    `gorm:"not null" json:"clinic_id"`
	Kind     wire.Kind `gorm:"-" json:"kind"`
	Version  version.V `gorm:"type:text;not null" json:"version"`
	Origin   string    `gorm:"not null" json:"origin"`
	Deleted  bool      `gorm:"not null;default:false" json:"deleted"`
	// ConflictOf, on a keep-both conflict copy, names the record it was
	// copied from.
	ConflictOf ids.ID `gorm:"not null;default:0" json:"conflict_of,omitempty"`
	// SyncState is pending, synced, conflict or excluded (M6).
	SyncState string     `gorm:"not null;index" json:"sync_state"`
	SyncedAt  *time.Time `json:"synced_at,omitempty"`
	// PendingChangeID is the local change the record waits to see accepted.
	PendingChangeID ids.ID     `gorm:"not null;default:0" json:"-"`
	PendingSince    *time.Time `json:"pending_since,omitempty"`
	CloudSeq        int64      `gorm:"not null;default:0" json:"cloud_seq"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `gorm:"index" json:"updated_at"`
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

// Record is a row of any kind (a *Row[C]); it marshals to the API's JSON.
type Record interface {
	meta() *Meta
	content() records.Content
	setContent(c records.Content)
}

func (r *Row[C]) meta() *Meta                  { return &r.Meta }
func (r *Row[C]) content() records.Content     { return r.Data }
func (r *Row[C]) setContent(c records.Content) { r.Data = c.(C) }

// RecordMeta returns the common fields of r.
func RecordMeta(r Record) Meta { return *r.meta() }

// RecordContent returns the replicated content of r.
func RecordContent(r Record) records.Content { return r.content() }

// kindOps is what generic code needs to handle one kind's table.
type kindOps struct {
	spec   records.Spec
	model  any
	newRow func() Record
	find   func(db *gorm.DB) ([]Record, error)
}

func opsOf[C records.Content]() kindOps {
	var c C
	spec, _ := records.SpecOf(c.Kind())
	return kindOps{
		spec:   spec,
		model:  &Row[C]{},
		newRow: func() Record { return &Row[C]{Meta: Meta{Kind: spec.Kind}} },
		find: func(db *gorm.DB) ([]Record, error) {
			var rows []Row[C]
			if err := db.Find(&rows).Error; err != nil {
				return nil, err
			}
			out := make([]Record, len(rows))
			for i := range rows {
				rows[i].Kind = spec.Kind
				out[i] = &rows[i]
			}
			return out, nil
		},
	}
}

var kinds = map[wire.Kind]kindOps{
	wire.KindPatient:        opsOf[records.Patient](),
	wire.KindDoctor:         opsOf[records.Doctor](),
	wire.KindUser:           opsOf[records.User](),
	wire.KindReportTemplate: opsOf[records.ReportTemplate](),
	wire.KindSetting:        opsOf[records.Setting](),
	wire.KindStudy:          opsOf[records.Study](),
	wire.KindImage:          opsOf[records.Image](),
	wire.KindCapture:        opsOf[records.Capture](),
	wire.KindProjectFile:    opsOf[records.ProjectFile](),
	wire.KindReport:         opsOf[records.Report](),
}

func opsFor(k wire.Kind) (kindOps, error) {
	o, ok := kinds[k]
	if !ok {
		return o, records.ErrUnknownKind
	}
	return o, nil
}
