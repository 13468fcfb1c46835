// Package audittest checks audit.Log's import on the databases the servers
// keep it in (the cloud's PostgreSQL, the clinic's SQLite), against the
// import as it was written through gorm (ImportGorm), for those servers'
// tests and benchmarks.
package audittest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/ids"
)

// Chain returns entries first..first+n-1 of chain (first > 0 follows
// prev), linked and hashed, their fields varied: empty and zero ones,
// quotes, non-ASCII text, times in another zone.
func Chain(chain string, clinic ids.ID, first int64, prev string, n int) []audit.Entry {
	zone := time.FixedZone("UTC+9", 9*3600)
	start := time.Date(2026, 12, 7, 3, 4, 5, 123456000, zone)
	es := make([]audit.Entry, n)
	for i := range es {
		s := first + int64(i)
		e := audit.Entry{Chain: chain, Seq: s, At: start.Add(time.Duration(s) * 1234567 * time.Microsecond), Clinic: clinic,
			Actor: fmt.Sprintf("person:%d", s%7), Action: []string{"create", "read", "login", "update"}[s%4],
			Kind: "patients", Target: fmt.Sprint(1000 + s), Outcome: []int{201, 200, 401, 0}[s%4], Prev: prev}
		switch s % 5 {
		case 0:
			e.Username, e.Remote = "dr. O'Brien \"김\"", "192.0.2.7:5555"
		case 1:
			e.Detail = strings.Repeat("d", int(s%300))
		case 2:
			e.Kind, e.Target, e.Clinic = "", "", 0
		}
		e.Hash = audit.Hash(e)
		prev = e.Hash
		es[i] = e
	}
	return es
}

// head is audit_heads's row.
type head struct {
	Chain string `gorm:"primaryKey"`
	Seq   int64
	Hash  string
}

func (head) TableName() string { return "audit_heads" }

// ImportGorm is audit.Log.Import as it was before its fixed statements
// (the entries inserted by gorm's CreateInBatches, the head read and moved
// through gorm): the reference CheckImport compares the import's rows with,
// and the baseline of the servers' import benchmarks.
func ImportGorm(ctx context.Context, db *gorm.DB, chain string, es []audit.Entry) (int64, error) {
	var seq int64
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&head{Chain: chain}).Error; err != nil {
			return err
		}
		q := tx
		if tx.Name() == "postgres" {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		var h head
		if err := q.Where("chain = ?", chain).Take(&h).Error; err != nil {
			return err
		}
		fresh := make([]audit.Entry, 0, len(es))
		for _, e := range es {
			e.At = e.At.UTC()
			if e.Chain != chain || audit.Hash(e) != e.Hash {
				return fmt.Errorf("%w: entry %d does not match its hash", audit.ErrBroken, e.Seq)
			}
			if e.Seq <= h.Seq {
				continue
			}
			if e.Seq != h.Seq+1 {
				return fmt.Errorf("%w: entry %d after head %d", audit.ErrAhead, e.Seq, h.Seq)
			}
			if e.Prev != h.Hash {
				return fmt.Errorf("%w: entry %d does not follow entry %d", audit.ErrBroken, e.Seq, h.Seq)
			}
			fresh = append(fresh, e)
			h = head{Chain: chain, Seq: e.Seq, Hash: e.Hash}
		}
		seq = h.Seq
		if len(fresh) == 0 {
			return nil
		}
		if err := tx.CreateInBatches(fresh, 500).Error; err != nil {
			return err
		}
		return tx.Model(&head{}).Where("chain = ?", h.Chain).Updates(map[string]any{"seq": h.Seq, "hash": h.Hash}).Error
	})
	if err != nil {
		return 0, fmt.Errorf("audit: import: %w", err)
	}
	return seq, nil
}

