package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"testing"

	"github.com/scsync/scsync/lockd/internal/config"
)

func TestValidResource(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"patient/123", true},
		{"study:7", true},
		{"image/5/report@2=x_y-z.v", true},
		{"", false},
		{"/patient/1", false},
		{"patient/1/", false},
		{"patient//1", false},
		{"patient/../1", false},
		{"patient/./1", false},
		{"patient 1", false},
		{"patient/1?x", false},
		{"pätient", false},
		{string(make([]byte, maxResource+1)), false},
	}
	for _, tt := range tests {
		if err := validResource(tt.in); (err == nil) != tt.ok {
			t.Errorf("validResource(%.30q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	sum := sha256.Sum256([]byte("hashed-clinic-token-1"))
	a, err := newAuth(config.Auth{
		AdminToken:    "admin-token-00000001",
		ServiceTokens: []string{"service-token-000001"},
		ClinicTokens: map[string]string{
			"clinic-token-0000001":                 "7",
			"sha256:" + hex.EncodeToString(sum[:]): "8",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		header string
		ok     bool
		role   role
		clinic int64
	}{
		{"Bearer admin-token-00000001", true, roleAdmin, 0},
		{"bearer service-token-000001", true, roleService, 0},
		{"Bearer clinic-token-0000001", true, roleClinic, 7},
		{"Bearer hashed-clinic-token-1", true, roleClinic, 8},
		{"Bearer sha256:" + hex.EncodeToString(sum[:]), false, 0, 0}, // the digest is not a token
		{"Basic clinic-token-0000001", false, 0, 0},
		{"Bearer ", false, 0, 0},
		{"", false, 0, 0},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", tt.header)
		p, ok := a.authenticate(r)
		if ok != tt.ok || p.role != tt.role || int64(p.clinic) != tt.clinic {
			t.Errorf("authenticate(%q) = %+v, %v, want role %d clinic %d ok %v", tt.header, p, ok, tt.role, tt.clinic, tt.ok)
		}
	}
	// The same token configured twice, once hashed, is refused.
	plain := sha256.Sum256([]byte("service-token-000001"))
	if _, err := newAuth(config.Auth{ServiceTokens: []string{"service-token-000001", "sha256:" + hex.EncodeToString(plain[:])}}); err == nil {
		t.Error("newAuth accepted a token given twice")
	}
}
