package store

import (
	"bytes"
	"encoding/json"
	"strconv"
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
	// SyncState is pending, synced, conflict or excluded (M6). Its index
	// (idx_<table>_sync_state, schema migration 00004) holds only pending
	// and conflict: a query uses it only with the state as a literal.
	SyncState string `gorm:"not null" json:"sync_state"`
	// SyncChoice is the user's choice for this record: always, never, or
	// empty for the clinic's sync scope (M4).
	SyncChoice string `gorm:"not null;default:''" json:"sync_choice,omitempty"`
	// Queued is set once a change of the record was queued for the cloud;
	// before that the cloud has nothing of it.
	Queued bool `gorm:"not null;default:false" json:"-"`
	// Backfilled is set when the backfill (not a live change) first sent
	// the record: its files are history too, sent after the records and
	// within the files' backfill window.
	Backfilled bool `gorm:"not null;default:false" json:"-"`
	// SortDate is the backfill's sort key: the record's study date (a
	// capture's, report's or project file's is its study's as of the
	// write), 9999-12-31 for kinds without one, which go first.
	SortDate string `gorm:"not null;default:''" json:"-"`
	// CloudVersion is the record's version in the cloud as last heard from
	// it (an un-synced record's tombstone there).
	CloudVersion version.V  `gorm:"type:text;not null;default:''" json:"-"`
	SyncedAt     *time.Time `json:"synced_at,omitempty"`
	// PendingChangeID is the local change the record waits to see accepted.
	PendingChangeID ids.ID     `gorm:"not null;default:0" json:"-"`
	PendingSince    *time.Time `json:"pending_since,omitempty"`
	CloudSeq        int64      `gorm:"not null;default:0" json:"cloud_seq"`
	// Fence is the highest lockd fencing token of a save accepted for the
	// record: a save with a lower one comes from an expired lock.
	Fence int64 `gorm:"not null;default:0" json:"fence,omitempty"`
	// EditSession is the edit session of the last save here: a further
	// save in the same session bumps B, a new session bumps A (M18).
	EditSession string `gorm:"not null;default:''" json:"-"`
	// Unfenced marks content saved with the lock service unreachable.
	Unfenced  bool      `gorm:"not null;default:false" json:"unfenced,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `gorm:"index" json:"updated_at"`
}

// Row is a record of kind C: one table per kind.
type Row[C records.Content] struct {
	Meta
	Data C `gorm:"embedded" json:"data"`
	// encoded is Data's JSON as a save encoded it for its change (nil:
	// not encoded, or changed since): the API's answer reuses it
	// (AppendRecordJSON). Unexported: neither a column nor a JSON field.
	encoded []byte
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
	// encodedContent is the content's JSON a save encoded (nil: none);
	// setEncodedContent records it.
	encodedContent() []byte
	setEncodedContent(b []byte)
}

func (r *Row[C]) meta() *Meta                  { return &r.Meta }
func (r *Row[C]) content() records.Content     { return r.Data }
func (r *Row[C]) setContent(c records.Content) { r.Data, r.encoded = c.(C), nil }
func (r *Row[C]) encodedContent() []byte       { return r.encoded }
func (r *Row[C]) setEncodedContent(b []byte)   { r.encoded = b }

// AppendRecordJSON appends r as the API answers it, json.Encoder's
// encoding of r with its newline (httpapi.WriteJSON), to b. A record just
// saved carries its content's JSON, encoded for its change's payload
// (json.Marshal, as the encoder encodes the content inside r): it is
// used as it is instead of encoding the content a second time.
// TestAppendRecordJSONMatchesTheEncoder holds the two to the same bytes.
func AppendRecordJSON(b []byte, r Record) ([]byte, error) {
	data := r.encodedContent()
	if data == nil {
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(r); err != nil {
			return b, err
		}
		return append(b, buf.Bytes()...), nil
	}
	// Row's JSON is Meta's fields (embedded), then "data": {…,"updated_at":…} → {…,"updated_at":…,"data":…}
	if out, ok := appendMeta(b, r.meta()); ok {
		b = out
	} else {
		m, err := json.Marshal(r.meta())
		if err != nil {
			return b, err
		}
		b = append(b, m[:len(m)-1]...)
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}', '\n'), nil
}

// appendMeta appends m's JSON as json.Marshal writes it, but for its
// closing brace, or reports false where json.Marshal fails (a time it
// refuses), b as it was. Through json.Marshal, Meta's times, versions and
// pointers (reflection, a method call and a compaction of its output for
// each) were a few per cent of the clinic's CPU per REST create.
// TestAppendMetaMatchesMarshal and FuzzAppendMeta hold it to json.Marshal,
// TestAppendMetaKnowsEveryField to Meta's fields.
func appendMeta(b []byte, m *Meta) ([]byte, bool) {
	start := len(b)
	b = append(b, `{"id":`...)
	b = wire.AppendID(b, m.ID)
	b = append(b, `,"clinic_id":`...)
	b = wire.AppendID(b, m.ClinicID)
	b = append(b, `,"kind":`...)
	b = wire.AppendString(b, string(m.Kind))
	b = append(b, `,"version":`...)
	b = wire.AppendVersion(b, m.Version)
	b = append(b, `,"origin":`...)
	b = wire.AppendString(b, m.Origin)
	b = append(b, `,"deleted":`...)
	b = strconv.AppendBool(b, m.Deleted)
	if m.ConflictOf != 0 {
		b = append(b, `,"conflict_of":`...)
		b = wire.AppendID(b, m.ConflictOf)
	}
	b = append(b, `,"sync_state":`...)
	b = wire.AppendString(b, m.SyncState)
	b = wire.AppendOmitEmpty(b, `,"sync_choice":`, m.SyncChoice)
	var ok bool
	if m.SyncedAt != nil {
		b = append(b, `,"synced_at":`...)
		if b, ok = wire.AppendTime(b, *m.SyncedAt); !ok {
			return b[:start], false
		}
	}
	if m.PendingSince != nil {
		b = append(b, `,"pending_since":`...)
		if b, ok = wire.AppendTime(b, *m.PendingSince); !ok {
			return b[:start], false
		}
	}
	b = append(b, `,"cloud_seq":`...)
	b = strconv.AppendInt(b, m.CloudSeq, 10)
	if m.Fence != 0 {
		b = append(b, `,"fence":`...)
		b = strconv.AppendInt(b, m.Fence, 10)
	}
	if m.Unfenced {
		b = append(b, `,"unfenced":true`...)
	}
	b = append(b, `,"created_at":`...)
	if b, ok = wire.AppendTime(b, m.CreatedAt); !ok {
		return b[:start], false
	}
	b = append(b, `,"updated_at":`...)
	if b, ok = wire.AppendTime(b, m.UpdatedAt); !ok {
		return b[:start], false
	}
	return b, true
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
	// createAll inserts rows of this kind, many per statement.
	createAll func(db *gorm.DB, rs []Record) error
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
		createAll: func(db *gorm.DB, rs []Record) error {
			rows := make([]*Row[C], len(rs))
			for i, r := range rs {
				rows[i] = r.(*Row[C])
			}
			return db.CreateInBatches(rows, rowsPerStatement(db, rows[0])).Error
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

// Version is one kept version of a record (M18): every save here and every
// change applied from the cloud. Rolling back writes an old version's
// content as a new version.
type Version struct {
	ID       int64     `gorm:"primaryKey" json:"-"`
	Kind     string    `gorm:"not null;uniqueIndex:versions_record,priority:1" json:"kind"`
	RecordID ids.ID    `gorm:"not null;uniqueIndex:versions_record,priority:2" json:"record_id"`
	Version  version.V `gorm:"type:text;not null;uniqueIndex:versions_record,priority:3" json:"version"`
	Deleted  bool      `gorm:"not null;default:false" json:"deleted"`
	Origin   string    `gorm:"not null" json:"origin"`
	ChangeID ids.ID    `gorm:"not null" json:"change_id"`
	Session  string    `gorm:"not null;default:''" json:"session,omitempty"`
	// SavedBy is the person who saved the version (their user record's
	// id, 0: no person) and SavedByName their username then: the
	// authenticated caller here, or what the other side recorded (M18).
	SavedBy     ids.ID    `gorm:"not null;default:0" json:"saved_by,omitempty"`
	SavedByName string    `gorm:"not null;default:''" json:"saved_by_name,omitempty"`
	Fence       int64     `gorm:"not null;default:0" json:"fence,omitempty"`
	Unfenced    bool      `gorm:"not null;default:false" json:"unfenced,omitempty"`
	Content     string    `gorm:"type:text;not null;default:''" json:"-"`
	At          time.Time `gorm:"not null" json:"at"`
}

// TableName is "versions".
func (Version) TableName() string { return "versions" }
