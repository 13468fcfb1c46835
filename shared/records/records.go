// Package records holds the content of each replicated record kind, as both
// servers store it and as it travels in an envelope's payload, with the
// validation both sides apply to it.
package records

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrInvalid wraps every validation error; the text names the field.
var ErrInvalid = errors.New("records: invalid")

// Patient is the content of a patient record.
type Patient struct {
	ChartNo   string `json:"chart_no"`
	Name      string `json:"name"`
	BirthDate string `json:"birth_date,omitempty"` // YYYY-MM-DD
	Sex       string `json:"sex,omitempty"`        // F, M, O or empty
	Phone     string `json:"phone,omitempty"`
	Notes     string `json:"notes,omitempty"`
}

// Validate checks p and trims surrounding space.
func (p *Patient) Validate() error {
	p.ChartNo = strings.TrimSpace(p.ChartNo)
	p.Name = strings.TrimSpace(p.Name)
	p.Phone = strings.TrimSpace(p.Phone)
	switch {
	case p.Name == "":
		return fmt.Errorf("%w: name is required", ErrInvalid)
	case utf8.RuneCountInString(p.Name) > 200:
		return fmt.Errorf("%w: name is longer than 200 characters", ErrInvalid)
	case utf8.RuneCountInString(p.ChartNo) > 64:
		return fmt.Errorf("%w: chart_no is longer than 64 characters", ErrInvalid)
	case utf8.RuneCountInString(p.Phone) > 64:
		return fmt.Errorf("%w: phone is longer than 64 characters", ErrInvalid)
	case utf8.RuneCountInString(p.Notes) > 10000:
		return fmt.Errorf("%w: notes are longer than 10000 characters", ErrInvalid)
	case p.Sex != "" && p.Sex != "F" && p.Sex != "M" && p.Sex != "O":
		return fmt.Errorf("%w: sex must be F, M, O or empty", ErrInvalid)
	}
	if p.BirthDate != "" {
		if _, err := time.Parse(time.DateOnly, p.BirthDate); err != nil {
			return fmt.Errorf("%w: birth_date must be YYYY-MM-DD", ErrInvalid)
		}
	}
	return nil
}
