package store

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// statesStore is a store with patients in every sync state, each reached
// the way the product reaches it: imported (excluded, never queued), saved
// (pending), accepted (synced), kept both by the cloud (conflict, the
// original and its copy), and taken out of the cloud (excluded, queued).
func statesStore(t *testing.T) *Store {
	t.Helper()
	s := open(t)
	ctx := context.Background()
	if _, err := s.Import(ctx, []Import{
		{Kind: wire.KindPatient, Content: records.Patient{Name: "Imported 1"}},
		{Kind: wire.KindPatient, Content: records.Patient{Name: "Imported 2"}},
		{Kind: wire.KindPatient, Content: records.Patient{Name: "Imported 3"}},
	}); err != nil {
		t.Fatal(err)
	}
	save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Pending"}})
	seq := int64(0)
	accept := func(name string) Meta {
		p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: name}}))
		seq++
		applyDown(t, s, applied(seq, wire.OriginLocal, p.PendingChangeID, p.ID, p.Version, name))
		return p
	}
	accept("Synced 1")
	accept("Synced 2")
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Yoon"}}))
	seq++
	res := applied(seq, wire.OriginCloud, p.PendingChangeID, p.ID, version.V{A: 2}, "Yoon (cloud)")
	res.Conflict = wire.ResolvedKeepBoth
	seq++
	cp := applied(seq, wire.OriginCloud, 555, 556, version.First, "Yoon")
	cp.Conflict, cp.ConflictOf = wire.ResolvedKeepBoth, p.ID
	applyDown(t, s, res, cp)
	out := accept("Unsynced")
	u := RecordMeta(mustRecord(s.Unsync(ctx, wire.KindPatient, out.ID)))
	seq++
	gone := applied(seq, wire.OriginLocal, u.PendingChangeID, u.ID, u.Version, "Unsynced")
	gone.Deleted, gone.Unsync = true, true
	applyDown(t, s, gone)
	if m, _ := get(t, s, wire.KindPatient, out.ID); m.SyncState != StateExcluded || !m.Queued {
		t.Fatalf("unsynced record = %+v, want excluded and queued", m)
	}
	return s
}

func mustRecord(r Record, err error) Record {
	if err != nil {
		panic(err)
	}
	return r
}

// TestStatusCountsEveryState: Status's counts, taken from indexes, are
// what a scan of every table by sync state counts.
func TestStatusCountsEveryState(t *testing.T) {
	s := statesStore(t)
	ctx := context.Background()
	// Two kinds: the counts add up across tables.
	if _, err := s.Import(ctx, []Import{{Kind: wire.KindDoctor, Content: records.Doctor{Name: "Dr Imported"}}}); err != nil {
		t.Fatal(err)
	}
	save(t, s, Edit{Kind: wire.KindDoctor, Content: records.Doctor{Name: "Dr Pending"}})
	var want Status
	for _, sp := range records.Kinds {
		var rows []struct {
			SyncState string
			N         int64
		}
		if err := s.db.Raw("SELECT sync_state, COUNT(*) AS n FROM " + sp.Table + " NOT INDEXED GROUP BY sync_state").Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			*map[string]*int64{StatePending: &want.Pending, StateSynced: &want.Synced, StateConflict: &want.Conflict, StateExcluded: &want.Excluded}[r.SyncState] += r.N
		}
	}
	if want.Pending != 2 || want.Synced != 2 || want.Conflict != 2 || want.Excluded != 5 {
		t.Fatalf("the records by state = %+v, want 2 pending, 2 synced, 2 conflict, 5 excluded (one of them queued)", want)
	}
	got, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Pending != want.Pending || got.Synced != want.Synced || got.Conflict != want.Conflict || got.Excluded != want.Excluded {
		t.Errorf("Status = pending %d, synced %d, conflict %d, excluded %d; want %d, %d, %d, %d",
			got.Pending, got.Synced, got.Conflict, got.Excluded, want.Pending, want.Synced, want.Conflict, want.Excluded)
	}
	if got.OldestPendingAge <= 0 {
		t.Errorf("Status.OldestPendingAge = %v, want the pending records' age", got.OldestPendingAge)
	}
}

