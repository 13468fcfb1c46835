package antientropy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func hashesOf(keys []string, digests map[string]string) []string {
	var s Set
	for _, k := range keys {
		s.Add(k, digests[k])
	}
	return s.Hashes()
}

// TestSetIgnoresOrder: equal sets of records hash equal in every bucket,
// whatever order they were added in.
func TestSetIgnoresOrder(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 3000).Draw(t, "records")
		digests := map[string]string{}
		keys := make([]string, 0, n)
		for i := range n {
			k := fmt.Sprintf("study/%d", rapid.Int64Range(1, 1<<62).Draw(t, fmt.Sprint("id", i)))
			if _, dup := digests[k]; dup {
				continue
			}
			digests[k] = fmt.Sprintf("%032x", i)
			keys = append(keys, k)
		}
		shuffled := slices.Clone(keys)
		seed := rapid.Uint64().Draw(t, "seed")
		rand.New(rand.NewPCG(seed, seed)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		a, b := hashesOf(keys, digests), hashesOf(shuffled, digests)
		if d := Differing(a, b); len(d) != 0 {
			t.Fatalf("Differing(same records, another order) = %v, want none", d)
		}
		for i, h := range a {
			if (h == "") != (len(inBucketKeys(keys, i)) == 0) {
				t.Fatalf("bucket %d hash %q with %d records: only an empty bucket hashes to \"\"", i, h, len(inBucketKeys(keys, i)))
			}
		}
	})
}

// inBucketKeys is the keys of one bucket.
func inBucketKeys(keys []string, bucket int) []string {
	var out []string
	for _, k := range keys {
		if Bucket(k) == bucket {
			out = append(out, k)
		}
	}
	return out
}

// TestSetFindsTheDifferingBucket: one changed, one missing, one extra and
// one doubled record make exactly their buckets differ.
func TestSetFindsTheDifferingBucket(t *testing.T) {
	t.Parallel()
	digests := map[string]string{}
	var keys []string
	for i := range 20000 {
		k := fmt.Sprintf("patient/%d", 1000+i)
		digests[k] = fmt.Sprintf("%032x", i)
		keys = append(keys, k)
	}
	base := hashesOf(keys, digests)
	tests := []struct {
		name   string
		change func(keys []string, d map[string]string) ([]string, []string) // new keys, the keys whose buckets must differ
	}{
		{"changed", func(keys []string, d map[string]string) ([]string, []string) {
			d["patient/1007"] = "changed"
			return keys, []string{"patient/1007"}
		}},
		{"missing", func(keys []string, d map[string]string) ([]string, []string) {
			return slices.DeleteFunc(keys, func(k string) bool { return k == "patient/1009" }), []string{"patient/1009"}
		}},
		{"extra", func(keys []string, d map[string]string) ([]string, []string) {
			d["study/77"] = "new"
			return append(keys, "study/77"), []string{"study/77"}
		}},
		{"counted twice", func(keys []string, d map[string]string) ([]string, []string) {
			return append(keys, "patient/1011"), []string{"patient/1011"}
		}},
		{"two swapped digests", func(keys []string, d map[string]string) ([]string, []string) {
			d["patient/1001"], d["patient/1002"] = d["patient/1002"], d["patient/1001"]
			return keys, []string{"patient/1001", "patient/1002"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := map[string]string{}
			for k, v := range digests {
				d[k] = v
			}
			ks, changed := tt.change(slices.Clone(keys), d)
			var want []int
			for _, k := range changed {
				want = append(want, Bucket(k))
			}
			slices.Sort(want)
			want = slices.Compact(want)
			if got := Differing(base, hashesOf(ks, d)); !slices.Equal(got, want) {
				t.Errorf("Differing = %v, want %v", got, want)
			}
		})
	}
}

func TestWantedAndLegacy(t *testing.T) {
	t.Parallel()
	in := Wanted([]int{Bucket("patient/1"), -1, Buckets})
	if !in("patient/1") {
		t.Errorf("Wanted(bucket of patient/1)(patient/1) = false")
	}
	var other string
	for i := 2; other == ""; i++ {
		if k := fmt.Sprintf("patient/%d", i); Bucket(k) != Bucket("patient/1") {
			other = k
		}
	}
	if in(other) {
		t.Errorf("Wanted(bucket of patient/1)(%s) = true", other)
	}
	a := map[string]string{}
	for i := range 2000 {
		a[fmt.Sprintf("patient/%d", i)] = fmt.Sprint(i)
	}
	b := map[string]string{}
	for k, v := range a {
		b[k] = v
	}
	if d := Differing(LegacyHashes(a), LegacyHashes(b)); len(d) != 0 {
		t.Fatalf("Differing(legacy, equal) = %v, want none", d)
	}
	b["patient/7"] = "changed"
	if d := Differing(LegacyHashes(a), LegacyHashes(b)); !slices.Equal(d, []int{LegacyBucket("patient/7")}) {
		t.Fatalf("Differing(legacy) = %v, want [%d]", d, LegacyBucket("patient/7"))
	}
}

func BenchmarkSetAdd(b *testing.B) {
	var s Set
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("study/%d", 383401711412396032+i)
	}
	b.ResetTimer()
	for i := range b.N {
		s.Add(keys[i%len(keys)], "0123456789abcdef0123456789abcdef")
	}
}
