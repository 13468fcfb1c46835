package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// roundTrips counts the round trips to PostgreSQL on a store's
// connections: a write after a read (or the first write) starts one, so
// several statements sent before reading an answer (a pipeline, a
// multi-statement query) count once.
type roundTrips struct{ n atomic.Int64 }

type countedConn struct {
	net.Conn
	rt    *roundTrips
	wrote atomic.Bool // written since the last read
}

func (c *countedConn) Write(b []byte) (int, error) {
	if !c.wrote.Swap(true) {
		c.rt.n.Add(1)
	}
	return c.Conn.Write(b)
}

func (c *countedConn) Read(b []byte) (int, error) {
	c.wrote.Store(false)
	return c.Conn.Read(b)
}

// openCounted opens a store over a fresh database with one connection
// whose round trips are counted. The connection is never pinged when the
// pool hands it out (pgx's stdlib pings one idle for a second), so the
// count is the store's own statements however slow the machine is. The
// URL is returned for a second store on the same database.
func openCounted(t *testing.T) (*Store, *roundTrips, string) {
	t.Helper()
	url := testenv.PostgresDB(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	rt := &roundTrips{}
	var d net.Dialer
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: c, rt: rt}, nil
	}
	sqlDB := stdlib.OpenDB(*cfg, stdlib.OptionShouldPing(func(context.Context, stdlib.ShouldPingParams) bool { return false }))
	s, err := openWith(context.Background(), postgres.New(postgres.Config{Conn: sqlDB}), &seqIDs{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	sqlDB.SetMaxOpenConns(1) // one connection: its statement cache is warm after a first save
	return s, rt, url
}

// auditedSave returns ctx with a save hook appending an audit entry, as the
// API's (api.auditInSave) does.
func auditedSave(t *testing.T, s *Store, clinic ids.ID) context.Context {
	t.Helper()
	log, err := audit.Open(context.Background(), s.DB())
	if err != nil {
		t.Fatal(err)
	}
	return WithSaveHook(context.Background(), func(tx *gorm.DB, rec Record) error {
		_, err := log.AppendTx(tx, audit.Entry{Chain: fmt.Sprintf("cloud:%s", clinic), Clinic: clinic, Actor: "operator",
			Action: "create", Kind: "patients", Target: RecordMeta(rec).ID.String(), Outcome: 201})
		return err
	})
}

// A save's round trips to PostgreSQL: a lone save, and each further save
// of a group commit. Each is a wake-up of PostgreSQL and of the node, which
// on a busy machine is what a save's latency is made of (docs/performance.md,
// "The cloud's API write path"); this fails if statements creep back in.
func TestSaveRoundTrips(t *testing.T) {
	const (
		lone        = 5 // begin with the clinic's row, the record's read, its write, the audit entry, the change's rows with commit
		furtherSave = 3 // the savepoint, the write, the audit entry (the batch read the records at once)
	)
	s, rt, url := openCounted(t)
	enroll(t, s, 100, "")
	ctx := auditedSave(t, s, 100)
	create := func(id ids.ID) error {
		_, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: id, Create: true, ChangeID: id,
			Content: records.Sample(wire.KindPatient, int(id), nil)})
		return err
	}
	// Warm up: the connection's statement cache and the audit chain's head.
	for id := ids.ID(1); id <= 2; id++ {
		if err := create(id); err != nil {
			t.Fatal(err)
		}
	}
	base := version.First
	update := func(id ids.ID, changeID ids.ID) error {
		rec, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: id, Base: &base, ChangeID: changeID,
			Content: records.Sample(wire.KindPatient, int(changeID), nil)})
		if err == nil {
			base = RecordMeta(rec).Version
		}
		return err
	}
	if err := update(1, 10); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		save func() error
	}{
		{"create", func() error { return create(3) }},
		{"update", func() error { return update(1, 11) }},
	} {
		rt.n.Store(0)
		if err := c.save(); err != nil {
			t.Fatal(err)
		}
		got := rt.n.Load()
		t.Logf("a lone %s: %d round trips", c.name, got)
		if got > lone {
			t.Errorf("a lone %s took %d round trips, want at most %d", c.name, got, lone)
		}
	}

	// A group commit: saves queued behind another node's hold of the
	// clinic's row go in batches (how many depends on timing; each batch
	// costs what a lone save does, and when it holds more than one the
	// read of its records and its first save's savepoint; each further
	// save less).
	other, err := Open(context.Background(), url, &seqIDs{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	release := holdClinic(t, other, 100)
	batches0, saves0 := s.GroupCommits()
	rt.n.Store(0)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- create(ids.ID(100 + i)) })
	}
	waitQueued(t, s, 100, saves0+n)
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	batches1, _ := s.GroupCommits()
	b := batches1 - batches0
	got, want := rt.n.Load(), b*(lone+2)+(n-b)*furtherSave
	t.Logf("%d saves in %d group commits: %d round trips (%.1f a save)", n, b, got, float64(got)/n)
	if got > want {
		t.Errorf("%d saves in %d group commits took %d round trips, want at most %d", n, b, got, want)
	}
	checkDense(t, s, 100, 3+1+1+n)

	// The relay: the outbox rows with their changes, then (after the
	// publish) their deletion, in a transaction. A first round warms the
	// connection's statements.
	relay := func(want int) {
		t.Helper()
		sent, err := s.RelayBatch(context.Background(), 1000, func(context.Context, wire.Batch) error { return nil })
		if err != nil || sent != want {
			t.Fatalf("RelayBatch = %d, %v; want %d", sent, err, want)
		}
	}
	relay(3 + 1 + 1 + n)
	if err := create(500); err != nil {
		t.Fatal(err)
	}
	rt.n.Store(0)
	relay(1)
	const relayRound = 2 // begin with the rows and their changes, the delete with the commit
	if got := rt.n.Load(); got > relayRound {
		t.Errorf("a relay round took %d round trips, want at most %d", got, relayRound)
	}
}

