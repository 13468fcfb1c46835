package records

import (
	"errors"
	"strings"
	"testing"
)

func TestPatientValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Patient
		ok   bool
	}{
		{"minimal", Patient{Name: "Kim Minji"}, true},
		{"full", Patient{ChartNo: "C-1", Name: "Lee", BirthDate: "1980-02-29", Sex: "F", Phone: "010", Notes: "x"}, true},
		{"blank name", Patient{Name: "  "}, false},
		{"long name", Patient{Name: strings.Repeat("가", 201)}, false},
		{"bad date", Patient{Name: "a", BirthDate: "1980-02-30"}, false},
		{"bad sex", Patient{Name: "a", Sex: "X"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tt.p, err, tt.ok)
			}
		})
	}
}
