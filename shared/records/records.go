// Package records holds the content of each replicated record kind (M3), as
// both servers store it and as it travels in an envelope's payload, with the
// validation both sides apply to it and the references between kinds that
// decide the order changes are applied in (parents before children, M26).
//
// Content is state, not a diff: a payload always carries the whole content of
// the record after the change, so applying it twice is harmless.
package records

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// ErrInvalid wraps every validation error; the text names the field.
var ErrInvalid = errors.New("records: invalid")

// ErrUnknownKind: the kind is not one of Kinds.
var ErrUnknownKind = errors.New("records: unknown kind")

// Ref names a record another record refers to.
type Ref struct {
	Kind wire.Kind
	ID   ids.ID
}

// Content is the replicated part of one record kind. Methods have value
// receivers so a content type can be used as a plain struct everywhere.
type Content interface {
	// Kind is the record kind this content belongs to.
	Kind() wire.Kind
	// Validate checks the content; errors wrap ErrInvalid and name the field.
	Validate() error
	// Refs lists the records this one refers to (non-zero ids only). They
	// are applied before it on both sides.
	Refs() []Ref
}

// Spec describes a kind.
type Spec struct {
	Kind wire.Kind
	// Table is the table name on both sides and the collection name in the
	// REST APIs (/v1/{Table}).
	Table string
	// Parent is the kind this one belongs to, if any, and ParentField the
	// JSON and column name holding its id (lists filter on it).
	Parent      wire.Kind
	ParentField string
	// Modality reports whether the kind carries an imaging modality (the
	// sync scope can select on it).
	Modality bool
}

// Kinds lists every kind, parents before children.
var Kinds = []Spec{
	{Kind: wire.KindPatient, Table: "patients"},
	{Kind: wire.KindDoctor, Table: "doctors"},
	{Kind: wire.KindUser, Table: "users"},
	{Kind: wire.KindReportTemplate, Table: "report_templates"},
	{Kind: wire.KindSetting, Table: "settings"},
	{Kind: wire.KindStudy, Table: "studies", Parent: wire.KindPatient, ParentField: "patient_id"},
	{Kind: wire.KindImage, Table: "images", Parent: wire.KindStudy, ParentField: "study_id", Modality: true},
	{Kind: wire.KindCapture, Table: "captures", Parent: wire.KindStudy, ParentField: "study_id"},
	{Kind: wire.KindProjectFile, Table: "project_files", Parent: wire.KindStudy, ParentField: "study_id"},
	{Kind: wire.KindReport, Table: "reports", Parent: wire.KindStudy, ParentField: "study_id"},
}

// SpecOf returns the spec of kind k.
func SpecOf(k wire.Kind) (Spec, bool) {
	i := slices.IndexFunc(Kinds, func(s Spec) bool { return s.Kind == k })
	if i < 0 {
		return Spec{}, false
	}
	return Kinds[i], true
}

// SpecOfTable returns the spec whose table (API collection) is name.
func SpecOfTable(name string) (Spec, bool) {
	i := slices.IndexFunc(Kinds, func(s Spec) bool { return s.Table == name })
	if i < 0 {
		return Spec{}, false
	}
	return Kinds[i], true
}

// Decode parses a payload of kind k strictly (unknown fields are an error)
// and validates it.
func Decode(k wire.Kind, payload []byte) (Content, error) {
	// A payload in the plain form clients write (a patient's, say) is read
	// without encoding/json, whose scan of it would be the second after
	// wire.Decode's on the cloud's up path; DecodeFlat takes only what
	// encoding/json reads as the same valid content, and blanks after the
	// object are all Decode allows after it too.
	if c, n, ok := DecodeFlat(k, payload); ok && wire.SkipSpace(payload, n) == len(payload) {
		return c, nil
	}
	return decodeStrict(k, payload)
}