// TestListBySyncState: the records list filtered by each state, paged.
func TestListBySyncState(t *testing.T) {
	s := statesStore(t)
	for _, tc := range []struct {
		state string
		want  []string
	}{
		{StatePending, []string{"Pending"}},
		{StateSynced, []string{"Synced 1", "Synced 2"}},
		{StateConflict, []string{"Yoon (cloud)", "Yoon"}},
		{StateExcluded, []string{"Imported 1", "Imported 2", "Imported 3", "Unsynced"}},
	} {
		t.Run(tc.state, func(t *testing.T) {
			var names []string
			for _, r := range listPages(t, s, ListQuery{SyncState: tc.state, Limit: 1}) {
				if m := RecordMeta(r); m.SyncState != tc.state {
					t.Fatalf("List(%s) returned a %s record", tc.state, m.SyncState)
				}
				names = append(names, r.content().(records.Patient).Name)
			}
			if !sameSet(names, tc.want) {
				t.Errorf("List(%s) = %q, want %q", tc.state, names, tc.want)
			}
		})
	}
}

// TestListExcludedAsScan: the records list filtered by excluded, paged by
// 1, 2, 3 and 100, gives what a read of the whole table gives, in id
// order, with the deleted or without, whether it reads them through the
// two indexes (few records never queued) or the table in id order (many).
func TestListExcludedAsScan(t *testing.T) {
	s := statesStore(t)
	ctx := context.Background()
	// More never queued after the one taken out of the cloud, and a
	// second one taken out after them: the two parts interleave in id
	// order, so pages cross from one to the other.
	if _, err := s.Import(ctx, []Import{
		{Kind: wire.KindPatient, Content: records.Patient{Name: "Imported 4"}},
		{Kind: wire.KindPatient, Content: records.Patient{Name: "Imported 5"}},
	}); err != nil {
		t.Fatal(err)
	}
	seq, err := s.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Unsynced 2"}}))
	applyDown(t, s, applied(seq+1, wire.OriginLocal, p.PendingChangeID, p.ID, p.Version, "Unsynced 2"))
	u := RecordMeta(mustRecord(s.Unsync(ctx, wire.KindPatient, p.ID)))
	gone := applied(seq+2, wire.OriginLocal, u.PendingChangeID, u.ID, u.Version, "Unsynced 2")
	gone.Deleted, gone.Unsync = true, true
	applyDown(t, s, gone)
	if m, _ := get(t, s, wire.KindPatient, p.ID); m.SyncState != StateExcluded || !m.Queued {
		t.Fatalf("unsynced record = %+v, want excluded and queued", m)
	}
	if _, err := s.Import(ctx, []Import{{Kind: wire.KindPatient, Content: records.Patient{Name: "Imported 6"}}}); err != nil {
		t.Fatal(err)
	}
	for _, withDeleted := range []bool{false, true} {
		q := "SELECT id FROM patients NOT INDEXED WHERE clinic_id = ? AND sync_state = 'excluded'"
		if !withDeleted {
			q += " AND deleted = 0"
		}
		var want []ids.ID
		if err := s.db.Raw(q+" ORDER BY id", clinic).Scan(&want).Error; err != nil {
			t.Fatal(err)
		}
		var queued int64
		if err := s.db.Raw("SELECT count(*) FROM patients WHERE sync_state = 'excluded' AND queued = 1").Scan(&queued).Error; err != nil {
			t.Fatal(err)
		}
		if len(want) != 8 || queued != 2 {
			t.Fatalf("%d excluded records, %d of them queued; want 6 never queued and 2 queued", len(want), queued)
		}
		for _, few := range []int{0, 1} {
			for _, limit := range []int{1, 2, 3, 100} {
				s.fewNeverQueuedAt = few
				var got []ids.ID
				seen := capture(t, s.db, func() {
					for _, r := range listPages(t, s, ListQuery{SyncState: StateExcluded, Limit: limit, WithDeleted: withDeleted}) {
						got = append(got, RecordMeta(r).ID)
					}
				})
				indexes := false
				for _, st := range seen {
					indexes = indexes || strings.Contains(st.sql, "UNION ALL")
				}
				if indexes != (few == 0) {
					t.Errorf("few never queued below %d: the list read through the indexes = %v, want %v", few, indexes, few == 0)
				}
				if !slices.Equal(got, want) {
					t.Errorf("List(excluded, limit %d, deleted %v, few below %d) = %v, want %v", limit, withDeleted, few, got, want)
				}
			}
		}
	}
}

