package store

import (
	"context"
	"errors"
	"testing"

	"gorm.io/gorm"
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