// The audit append of a save is one statement on PostgreSQL (the head's
// guarded move and the entry's insert, the insert only if the head moved).
// Its hint of the head goes stale when another node appends to the chain
// and when the save that appended is rolled back: the statement then
// inserts nothing and the append goes on from the head read in the
// transaction. The chain stays whole, one entry per committed save.
func TestSaveAuditChainAcrossNodesAndRollbacks(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresDB(t)
	nodes := make([]*Store, 2)
	logs := make([]*audit.Log, 2)
	for i := range nodes {
		s, err := Open(ctx, url, &seqIDs{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if logs[i], err = audit.Open(ctx, s.DB()); err != nil {
			t.Fatal(err)
		}
		nodes[i] = s
	}
	enroll(t, nodes[0], 100, "")
	const chain = "cloud:100"
	hooked := func(node int, failAfter bool) context.Context {
		return WithSaveHook(ctx, func(tx *gorm.DB, rec Record) error {
			if _, err := logs[node].AppendTx(tx, audit.Entry{Chain: chain, Clinic: 100, Actor: "operator", Action: "create",
				Kind: "patients", Target: RecordMeta(rec).ID.String(), Outcome: 201}); err != nil {
				return err
			}
			if failAfter {
				return errors.New("failed after its entry")
			}
			return nil
		})
	}
	save := func(node int, id ids.ID, failAfter bool) error {
		_, err := nodes[node].Save(hooked(node, failAfter), 100, Edit{Kind: wire.KindPatient, ID: id, Create: true, ChangeID: id,
			Content: records.Sample(wire.KindPatient, int(id), nil)})
		return err
	}
	committed := 0
	for _, step := range []struct{ node, saves int }{{0, 3}, {1, 2}, {0, 2}, {1, 1}} {
		for range step.saves {
			committed++
			if err := save(step.node, ids.ID(committed), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A batch on node 0 in which a save fails after appending its entry:
	// the next save's append finds the hint ahead of the head.
	release := holdClinic(t, nodes[1], 100)
	_, saves0 := nodes[0].GroupCommits()
	errs := make([]chan error, 3)
	for i := range errs {
		errs[i] = make(chan error, 1)
		id := ids.ID(100 + i)
		go func() { errs[i] <- save(0, id, i == 1) }()
		waitQueued(t, nodes[0], 100, saves0+int64(i)+1)
	}
	release()
	for i, ch := range errs {
		if err := <-ch; (err != nil) != (i == 1) {
			t.Fatalf("save %d = %v", i, err)
		}
	}
	committed += 2
	v, err := logs[1].Verify(ctx, chain)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.Entries != int64(committed) {
		t.Fatalf("Verify = %+v, want ok with %d entries", v, committed)
	}
	checkDense(t, nodes[0], 100, committed)
}

// The relay's statement probes each outbox row's change through the
// primary key, whatever the planner thinks of the tables: written as a
// plain lateral join, PostgreSQL pulled the lookup up into a join and, with
// the outbox's statistics from a backlog, planned a hash join over every
// change (seen in the latency benchmark). Here the planner is told to
// avoid nested loops, which only a lookup that cannot be pulled up still
// gets.
func TestRelayRowsProbeTheChanges(t *testing.T) {
	s := open(t)
	for _, q := range []string{
		"INSERT INTO changes (clinic_id, cloud_seq, change_id, kind, record_id, origin, base_version, new_version, deleted, payload, at, accepted_at) " +
			"SELECT 1, g, g, 'patient', g, 'cloud', '', '1.0', false, repeat('x', 300), now(), now() FROM generate_series(1, 20000) g",
		"INSERT INTO outbox (clinic_id, cloud_seq, created_at) SELECT 1, g, now() FROM generate_series(1, 5000) g",
		"ANALYZE changes", "ANALYZE outbox",
	} {
		if err := s.db.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	var plan []string
	err := s.db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SET LOCAL enable_nestloop = off").Error; err != nil {
			return err
		}
		rows, err := tx.Statement.ConnPool.QueryContext(context.Background(), "EXPLAIN "+relayRows, 512)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			plan = append(plan, line)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "Index Cond: ((clinic_id = o.clinic_id) AND (cloud_seq = o.cloud_seq))") {
		t.Fatalf("the relay's statement does not probe changes by its key per row:\n%s", text)
	}
}

// The relay runs its statement every second from the start, while changes
// is empty. Had it been prepared once for the connection, PostgreSQL would
// after five runs keep a generic plan made then, which (both indexes
// looking as cheap on an empty table) probes changes through (clinic_id,
// change_id) by clinic_id alone: each outbox row then read every change of
// its clinic, and a backfill's relay rounds took seconds. Here a round
// after such a start, over 1,000 outbox rows of a clinic with 20,000
// changes, must use only the primary key: the index statistics of changes
// are read before and after it, on the same connection.
func TestRelayRoundAfterAnEmptyStart(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	sqlDB, err := s.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1) // the rounds and the statistics on one connection
	relay := func(want int) {
		t.Helper()
		sent, err := s.RelayBatch(ctx, 1000, func(context.Context, wire.Batch) error { return nil })
		if err != nil || sent != want {
			t.Fatalf("RelayBatch = %d, %v; want %d", sent, err, want)
		}
	}
	for range 8 {
		relay(0)
	}
	enroll(t, s, 1, "")
	for _, q := range []string{
		"INSERT INTO changes (clinic_id, cloud_seq, change_id, kind, record_id, origin, base_version, new_version, deleted, payload, at, accepted_at) " +
			"SELECT 1, g, g, 'patient', g, 'cloud', '', '1.0', false, '{}', now(), now() FROM generate_series(1, 20000) g",
		"INSERT INTO outbox (clinic_id, cloud_seq, created_at) SELECT 1, g, now() FROM generate_series(19001, 20000) g",
	} {
		if err := s.db.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	// idx_scan of each index of changes.
	scans := func() map[string]int64 {
		return pgStats(t, s, "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = 'changes'")
	}
	before := scans()
	relay(1000)
	after := scans()
	for name, n := range after {
		if d := n - before[name]; d != 0 && name != "changes_pkey" {
			t.Errorf("the relay round scanned index %s %d times, want only changes_pkey (%d)", name, d, after["changes_pkey"]-before["changes_pkey"])
		}
	}
	if d := after["changes_pkey"] - before["changes_pkey"]; d < 1000 {
		t.Errorf("the relay round probed changes_pkey %d times, want 1000", d)
	}
}

// An accept transaction's round trips: a batch of a clinic's new records
// costs begin with the clinic's row (and whether it has parked changes)
// and the change ids its sequence holds, the records the changes change,
// the writes with commit, whatever its size (it was seven: begin, the
// change ids, the writes and commit each alone, and the parked change ids
// asked too). The parked change ids are asked only of a clinic that
// has parked changes (it was a round trip more for every batch): for the
// others none of a batch can be parked.
func TestApplyUpRoundTrips(t *testing.T) {
	s, rt, _ := openCounted(t)
	enroll(t, s, 100, "")
	next := ids.ID(1)
	patients := func(n int) []wire.Envelope {
		es := make([]wire.Envelope, n)
		for i := range es {
			es[i] = changeOf(100, next, next, records.Sample(wire.KindPatient, int(next), nil))
			next++
		}
		return es
	}
	applyUp(t, s, 100, patients(3)...) // warm: the connection's statements
	fresh := patients(30)
	// A study whose patient the cloud does not have yet: it parks.
	orphan := changeOf(100, 900, 900, records.Sample(wire.KindStudy, 900, map[wire.Kind]ids.ID{wire.KindPatient: 901}))
	for _, c := range []struct {
		name     string
		es       []wire.Envelope
		want     int64 // 0: not checked
		accepted int
	}{
		{"30 new patients", fresh, 3, 30},
		{"their redelivery", fresh, 3, 0},
		{"a study waiting for its patient", []wire.Envelope{orphan}, 0, 0},
		// Each change then asks whether it waits behind a parked one.
		{"new patients while a change is parked", patients(5), 0, 5},
	} {
		rt.n.Store(0)
		res := applyUp(t, s, 100, c.es...)
		got := rt.n.Load()
		if res.Accepted != c.accepted || res.Accepted+res.Duplicates+res.Parked != len(c.es) {
			t.Errorf("ApplyUp(%s) = %+v, want %d accepted, the rest duplicates or parked", c.name, res, c.accepted)
		}
		t.Logf("%s: %d round trips", c.name, got)
		if c.want > 0 && got > c.want {
			t.Errorf("ApplyUp(%s) took %d round trips, want at most %d", c.name, got, c.want)
		}
	}
	if n, err := s.ParkedCount(context.Background(), 100); err != nil || n != 1 {
		t.Fatalf("ParkedCount = %d, %v; want 1", n, err)
	}
}

// An accept transaction's lookups (the change ids its clinics' sequences
// hold, the records its changes change) are planned each time they run.
// Prepared once for the connection, PostgreSQL would after five runs keep
// a generic plan made while the tables were nearly empty, which reads each
// lookup's table whole (a hash join over a sequential scan) in every
// transaction for as long as the connection lives. Here eight small
// batches run on one connection over nearly empty tables, then the tables
// get 20,000 rows (autovacuum off, so no ANALYZE plans them afresh), and a
// batch of new patients must not scan changes or patients.
func TestApplyUpAfterAnEmptyStart(t *testing.T) {
	s := open(t)
	sqlDB, err := s.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1) // the batches and the statistics on one connection
	enroll(t, s, 1, "")
	for _, q := range []string{"ALTER TABLE changes SET (autovacuum_enabled = false)", "ALTER TABLE patients SET (autovacuum_enabled = false)"} {
		if err := s.db.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	next := ids.ID(100_000)
	batch := func(n int) []wire.Envelope {
		es := make([]wire.Envelope, n)
		for i := range es {
			es[i] = changeOf(1, next, next, records.Sample(wire.KindPatient, int(next), nil))
			next++
		}
		return es
	}
	for range 8 {
		applyUp(t, s, 1, batch(2)...)
	}
	for _, q := range []string{
		"INSERT INTO changes (clinic_id, cloud_seq, change_id, kind, record_id, origin, base_version, new_version, deleted, payload, at, accepted_at) " +
			"SELECT 1, 1000 + g, g, 'patient', g, 'local', '', '1.0', false, '{}', now(), now() FROM generate_series(1, 20000) g",
		"INSERT INTO patients (clinic_id, id, version, origin, last_change_id, cloud_seq, name) " +
			"SELECT 1, g, '1.0', 'local', g, 1000 + g, 'Patient ' || g FROM generate_series(1, 20000) g",
		"UPDATE clinics SET last_seq = 30000 WHERE id = 1",
	} {
		if err := s.db.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	// seq_scan of each table.
	scans := func() map[string]int64 {
		return pgStats(t, s, "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname IN ('changes', 'patients')")
	}
	before := scans()
	res := applyUp(t, s, 1, batch(30)...)
	after := scans()
	if res.Accepted != 30 {
		t.Fatalf("ApplyUp accepted %d, want 30", res.Accepted)
	}
	for _, table := range []string{"changes", "patients"} {
		if d := after[table] - before[table]; d != 0 {
			t.Errorf("a batch of 30 new patients scanned %s whole %d times, want 0 (a generic plan made on empty tables)", table, d)
		}
	}
}

// pgStats runs query, which selects a name and a count from PostgreSQL's
// statistics views, after flushing this connection's counts (a backend
// flushes them when idle, at most once a second unless asked).
func pgStats(t *testing.T, s *Store, query string) map[string]int64 {
	t.Helper()
	if err := s.db.Exec("SELECT pg_stat_force_next_flush()").Error; err != nil {
		t.Fatal(err)
	}
	rows, err := s.db.Raw(query).Rows()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	m := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		m[name] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(m) == 0 {
		t.Fatalf("no statistics from %s", query)
	}
	return m
}
