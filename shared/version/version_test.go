package version

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    V
		wantErr bool
	}{
		{"1.0", V{1, 0}, false},
		{"12.345", V{12, 345}, false},
		{"0.0", V{}, false},
		{"4294967295.1", V{4294967295, 1}, false},
		{"1", V{}, true},
		{"1.", V{}, true},
		{".1", V{}, true},
		{"1.2.3", V{}, true},
		{"-1.0", V{}, true},
		{"+1.0", V{}, true},
		{"a.b", V{}, true},
		{"4294967296.0", V{}, true},
		{"", V{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("Parse(%q) err = %v, want ErrSyntax", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("Parse(%q).String() = %q", tt.in, got.String())
			}
		})
	}
}

func TestOrdering(t *testing.T) {
	ordered := []V{{}, {1, 0}, {1, 1}, {1, 9}, {1, 10}, {2, 0}, {9, 0}, {10, 0}}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := ordered[i].Compare(ordered[j]); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func TestSessionRules(t *testing.T) {
	// A created record is 1.0; a new session's first save bumps A; more saves bump B.
	v := First
	steps := []struct {
		op   string
		want string
	}{
		{"save", "1.1"}, // further save in the creating session
		{"session", "2.0"},
		{"save", "2.1"},
		{"save", "2.2"},
		{"session", "3.0"},
	}
	for _, s := range steps {
		if s.op == "save" {
			v = v.NextSave()
		} else {
			v = v.NextSession()
		}
		if v.String() != s.want {
			t.Fatalf("after %s: %v, want %s", s.op, v, s.want)
		}
	}
}

func TestJSON(t *testing.T) {
	type doc struct {
		V V `json:"v"`
	}
	b, err := json.Marshal(doc{V{3, 7}})
	if err != nil || string(b) != `{"v":"3.7"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"v":"10.2"}`), &d); err != nil || d.V != (V{10, 2}) {
		t.Fatalf("Unmarshal = %v, %v", d.V, err)
	}
	if err := json.Unmarshal([]byte(`{"v":"x"}`), &d); !errors.Is(err, ErrSyntax) {
		t.Fatalf("Unmarshal bad = %v, want ErrSyntax", err)
	}
}

func TestScanValue(t *testing.T) {
	var v V
	if err := v.Scan("4.2"); err != nil || v != (V{4, 2}) {
		t.Fatalf("Scan = %v, %v", v, err)
	}
	if err := v.Scan([]byte("5.0")); err != nil || v != (V{5, 0}) {
		t.Fatalf("Scan bytes = %v, %v", v, err)
	}
	if err := v.Scan(42); err == nil {
		t.Fatal("Scan(int) succeeded, want error")
	}
	got, _ := V{7, 1}.Value()
	if got != "7.1" {
		t.Fatalf("Value = %v", got)
	}
}

// FuzzParse: Parse accepts exactly what String prints back.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1.0", "0.0", "12.345", "1.", ".1", "-1.0", "01.0", "1.0.0", " 1.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			return
		}
		if v.String() != s {
			t.Fatalf("Parse(%q) = %v, which prints as %q", s, v, v.String())
		}
	})
}
