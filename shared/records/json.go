package records

import (
	"bytes"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
)

// JSONText is a JSON value stored as text (a setting's value): it marshals as
// the raw JSON it holds, and is a plain text column on both databases.
type JSONText string

// MarshalJSON returns the held JSON, or null when empty.
func (j JSONText) MarshalJSON() ([]byte, error) {
	if j == "" {
		return []byte("null"), nil
	}
	if !json.Valid([]byte(j)) {
		return nil, fmt.Errorf("%w: value is not JSON", ErrInvalid)
	}
	return []byte(j), nil
}

// UnmarshalJSON keeps the raw JSON, compacted.
func (j *JSONText) UnmarshalJSON(b []byte) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return err
	}
	*j = JSONText(buf.String())
	return nil
}

// Value stores the text.
func (j JSONText) Value() (driver.Value, error) { return string(j), nil }

// Scan reads the text.
func (j *JSONText) Scan(src any) error {
	switch v := src.(type) {
	case string:
		*j = JSONText(v)
	case []byte:
		*j = JSONText(v)
	case nil:
		*j = ""
	default:
		return fmt.Errorf("records: cannot scan %T into JSONText", src)
	}
	return nil
}

// strictUnmarshal decodes one JSON value into v, refusing unknown fields and
// trailing data.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
