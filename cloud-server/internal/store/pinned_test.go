package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// A gorm Transaction inside a pinned one nests as a savepoint, as it did
// in a database/sql transaction: it neither begins nor commits a
// transaction of its own, so when the pinned transaction fails, what the
// nested one wrote goes with it; a nested one that fails is rolled back
// alone.
func TestPinnedTransactionNests(t *testing.T) {
	s := open(t)
	enroll(t, s, 1, "")
	ctx := context.Background()
	rename := func(tx *gorm.DB, name string) error {
		return tx.Exec("UPDATE clinics SET name = ? WHERE id = 1", name).Error
	}
	name := func() string {
		t.Helper()
		var n string
		if err := s.db.Raw("SELECT name FROM clinics WHERE id = 1").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	outer := errors.New("the outer transaction fails")
	err := s.inClinic(ctx, 1, func(ct *clinicTx) error {
		if err := ct.tx.Transaction(func(tx *gorm.DB) error { return rename(tx, "nested") }); err != nil {
			return err
		}
		return outer
	})
	if !errors.Is(err, outer) {
		t.Fatalf("inClinic = %v, want %v", err, outer)
	}
	if got := name(); got != "clinic 1" {
		t.Fatalf("after a failed transaction the clinic's name is %q, want %q (the nested transaction committed alone)", got, "clinic 1")
	}
	err = s.inClinic(ctx, 1, func(ct *clinicTx) error {
		if err := rename(ct.tx, "outer"); err != nil {
			return err
		}
		inner := errors.New("the nested transaction fails")
		if err := ct.tx.Transaction(func(tx *gorm.DB) error {
			if err := rename(tx, "nested"); err != nil {
				return err
			}
			return inner
		}); !errors.Is(err, inner) {
			t.Errorf("nested Transaction = %v, want %v", err, inner)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("inClinic = %v", err)
	}
	if got := name(); got != "outer" {
		t.Fatalf("the clinic's name is %q, want %q (the nested transaction rolled back alone)", got, "outer")
	}
}

// A transaction's last statement, whose arguments commitWith encodes
// itself, fails whole with PostgreSQL's error: a text PostgreSQL refuses
// (a NUL byte) among the writes is that error (IsRefusedContent, as the
// up consumer dead-letters it), nothing of the transaction commits (not
// the outbox rows written before it in the same statement, not what the
// transaction wrote before), and the connection serves the next
// transaction, which commits.
func TestCommitWithFailsWhole(t *testing.T) {
	s := open(t)
	enroll(t, s, 1, "")
	oneConn(t, s)
	ctx := context.Background()
	write := func(name string) error {
		p, err := s.pin(ctx)
		if err != nil {
			return err
		}
		defer p.release()
		if err := p.beginWith(ctx); err != nil {
			return err
		}
		if err := p.tx.Exec("UPDATE clinics SET conflict_policy = 'cloud_wins' WHERE id = 1").Error; err != nil {
			return err
		}
		last := together([]stmt{
			insertOutbox([]Outbox{{ClinicID: 1, CloudSeq: 41}, {ClinicID: 1, CloudSeq: 42}}),
			{"UPDATE clinics SET name = x.v[1] FROM (SELECT ?::text[] AS v) AS x WHERE id = ?", []any{[]string{name}, int64(1)}},
		})
		return p.commitWith(ctx, &last)
	}
	err := write("bad \x00 name")
	if !IsRefusedContent(err) {
		t.Fatalf("commitWith(a NUL in a text) = %v, want PostgreSQL's refusal (class 22)", err)
	}
	var c Clinic
	if err := s.db.First(&c, 1).Error; err != nil {
		t.Fatal(err)
	}
	if n, err := s.OutboxLen(ctx); err != nil || n != 0 || c.Name != "clinic 1" || c.ConflictPolicy == "cloud_wins" {
		t.Fatalf("after a failed commitWith: outbox %d (%v), clinic %q %q; want nothing of it committed", n, err, c.Name, c.ConflictPolicy)
	}
	if err := write("Kim 金"); err != nil {
		t.Fatalf("commitWith on the same connection after the failure = %v", err)
	}
	if err := s.db.First(&c, 1).Error; err != nil {
		t.Fatal(err)
	}
	if n, err := s.OutboxLen(ctx); err != nil || n != 2 || c.Name != "Kim 金" || c.ConflictPolicy != "cloud_wins" {
		t.Fatalf("after commitWith: outbox %d (%v), clinic %q %q; want 2 rows, Kim 金, cloud_wins", n, err, c.Name, c.ConflictPolicy)
	}
}

// commitWith prepares the texts of its last statements on a connection,
// at most maxPreparedTexts of them for a store; past that a text goes
// through pgx's statement cache, as before, and commits all the same.
func TestCommitWithBoundsItsPreparedTexts(t *testing.T) {
	s := open(t)
	enroll(t, s, 1, "")
	oneConn(t, s)
	s.texts.texts = map[string]bool{}
	for i := range maxPreparedTexts - 1 {
		s.texts.texts[fmt.Sprint("SELECT ", i)] = true // other texts, prepared elsewhere
	}
	patients := func(from, n int) []wire.Envelope {
		es := make([]wire.Envelope, n)
		for i := range es {
			id := ids.ID(from + i)
			es[i] = changeOf(1, id, id, records.Sample(wire.KindPatient, int(id), nil))
		}
		return es
	}
	named := func() (ours, cached int) {
		t.Helper()
		var names []string
		if err := s.db.Raw("SELECT name FROM pg_prepared_statements").Scan(&names).Error; err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			switch {
			case strings.HasPrefix(n, "stmt_"):
				ours++
			case strings.HasPrefix(n, "stmtcache_"):
				cached++
			}
		}
		return ours, cached
	}
	// The last text the store may prepare: new patients.
	if res := applyUp(t, s, 1, patients(1, 3)...); res.Accepted != 3 {
		t.Fatalf("ApplyUp(3 patients) = %+v", res)
	}
	if ours, _ := named(); ours != 1 {
		t.Fatalf("after a first accept %d statements prepared by commitWith, want 1", ours)
	}
	// A text past the bound: a patient and a study of it.
	study := changeOf(1, 10, 10, records.Sample(wire.KindStudy, 10, map[wire.Kind]ids.ID{wire.KindPatient: 11}))
	if res := applyUp(t, s, 1, append(patients(11, 1), study)...); res.Accepted != 2 {
		t.Fatalf("ApplyUp(a patient and its study) = %+v", res)
	}
	if res := applyUp(t, s, 1, patients(4, 2)...); res.Accepted != 2 {
		t.Fatalf("ApplyUp(2 patients) = %+v", res)
	}
	ours, cached := named()
	if ours != 1 || cached == 0 {
		t.Fatalf("prepared: %d by commitWith, %d by pgx's cache; want 1 (the bound) and the rest in the cache", ours, cached)
	}
	if got := feed(t, s, 1); len(got) != 7 || got[6].CloudSeq != 7 {
		t.Fatalf("feed = %d changes, want 7, dense", len(got))
	}
}

// oneConn limits s's pool to one connection, so that every transaction of
// a test runs on the same one.
func oneConn(t *testing.T, s *Store) {
	t.Helper()
	sqlDB, err := s.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1)
}