// decodeStrict is Decode with encoding/json alone.
func decodeStrict(k wire.Kind, payload []byte) (Content, error) {
	c, err := decoders[k](payload)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

var decoders = map[wire.Kind]func([]byte) (Content, error){
	wire.KindPatient:        decodeAs[Patient],
	wire.KindDoctor:         decodeAs[Doctor],
	wire.KindUser:           decodeAs[User],
	wire.KindReportTemplate: decodeAs[ReportTemplate],
	wire.KindSetting:        decodeAs[Setting],
	wire.KindStudy:          decodeAs[Study],
	wire.KindImage:          decodeAs[Image],
	wire.KindCapture:        decodeAs[Capture],
	wire.KindProjectFile:    decodeAs[ProjectFile],
	wire.KindReport:         decodeAs[Report],
}

func init() { //nolint:gochecknoinits // a consistency check of two static tables, no side effects
	for _, s := range Kinds {
		if decoders[s.Kind] == nil || nextDecoders[s.Kind] == nil || !wire.KnownKind(s.Kind) {
			panic("records: kind " + string(s.Kind) + " is not fully registered")
		}
	}
}

// DecodeNext reads the next JSON value of dec as content of kind k and
// validates it: Decode for content inside a larger document (a request
// body), read in the same pass as the rest of it. dec's settings apply; a
// strict one (DisallowUnknownFields) refuses unknown fields as Decode does.
func DecodeNext(k wire.Kind, dec *json.Decoder) (Content, error) {
	next, ok := nextDecoders[k]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKind, k)
	}
	c, err := next(dec)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

var nextDecoders = map[wire.Kind]func(*json.Decoder) (Content, error){
	wire.KindPatient:        decodeNextAs[Patient],
	wire.KindDoctor:         decodeNextAs[Doctor],
	wire.KindUser:           decodeNextAs[User],
	wire.KindReportTemplate: decodeNextAs[ReportTemplate],
	wire.KindSetting:        decodeNextAs[Setting],
	wire.KindStudy:          decodeNextAs[Study],
	wire.KindImage:          decodeNextAs[Image],
	wire.KindCapture:        decodeNextAs[Capture],
	wire.KindProjectFile:    decodeNextAs[ProjectFile],
	wire.KindReport:         decodeNextAs[Report],
}

func decodeNextAs[C Content](dec *json.Decoder) (Content, error) {
	var c C
	if err := dec.Decode(&c); err != nil {
		var zero C
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, zero.Kind(), err)
	}
	return c, nil
}

func decodeAs[C Content](b []byte) (Content, error) {
	var c C
	if err := strictUnmarshal(b, &c); err != nil {
		var zero C
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, zero.Kind(), err)
	}
	return c, nil
}

// Patient is the content of a patient record.
type Patient struct {
	ChartNo   string `json:"chart_no" gorm:"not null;default:''"`
	Name      string `json:"name" gorm:"not null;default:''"`
	BirthDate string `json:"birth_date,omitempty" gorm:"not null;default:''"` // YYYY-MM-DD
	Sex       string `json:"sex,omitempty" gorm:"not null;default:''"`        // F, M, O or empty
	Phone     string `json:"phone,omitempty" gorm:"not null;default:''"`
	Notes     string `json:"notes,omitempty" gorm:"not null;default:''"`
}

// Kind is patient.
func (Patient) Kind() wire.Kind { return wire.KindPatient }

// Refs is empty: a patient refers to nothing.
func (Patient) Refs() []Ref { return nil }

// Validate checks p.
func (p Patient) Validate() error {
	return check(
		required("name", p.Name), maxLen("name", p.Name, 200), maxLen("chart_no", p.ChartNo, 64),
		maxLen("phone", p.Phone, 64), maxLen("notes", p.Notes, 10000), date("birth_date", p.BirthDate),
		oneOf("sex", p.Sex, "", "F", "M", "O"),
	)
}

// Doctor is the content of a doctor record.
type Doctor struct {
	Name      string `json:"name" gorm:"not null;default:''"`
	LicenseNo string `json:"license_no,omitempty" gorm:"not null;default:''"`
	Specialty string `json:"specialty,omitempty" gorm:"not null;default:''"`
	Email     string `json:"email,omitempty" gorm:"not null;default:''"`
	Phone     string `json:"phone,omitempty" gorm:"not null;default:''"`
	Retired   bool   `json:"retired,omitempty" gorm:"not null;default:false"`
}

// Kind is doctor.
func (Doctor) Kind() wire.Kind { return wire.KindDoctor }

// Refs is empty.
func (Doctor) Refs() []Ref { return nil }

// Validate checks d.
func (d Doctor) Validate() error {
	return check(required("name", d.Name), maxLen("name", d.Name, 200), maxLen("license_no", d.LicenseNo, 64),
		maxLen("specialty", d.Specialty, 100), maxLen("email", d.Email, 254), maxLen("phone", d.Phone, 64))
}

