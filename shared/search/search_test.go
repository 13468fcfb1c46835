package search

import (
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/scsync/scsync/shared/httpapi"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		by, q      string
		wantBy     string
		wantPrefix string
	}{
		{"", "Kim Min", ByName, "kim min"},
		{"", "C-00123", ByChartNo, "c-00123"},
		{"", "1980-05", ByBirthDate, "1980-05"},
		{"", "1980-05-17", ByBirthDate, "1980-05-17"},
		{"", "1980", ByChartNo, "1980"}, // no dash: a chart number
		{"", "", ByName, ""},
		{ByBirthDate, "1980", ByBirthDate, "1980"},
		{"", "  Émile  ", ByName, "Émile"}, // ASCII folding only, as the indexes
	}
	for _, tt := range tests {
		q, err := Parse(tt.by, tt.q, "", 0)
		if err != nil || q.By != tt.wantBy || q.Prefix != tt.wantPrefix || q.Limit != DefaultLimit {
			t.Errorf("Parse(%q, %q) = %+v, %v; want by %s prefix %q", tt.by, tt.q, q, err, tt.wantBy, tt.wantPrefix)
		}
	}
	for _, bad := range []url.Values{{"by": {"phone"}}, {"limit": {"0"}}, {"limit": {"501"}}, {"limit": {"x"}}, {"after": {"!!"}}} {
		if _, err := FromURL(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("FromURL(%v) = %v, want ErrInvalid", bad, err)
		}
	}
	c := Cursor{Key: "kim", ID: 42}
	got, err := DecodeCursor(c.Encode())
	if err != nil || got != c {
		t.Errorf("DecodeCursor(Encode(%v)) = %v, %v", c, got, err)
	}
	if Upper("kim") <= "kim zzz" || Upper("kim") <= "kim\uffff" {
		t.Error("Upper(kim) does not bound every key starting with kim")
	}
}

// TestHTTPError: an invalid query is a 400 bad_request saying what was
// wrong (without the sentinel's text); any other error passes through.
func TestHTTPError(t *testing.T) {
	t.Parallel()
	_, err := FromURL(url.Values{"limit": {"many"}})
	var he *httpapi.Error
	if !errors.As(HTTPError(err), &he) || he.Status != http.StatusBadRequest || he.Code != httpapi.CodeBadRequest || he.Message != "limit must be a number" {
		t.Fatalf("HTTPError(%v) = %#v, want 400 bad_request \"limit must be a number\"", err, he)
	}
	other := errors.New("database is gone")
	if got := HTTPError(other); !errors.Is(got, other) || errors.As(got, &he) {
		t.Fatalf("HTTPError(%v) = %v, want it unchanged", other, got)
	}
}
