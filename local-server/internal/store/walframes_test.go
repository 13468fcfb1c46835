//go:build unix

package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// The replication benchmark's work on the clinic's database, seen in its
// WAL: which pages each group commit writes (every page a commit changed
// is one frame, written by SQLite as two pwrites, and copied once more to
// the database file by the next checkpoint), and which table or index
// each page belongs to (docs/performance.md, "The clinic's WAL pages per
// create").

// liveWorkload is what sc-local does during the replication benchmark:
// writers clients creating patients of about 1 KB, each create's audit
// entry in its savepoint (as the API writes it), and a relay that reads
// the outbox every linger, deletes what it "sent" and applies the cloud's
// acceptances of it, all through the group commit.
type liveWorkload struct {
	creates, writers int
	// random gives the patients random names and birth dates (a clinic's
	// search indexes take them at random places); otherwise they are the
	// benchmark's ("Patient N", one birth date), which sort in creation order.
	random bool
}

// run runs w on s and returns how many creates it made.
func (w liveWorkload) run(tb testing.TB, s *Store) int {
	tb.Helper()
	ctx := context.Background()
	l, err := audit.Open(ctx, s.DB())
	if err != nil {
		tb.Fatal(err)
	}
	l.WithWriter(s.Write)
	chain := "local:" + s.Clinic().String()
	notes := strings.Repeat("x", 900)
	var next atomic.Int64
	stop := make(chan struct{})
	relayDone := make(chan error, 1)
	go func() { relayDone <- relayLoop(s, stop) }()
	var wg sync.WaitGroup
	errs := make(chan error, w.writers)
	for g := range w.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 17))
			for {
				i := next.Add(1)
				if i > int64(w.creates) {
					return
				}
				p := records.Patient{ChartNo: fmt.Sprintf("C-%07d", i), Name: fmt.Sprintf("Patient %d", i), BirthDate: "1980-05-17",
					Sex: []string{"F", "M", "O"}[i%3], Phone: "010-1234-5678", Notes: notes}
				if w.random {
					p.Name = fmt.Sprintf("%s %s", walNames[rnd.IntN(len(walNames))], walNames[rnd.IntN(len(walNames))]+fmt.Sprint(rnd.IntN(1000)))
					p.BirthDate = fmt.Sprintf("%04d-%02d-%02d", 1930+rnd.IntN(90), 1+rnd.IntN(12), 1+rnd.IntN(28))
				}
				hctx := WithWriteHook(ctx, func(tx *gorm.DB, rec Record) error {
					_, err := l.AppendTx(tx, audit.Entry{Chain: chain, Clinic: s.Clinic(), Actor: "token:bench", Action: "create",
						Kind: "patients", Target: RecordMeta(rec).ID.String(), Remote: "127.0.0.1", Outcome: 201})
					return err
				})
				if _, err := s.Save(hctx, Edit{Kind: wire.KindPatient, Content: p}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	// The relay empties the outbox, then stops.
	for {
		lv, bf, err := s.OutboxLanes(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if lv+bf == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	if err := <-relayDone; err != nil {
		tb.Fatal(err)
	}
	return w.creates
}

var walNames = []string{"kim", "lee", "park", "choi", "jung", "kang", "cho", "yoon", "jang", "lim", "han", "oh", "seo", "shin",
	"kwon", "hwang", "ahn", "song", "ryu", "hong", "smith", "jones", "brown", "garcia", "miller", "davis", "martin", "muller"}

// relayLoop is the relay and the down path as sc-local runs them: a round
// every 20 ms (the relay's linger) reads the outbox, deletes the rows
// "published", and applies the cloud's acceptances of them.
func relayLoop(s *Store, stop chan struct{}) error {
	ctx := context.Background()
	seq := int64(0)
	for {
		rows, err := s.NextOutbox(ctx, 1000)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			select {
			case <-stop:
				return nil
			case <-time.After(20 * time.Millisecond):
				continue
			}
		}
		down := make([]wire.Envelope, len(rows))
		done := make([]int64, len(rows))
		for i, r := range rows {
			if err := json.Unmarshal([]byte(r.Envelope), &down[i]); err != nil {
				return err
			}
			seq++
			down[i].Type, down[i].CloudSeq = wire.TypeApplied, seq
			done[i] = r.ID
		}
		if err := s.DeleteOutbox(ctx, done...); err != nil {
			return err
		}
		if res, err := s.ApplyDown(ctx, down); err != nil || res.Applied != len(down) {
			return fmt.Errorf("ApplyDown = %+v, %w", res, err)
		}
		select {
		case <-stop:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// walCount is what a stretch of WAL held.
type walCount struct {
	commits, frames int
	pageSize        int
	// again counts frames of a page its transaction had written already
	// (a page cache spilled before the commit).
	again int
	// byOwner counts frames by the table or index their page belongs to
	// once the commit that wrote it is applied.
	byOwner map[string]int
}

// walFromEmpty checkpoints s's WAL into the database file, empties it and
// stops automatic checkpoints (callers set wal_autocheckpoint back).
func walFromEmpty(tb testing.TB, s *Store) {
	tb.Helper()
	var busy, log, done int
	if err := s.db.Raw("PRAGMA wal_checkpoint(TRUNCATE)").Row().Scan(&busy, &log, &done); err != nil || busy != 0 || log != 0 {
		tb.Fatalf("wal_checkpoint(TRUNCATE) = %d, %d, %d, %v; want 0, 0", busy, log, done, err)
	}
	if err := s.db.Exec("PRAGMA wal_autocheckpoint=0").Error; err != nil {
		tb.Fatal(err)
	}
}

// countWAL runs fn on s with the WAL never checkpointed and counts the
// frames fn's commits appended to it.
func countWAL(tb testing.TB, s *Store, fn func()) walCount {
	tb.Helper()
	// The database file alone must hold every commit so far: the WAL
	// read below starts empty.
	walFromEmpty(tb, s)
	image, err := os.ReadFile(s.path)
	if err != nil {
		tb.Fatal(err)
	}
	fn()
	wal, err := os.ReadFile(s.path + "-wal")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := walFrames(image, wal)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.db.Exec("PRAGMA wal_autocheckpoint=4000").Error; err != nil {
		tb.Fatal(err)
	}
	return c
}

// walFrames applies the committed frames of wal to image (the database
// file the WAL started from) commit by commit, and names the owner of
// each frame's page after its commit.
func walFrames(image, wal []byte) (walCount, error) {
	c := walCount{byOwner: map[string]int{}}
	if len(wal) < 32 {
		return c, nil
	}
	ps := int(binary.BigEndian.Uint32(wal[8:]))
	if ps == 1 {
		ps = 65536
	}
	c.pageSize = ps
	salt1, salt2 := binary.BigEndian.Uint32(wal[16:]), binary.BigEndian.Uint32(wal[20:])
	db := append([]byte(nil), image...)
	var txn []uint32 // the pages of the commit being read
	before := ownersOf(db, ps)
	for off := 32; off+24+ps <= len(wal); off += 24 + ps {
		h := wal[off : off+24]
		if binary.BigEndian.Uint32(h[8:]) != salt1 || binary.BigEndian.Uint32(h[12:]) != salt2 {
			break
		}
		pg := binary.BigEndian.Uint32(h)
		size := int(binary.BigEndian.Uint32(h[4:]))
		if need := int(pg) * ps; need > len(db) {
			db = append(db, make([]byte, need-len(db))...)
		}
		copy(db[int(pg-1)*ps:], wal[off+24:off+24+ps])
		txn = append(txn, pg)
		if size == 0 {
			continue
		}
		db = db[:size*ps]
		after := ownersOf(db, ps)
		seen := map[uint32]bool{}
		for _, p := range txn {
			if seen[p] {
				c.again++
			}
			seen[p] = true
			o, ok := after[p]
			if !ok {
				o = before[p] + " (freed)"
			}
			c.byOwner[o]++
		}
		c.commits++
		c.frames += len(txn)
		txn, before = txn[:0], after
	}
	return c, nil
}

// ownersOf names the owner of every page of db reachable from the schema:
// the table or index whose b-tree (or overflow chain) holds it, "page 1",
// or "freelist".
func ownersOf(db []byte, ps int) map[uint32]string {
	owners := map[uint32]string{1: "page 1"}
	usable := ps - int(db[20])
	page := func(n uint32) []byte {
		if n == 0 || int(n)*ps > len(db) {
			return nil
		}
		return db[int(n-1)*ps : int(n)*ps]
	}
	type root struct {
		name string
		page uint32
	}
	var roots []root
	var walk func(n uint32, name string, leaf func(payload []byte))
	overflow := func(first uint32, name string, total, local int, local0 []byte) []byte {
		out := append([]byte(nil), local0...)
		for n := first; n != 0 && len(out) < total; {
			owners[n] = name
			p := page(n)
			if p == nil {
				break
			}
			out = append(out, p[4:usable]...)
			n = binary.BigEndian.Uint32(p)
		}
		if len(out) > total {
			out = out[:total]
		}
		return out
	}
	walk = func(n uint32, name string, leaf func(payload []byte)) {
		p := page(n)
		if p == nil {
			return
		}
		if n != 1 {
			owners[n] = name
		}
		hdr := 0
		if n == 1 {
			hdr = 100
		}
		typ := p[hdr]
		cells := int(binary.BigEndian.Uint16(p[hdr+3:]))
		interior := typ == 0x02 || typ == 0x05
		ptrs := hdr + 8
		if interior {
			ptrs = hdr + 12
		}
		maxLocal := func(table bool) (int, int) {
			if table {
				return usable - 35, (usable-12)*32/255 - 23
			}
			return (usable-12)*64/255 - 23, (usable-12)*32/255 - 23
		}
		payloadAt := func(at int, table bool) []byte {
			size, k := varint(p[at:])
			at += k
			if table {
				_, k = varint(p[at:]) // rowid
				at += k
			}
			x, m := maxLocal(table)
			local := int(size)
			if local > x {
				kk := m + (int(size)-m)%(usable-4)
				local = m
				if kk <= x {
					local = kk
				}
				return overflow(binary.BigEndian.Uint32(p[at+local:]), name, int(size), local, p[at:at+local])
			}
			return p[at : at+local]
		}
		for i := range cells {
			at := int(binary.BigEndian.Uint16(p[ptrs+2*i:]))
			switch typ {
			case 0x05:
				walk(binary.BigEndian.Uint32(p[at:]), name, leaf)
			case 0x02:
				walk(binary.BigEndian.Uint32(p[at:]), name, leaf)
				payloadAt(at+4, false)
			case 0x0d:
				pl := payloadAt(at, true)
				if leaf != nil {
					leaf(pl)
				}
			case 0x0a:
				payloadAt(at, false)
			}
		}
		if interior {
			walk(binary.BigEndian.Uint32(p[hdr+8:]), name, leaf)
		}
	}
	walk(1, "sqlite_schema", func(pl []byte) {
		vals := recordValues(pl)
		if len(vals) >= 4 {
			if rp, ok := vals[3].(int64); ok && rp > 0 {
				roots = append(roots, root{name: fmt.Sprint(vals[1]), page: uint32(rp)})
			}
		}
	})
	sort.Slice(roots, func(i, j int) bool { return roots[i].page < roots[j].page })
	for _, r := range roots {
		walk(r.page, r.name, nil)
	}
	for trunk := binary.BigEndian.Uint32(db[32:]); trunk != 0; {
		p := page(trunk)
		if p == nil {
			break
		}
		owners[trunk] = "freelist"
		for i := range int(binary.BigEndian.Uint32(p[4:])) {
			owners[binary.BigEndian.Uint32(p[8+4*i:])] = "freelist"
		}
		trunk = binary.BigEndian.Uint32(p)
	}
	return owners
}

// varint is SQLite's variable-length integer at the start of b.
func varint(b []byte) (uint64, int) {
	var v uint64
	for i := range 8 {
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return v<<8 | uint64(b[8]), 9
}

// recordValues decodes a record's integers and text (enough for the schema).
func recordValues(pl []byte) []any {
	hsize, k := varint(pl)
	var types []uint64
	for at := k; at < int(hsize); {
		t, n := varint(pl[at:])
		types = append(types, t)
		at += n
	}
	var out []any
	at := int(hsize)
	for _, t := range types {
		switch {
		case t == 0:
			out = append(out, nil)
		case t >= 1 && t <= 6:
			n := []int{0, 1, 2, 3, 4, 6, 8}[t]
			var v int64
			for i := range n {
				v = v<<8 | int64(pl[at+i])
			}
			if n > 0 && pl[at]&0x80 != 0 {
				v -= 1 << (8 * n)
			}
			out = append(out, v)
			at += n
		case t == 7:
			out = append(out, nil)
			at += 8
		case t == 8:
			out = append(out, int64(0))
		case t == 9:
			out = append(out, int64(1))
		case t >= 12:
			n := int(t-12) / 2
			out = append(out, string(pl[at:at+n]))
			at += n
		}
	}
	return out
}

// TestWALFramesReadsOwners checks the WAL reading itself: a commit of one
// row in a table of its own writes that table's page, and every frame the
// store's creates wrote belongs to a table, an index, page 1 or the freelist.
func TestWALFramesReadsOwners(t *testing.T) {
	s := open(t)
	if err := s.db.Exec("CREATE TABLE wal_probe (v text)").Error; err != nil {
		t.Fatal(err)
	}
	c := countWAL(t, s, func() {
		if err := s.db.Exec("INSERT INTO wal_probe VALUES ('x')").Error; err != nil {
			t.Fatal(err)
		}
	})
	if c.commits != 1 || c.byOwner["wal_probe"] != 1 {
		t.Fatalf("one insert: %+v, want one commit writing wal_probe's page", c)
	}
	c = countWAL(t, s, func() { liveWorkload{creates: 50, writers: 4}.run(t, s) })
	if c.byOwner["patients"] == 0 || c.byOwner["outbox"] == 0 || c.byOwner["versions"] == 0 || c.byOwner["audit_log"] == 0 {
		t.Fatalf("50 creates: %+v, want frames of patients, outbox, versions and audit_log", c)
	}
	for o := range c.byOwner {
		if strings.HasPrefix(o, " (freed)") {
			t.Fatalf("a frame of no known page: %+v", c)
		}
	}
}

// BenchmarkCreateWAL runs the replication benchmark's clinic-side work
// (liveWorkload, 3,000 creates by 8 writers) with the WAL never
// checkpointed and reports the frames it wrote; -v logs them by owner.
// Names as the benchmark's ("Patient N", one birth date: the search
// indexes take them in order) or random (a clinic's: at random places);
// pages of 4 KiB (SQLite's default, the clinic's) or larger.
// SCSYNC_WAL_DROP names indexes to drop first (comma-separated), to see
// what one costs.
func BenchmarkCreateWAL(b *testing.B) {
	for _, bc := range []struct {
		name   string
		random bool
		page   string
	}{
		{"bench-names", false, ""},
		{"random-names", true, ""},
		{"bench-names/page-8192", false, "8192"},
		{"bench-names/page-16384", false, "16384"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := liveWorkload{creates: 3000, writers: 8, random: bc.random}
			for b.Loop() {
				b.StopTimer()
				s := openForWAL(b, bc.page)
				b.StartTimer()
				var n int
				c := countWAL(b, s, func() { n = w.run(b, s) })
				b.StopTimer()
				b.ReportMetric(float64(c.frames)/float64(n), "frames/create")
				b.ReportMetric(float64(c.frames*c.pageSize)/float64(n)/1024, "KiB/create")
				b.ReportMetric(float64(n)/float64(c.commits), "creates/commit")
				b.Log(c.table(n))
				_ = s.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCreateCPU runs liveWorkload as sc-local runs it (the WAL
// checkpointed every 4,000 pages) and reports the process's CPU per
// create, with pages of 4, 8 and 16 KiB.
func BenchmarkCreateCPU(b *testing.B) {
	for _, page := range []string{"4096", "8192", "16384"} {
		b.Run("page-"+page, func(b *testing.B) {
			w := liveWorkload{creates: 3000, writers: 8}
			var cpu time.Duration
			var total int
			for b.Loop() {
				b.StopTimer()
				s := openForWAL(b, page)
				b.StartTimer()
				c0 := cpuNow()
				total += w.run(b, s)
				cpu += cpuNow() - c0
				b.StopTimer()
				_ = s.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(total), "cpu-µs/create")
		})
	}
}

// table lists c's frames by owner, most first, for n creates.
func (c walCount) table(n int) string {
	type row struct {
		o string
		n int
	}
	var rows []row
	for o, k := range c.byOwner {
		rows = append(rows, row{o, k})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n || rows[i].n == rows[j].n && rows[i].o < rows[j].o })
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d creates, %d commits, %d frames of %d B (%d of a page written before in its transaction)\n", n, c.commits, c.frames, c.pageSize, c.again)
	for _, r := range rows {
		fmt.Fprintf(&sb, "  %-34s %7d  %.3f/create  %.2f/commit\n", r.o, r.n, float64(r.n)/float64(n), float64(r.n)/float64(c.commits))
	}
	return sb.String()
}

// openForWAL is open, with a database file made with pages of page bytes
// ("": SQLite's default) and the indexes SCSYNC_WAL_DROP names dropped.
func openForWAL(tb testing.TB, page string) *Store {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "db", "scsync.db")
	if page != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			tb.Fatal(err)
		}
		db, err := OpenPlain(path)
		if err != nil {
			tb.Fatal(err)
		}
		for _, q := range []string{"PRAGMA page_size=" + page, "PRAGMA journal_mode=WAL", "CREATE TABLE x (v)", "DROP TABLE x"} {
			if err := db.Exec(q).Error; err != nil {
				tb.Fatal(err)
			}
		}
		ClosePlain(db)
	}
	gen, err := ids.NewGenerator(5, ids.GeneratorOptions{StateFile: filepath.Join(dir, "ids.state")})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := Open(path, clinic, gen)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	for _, ix := range strings.Split(os.Getenv("SCSYNC_WAL_DROP"), ",") {
		if ix != "" {
			if err := s.db.Exec("DROP INDEX " + ix).Error; err != nil {
				tb.Fatal(err)
			}
		}
	}
	return s
}

// cpuNow is the process's CPU time so far (user and system).
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