// User is a person's account. It replicates like every record, its password
// hash with it, so a person has one account in the clinic and in the cloud;
// the APIs never return the hash (see the users routes of each server).
type User struct {
	Username    string `json:"username" gorm:"not null;default:''"`
	DisplayName string `json:"display_name,omitempty" gorm:"not null;default:''"`
	// Role is viewer (reads), editor (edits; doctor and staff are older
	// names for it) or admin (accounts, scope, restore, backups).
	Role     string `json:"role" gorm:"not null;default:''"`
	Email    string `json:"email,omitempty" gorm:"not null;default:''"`
	DoctorID ids.ID `json:"doctor_id,omitempty" gorm:"not null;default:0"`
	Disabled bool   `json:"disabled,omitempty" gorm:"not null;default:false"`
	// PasswordHash is an argon2id hash (empty: the person cannot log in).
	PasswordHash string `json:"password_hash,omitempty" gorm:"not null;default:''"`
}

// Kind is user.
func (User) Kind() wire.Kind { return wire.KindUser }

// Refs is the doctor the account belongs to, if any.
func (u User) Refs() []Ref { return refs(Ref{wire.KindDoctor, u.DoctorID}) }

var usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Validate checks u.
func (u User) Validate() error {
	var bad error
	if !usernameRE.MatchString(u.Username) {
		bad = fmt.Errorf("%w: username must be 1-64 of a-z 0-9 . _ - starting with a letter or digit", ErrInvalid)
	}
	return check(bad, oneOf("role", u.Role, "admin", "editor", "doctor", "staff", "viewer"),
		maxLen("password_hash", u.PasswordHash, 256),
		maxLen("display_name", u.DisplayName, 200), maxLen("email", u.Email, 254), id("doctor_id", u.DoctorID))
}

// ReportTemplate is the content of a report template.
type ReportTemplate struct {
	Name     string `json:"name" gorm:"not null;default:''"`
	Modality string `json:"modality,omitempty" gorm:"not null;default:''"`
	Body     string `json:"body" gorm:"not null;default:''"`
}

// Kind is report_template.
func (ReportTemplate) Kind() wire.Kind { return wire.KindReportTemplate }

// Refs is empty.
func (ReportTemplate) Refs() []Ref { return nil }

// Validate checks t.
func (t ReportTemplate) Validate() error {
	return check(required("name", t.Name), maxLen("name", t.Name, 200), modality("modality", t.Modality, true),
		maxLen("body", t.Body, 100000))
}

// Setting is one clinic setting (key and a JSON value).
type Setting struct {
	Key   string   `json:"key" gorm:"not null;default:''"`
	Value JSONText `json:"value" gorm:"type:text;not null;default:'null'"`
}

// Kind is setting.
func (Setting) Kind() wire.Kind { return wire.KindSetting }

// Refs is empty.
func (Setting) Refs() []Ref { return nil }

var settingKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,127}$`)

// Validate checks s.
func (s Setting) Validate() error {
	var bad error
	switch {
	case !settingKeyRE.MatchString(s.Key):
		bad = fmt.Errorf("%w: key must be 1-128 of a-z 0-9 _ . - starting with a letter", ErrInvalid)
	case s.Value == "" || !json.Valid([]byte(s.Value)):
		bad = fmt.Errorf("%w: value must be JSON", ErrInvalid)
	case len(s.Value) > 65536:
		bad = fmt.Errorf("%w: value is larger than 64 KiB", ErrInvalid)
	}
	return bad
}

// Study is an examination of a patient: the parent of images, captures,
// project files and reports.
type Study struct {
	PatientID   ids.ID `json:"patient_id" gorm:"not null;default:0;index"`
	DoctorID    ids.ID `json:"doctor_id,omitempty" gorm:"not null;default:0"`
	StudyDate   string `json:"study_date" gorm:"not null;default:''"` // YYYY-MM-DD
	Description string `json:"description,omitempty" gorm:"not null;default:''"`
	AccessionNo string `json:"accession_no,omitempty" gorm:"not null;default:''"`
}

// Kind is study.
func (Study) Kind() wire.Kind { return wire.KindStudy }

// Refs are the patient and the doctor.
func (s Study) Refs() []Ref {
	return refs(Ref{wire.KindPatient, s.PatientID}, Ref{wire.KindDoctor, s.DoctorID})
}

// Validate checks s.
func (s Study) Validate() error {
	return check(requiredID("patient_id", s.PatientID), id("doctor_id", s.DoctorID),
		required("study_date", s.StudyDate), date("study_date", s.StudyDate),
		maxLen("description", s.Description, 2000), maxLen("accession_no", s.AccessionNo, 64))
}

// Modalities an image can have (the sync scope selects on them).
var Modalities = []string{"PANO", "CEPH", "CBCT", "INTRAORAL", "PHOTO", "SCAN", "OTHER"}

// Image is an image's metadata. Its file is immutable and content-addressed
// by SHA256 (M19); editing metadata never touches the file, and a derived
// image is a new record naming its source in DerivedFrom.
type Image struct {
	StudyID     ids.ID   `json:"study_id" gorm:"not null;default:0;index"`
	DoctorID    ids.ID   `json:"doctor_id,omitempty" gorm:"not null;default:0"` // doctor in charge
	Modality    string   `json:"modality" gorm:"not null;default:''"`
	StudyDate   string   `json:"study_date" gorm:"not null;default:'';index"`
	Tags        []string `json:"tags,omitempty" gorm:"serializer:json;type:text;not null;default:'null'"`
	FileName    string   `json:"file_name,omitempty" gorm:"not null;default:''"`
	ContentType string   `json:"content_type,omitempty" gorm:"not null;default:''"`
	SHA256      string   `json:"sha256,omitempty" gorm:"column:sha256;not null;default:'';index"`
	Size        int64    `json:"size,omitempty" gorm:"not null;default:0"`
	DerivedFrom ids.ID   `json:"derived_from,omitempty" gorm:"not null;default:0"`
	Notes       string   `json:"notes,omitempty" gorm:"not null;default:''"`
}

// Kind is image.
func (Image) Kind() wire.Kind { return wire.KindImage }

// Refs are the study, the doctor in charge and the source image.
func (im Image) Refs() []Ref {
	return refs(Ref{wire.KindStudy, im.StudyID}, Ref{wire.KindDoctor, im.DoctorID}, Ref{wire.KindImage, im.DerivedFrom})
}

// Validate checks im.
func (im Image) Validate() error {
	var bad error
	if len(im.Tags) > 64 {
		bad = fmt.Errorf("%w: more than 64 tags", ErrInvalid)
	}
	for _, t := range im.Tags {
		if strings.TrimSpace(t) == "" || utf8.RuneCountInString(t) > 64 {
			bad = fmt.Errorf("%w: a tag is empty or longer than 64 characters", ErrInvalid)
		}
	}
	return check(bad, requiredID("study_id", im.StudyID), id("doctor_id", im.DoctorID), id("derived_from", im.DerivedFrom),
		modality("modality", im.Modality, false), required("study_date", im.StudyDate), date("study_date", im.StudyDate),
		maxLen("file_name", im.FileName, 255), maxLen("content_type", im.ContentType, 127),
		sha("sha256", im.SHA256), nonNegative("size", im.Size), maxLen("notes", im.Notes, 10000))
}

// Capture is a capture image taken from a viewer (a screenshot of a view).
type Capture struct {
	StudyID ids.ID `json:"study_id" gorm:"not null;default:0;index"`
	ImageID ids.ID `json:"image_id,omitempty" gorm:"not null;default:0"`
	Title   string `json:"title,omitempty" gorm:"not null;default:''"`
	SHA256  string `json:"sha256,omitempty" gorm:"column:sha256;not null;default:'';index"`
	Size    int64  `json:"size,omitempty" gorm:"not null;default:0"`
}

// Kind is capture.
func (Capture) Kind() wire.Kind { return wire.KindCapture }

// Refs are the study and the captured image.
func (c Capture) Refs() []Ref {
	return refs(Ref{wire.KindStudy, c.StudyID}, Ref{wire.KindImage, c.ImageID})
}

// Validate checks c.
func (c Capture) Validate() error {
	return check(requiredID("study_id", c.StudyID), id("image_id", c.ImageID), maxLen("title", c.Title, 200),
		sha("sha256", c.SHA256), nonNegative("size", c.Size))
}

// ProjectFile is a viewer project (e.g. an implant plan) of a study.
type ProjectFile struct {
	StudyID ids.ID `json:"study_id" gorm:"not null;default:0;index"`
	Name    string `json:"name" gorm:"not null;default:''"`
	Format  string `json:"format,omitempty" gorm:"not null;default:''"`
	SHA256  string `json:"sha256,omitempty" gorm:"column:sha256;not null;default:'';index"`
	Size    int64  `json:"size,omitempty" gorm:"not null;default:0"`
}

// Kind is project_file.
func (ProjectFile) Kind() wire.Kind { return wire.KindProjectFile }

// Refs is the study.
func (p ProjectFile) Refs() []Ref { return refs(Ref{wire.KindStudy, p.StudyID}) }

// Validate checks p.
func (p ProjectFile) Validate() error {
	return check(requiredID("study_id", p.StudyID), required("name", p.Name), maxLen("name", p.Name, 255),
		maxLen("format", p.Format, 64), sha("sha256", p.SHA256), nonNegative("size", p.Size))
}

// Report is a diagnostic report of a study.
type Report struct {
	StudyID    ids.ID `json:"study_id" gorm:"not null;default:0;index"`
	DoctorID   ids.ID `json:"doctor_id,omitempty" gorm:"not null;default:0"`
	TemplateID ids.ID `json:"template_id,omitempty" gorm:"not null;default:0"`
	Title      string `json:"title" gorm:"not null;default:''"`
	Body       string `json:"body,omitempty" gorm:"not null;default:''"`
	Status     string `json:"status" gorm:"not null;default:''"` // draft or final
}

// Kind is report.
func (Report) Kind() wire.Kind { return wire.KindReport }

// Refs are the study, the doctor and the template.
func (r Report) Refs() []Ref {
	return refs(Ref{wire.KindStudy, r.StudyID}, Ref{wire.KindDoctor, r.DoctorID}, Ref{wire.KindReportTemplate, r.TemplateID})
}

// Validate checks r.
func (r Report) Validate() error {
	return check(requiredID("study_id", r.StudyID), id("doctor_id", r.DoctorID), id("template_id", r.TemplateID),
		required("title", r.Title), maxLen("title", r.Title, 200), maxLen("body", r.Body, 200000),
		oneOf("status", r.Status, "draft", "final"))
}

func refs(rs ...Ref) []Ref {
	out := rs[:0]
	for _, r := range rs {
		if r.ID != 0 {
			out = append(out, r)
		}
	}
	return out
}

// check returns the first non-nil error.
func check(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func required(field, v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("%w: %s is required", ErrInvalid, field)
	}
	return nil
}

func maxLen(field, v string, n int) error {
	if utf8.RuneCountInString(v) > n {
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, field, n)
	}
	return nil
}

func date(field, v string) error {
	if v == "" {
		return nil
	}
	if _, err := time.Parse(time.DateOnly, v); err != nil {
		return fmt.Errorf("%w: %s must be YYYY-MM-DD", ErrInvalid, field)
	}
	return nil
}

func oneOf(field, v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("%w: %s must be one of %s", ErrInvalid, field, strings.Join(quoteAll(allowed), ", "))
}

func modality(field, v string, optional bool) error {
	if optional && v == "" {
		return nil
	}
	return oneOf(field, v, Modalities...)
}

func quoteAll(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

func id(field string, v ids.ID) error {
	if v < 0 {
		return fmt.Errorf("%w: %s is not an id", ErrInvalid, field)
	}
	return nil
}

func requiredID(field string, v ids.ID) error {
	if v <= 0 {
		return fmt.Errorf("%w: %s is required", ErrInvalid, field)
	}
	return nil
}

var shaRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func sha(field, v string) error {
	if v != "" && !shaRE.MatchString(v) {
		return fmt.Errorf("%w: %s must be 64 lowercase hex digits", ErrInvalid, field)
	}
	return nil
}

func nonNegative(field string, v int64) error {
	if v < 0 {
		return fmt.Errorf("%w: %s must not be negative", ErrInvalid, field)
	}
	return nil
}

// Digest hashes the replicated state of one record: version, tombstone,
// conflict copy mark, creation time (to the millisecond) and content — a
// tombstone's content too. Both sides compute it the same way, so
// comparing digests proves they converged. c is nil only for an un-sync
// tombstone, whose content the clinic keeps as its own.
func Digest(v version.V, deleted bool, conflictOf ids.ID, created time.Time, c Content) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%t|%s|%d|", v, deleted, conflictOf, created.UnixMilli())
	if c != nil {
		b, _ := json.Marshal(c)
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}
