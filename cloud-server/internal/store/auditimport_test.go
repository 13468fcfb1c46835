package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/testenv"
)

// A clinic's audit entries arrive at the cloud in batches (Import). The
// new ones of a batch are inserted together; a batch that repeats entries
// already kept, skips ahead or breaks the chain anywhere keeps nothing of
// itself, and the chain stays whole.
func TestAuditImportBatches(t *testing.T) {
	ctx := context.Background()
	open := func() *audit.Log {
		s, err := Open(ctx, testenv.PostgresDB(t), &seqIDs{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		l, err := audit.Open(ctx, s.DB())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	const chain = "local:100"
	src, dst := open(), open()
	const n = 1234 // more than one INSERT's worth
	for i := range n {
		if _, err := src.Append(ctx, audit.Entry{Chain: chain, Clinic: 100, Actor: "person:7", Action: "create",
			Kind: "patients", Target: fmt.Sprint(i), Outcome: 201}); err != nil {
			t.Fatal(err)
		}
	}
	var all []audit.Entry
	for len(all) < n {
		page, err := src.List(ctx, audit.Query{Chain: chain, After: int64(len(all)), Limit: 5000})
		if err != nil || len(page) == 0 {
			t.Fatalf("List = %d entries, %v", len(page), err)
		}
		all = append(all, page...)
	}
	head := func() int64 {
		h, err := dst.Head(ctx, chain)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	if got, err := dst.Import(ctx, chain, all[:700]); err != nil || got != 700 {
		t.Fatalf("Import 1..700 = %d, %v", got, err)
	}
	// A gap before the batch: refused.
	if _, err := dst.Import(ctx, chain, all[701:900]); !errors.Is(err, audit.ErrAhead) {
		t.Fatalf("Import 702..900 = %v, want ErrAhead", err)
	}
	// A tampered entry in the middle of a batch: the entries before it are not kept either.
	bad := append([]audit.Entry(nil), all[700:1000]...)
	bad[150].Detail = "changed"
	if _, err := dst.Import(ctx, chain, bad); !errors.Is(err, audit.ErrBroken) {
		t.Fatalf("Import of a tampered batch = %v, want ErrBroken", err)
	}
	if h := head(); h != 700 {
		t.Fatalf("head after refused batches = %d, want 700", h)
	}
	// Sent again with the rest: the repeated entries are skipped.
	if got, err := dst.Import(ctx, chain, all[500:]); err != nil || got != n {
		t.Fatalf("Import 501..%d = %d, %v", n, got, err)
	}
	// All of it again: nothing changes.
	if got, err := dst.Import(ctx, chain, all); err != nil || got != n {
		t.Fatalf("Import of everything again = %d, %v", got, err)
	}
	v, err := dst.Verify(ctx, chain)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.Entries != n {
		t.Fatalf("Verify = %+v, want ok with %d entries", v, n)
	}
	kept, err := dst.List(ctx, audit.Query{Chain: chain, After: 1000, Limit: 5})
	if err != nil || len(kept) != 5 {
		t.Fatalf("List = %d, %v", len(kept), err)
	}
	for i, e := range kept {
		if e.Hash != all[1000+i].Hash || e.Target != all[1000+i].Target {
			t.Fatalf("entry %d = %+v, want %+v", e.Seq, e, all[1000+i])
		}
	}
}
