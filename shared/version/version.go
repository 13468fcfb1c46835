// Package version is the A.B record version of scsync (M18): the first save
// of a new edit session bumps A and resets B; each further save in the same
// session bumps B; a session without a save changes nothing; a new record
// starts at 1.0. The zero value 0.0 means "no version" (the record does not
// exist yet), which is what a create carries as its base.
package version

import (
	"bytes"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrSyntax is returned for text that is not of the form A.B.
var ErrSyntax = errors.New("version: invalid version")

// V is an A.B version.
type V struct {
	A uint32
	B uint32
}

// First is the version of a newly created record.
var First = V{A: 1}

// IsZero reports whether v is 0.0, "no version".
func (v V) IsZero() bool { return v == V{} }

// String returns "A.B".
func (v V) String() string {
	return strconv.FormatUint(uint64(v.A), 10) + "." + strconv.FormatUint(uint64(v.B), 10)
}

// NextSession is the version after the first save of a new edit session.
func (v V) NextSession() V { return V{A: v.A + 1} }

// NextSave is the version after a further save in the same session.
func (v V) NextSave() V { return V{A: v.A, B: v.B + 1} }

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than w.
func (v V) Compare(w V) int {
	switch {
	case v.A < w.A:
		return -1
	case v.A > w.A:
		return 1
	case v.B < w.B:
		return -1
	case v.B > w.B:
		return 1
	}
	return 0
}

// Less reports whether v is older than w.
func (v V) Less(w V) bool { return v.Compare(w) < 0 }

// Parse reads "A.B"; both parts are unsigned decimal numbers written
// without leading zeros, so every version has exactly one spelling.
func Parse(s string) (V, error) {
	a, b, ok := strings.Cut(s, ".")
	if !ok {
		return V{}, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	av, err1 := strconv.ParseUint(a, 10, 32)
	bv, err2 := strconv.ParseUint(b, 10, 32)
	leadingZero := func(p string) bool { return len(p) > 1 && p[0] == '0' }
	if err1 != nil || err2 != nil || a == "" || b == "" || a[0] == '+' || b[0] == '+' || leadingZero(a) || leadingZero(b) {
		return V{}, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	return V{A: uint32(av), B: uint32(bv)}, nil
}

// MarshalText writes "A.B" (JSON strings and YAML use it).
func (v V) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads "A.B".
func (v *V) UnmarshalText(b []byte) error {
	p, err := Parse(string(bytes.TrimSpace(b)))
	if err != nil {
		return err
	}
	*v = p
	return nil
}

// Value stores the version as its text form "A.B".
func (v V) Value() (driver.Value, error) { return v.String(), nil }

// Scan reads the text form.
func (v *V) Scan(src any) error {
	switch s := src.(type) {
	case string:
		if s == "" {
			*v = V{}
			return nil
		}
		return v.UnmarshalText([]byte(s))
	case []byte:
		if len(s) == 0 {
			*v = V{}
			return nil
		}
		return v.UnmarshalText(s)
	case nil:
		*v = V{}
		return nil
	}
	return fmt.Errorf("%w: cannot scan %T", ErrSyntax, src)
}
