package store

import (
	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// Record is a row of any kind (a *Row[C]); it marshals to the API's JSON.
type Record interface {
	meta() *Meta
	content() records.Content
	setContent(c records.Content)
	clone() Record // a copy of the row (its content shared: a save replaces it whole)
}

func (r *Row[C]) meta() *Meta                  { return &r.Meta }
func (r *Row[C]) content() records.Content     { return r.Data }
func (r *Row[C]) setContent(c records.Content) { r.Data = c.(C) }
func (r *Row[C]) clone() Record {
	c := *r
	return &c
}

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
