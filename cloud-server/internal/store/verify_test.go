package store

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// TestVerifyAnswersTheDifferingBuckets: given hashes equal to its own the
// cloud answers no bucket; with a row edited behind the store's back (and
// another clinic's records around), exactly that record's bucket differs,
// its entry says the row no longer matches its change log, and the other
// clinic's records never appear.
func TestVerifyAnswersTheDifferingBuckets(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	a, b := enroll(t, s, 71, ""), enroll(t, s, 72, "")
	var es []wire.Envelope
	for i := range 300 {
		es = append(es, change(a.ID, ids.ID(710_000+i), ids.ID(711_000+i), version.V{}, version.First, fmt.Sprintf("A %d", i)))
	}
	applyUp(t, s, a.ID, es...)
	applyUp(t, s, b.ID, change(b.ID, 720_000, 721_000, version.V{}, version.First, "B 0"))

	var set antientropy.Set
	if err := s.EachDigest(ctx, a.ID, func(key, digest string, _ Record) error { set.Add(key, digest); return nil }); err != nil {
		t.Fatal(err)
	}
	// The summary: the cloud's count and hashes, nothing compared.
	sum, err := s.Verify(ctx, a.ID, antientropy.Request{Summary: true})
	if err != nil || sum.Count != 300 || !slices.Equal(sum.Buckets, set.Hashes()) || sum.Differing != nil || len(sum.Answered) != 0 || len(sum.Records) != 0 {
		t.Fatalf("Verify(summary) = count %d, %d differing, %d answered, hashes equal %v, %v; want 300 and the clinic's hashes only",
			sum.Count, len(sum.Differing), len(sum.Answered), slices.Equal(sum.Buckets, set.Hashes()), err)
	}
	ans, err := s.Verify(ctx, a.ID, antientropy.Request{Hashes: set.Hashes()})
	if err != nil || ans.Count != 300 || len(ans.Differing) != 0 || len(ans.Answered) != 0 || len(ans.Records) != 0 {
		t.Fatalf("Verify(equal hashes) = %+v, %v; want 300 records, nothing differing", ans, err)
	}

	tampered := ids.ID(711_007)
	if err := s.db.Exec("UPDATE patients SET name = 'Tampered' WHERE clinic_id = ? AND id = ?", a.ID, tampered).Error; err != nil {
		t.Fatal(err)
	}
	key := "patient/" + tampered.String()
	want := []int{antientropy.Bucket(key)}
	if sum, err = s.Verify(ctx, a.ID, antientropy.Request{Summary: true}); err != nil || !slices.Equal(antientropy.Differing(set.Hashes(), sum.Buckets), want) {
		t.Fatalf("Verify(summary after a tampered row) differs from the clinic in %v (%v); want %v", antientropy.Differing(set.Hashes(), sum.Buckets), err, want)
	}
	ans, err = s.Verify(ctx, a.ID, antientropy.Request{Hashes: set.Hashes()})
	if err != nil || !slices.Equal(ans.Differing, want) || !slices.Equal(ans.Answered, want) {
		t.Fatalf("Verify(after a tampered row) = differing %v, answered %v, %v; want %v", ans.Differing, ans.Answered, err, want)
	}
	e, ok := ans.Records[key]
	if !ok || e.Log == "" || e.Log == e.Digest || e.CloudSeq == 0 {
		t.Errorf("entry of the tampered row = %+v (found %v), want a log digest that differs from its digest", e, ok)
	}
	for k, e := range ans.Records {
		if antientropy.Bucket(k) != want[0] {
			t.Errorf("record %s of bucket %d answered, want only bucket %d", k, antientropy.Bucket(k), want[0])
		}
		if k != key && e.Log != e.Digest {
			t.Errorf("untouched %s: log %s ≠ digest %s", k, e.Log, e.Digest)
		}
	}
	// Asking for buckets: the same records; the other clinic's never.
	other := antientropy.Bucket("patient/" + ids.ID(721_000).String())
	got, err := s.Verify(ctx, a.ID, antientropy.Request{Want: []int{want[0], other}})
	if err != nil || got.Records[key] != e {
		t.Fatalf("Verify(want) = %+v, %v; want the tampered entry %+v", got.Records[key], err, e)
	}
	if _, leaked := got.Records["patient/"+ids.ID(721_000).String()]; leaked {
		t.Errorf("Verify for clinic A answered clinic B's record")
	}
}
