package filekey

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/ids"
)

const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestKey(t *testing.T) {
	tests := []struct {
		clinic ids.ID
		sha    string
		want   string
	}{
		{1, sha, "clinics/1/sha256/" + sha},
		{123456789012, sha, "clinics/123456789012/sha256/" + sha},
	}
	for _, tt := range tests {
		got := Key(tt.clinic, tt.sha)
		if got != tt.want {
			t.Errorf("Key(%d, %s) = %s, want %s", tt.clinic, tt.sha, got, tt.want)
		}
		if !strings.HasPrefix(got, ClinicPrefix(tt.clinic)) {
			t.Errorf("Key(%d) = %s, not under ClinicPrefix %s", tt.clinic, got, ClinicPrefix(tt.clinic))
		}
		c, s, err := ParseKey(got)
		if err != nil || c != tt.clinic || s != tt.sha {
			t.Errorf("ParseKey(%s) = %d, %s, %v", got, c, s, err)
		}
	}
	// Clinic 1's prefix must not be a prefix of clinic 12's keys.
	if strings.HasPrefix(Key(12, sha), ClinicPrefix(1)) {
		t.Errorf("ClinicPrefix(1) is a prefix of Key(12)")
	}
}

func TestParseKeyInvalid(t *testing.T) {
	for _, k := range []string{
		"", "clinics/", "clinics/1/sha256/", "clinics/x/sha256/" + sha, "clinics/0/sha256/" + sha,
		"clinics/1/sha256/" + sha + "/x", "clinics/1/../2/sha256/" + sha, "other/1/sha256/" + sha,
		"clinics/01/sha256/" + sha, "clinics/1/sha256/" + strings.ToUpper(sha),
	} {
		if _, _, err := ParseKey(k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParseKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}

func TestParseSHA256(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{sha, sha, true},
		{strings.ToUpper(sha), sha, true},
		{sha[:63], "", false},
		{sha + "0", "", false},
		{"zz" + sha[2:], "", false},
		{"../../" + sha[6:], "", false},
	}
	for _, tt := range tests {
		got, err := ParseSHA256(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSHA256(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidSHA256) {
			t.Errorf("ParseSHA256(%q) error %v is not ErrInvalidSHA256", tt.in, err)
		}
	}
}

func TestPartLayout(t *testing.T) {
	tests := []struct {
		size, preferred int64
		wantSize        int64
		wantCount       int
		wantLast        int64
	}{
		{64 * MiB, 8 * MiB, 8 * MiB, 8, 8 * MiB},
		{64*MiB + 1, 8 * MiB, 8 * MiB, 9, 1},
		{GiB, 16 * MiB, 16 * MiB, 64, 16 * MiB},
		{GiB, 1 * MiB, 8 * MiB, 128, 8 * MiB}, // floor
		{200 * GiB, 8 * MiB, 21 * MiB, 9753, 200*GiB - 9752*21*MiB},
	}
	for _, tt := range tests {
		ps := PartSizeFor(tt.size, tt.preferred)
		n := PartCount(tt.size, ps)
		if ps != tt.wantSize || n != tt.wantCount || n > MaxParts {
			t.Errorf("PartSizeFor(%d, %d) = %d × %d, want %d × %d", tt.size, tt.preferred, ps, n, tt.wantSize, tt.wantCount)
			continue
		}
		var total int64
		for i := 1; i <= n; i++ {
			off, l, ok := PartRange(tt.size, ps, i)
			if !ok || off != total {
				t.Fatalf("PartRange(%d, %d, %d) = %d, %d, %v; want offset %d", tt.size, ps, i, off, l, ok, total)
			}
			total += l
			if i == n && l != tt.wantLast {
				t.Errorf("last part of %d = %d bytes, want %d", tt.size, l, tt.wantLast)
			}
		}
		if total != tt.size {
			t.Errorf("parts of %d sum to %d", tt.size, total)
		}
		for _, bad := range []int{0, n + 1} {
			if _, _, ok := PartRange(tt.size, ps, bad); ok {
				t.Errorf("PartRange(%d, %d, %d) ok, want not ok", tt.size, ps, bad)
			}
		}
	}
}

func TestPath(t *testing.T) {
	got := Path(PathPartURLs, 42, sha)
	want := "/v1/clinics/42/files/" + sha + "/upload/part-urls"
	if got != want {
		t.Errorf("Path(PathPartURLs) = %s, want %s", got, want)
	}
}

func TestPresignedRequest(t *testing.T) {
	p := Presigned{Header: map[string]string{"Content-Length": "5", "host": "s3", "x-amz-checksum-sha256": "abc", "Content-Type": "image/png"}}
	h := http.Header{}
	p.Request(h)
	if len(h) != 2 || h.Get("X-Amz-Checksum-Sha256") != "abc" || h.Get("Content-Type") != "image/png" {
		t.Errorf("Presigned.Request = %v, want checksum and content type only", h)
	}
}
