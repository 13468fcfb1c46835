package wire

import (
	"testing"

	"github.com/scsync/scsync/shared/ids"
)

// Shard is stable (these values are part of every deployment's bindings:
// changing the function would need the drain of changing up_shards) and
// spreads Snowflake ids, whose low bits are often alike, evenly.
func TestShard(t *testing.T) {
	// Pinned values: FNV-1a 64 of the decimal id, modulo n.
	for _, tt := range []struct {
		clinic ids.ID
		n      int
		want   int
	}{
		{387531931844083712, 16, 10},
		{387531931844083712, 64, 26},
		{387531944955478016, 16, 4},
		{42, 16, 3},
		{1, 16, 12},
		{1, 1, 0},
		{1, 0, 0},
	} {
		if got := Shard(tt.clinic, tt.n); got != tt.want {
			t.Errorf("Shard(%d, %d) = %d, want %d", tt.clinic, tt.n, got, tt.want)
		}
	}
	// Ids as a generator mints them: one node, consecutive milliseconds,
	// sequence 0 — the low 8 bits are always zero.
	const n = 16
	counts := make([]int, n)
	const clinics = 16000
	for i := range clinics {
		id := ids.ID(int64(i+1) << 22)
		counts[Shard(id, n)]++
	}
	for k, c := range counts {
		if c < clinics/n*8/10 || c > clinics/n*12/10 {
			t.Errorf("shard %d has %d of %d clinics, want about %d", k, c, clinics, clinics/n)
		}
	}
}

func TestClinicOfKey(t *testing.T) {
	for key, want := range map[string]ids.ID{
		"clinic.42":                 42,
		"clinic.387531931844083712": 387531931844083712,
		"clinic.":                   0,
		"clinic.042":                0,
		"clinic.+42":                0,
		"clinic.-42":                0,
		"clinic.0":                  0,
		"clinic.42.patient.1":       0,
		"clinic.#":                  0,
		"other.42":                  0,
		"":                          0,
	} {
		got, ok := ClinicOfKey(key)
		if ok != (want != 0) || got != want {
			t.Errorf("ClinicOfKey(%q) = %d, %v; want %d", key, got, ok, want)
		}
	}
}