// Rows are the audit tables' rows as text, in order (the times as the
// database keeps them): what two imports are compared by.
func Rows(t testing.TB, db *gorm.DB) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		"SELECT chain, seq, CAST(at AS TEXT), clinic, actor, username, action, kind, target, remote, outcome, detail, prev, hash" +
			" FROM audit_log ORDER BY chain, seq",
		"SELECT 'head', chain, seq, hash FROM audit_heads ORDER BY chain",
	} {
		rows, err := db.Raw(q).Rows()
		if err != nil {
			t.Fatalf("read the audit tables: %v", err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]string, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("read the audit tables: %v", err)
			}
			out = append(out, strings.Join(vals, "|"))
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// CheckImport imports the same batches into the audit tables of two
// databases open returns (each migrated, empty), one through
// audit.Log.Import, one through ImportGorm: batches of new entries, one
// sent again, one overlapping the head, and batches refused (a gap, an
// entry changed, a link broken, an entry of another chain), then the rest.
// Each answer (head, error) must be the one expected and the same from
// both, and after each batch both databases must hold the same rows; in
// the end the log lists exactly the entries sent.
func CheckImport(t *testing.T, open func(t *testing.T) *gorm.DB) {
	ctx := context.Background()
	const chain, clinic = "local:4242", ids.ID(4242)
	newDB, oldDB := open(t), open(t)
	l, err := audit.Open(ctx, newDB)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1234 // batches of up to 500, as the clinic's shipper sends (of 499, 401 and 334 new entries)
	all := Chain(chain, clinic, 1, "", n)
	batch := func(from, to int) []audit.Entry { return slices.Clone(all[from-1 : to]) }
	changed := batch(901, 1000)
	changed[50].Detail = "changed"
	relinked := batch(901, 1000)
	relinked[30].Prev = all[0].Hash
	relinked[30].Hash = audit.Hash(relinked[30])
	otherChain := batch(901, 1000)
	otherChain[10].Chain = "local:4343"
	otherChain[10].Hash = audit.Hash(otherChain[10])
	sentBefore := batch(900, 1000)
	sentBefore[0].Detail = "changed" // an entry already kept, altered: still checked
	steps := []struct {
		name    string
		es      []audit.Entry
		head    int64
		err     error
		message string
	}{
		{"1..499", batch(1, 499), 499, nil, ""},
		{"1..499 sent again", batch(1, 499), 499, nil, ""},
		{"401..900, overlapping", batch(401, 900), 900, nil, ""},
		{"nothing", nil, 900, nil, ""},
		{"902..1000, a gap", batch(902, 1000), 0, audit.ErrAhead, "audit: import: audit: entries start past the head: entry 902 after head 900"},
		{"901..1000, entry 951 changed", changed, 0, audit.ErrBroken, "audit: import: audit: chain broken: entry 951 does not match its hash"},
		{"901..1000, entry 931 linked elsewhere", relinked, 0, audit.ErrBroken, "audit: import: audit: chain broken: entry 931 does not follow entry 930"},
		{"901..1000, entry 911 of another chain", otherChain, 0, audit.ErrBroken, "audit: import: audit: chain broken: entry 911 does not match its hash"},
		{"900..1000, entry 900 (kept already) changed", sentBefore, 0, audit.ErrBroken,
			"audit: import: audit: chain broken: entry 900 does not match its hash"},
		{"901..1234", batch(901, n), n, nil, ""},
		{"all sent again", batch(1, n), n, nil, ""},
	}
	cur := int64(0) // the head: the last answer of an import not refused
	for _, s := range steps {
		got, err := l.Import(ctx, chain, s.es)
		old, oldErr := ImportGorm(ctx, oldDB, chain, s.es)
		switch {
		case s.err == nil && (err != nil || got != s.head):
			t.Fatalf("%s: Import = %d, %v; want %d", s.name, got, err, s.head)
		case s.err != nil && (!errors.Is(err, s.err) || err.Error() != s.message):
			t.Fatalf("%s: Import = %d, %v; want %q", s.name, got, err, s.message)
		case got != old || fmt.Sprint(err) != fmt.Sprint(oldErr):
			t.Fatalf("%s: Import = %d, %v; through gorm %d, %v", s.name, got, err, old, oldErr)
		}
		if rows, want := Rows(t, newDB), Rows(t, oldDB); !slices.Equal(rows, want) {
			t.Fatalf("%s: the rows differ from gorm's import's: %d rows, want %d\n%s", s.name, len(rows), len(want), firstDiff(rows, want))
		}
		if s.err == nil {
			cur = s.head
		}
		if head, err := l.Head(ctx, chain); err != nil || head != cur {
			t.Fatalf("%s: Head = %d, %v; want %d", s.name, head, err, cur)
		}
	}
	var kept []audit.Entry
	for len(kept) < n {
		page, err := l.List(ctx, audit.Query{Chain: chain, After: int64(len(kept)), Limit: 5000})
		if err != nil || len(page) == 0 {
			t.Fatalf("List(after %d) = %d entries, %v", len(kept), len(page), err)
		}
		kept = append(kept, page...)
	}
	for i, e := range kept {
		want := all[i]
		want.At = want.At.UTC()
		if e.At.Equal(want.At) {
			e.At = want.At
		}
		if e != want {
			t.Fatalf("List: entry %d = %+v, want %+v", i+1, e, want)
		}
	}
	if v, err := l.Verify(ctx, chain); err != nil || !v.OK || v.Entries != n {
		t.Fatalf("Verify = %+v, %v; want ok with %d entries", v, err, n)
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("row %d:\n %s\nwant\n %s", i, a[i], b[i])
		}
	}
	return "one is a prefix of the other"
}