// listPages reads the patients list of q page by page (q.Limit a page,
// each page after the last one's last record) to its end.
func listPages(t *testing.T, s *Store, q ListQuery) []Record {
	t.Helper()
	var out []Record
	for {
		rs, err := s.List(context.Background(), wire.KindPatient, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return out
		}
		if len(rs) > q.Limit {
			t.Fatalf("List(limit %d) = %d records", q.Limit, len(rs))
		}
		out = append(out, rs...)
		q.After = RecordMeta(rs[len(rs)-1]).ID
	}
}

// scansTable says whether plan (explain's) reads the whole of table.
func scansTable(plan, table string) bool {
	for _, line := range strings.Split(plan, "; ") {
		if line == "SCAN "+table || strings.HasPrefix(line, "SCAN "+table+" ") && !strings.Contains(line, " INDEX ") {
			return true
		}
	}
	return false
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, v := range a {
		m[v]++
	}
	for _, v := range b {
		m[v]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return len(a) == len(b)
}

// TestSyncStateLookupsUseItsIndex: every statement the store runs for a
// pending or conflict lookup (Status, the in-flight set, the records
// lists) names the state as a literal and is planned on the partial
// sync_state index, with the arguments it ran with; Status's other counts
// read an index, never the table, and so does the list of the excluded
// (few never queued).
func TestSyncStateLookupsUseItsIndex(t *testing.T) {
	s := statesStore(t)
	ctx := context.Background()
	seen := capture(t, s.db, func() {
		if _, err := s.Status(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.InFlight(ctx); err != nil {
			t.Fatal(err)
		}
		for _, st := range []string{StatePending, StateConflict} {
			if _, err := s.List(ctx, wire.KindStudy, ListQuery{SyncState: st}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.List(ctx, wire.KindPatient, ListQuery{SyncState: StateExcluded}); err != nil {
			t.Fatal(err)
		}
	})
	var checked int
	for _, st := range seen {
		table := ""
		for _, sp := range records.Kinds {
			if strings.Contains(st.sql, "FROM `"+sp.Table+"`") {
				table = sp.Table
			}
		}
		if table == "" {
			continue
		}
		if strings.Contains(st.sql, "UNION ALL") {
			// The excluded list: the queued part from the sync_state
			// index, the never queued by id from the backfill's ids;
			// never the table read through.
			checked++
			plan := explain(t, s.db, st.sql, st.vars)
			for _, want := range []string{"SEARCH " + table + " USING INDEX idx_" + table + "_sync_state", "INDEX " + table + "_backfill", "SEARCH " + table + " USING INTEGER PRIMARY KEY"} {
				if !strings.Contains(plan, want) {
					t.Errorf("plan of %s = %q, want %q in it", st.sql, plan, want)
				}
			}
			if scansTable(plan, table) {
				t.Errorf("plan of %s = %q reads the whole of %s", st.sql, plan, table)
			}
			continue
		}
		var want string
		rare, bound := rareState(st.sql, st.vars)
		switch {
		case bound:
			t.Errorf("%s binds the state: SQLite plans it again for every value bound", st.sql)
			fallthrough
		case rare:
			want = "idx_" + table + "_sync_state"
		case strings.Contains(st.sql, "queued = 0"):
			want = table + "_backfill"
		case strings.Contains(st.sql, "count(*)"):
			want = "COVERING INDEX" // the table's count from an index's pages
		default:
			continue
		}
		checked++
		plan := explain(t, s.db, st.sql, st.vars)
		if !strings.Contains(plan, want) {
			t.Errorf("plan of %s = %q, want it on %s", st.sql, plan, want)
		}
	}
	// Status: per kind the rare states, the never queued, the count, the
	// oldest pending; the in-flight set; two lists; the excluded list's
	// count of the never queued and its page.
	if want := 5*len(records.Kinds) + 4; checked != want {
		t.Errorf("checked %d statements, want %d", checked, want)
	}
}

// stmt is a statement as the store ran it.
type stmt struct {
	sql  string
	vars []any
}

// capture runs fn and returns the statements it ran on db.
func capture(t *testing.T, db *gorm.DB, fn func()) []stmt {
	t.Helper()
	var mu sync.Mutex
	var seen []stmt
	record := func(db *gorm.DB) {
		if db.DryRun {
			return // a subquery built into a statement, not run
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, stmt{db.Statement.SQL.String(), db.Statement.Vars})
	}
	if err := db.Callback().Query().After("gorm:query").Register("test:capture", record); err != nil {
		t.Fatal(err)
	}
	if err := db.Callback().Row().After("gorm:row").Register("test:capture", record); err != nil {
		t.Fatal(err)
	}
	fn()
	if err := db.Callback().Query().Remove("test:capture"); err != nil {
		t.Fatal(err)
	}
	if err := db.Callback().Row().Remove("test:capture"); err != nil {
		t.Fatal(err)
	}
	return seen
}

// TestBackfillRemainingReadsInIDOrder: the backfill's count of what it has
// left takes the ids of the records never queued from the backfill's index
// and reads those rows by id, in id order, for every kind.
func TestBackfillRemainingReadsInIDOrder(t *testing.T) {
	s := statesStore(t)
	ctx := context.Background()
	var n int64
	seen := capture(t, s.rdb, func() {
		var err error
		if n, err = s.BackfillRemaining(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if n != 3 {
		t.Errorf("BackfillRemaining = %d, want the 3 imported patients", n)
	}
	var checked int
	for _, sp := range records.Kinds {
		for _, st := range seen {
			if !strings.Contains(st.sql, "FROM `"+sp.Table+"`") {
				continue
			}
			checked++
			plan := explain(t, s.rdb, st.sql, st.vars)
			if !strings.Contains(plan, "SEARCH "+sp.Table+" USING INTEGER PRIMARY KEY") || !strings.Contains(plan, "INDEX "+sp.Table+"_backfill") {
				t.Errorf("plan of %s = %q, want the rows by id from the ids of %s_backfill", st.sql, plan, sp.Table)
			}
		}
	}
	if checked != len(records.Kinds) {
		t.Errorf("checked %d statements, want one a kind", checked)
	}
}

// rareState says whether sql looks up pending or conflict records; bound
// says the state is an argument, not a literal.
func rareState(sql string, vars []any) (rare, bound bool) {
	if strings.Contains(sql, "sync_state = 'pending'") || strings.Contains(sql, "sync_state = 'conflict'") {
		return true, false
	}
	if strings.Contains(sql, "sync_state") {
		for _, v := range vars {
			if v == StatePending || v == StateConflict {
				return true, true
			}
		}
	}
	return false, false
}

// explain is the query plan of sql with vars, its lines joined by "; ".
func explain(t *testing.T, db *gorm.DB, sql string, vars []any) string {
	t.Helper()
	rows, err := db.Raw("EXPLAIN QUERY PLAN "+sql, vars...).Rows()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}
