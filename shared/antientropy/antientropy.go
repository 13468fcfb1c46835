// Package antientropy compares a clinic's records with the cloud's cheaply:
// both sides hash their per-record digests (records.Digest, keyed
// "kind/id") into a fixed number of buckets, exchange the bucket hashes,
// and look inside only the buckets that differ.
//
// A bucket's hash is order-independent (a Set adds each record in, in any
// order), so each side computes it while it scans its rows, holding the
// bucket sums and nothing per record: equal data costs one scan on each
// side and one exchange of Buckets hashes; each difference costs its
// bucket's digests.
package antientropy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"math/bits"
	"slices"
)

// Buckets is how many buckets the records are hashed into (POST
// /v1/clinics/{clinic}/verify). At a million records a bucket holds about
// 250 of them: a difference costs that bucket's digests, not more.
const Buckets = 4096

// MaxAnswerBuckets is the most buckets whose records one answer carries:
// sides that differ everywhere are compared in batches, so neither holds
// more than this share of the digests at a time.
const MaxAnswerBuckets = 256

// Bucket is the bucket of a record key ("kind/id"): FNV-1a of the key.
func Bucket(key string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % Buckets)
}

// Set accumulates the digests of records into bucket hashes. A bucket's
// hash is the sum, modulo 2^128, of the first 128 bits of SHA-256("key=digest")
// of each of its records: adding is commutative, so the order of the scan
// does not matter and no record needs to be kept. (XOR would be cheaper to
// explain but cancels pairs: a record counted twice would vanish; a sum
// does not.) The zero Set is empty and ready to use.
type Set struct {
	sums  [Buckets][2]uint64
	n     [Buckets]uint32
	count int
}

// Add adds one record's digest.
func (s *Set) Add(key, digest string) {
	b := Bucket(key)
	h := sha256.Sum256([]byte(key + "=" + digest))
	lo := binary.LittleEndian.Uint64(h[0:8])
	hi := binary.LittleEndian.Uint64(h[8:16])
	var c uint64
	s.sums[b][0], c = bits.Add64(s.sums[b][0], lo, 0)
	s.sums[b][1], _ = bits.Add64(s.sums[b][1], hi, c)
	s.n[b]++
	s.count++
}

// Count is how many records were added.
func (s *Set) Count() int { return s.count }

// Hashes returns each bucket's hash; an empty bucket's is "".
func (s *Set) Hashes() []string {
	out := make([]string, Buckets)
	var b [16]byte
	for i := range Buckets {
		if s.n[i] == 0 {
			continue
		}
		binary.BigEndian.PutUint64(b[0:8], s.sums[i][1])
		binary.BigEndian.PutUint64(b[8:16], s.sums[i][0])
		out[i] = hex.EncodeToString(b[:])
	}
	return out
}

// Differing lists the buckets whose hashes differ (a missing hash counts
// as an empty bucket).
func Differing(a, b []string) []int {
	var out []int
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			out = append(out, i)
		}
	}
	return out
}

// Request is the body of POST /v1/clinics/{clinic}/verify: exactly one of
// its fields. With Summary the cloud answers its record count and bucket
// hashes only, so the clinic can ask before its own scan and the two scans
// run at once; with Hashes (the clinic's Buckets hashes) the cloud answers
// its own hashes and the records of the first MaxAnswerBuckets buckets
// that differ (the first protocol of this route, for clouds that refuse
// Summary); with Want it answers the records of those buckets.
type Request struct {
	Summary bool     `json:"summary,omitempty"`
	Hashes  []string `json:"hashes,omitempty"`
	Want    []int    `json:"want,omitempty"`
}

// Answer is the cloud's answer to a Request.
type Answer struct {
	// Count and Buckets answer Summary and Hashes: the clinic's record
	// count in the cloud and the cloud's bucket hashes; Differing answers
	// Hashes: the buckets that differ from the clinic's.
	Count     int      `json:"count"`
	Buckets   []string `json:"buckets,omitempty"`
	Differing []int    `json:"differing,omitempty"`
	// Answered are the buckets whose records Records holds (all of them,
	// an empty bucket's none).
	Answered []int            `json:"answered"`
	Records  map[string]Entry `json:"records"`
}

// Wanted returns a membership test for buckets.
func Wanted(buckets []int) func(key string) bool {
	var in [Buckets]bool
	for _, b := range buckets {
		if b >= 0 && b < Buckets {
			in[b] = true
		}
	}
	return func(key string) bool { return in[Bucket(key)] }
}

// Entry is one record of a bucket as the cloud holds it: its digest, and
// the digest of what its change log says it should hold (the last accepted
// change). They differ when the row drifted from the log (edited outside
// the replication path): then the clinic's copy is the one to trust.
type Entry struct {
	Digest string `json:"digest"`
	Log    string `json:"log"`
	// CloudSeq is the record's last change in the clinic's sequence: one
	// beyond the clinic's checkpoint is still on its way down.
	CloudSeq int64 `json:"cloud_seq"`
}

// The first protocol (GET /v1/clinics/{clinic}/verify[?bucket=N]), kept
// for clinics not yet upgraded: 256 buckets, each the SHA-256 of its sorted
// "key=digest" lines, which needs every digest in memory.

// LegacyBuckets is how many buckets the first protocol has.
const LegacyBuckets = 256

// LegacyBucket is a key's bucket in the first protocol (Bucket mod 256:
// the same FNV-1a).
func LegacyBucket(key string) int { return Bucket(key) % LegacyBuckets }

// LegacyHashes returns the first protocol's hash of each bucket of digests
// (key → digest); an empty bucket hashes to "".
func LegacyHashes(digests map[string]string) []string {
	keys := make([][]string, LegacyBuckets)
	for k := range digests {
		b := LegacyBucket(k)
		keys[b] = append(keys[b], k)
	}
	out := make([]string, LegacyBuckets)
	for b, ks := range keys {
		if len(ks) == 0 {
			continue
		}
		slices.Sort(ks)
		h := sha256.New()
		for _, k := range ks {
			_, _ = h.Write([]byte(k + "=" + digests[k] + "\n"))
		}
		out[b] = hex.EncodeToString(h.Sum(nil))[:32]
	}
	return out
}

// Summary is the first protocol's answer for a clinic: the bucket hashes
// and the record count.
type Summary struct {
	Count   int      `json:"count"`
	Buckets []string `json:"buckets"`
}

// Detail is the first protocol's answer for one bucket.
type Detail struct {
	Bucket  int              `json:"bucket"`
	Records map[string]Entry `json:"records"`
}
