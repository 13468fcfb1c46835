package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// accepted reads rows' envelopes as the cloud's acceptances of them, from
// cloud_seq seq+1 on, and returns them with the rows' ids.
func accepted(t *testing.T, rows []Outbox, seq int64) ([]wire.Envelope, []int64) {
	t.Helper()
	down := make([]wire.Envelope, len(rows))
	done := make([]int64, len(rows))
	for i, r := range rows {
		if err := json.Unmarshal([]byte(r.Envelope), &down[i]); err != nil {
			t.Fatal(err)
		}
		down[i].Type, down[i].CloudSeq = wire.TypeApplied, seq+int64(i)+1
		done[i] = r.ID
	}
	return down, done
}

// keptStatements returns the statements db's (one) connection keeps
// prepared whose text contains part.
func keptStatements(t *testing.T, db *gorm.DB, part string) []string {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	var out []string
	if err := conn.Raw(func(c any) error {
		for q := range c.(*stmtConn).stmts {
			if strings.Contains(q, part) {
				out = append(out, q)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRelayAndAcceptanceStatementsKeepOneText: the relay's read and
// delete of outbox rows and the read of the accepted records' sync
// columns run as one text each, whatever the number of rows (compiled
// once per connection), and rounds of every size end with every record
// synced, the outbox empty and the checkpoint at the last acceptance.
func TestRelayAndAcceptanceStatementsKeepOneText(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	const n = 28
	for i := range n {
		save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprintf("P%d", i)}})
	}
	seq := int64(0)
	for size := 1; seq < n; size++ {
		rows, err := s.NextOutbox(ctx, size)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != size {
			t.Fatalf("NextOutbox(%d) = %d rows", size, len(rows))
		}
		down, done := accepted(t, rows, seq)
		if err := s.DeleteOutbox(ctx, done...); err != nil {
			t.Fatal(err)
		}
		res, err := s.ApplyDown(ctx, down)
		if err != nil || res.Applied != size {
			t.Fatalf("ApplyDown(%d acceptances) = %+v, %v", size, res, err)
		}
		seq += int64(size)
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Synced != n || st.Pending != 0 || st.Outbox != 0 || st.Checkpoint != n || st.LastContact == nil {
		t.Fatalf("Status() = %+v, want %d synced, none pending, an empty outbox, checkpoint %d, a last contact", st, n, n)
	}
	for _, c := range []struct {
		db   *gorm.DB
		part string
	}{
		{s.odb, "outbox"},
		{s.db, "DELETE FROM outbox"},
		{s.db, "SELECT id, version, origin"},
	} {
		if got := keptStatements(t, c.db, c.part); len(got) != 1 {
			t.Errorf("statements kept with %q = %q, want one", c.part, got)
		}
	}
}

// TestAcceptancesBeyondOneINList: a backfill's 600 acceptances applied in
// one call (more ids than one IN list took before), and the outbox rows
// deleted exactly as listed.
func TestAcceptancesBeyondOneINList(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	const n = 600
	items := make([]Import, n)
	for i := range items {
		items[i] = Import{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprintf("P%d", i)}}
	}
	if _, err := s.Import(ctx, items); err != nil {
		t.Fatal(err)
	}
	if bf, err := s.Backfill(ctx, 1000); err != nil || bf.Records != n {
		t.Fatalf("Backfill(1000) = %+v, %v, want %d records", bf, err, n)
	}
	rows, err := s.NextOutbox(ctx, 1000)
	if err != nil || len(rows) != n {
		t.Fatalf("NextOutbox(1000) = %d rows, %v, want %d", len(rows), err, n)
	}
	down, done := accepted(t, rows, 0)
	// All but the middle one: it stays.
	if err := s.DeleteOutbox(ctx, append(append([]int64(nil), done[:n/2]...), done[n/2+1:]...)...); err != nil {
		t.Fatal(err)
	}
	left, err := s.NextOutbox(ctx, 1000)
	if err != nil || len(left) != 1 || left[0].ID != done[n/2] || left[0].Envelope != rows[n/2].Envelope {
		t.Fatalf("NextOutbox after deleting all but row %d = %+v, %v, want that row", done[n/2], left, err)
	}
	if res, err := s.ApplyDown(ctx, down); err != nil || res.Applied != n {
		t.Fatalf("ApplyDown(%d acceptances) = %+v, %v", n, res, err)
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Synced != n || st.Pending != 0 || st.Checkpoint != n {
		t.Fatalf("Status() = %+v, want %d synced, none pending, checkpoint %d", st, n, n)
	}
}
