package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hashJoined is Hash as it was first written (the fields joined with
// strings.Join): the hashes of every chain kept so far were made by it.
func hashJoined(e Entry) string {
	s := strings.Join([]string{e.Chain, strconv.FormatInt(e.Seq, 10), e.At.UTC().Format(time.RFC3339Nano), e.Clinic.String(),
		e.Actor, e.Username, e.Action, e.Kind, e.Target, e.Remote, strconv.Itoa(e.Outcome), e.Detail, e.Prev}, "\x1f")
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestHashUnchanged: Hash gives the hashes entries were made with, for
// every kind of field: empty, negative, in another zone, with the
// separator inside, longer than its buffer ("full"'s hash is also the
// SHA-256 of its fields joined by \x1f as computed outside Go).
func TestHashUnchanged(t *testing.T) {
	at := time.Date(2026, 12, 7, 3, 4, 5, 123456789, time.FixedZone("UTC-5", -5*3600))
	full := Entry{Chain: "local:4242", Seq: 17, At: at, Clinic: 4242, Actor: "person:7", Username: "dr. O'Brien \"김\"",
		Action: "create", Kind: "patients", Target: "1234", Remote: "192.0.2.7:5555", Outcome: 201, Detail: "d", Prev: strings.Repeat("a", 64)}
	long := full
	long.Detail = strings.Repeat("long detail ", 100)
	sepInside := full
	sepInside.Actor, sepInside.Username = "a\x1fb", ""
	negative := full
	negative.Seq, negative.Clinic, negative.Outcome = -1, -9, -200
	for _, tc := range []struct {
		name string
		e    Entry
		want string
	}{
		{"empty", Entry{}, ""},
		{"full", full, "6b4b295351460aa919063bc70711cb8883283689437a4b479dd1ea5aefd0cd78"},
		{"longer than the buffer", long, ""},
		{"separator inside a field", sepInside, ""},
		{"negative numbers", negative, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := Hash(tc.e), hashJoined(tc.e)
			if got != want {
				t.Fatalf("Hash(%+v) = %s, want %s", tc.e, got, want)
			}
			if tc.want != "" && got != tc.want {
				t.Fatalf("Hash(%+v) = %s, want %s", tc.e, got, tc.want)
			}
		})
	}
}

// BenchmarkHash: an entry of an audited create, hashed as first written
// and now.
func BenchmarkHash(b *testing.B) {
	e := Entry{Chain: "local:4242", Seq: 17, At: time.Now(), Clinic: 4242, Actor: "person:7", Action: "create", Kind: "patients",
		Target: "1234567890123456789", Remote: "192.0.2.7:5555", Outcome: 201, Prev: strings.Repeat("a", 64)}
	for _, way := range []struct {
		name string
		hash func(Entry) string
	}{{"joined", hashJoined}, {"buffer", Hash}} {
		b.Run(way.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				way.hash(e)
			}
		})
	}
}
