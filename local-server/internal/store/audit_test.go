package store

import (
	"context"
	"errors"
	"slices"
	"testing"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// TestAuditChainSurvivesRollbacksAndOtherWriters appends to one chain
// through the group commit while appends are rolled back (a write failing
// after its entry, a whole transaction given up) and while a second log (a
// second process) appends to the same chain: the log keeps its last head in
// memory, and none of that may leave a gap, a fork or a head that is not
// the last entry.
func TestAuditChainSurvivesRollbacksAndOtherWriters(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	l, err := audit.Open(ctx, s.DB())
	if err != nil {
		t.Fatal(err)
	}
	l.WithWriter(s.Write)
	const chain = "local:test"
	add := func(action string) {
		t.Helper()
		if _, err := l.Append(ctx, audit.Entry{Chain: chain, Actor: "p1", Action: action}); err != nil {
			t.Fatal(err)
		}
	}
	add("a")
	add("b")

	// A batch where one write appends and then fails (rolled back to its
	// savepoint: a save, which appends nothing, runs first in the
	// transaction) and the next appends: the second must follow entry 2.
	errBoom := errors.New("boom")
	var got audit.Entry
	var saved Record
	batch := []*writeReq{
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "A"}}, &saved),
		{ctx: ctx, done: make(chan error, 1), fn: func(tx *gorm.DB) error {
			if _, err := l.AppendTx(tx, audit.Entry{Chain: chain, Actor: "p1", Action: "rolled back"}); err != nil {
				return err
			}
			return errBoom
		}},
		{ctx: ctx, done: make(chan error, 1), fn: func(tx *gorm.DB) error {
			var err error
			got, err = l.AppendTx(tx, audit.Entry{Chain: chain, Actor: "p1", Action: "c"})
			return err
		}},
	}
	setCareful(s, true) // the savepoint path (the other: TestGroupCommitIsolatesFailures)
	s.commitBatch(batch)
	if err := <-batch[0].done; err != nil {
		t.Fatal(err)
	}
	if err := <-batch[1].done; !errors.Is(err, errBoom) {
		t.Fatalf("failing write: %v", err)
	}
	if err := <-batch[2].done; err != nil {
		t.Fatal(err)
	}
	if got.Seq != 3 {
		t.Fatalf("the entry after a rolled-back one has seq %d, want 3", got.Seq)
	}

	// A whole transaction rolled back after its append.
	err = s.db.Transaction(func(tx *gorm.DB) error {
		if _, err := l.AppendTx(tx, audit.Entry{Chain: chain, Actor: "p1", Action: "given up"}); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatal(err)
	}
	add("d")

	// Another process's log appends to the same chain.
	other, err := audit.Open(ctx, s.DB())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Append(ctx, audit.Entry{Chain: chain, Actor: "p2", Action: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	add("e")

	v, err := l.Verify(ctx, chain)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.Entries != 6 {
		t.Fatalf("verify: %+v, want ok with 6 entries", v)
	}
	es, err := l.List(ctx, audit.Query{Chain: chain})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Action)
	}
	if want := []string{"a", "b", "c", "d", "elsewhere", "e"}; !slices.Equal(actions, want) {
		t.Fatalf("entries %v, want %v", actions, want)
	}
	if h, err := l.Head(ctx, chain); err != nil || h != 6 {
		t.Fatalf("head %d (%v), want 6", h, err)
	}
}
