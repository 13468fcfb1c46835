package viewer

import (
	"encoding/json"
	"reflect"
	"strings"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// Field is one field of a record kind as the page's form editor shows it.
type Field struct {
	Name string `json:"name"`
	// Type is text, longtext, date, number, bool, id, list or json.
	Type string `json:"type"`
	// Options, when set, are the values allowed (a select).
	Options []string `json:"options,omitempty"`
}

// Kind is a record kind as the page knows it: its collection, parent and
// fields (generated from the Go content type, so a new field shows up in
// the form without touching the page).
type Kind struct {
	Kind        wire.Kind `json:"kind"`
	Collection  string    `json:"collection"`
	Parent      wire.Kind `json:"parent,omitempty"`
	ParentField string    `json:"parent_field,omitempty"`
	Fields      []Field   `json:"fields"`
}

// contents are a zero value of each kind's content.
var contents = map[wire.Kind]records.Content{
	wire.KindPatient:        records.Patient{},
	wire.KindDoctor:         records.Doctor{},
	wire.KindUser:           records.User{},
	wire.KindReportTemplate: records.ReportTemplate{},
	wire.KindSetting:        records.Setting{},
	wire.KindStudy:          records.Study{},
	wire.KindImage:          records.Image{},
	wire.KindCapture:        records.Capture{},
	wire.KindProjectFile:    records.ProjectFile{},
	wire.KindReport:         records.Report{},
}

// longText are fields edited in a text area.
var longText = map[string]bool{"notes": true, "body": true, "description": true}

// options are fields with a fixed set of values.
var options = map[string][]string{
	"sex":      {"", "F", "M", "O"},
	"modality": append([]string{""}, records.Modalities...),
}

// Kinds describes every record kind but users (persons are managed through
// the users API, never edited as records), parents first.
func Kinds() []Kind {
	idType := reflect.TypeFor[ids.ID]()
	var out []Kind
	for _, s := range records.Kinds {
		c, ok := contents[s.Kind]
		if !ok || s.Kind == wire.KindUser {
			continue
		}
		k := Kind{Kind: s.Kind, Collection: s.Table, Parent: s.Parent, ParentField: s.ParentField}
		t := reflect.TypeOf(c)
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			typ := "text"
			switch {
			case f.Type == idType:
				typ = "id"
			case f.Type.Kind() == reflect.Bool:
				typ = "bool"
			case f.Type.Kind() >= reflect.Int && f.Type.Kind() <= reflect.Float64:
				typ = "number"
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
				typ = "list"
			case f.Type == reflect.TypeFor[records.JSONText]():
				typ = "json"
			case strings.HasSuffix(name, "_date"):
				typ = "date"
			case longText[name]:
				typ = "longtext"
			}
			k.Fields = append(k.Fields, Field{Name: name, Type: typ, Options: options[name]})
		}
		out = append(out, k)
	}
	return out
}

// kindsJSON is Kinds for the page's data-kinds attribute.
func kindsJSON() string {
	b, err := json.Marshal(Kinds())
	if err != nil {
		panic(err) // plain structs
	}
	return string(b)
}
