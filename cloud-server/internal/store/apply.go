package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/syncrules"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// clinicTx is one transaction holding a clinic's row lock: every accepted
// change of the clinic, from its queue or from the cloud API, is serialized
// by it, and cloud_seq is handed out under it.
type clinicTx struct {
	s  *Store
	tx *gorm.DB
	// c holds the clinic's id, last cloud_seq and conflict policy, as
	// locked (lockClinics reads no other column).
	c   Clinic
	res *UpResult

	// What a batch learned, so each change costs about one statement
	// instead of ten (ApplyUp primes them; other callers query as they go).
	// recs holds the records of known refs as read or last written in
	// this transaction (nil: the record does not exist); stored is the
	// file a record named as stored.
	recs   map[records.Ref]Record
	stored map[records.Ref]string
	// seen holds change ids known accepted or parked (nil: ask the table).
	seen map[ids.ID]bool
	// anyParked is whether the clinic may have parked changes (nil: not
	// checked yet).
	anyParked *bool
	// referred holds the records a primed batch's contents refer to and
	// no change of it changes, as the batch began: whether each existed
	// and was deleted. recs, once it holds such a record, comes first.
	referred map[records.Ref]refState
	// changes and outbox rows are written together before the commit.
	changes []Change
	outbox  []Outbox
	// created holds the records new in a primed batch, inserted together
	// (one statement per kind) by flush: recs knows them, so nothing in
	// the batch asks their table before; a query that must see them
	// (liveFileRefs) flushes first. A later change of such a record in
	// the same batch changes the object in place.
	created   []Record
	isCreated map[records.Ref]bool
	// synced holds the files named by records of a primed batch, marked
	// synced together (flushSynced) before the commit or before the batch
	// marks a file un-synced.
	synced []string
	// buffer is set in a primed ApplyUp batch: its new records go to
	// created. Otherwise each record is written as it is accepted.
	buffer bool
	// undo, while a save of a group commit runs (commitSaves), journals
	// what it changes in recs and stored, so that a save rolled back to
	// its savepoint leaves them as they were; load hands it copies.
	undo *[]recUndo
}

// refState is whether a record existed, and was deleted.
type refState struct{ exists, deleted bool }

// recUndo is what a save found in recs and stored for ref before it
// changed them.
type recUndo struct {
	ref         records.Ref
	rec         Record
	had, hadSHA bool
	sha         string
}

// setRec notes rec as ref's record in this transaction (journaled while a
// save runs).
func (ct *clinicTx) setRec(ref records.Ref, rec Record) {
	if ct.undo != nil {
		old, had := ct.recs[ref]
		sha, hadSHA := ct.stored[ref]
		*ct.undo = append(*ct.undo, recUndo{ref: ref, rec: old, had: had, sha: sha, hadSHA: hadSHA})
	}
	ct.recs[ref] = rec
	ct.stored[ref] = FileSHA(rec.content())
}

// revert undoes what a save journaled, newest first.
func (ct *clinicTx) revert(undo []recUndo) {
	for i := len(undo) - 1; i >= 0; i-- {
		u := undo[i]
		if u.had {
			ct.recs[u.ref] = u.rec
		} else {
			delete(ct.recs, u.ref)
		}
		if u.hadSHA {
			ct.stored[u.ref] = u.sha
		} else {
			delete(ct.stored, u.ref)
		}
	}
}

// primeSaves reads the records refs name (a statement per kind) into recs,
// for the saves of a group commit: each then reads its record, and the
// records its content refers to, from recs, and writes through it.
func (ct *clinicTx) primeSaves(refs []records.Ref) error {
	ct.recs = map[records.Ref]Record{}
	ct.stored = map[records.Ref]string{}
	byKind := map[wire.Kind][]int64{}
	var order []wire.Kind
	for _, r := range refs {
		if _, ok := ct.recs[r]; ok {
			continue
		}
		if _, err := opsFor(r.Kind); err != nil {
			continue // an unknown kind: its save fails on its own
		}
		ct.recs[r] = nil
		if byKind[r.Kind] == nil {
			order = append(order, r.Kind)
		}
		byKind[r.Kind] = append(byKind[r.Kind], int64(r.ID))
	}
	for _, kind := range order {
		k, _ := opsFor(kind)
		idList := byKind[kind]
		clinics := make([]int64, len(idList))
		for i := range clinics {
			clinics[i] = int64(ct.c.ID)
		}
		rows, err := k.find(pairsIn(ct.tx, k.spec.Table, "*", "id", clinics, idList))
		if err != nil {
			return err
		}
		for _, r := range rows {
			ref := records.Ref{Kind: kind, ID: r.meta().ID}
			ct.recs[ref] = r
			ct.stored[ref] = FileSHA(r.content())
		}
	}
	return nil
}

func (s *Store) inClinic(ctx context.Context, clinic ids.ID, fn func(ct *clinicTx) error) error {
	return s.inClinics(ctx, []ids.ID{clinic}, func(cts []*clinicTx) error { return fn(cts[0]) })
}

// inClinics is inClinic for several clinics (distinct) in one transaction:
// their rows are locked in id order (so two such transactions, or one and
// a single clinic's, cannot deadlock), cts follow clinics' order, and what
// they wrote is flushed together: a statement per table for all of them.
// The transaction is pinned: its begin travels with the clinics' lock, and
// with reads (run after the lock, as if sent alone), and its commit with
// the flush, a round trip each.
func (s *Store) inClinics(ctx context.Context, clinics []ids.ID, fn func(cts []*clinicTx) error, reads ...read) error {
	p, err := s.pin(ctx)
	if err != nil {
		return err
	}
	defer p.release() // rolls back unless committed, a panic of fn's too
	cts, err := lockClinics(ctx, p, clinics, reads)
	if err != nil {
		return err
	}
	start := make([]int64, len(cts))
	for i, ct := range cts {
		ct.s = s
		start[i] = ct.c.LastSeq
	}
	if err := fn(cts); err != nil {
		return err
	}
	writes, err := flushAll(p.tx, cts)
	if err != nil {
		return err
	}
	var moved, seqs []int64
	for i, ct := range cts {
		if ct.c.LastSeq != start[i] {
			moved = append(moved, int64(ct.c.ID))
			seqs = append(seqs, ct.c.LastSeq)
		}
	}
	switch len(moved) {
	case 0:
	case 1:
		writes = append(writes, stmt{"UPDATE clinics SET last_seq = ? WHERE id = ?", []any{seqs[0], moved[0]}})
	default:
		writes = append(writes, stmt{"UPDATE clinics SET last_seq = v.s FROM unnest(?::bigint[], ?::bigint[]) AS v(id, s) WHERE clinics.id = v.id",
			[]any{moved, seqs}})
	}
	if len(writes) == 0 {
		return p.commitWith(ctx, nil)
	}
	last := together(writes)
	return p.commitWith(ctx, &last)
}

// lockClinics begins p's transaction and locks the rows of clinics
// (distinct; in id order, so two such transactions, or one and a single
// clinic's, cannot deadlock), in one round trip, and returns a clinicTx of
// each, in clinics' order, holding the clinic's id, last cloud_seq and
// conflict policy (the columns a transaction of the clinic uses) and
// whether it has parked changes (the lock keeps that true: changes park
// only under it); reads follow the lock in the same round trip. Its
// columns are scanned by position, not through gorm's reflection. An
// unknown clinic is ErrUnknownClinic.
func lockClinics(ctx context.Context, p *pinned, clinics []ids.ID, reads []read) ([]*clinicTx, error) {
	const cols = "SELECT id, last_seq, conflict_policy, EXISTS (SELECT 1 FROM parked WHERE parked.clinic_id = clinics.id) FROM clinics "
	var q string
	var arg any
	if len(clinics) == 1 {
		q, arg = cols+"WHERE id = $1 FOR UPDATE OF clinics", int64(clinics[0])
	} else {
		ints := make([]int64, len(clinics))
		for i, c := range clinics {
			ints[i] = int64(c)
		}
		q, arg = cols+"WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE OF clinics", ints
	}
	byID := make(map[ids.ID]*clinicTx, len(clinics))
	lock := read{sql: q, args: []any{arg}, scan: func(rows pgx.Rows) error {
		ct := &clinicTx{tx: p.tx, res: &UpResult{}, anyParked: new(bool)}
		if err := rows.Scan(&ct.c.ID, &ct.c.LastSeq, &ct.c.ConflictPolicy, ct.anyParked); err != nil {
			return err
		}
		byID[ct.c.ID] = ct
		return nil
	}}
	err := p.beginWith(ctx, append([]read{lock}, reads...)...)
	if err != nil {
		return nil, err
	}
	cts := make([]*clinicTx, len(clinics))
	for i, id := range clinics {
		if cts[i] = byID[id]; cts[i] == nil {
			return nil, fmt.Errorf("%w: %s", ErrUnknownClinic, id)
		}
	}
	return cts, nil
}

// flushAll returns the statements that write what cts (sharing tx) did,
// for the transaction's last one: the records they created (a statement
// per kind), their changes and their outbox rows.
func flushAll(tx *gorm.DB, cts []*clinicTx) ([]stmt, error) {
	var created []Record
	var changes []Change
	var outbox []Outbox
	for _, ct := range cts {
		if err := ct.flushSynced(); err != nil {
			return nil, err
		}
		created = append(created, ct.created...)
		changes = append(changes, ct.changes...)
		outbox = append(outbox, ct.outbox...)
		ct.created, ct.isCreated, ct.changes, ct.outbox = nil, nil, nil, nil
	}
	writes, err := insertRecords(tx, created)
	if err != nil {
		return nil, err
	}
	if len(changes) > 0 {
		writes = append(writes, insertChanges(changes))
	}
	if len(outbox) > 0 {
		writes = append(writes, insertOutbox(outbox))
	}
	return writes, nil
}

// stmt is an SQL statement, its parameters written ?, and its arguments,
// which go to pgx as they are (not through gorm, which would expand a
// slice into a list of parameters): a Go slice is sent as a binary array
// (encodeParams: the same bytes as pgx's).
type stmt struct {
	sql  string
	args []any
}

// execTogether runs writes as one statement (together), in one round trip.
func execTogether(tx *gorm.DB, writes []stmt) error {
	if len(writes) == 0 {
		return nil
	}
	w := together(writes)
	_, err := tx.Statement.ConnPool.ExecContext(txContext(tx), w.sql, w.args...)
	return err
}

// together is writes as one statement, its parameters numbered ($1…): all
// but the last as data-modifying WITH queries of the last. PostgreSQL runs
// each of them exactly once, to completion, on one snapshot: none may read
// what another writes (they insert and update different tables).
func together(writes []stmt) stmt {
	var b strings.Builder
	var args []any
	if len(writes) > 1 {
		b.WriteString("WITH ")
	}
	for i, w := range writes {
		switch {
		case i == len(writes)-1:
			if i > 0 {
				b.WriteByte(' ')
			}
			numbered(&b, w.sql, len(args))
		default:
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("w" + strconv.Itoa(i) + " AS (")
			numbered(&b, w.sql, len(args))
			b.WriteByte(')')
		}
		args = append(args, w.args...)
	}
	return stmt{b.String(), args}
}

// numbered writes sql to b with its ? parameters numbered $n+1, $n+2, ….
// (The statements here have no other question mark: newRowsInsert refuses
// a default holding one.)
func numbered(b *strings.Builder, sql string, n int) {
	for {
		i := strings.IndexByte(sql, '?')
		if i < 0 {
			b.WriteString(sql)
			return
		}
		n++
		b.WriteString(sql[:i])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
		sql = sql[i+1:]
	}
}

// txContext is the context tx's statements run under.
func txContext(tx *gorm.DB) context.Context {
	if ctx := tx.Statement.Context; ctx != nil {
		return ctx
	}
	return context.Background()
}

// flushCreated inserts the records created since the last flush, a
// statement per kind, in one round trip.
func (ct *clinicTx) flushCreated() error {
	if len(ct.created) == 0 {
		return nil
	}
	writes, err := insertRecords(ct.tx, ct.created)
	if err != nil {
		return err
	}
	if err := execTogether(ct.tx, writes); err != nil {
		return err
	}
	ct.created, ct.isCreated = nil, nil
	return nil
}

// primeAll primes cts (sharing tx; changes[i] and contents[i] are cts[i]'s)
// in a few statements for all of them: whether each clinic has parked
// changes, which change ids are known (known: those the clinics' sequences
// hold, read with their lock), and the records the changes change and
// refer to.
func primeAll(tx *gorm.DB, cts []*clinicTx, changes [][]wire.Envelope, contents [][]records.Content, known []clinicChange) error {
	type key struct {
		clinic ids.ID
		ref    records.Ref
	}
	byID := make(map[ids.ID]*clinicTx, len(cts))
	var clinicList, changeClinics, changeIDs []int64
	// The records the changes change are read whole; those their contents
	// only refer to, just whether they exist (missingRef asks no more):
	// a backfill's studies refer to patients read whole, through gorm,
	// for nothing but that.
	kindClinics, kindIDs := map[wire.Kind][]int64{}, map[wire.Kind][]int64{}
	refClinics, refIDs := map[wire.Kind][]int64{}, map[wire.Kind][]int64{}
	want := map[key]bool{}
	for i, ct := range cts {
		ct.seen = map[ids.ID]bool{}
		ct.recs = map[records.Ref]Record{}
		ct.stored = map[records.Ref]string{}
		ct.referred = map[records.Ref]refState{}
		ct.buffer = true
		if ct.anyParked == nil {
			no := false
			ct.anyParked = &no
			clinicList = append(clinicList, int64(ct.c.ID))
		}
		byID[ct.c.ID] = ct
		for _, e := range changes[i] {
			changeClinics = append(changeClinics, int64(ct.c.ID))
			changeIDs = append(changeIDs, int64(e.ChangeID))
			if k := (key{ct.c.ID, records.Ref{Kind: e.Kind, ID: e.RecordID}}); !want[k] {
				want[k] = true
				kindClinics[e.Kind] = append(kindClinics[e.Kind], int64(ct.c.ID))
				kindIDs[e.Kind] = append(kindIDs[e.Kind], int64(e.RecordID))
			}
		}
		for j := range changes[i] {
			if contents[i][j] == nil {
				continue
			}
			for _, r := range contents[i][j].Refs() {
				if k := (key{ct.c.ID, r}); !want[k] {
					want[k] = true
					ct.referred[r] = refState{}
					refClinics[r.Kind] = append(refClinics[r.Kind], int64(ct.c.ID))
					refIDs[r.Kind] = append(refIDs[r.Kind], int64(r.ID))
				}
			}
		}
	}
	if len(clinicList) > 0 { // unless inClinics read it with the clinics' rows
		var parked []ids.ID
		if err := tx.Raw("SELECT u.c FROM unnest(?::bigint[]) AS u(c) WHERE EXISTS (SELECT 1 FROM parked WHERE clinic_id = u.c)",
			pgArray(clinicList)).Scan(&parked).Error; err != nil {
			return err
		}
		for _, c := range parked {
			yes := true
			byID[c].anyParked = &yes
		}
	}
	if len(changeIDs) == 0 {
		return nil
	}
	// The change ids known: accepted (known, read with the clinics' lock),
	// or parked by a clinic that has parked changes (most have none, and
	// then none is parked).
	var parkedClinics, parkedIDs []int64
	for i, c := range changeClinics {
		if *byID[ids.ID(c)].anyParked {
			parkedClinics, parkedIDs = append(parkedClinics, c), append(parkedIDs, changeIDs[i])
		}
	}
	for _, k := range known {
		byID[k.clinic].seen[k.change] = true
	}
	if len(parkedIDs) > 0 {
		if err := knownChanges(tx, "parked", parkedClinics, parkedIDs, byID); err != nil {
			return err
		}
	}
	for kind, idList := range kindIDs {
		k, err := opsFor(kind)
		if err != nil {
			continue // an unknown kind: its change is rejected on its own
		}
		for i, id := range idList {
			byID[ids.ID(kindClinics[kind][i])].recs[records.Ref{Kind: kind, ID: ids.ID(id)}] = nil
		}
		rows, err := k.find(pairsIn(tx, k.spec.Table, "*", "id", kindClinics[kind], idList))
		if err != nil {
			return err
		}
		for _, r := range rows {
			m := r.meta()
			ct := byID[m.ClinicID]
			ref := records.Ref{Kind: kind, ID: m.ID}
			ct.recs[ref] = r
			ct.stored[ref] = FileSHA(r.content())
		}
	}
	for kind, idList := range refIDs {
		k, err := opsFor(kind)
		if err != nil {
			continue // missingRef reports it
		}
		err = scanPairs(tx, k.spec.Table, "clinic_id, id, deleted", "id", refClinics[kind], idList, func(rows *sql.Rows) error {
			var clinic, id ids.ID
			var deleted bool
			if err := rows.Scan(&clinic, &id, &deleted); err != nil {
				return err
			}
			byID[clinic].referred[records.Ref{Kind: kind, ID: id}] = refState{exists: true, deleted: deleted}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// knownChanges marks in byID's seen the change ids of table (changes or
// parked) among the pairs (clinics[i], changeIDs[i]).
func knownChanges(tx *gorm.DB, table string, clinics, changeIDs []int64, byID map[ids.ID]*clinicTx) error {
	return scanPairs(tx, table, "clinic_id, change_id", "change_id", clinics, changeIDs, func(rows *sql.Rows) error {
		var clinic, change ids.ID
		if err := rows.Scan(&clinic, &change); err != nil {
			return err
		}
		byID[clinic].seen[change] = true
		return nil
	})
}

// clinicChange is a clinic's change id.
type clinicChange struct{ clinic, change ids.ID }

// acceptedRead is the read of which of the changes of batches the
// clinics' sequences hold already (redeliveries), into known: it goes
// with the clinics' lock, in its round trip.
func acceptedRead(batches []ClinicChanges, known *[]clinicChange) read {
	var clinics, changeIDs []int64
	for _, b := range batches {
		for _, e := range b.Changes {
			clinics, changeIDs = append(clinics, int64(b.Clinic)), append(changeIDs, int64(e.ChangeID))
		}
	}
	return read{sql: pairsSQL("changes", "clinic_id, change_id", "change_id"), args: []any{clinics, changeIDs}, scan: func(rows pgx.Rows) error {
		var k clinicChange
		if err := rows.Scan(&k.clinic, &k.change); err != nil {
			return err
		}
		*known = append(*known, k)
		return nil
	}}
}

// pairsSQL is pairsIn's lookup with its two arrays as $1 and $2.
func pairsSQL(table, cols, col string) string {
	return "SELECT r.* FROM unnest($1::bigint[], $2::bigint[]) AS u(c, k) " +
		"CROSS JOIN LATERAL (SELECT " + cols + " FROM " + table + " WHERE clinic_id = u.c AND " + col + " = u.k) AS r"
}

// scanPairs is pairsIn's lookup (planned each time it runs), through pgx
// rather than gorm: each row found is handed to scan, which reads its
// columns by position.
func scanPairs(tx *gorm.DB, table, cols, col string, clinics, keys []int64, scan func(*sql.Rows) error) error {
	rows, err := tx.Statement.ConnPool.QueryContext(txContext(tx), pairsSQL(table, cols, col), pgx.QueryExecModeExec, pgArray(clinics), pgArray(keys))
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// pairsIn selects cols of the rows of table whose (clinic_id, col) is one
// of the pairs (clinics[i], keys[i]), probing the (clinic_id, col) index
// once per pair. Written "clinic_id = ? AND col IN ?" the plan depends on
// the clinic's estimated row count, and for a clinic the statistics do not
// know yet (a new clinic's first backfill) PostgreSQL scans every row of
// the clinic and filters: each batch's lookups got slower as the clinic
// grew.
//
// The statement is planned each time it runs (pgx's exec mode, as the
// relay's): prepared once for the connection, after five runs PostgreSQL
// keeps a generic plan, and one made while the tables were empty pulls the
// lateral lookup up into a hash join over a scan of the whole table (the
// changes, or all the clinics' records of the kind), once per transaction
// for as long as the connection lives: in a run of 60,000 live changes on
// one connection PostgreSQL's CPU per change went from about 100 µs to
// 600. A LIMIT keeps the lookup a subquery, but on empty tables its
// generic plan probes another index by clinic_id alone (an image's
// (clinic_id, sha256), a patient's search indexes).
func pairsIn(tx *gorm.DB, table, cols, col string, clinics, keys []int64) *gorm.DB {
	db := tx.Session(&gorm.Session{Context: txContext(tx)})
	db.Statement.ConnPool = planEachTime{tx.Statement.ConnPool}
	return db.Raw(strings.NewReplacer("$1", "?", "$2", "?").Replace(pairsSQL(table, cols, col)), pgArray(clinics), pgArray(keys))
}

// planEachTime runs queries as unnamed statements, planned each time they
// run with the tables as they are then (pgx's exec mode; still one round
// trip).
type planEachTime struct{ gorm.ConnPool }

func (p planEachTime) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return p.ConnPool.QueryContext(ctx, query, append([]any{pgx.QueryExecModeExec}, args...)...)
}

func (p planEachTime) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return p.ConnPool.QueryRowContext(ctx, query, append([]any{pgx.QueryExecModeExec}, args...)...)
}

// pgArray is keys as a PostgreSQL array literal ({1,2,3}).
func pgArray[K ~int64](keys []K) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(int64(k), 10))
	}
	b.WriteByte('}')
	return b.String()
}

// hasParked reports whether the clinic may have parked changes.
func (ct *clinicTx) hasParked() (bool, error) {
	if ct.anyParked == nil {
		var n int64
		if err := ct.tx.Model(&Parked{}).Where("clinic_id = ?", ct.c.ID).Limit(1).Count(&n).Error; err != nil {
			return false, err
		}
		b := n > 0
		ct.anyParked = &b
	}
	return *ct.anyParked, nil
}

func (ct *clinicTx) load(k kindOps, id ids.ID) (Record, bool, error) {
	ref := records.Ref{Kind: k.spec.Kind, ID: id}
	if rec, ok := ct.recs[ref]; ok {
		if rec != nil {
			if ct.undo != nil {
				rec = rec.clone() // a save that fails must not have changed it
			}
			return rec, true, nil
		}
		rec = k.newRow()
		m := rec.meta()
		m.ClinicID, m.ID = ct.c.ID, id
		return rec, false, nil
	}
	rec := k.newRow()
	err := ct.tx.Take(rec, "clinic_id = ? AND id = ?", ct.c.ID, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		m := rec.meta()
		m.ClinicID, m.ID = ct.c.ID, id
		return rec, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	rec.meta().Kind = k.spec.Kind
	return rec, true, nil
}

// missingRef returns the first record c refers to that the clinic does not
// have (live is true: tombstones count as missing). References in had (the
// record's own, before this change) are not checked again.
func (ct *clinicTx) missingRef(c records.Content, live bool, had []records.Ref) (records.Ref, bool, error) {
	for _, ref := range c.Refs() {
		if slices.Contains(had, ref) {
			continue
		}
		if rec, ok := ct.recs[ref]; ok {
			if rec == nil || (live && rec.meta().Deleted) {
				return ref, true, nil
			}
			continue
		}
		if st, ok := ct.referred[ref]; ok {
			if !st.exists || (live && st.deleted) {
				return ref, true, nil
			}
			continue
		}
		k, err := opsFor(ref.Kind)
		if err != nil {
			return ref, false, err
		}
		db := ct.tx.Model(k.model).Where("clinic_id = ? AND id = ?", ct.c.ID, ref.ID)
		if live {
			db = db.Where("NOT deleted")
		}
		var n int64
		if err := db.Count(&n).Error; err != nil {
			return ref, false, err
		}
		if n == 0 {
			return ref, true, nil
		}
	}
	return records.Ref{}, false, nil
}

// accept writes rec (created when !exists) with the next cloud_seq, and the
// change and its outbox row; then it applies the changes parked on rec.
func (ct *clinicTx) accept(rec Record, exists bool, base version.V, at time.Time, resolution string, by Person) error {
	return ct.acceptChange(rec, exists, base, at, resolution, false, by)
}

// Person is who saved a change (M18): a user record's id and username
// (zero: no person — a machine, the operator, the cloud's own work).
type Person struct {
	ID   ids.ID
	Name string
}

// PersonOf is the authenticated person of ctx (auth.SavedBy): a save is
// recorded as its caller, never as text the client sent.
func PersonOf(ctx context.Context) Person {
	id, name := auth.SavedBy(ctx)
	return Person{ID: id, Name: name}
}

// acceptChange is accept; unsync marks a tombstone that only takes the
// record out of the cloud (M7); by is who saved it.
func (ct *clinicTx) acceptChange(rec Record, exists bool, base version.V, at time.Time, resolution string, unsync bool, by Person) error {
	ct.c.LastSeq++
	m := rec.meta()
	m.CloudSeq = ct.c.LastSeq
	m.Unsynced = unsync && m.Deleted
	if !m.Deleted && m.RetentionState == RetentionDeleted {
		m.RetentionState = "" // synced again after retention took it out
	}
	prevSHA, err := ct.storedSHA(m, exists)
	if err != nil {
		return err
	}
	ref := records.Ref{Kind: m.Kind, ID: m.ID}
	switch {
	case exists && ct.isCreated[ref]:
		// Created earlier in this batch and not inserted yet: the object
		// changed in place is what flush inserts.
	case exists:
		err = ct.tx.Save(rec).Error
	case ct.buffer:
		if ct.isCreated == nil {
			ct.isCreated = map[records.Ref]bool{}
		}
		ct.created = append(ct.created, rec)
		ct.isCreated[ref] = true
	default:
		err = ct.tx.Create(rec).Error
	}
	if err != nil {
		return err
	}
	if err := ct.fileRefs(rec, prevSHA); err != nil {
		return err
	}
	if ct.recs != nil {
		ct.setRec(ref, rec)
	}
	ch := Change{
		ClinicID: m.ClinicID, CloudSeq: m.CloudSeq, ChangeID: m.LastChangeID, Kind: string(m.Kind),
		RecordID: m.ID, Origin: m.Origin, BaseVersion: base, NewVersion: m.Version,
		Deleted: m.Deleted, Conflict: resolution, ConflictOf: m.ConflictOf, At: at.UTC(), AcceptedAt: time.Now().UTC(),
		Fence: m.Fence, Unfenced: m.Unfenced, Session: m.EditSession, Unsync: unsync && m.Deleted,
		SavedBy: by.ID, SavedByName: by.Name,
	}
	// A tombstone carries the content it keeps too, so the clinic's
	// tombstone ends identical to the cloud's whoever deleted it (an edit
	// that lost against a delete leaves no trace in either). An un-sync's
	// content is the clinic's business: the clinic keeps its own copy.
	if !m.Unsynced {
		b, err := json.Marshal(rec.content())
		if err != nil {
			return err
		}
		ch.Payload = string(b)
	}
	ct.changes = append(ct.changes, ch)
	ct.outbox = append(ct.outbox, Outbox{ClinicID: m.ClinicID, CloudSeq: m.CloudSeq})
	if ct.seen != nil && ch.ChangeID != 0 {
		ct.seen[ch.ChangeID] = true
	}
	ct.res.Changes = append(ct.res.Changes, ch.Envelope())
	return ct.unpark(m.Kind, m.ID)
}

// UpResult counts what ApplyUp did with a batch.
type UpResult struct {
	// Changes lists every change written to the clinic's sequence (the
	// accepted ones, their resolutions and conflict copies), for viewers.
	Changes    []wire.Envelope
	Accepted   int // new changes accepted into the clinic's sequence
	Duplicates int // changes seen before (redeliveries)
	Parked     int // changes waiting for a record they refer to
	Unparked   int // parked changes applied because their record arrived
	Conflicts  int // concurrent changes resolved by the clinic's policy
	// Rejected lists changes that can never be applied (poison), each with
	// the reason; the rest of the batch is applied without them.
	Rejected []Rejected
}

// Rejected is a change ApplyUp refused.
type Rejected struct {
	Change wire.Envelope
	Err    error
}

// ApplyUp accepts a batch of a clinic's changes, in order, in one
// transaction: idempotent on change id; a change referring to a record the
// cloud does not have yet is parked until that record arrives (M26); a
// change concurrent with another is resolved by the clinic's conflict policy
// (DESIGN.md, Replication). Each accepted change gets the next cloud_seq and
// an outbox row. A database error aborts the whole batch (it is retried).
func (s *Store) ApplyUp(ctx context.Context, clinic ids.ID, changes []wire.Envelope) (UpResult, error) {
	res, err := s.ApplyUpMany(ctx, []ClinicChanges{{Clinic: clinic, Changes: changes}})
	if err != nil {
		return UpResult{}, err
	}
	return res[0], nil
}

// ClinicChanges is one clinic's changes, in the order it sent them.
type ClinicChanges struct {
	Clinic  ids.ID
	Changes []wire.Envelope
}

// ApplyUpMany is ApplyUp for several clinics (each at most once) in one
// transaction, so that many small messages cost one commit and a few
// statements rather than a transaction each: each clinic's changes are
// applied in order under its row lock, exactly as ApplyUp applies them,
// and what they write is inserted together. The results follow batches'
// order. Any error (an unknown clinic among them: ErrUnknownClinic)
// aborts all of them; the caller can then apply them one clinic at a time.
func (s *Store) ApplyUpMany(ctx context.Context, batches []ClinicChanges) ([]UpResult, error) {
	type item struct {
		e wire.Envelope
		c records.Content
	}
	clinics := make([]ids.ID, len(batches))
	rejected := make([][]Rejected, len(batches))
	items := make([][]item, len(batches))
	seen := make(map[ids.ID]bool, len(batches))
	for i, b := range batches {
		if seen[b.Clinic] {
			return nil, fmt.Errorf("store: apply up: clinic %s twice in one batch", b.Clinic)
		}
		seen[b.Clinic] = true
		clinics[i] = b.Clinic
		items[i] = make([]item, 0, len(b.Changes))
		for _, e := range b.Changes {
			c, err := checkUp(b.Clinic, e)
			if err != nil {
				rejected[i] = append(rejected[i], Rejected{Change: e, Err: err})
				continue
			}
			items[i] = append(items[i], item{e, c})
		}
	}
	res := make([]UpResult, len(batches))
	accepted := make([]ClinicChanges, len(batches))
	for i := range batches {
		accepted[i].Clinic = clinics[i]
		for _, it := range items[i] {
			accepted[i].Changes = append(accepted[i].Changes, it.e)
		}
	}
	var known []clinicChange
	err := s.inClinics(ctx, clinics, func(cts []*clinicTx) error {
		es := make([][]wire.Envelope, len(cts))
		cs := make([][]records.Content, len(cts))
		for i := range cts {
			es[i] = make([]wire.Envelope, len(items[i]))
			cs[i] = make([]records.Content, len(items[i]))
			for j, it := range items[i] {
				es[i][j], cs[i][j] = it.e, it.c
			}
		}
		if err := primeAll(cts[0].tx, cts, es, cs, known); err != nil {
			return err
		}
		for i, ct := range cts {
			for _, it := range items[i] {
				if err := ct.applyUp(it.e, it.c); err != nil {
					return fmt.Errorf("clinic %s change %s: %w", ct.c.ID, it.e.ChangeID, err)
				}
			}
			res[i] = *ct.res
		}
		return nil
	}, acceptedRead(accepted, &known))
	if err != nil {
		return nil, fmt.Errorf("store: apply up: %w", err)
	}
	for i := range res {
		res[i].Rejected = rejected[i]
	}
	return res, nil
}

// checkUp validates a clinic's change and decodes its content (nil for a delete).
func checkUp(clinic ids.ID, e wire.Envelope) (records.Content, error) {
	if e.Clinic != clinic || e.Type != wire.TypeChange || e.Origin != wire.OriginLocal {
		return nil, fmt.Errorf("%w: %s change of clinic %s from %s on the queue of clinic %s", ErrInvalidChange, e.Type, e.Clinic, e.Origin, clinic)
	}
	if e.Deleted {
		// A tombstone may carry the content it keeps (an anti-entropy
		// repair re-sends the clinic's); one this build cannot read is
		// taken without it.
		if len(e.Payload) == 0 {
			return nil, nil
		}
		c, err := records.Decode(e.Kind, e.Payload)
		if err != nil {
			return nil, nil //nolint:nilerr // the tombstone stands without its content
		}
		return c, nil
	}
	c, err := records.Decode(e.Kind, e.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidChange, err)
	}
	return c, nil
}

func (ct *clinicTx) applyUp(e wire.Envelope, c records.Content) error {
	clinic := ct.c.ID
	ch := syncrules.Change{Base: e.BaseVersion, New: e.NewVersion, Deleted: e.Deleted, Unsync: e.Unsync,
		Fence: e.Fence, Unfenced: e.Unfenced}
	var err error
	if ch.Known, err = ct.known(e.ChangeID); err != nil {
		return err
	}
	if ch.Known {
		ct.res.Duplicates++
		return nil
	}
	// A change of a record with an earlier change still parked waits behind it.
	var waitKind wire.Kind
	var waitID ids.ID
	if parked, err := ct.hasParked(); err != nil {
		return err
	} else if parked {
		var p Parked
		err := ct.tx.Where("clinic_id = ? AND kind = ? AND record_id = ?", clinic, e.Kind, e.RecordID).Order("id").Take(&p).Error
		switch {
		case err == nil:
			ch.BehindParked, waitKind, waitID = true, wire.Kind(p.WaitKind), p.WaitID
		case !errors.Is(err, gorm.ErrRecordNotFound):
			return err
		}
	}
	if c != nil && !e.Deleted && !ch.BehindParked {
		ref, missing, err := ct.missingRef(c, false, nil)
		if err != nil {
			return err
		}
		ch.MissingRef, waitKind, waitID = missing, ref.Kind, ref.ID
	}
	k, err := opsFor(e.Kind)
	if err != nil {
		return err
	}
	var rec Record
	exists := false
	if !ch.BehindParked && !ch.MissingRef {
		if rec, exists, err = ct.load(k, e.RecordID); err != nil {
			return err
		}
	}
	var r syncrules.Record
	if rec != nil {
		r = stateOf(rec.meta(), exists)
	}
	d := syncrules.DecideUp(r, ch, ct.c.ConflictPolicy)
	if d.Outcome == syncrules.Park {
		return ct.park(e, waitKind, waitID)
	}
	m := rec.meta()
	base := m.Version
	m.Kind = e.Kind
	m.LastChangeID = e.ChangeID
	m.Fence = d.Fence
	m.Unfenced = e.Unfenced
	m.EditSession = ""
	m.Version, m.LocalVersion = d.Version, d.LocalVersion
	// A flag stays until a person saves the record (a clinic change
	// taken as it is, or a cloud save).
	m.Conflict = d.Flag || (m.Conflict && !d.TakeChange)
	if !exists {
		// A record new to the cloud: the change's time is its creation
		// time at the clinic (docs/protocol.md, Envelope), so both sides
		// show the same created_at.
		m.CreatedAt = e.At.UTC()
	}
	ct.res.Accepted++
	if d.Outcome == syncrules.Conflict {
		ct.res.Conflicts++
	}
	unsync := false
	if d.TakeChange {
		if c != nil {
			rec.setContent(c)
		}
		m.Deleted = e.Deleted
		m.Origin = string(wire.OriginLocal)
		unsync = e.Unsync
	}
	by := Person{ID: e.SavedBy, Name: e.SavedByName}
	if !d.TakeChange {
		by = Person{} // the record keeps the cloud's content: not the clinic person's save
	}
	if err := ct.acceptChange(rec, exists, base, e.At, d.Conflict, unsync, by); err != nil {
		return err
	}
	if d.Copy && c != nil {
		// The copy holds the clinic person's content.
		return ct.conflictCopy(k, e.Kind, e.RecordID, c, Person{ID: e.SavedBy, Name: e.SavedByName})
	}
	return nil
}

// stateOf is a cloud record's state as the replication rules see it.
func stateOf(m *Meta, exists bool) syncrules.Record {
	return syncrules.Record{Exists: exists, Version: m.Version, Deleted: m.Deleted, Fence: m.Fence,
		Session: m.EditSession, LocalVersion: m.LocalVersion}
}

// conflictCopy keeps the clinic's losing content of a keep-both conflict as
// a new record, flagged, that names the record it was copied from.
func (ct *clinicTx) conflictCopy(k kindOps, kind wire.Kind, of ids.ID, c records.Content, by Person) error {
	id, err := ct.s.ids.Next()
	if err != nil {
		return err
	}
	cp := k.newRow()
	cp.setContent(c)
	m := cp.meta()
	m.ClinicID, m.ID, m.Kind = ct.c.ID, id, kind
	m.Version = version.First
	m.Origin = string(wire.OriginCloud)
	m.Conflict = true
	m.ConflictOf = of
	m.LastChangeID = id
	now := Now()
	m.CreatedAt = now
	return ct.accept(cp, false, version.V{}, now, PolicyKeepBoth, by)
}

// Now is the time a change made here is stamped with, to the microsecond
// PostgreSQL keeps: a record's creation time travels in its first
// change's "at", and must read back the same on both sides.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// known reports whether change id was accepted or parked before.
func (ct *clinicTx) known(id ids.ID) (bool, error) {
	if ct.seen != nil {
		return ct.seen[id], nil
	}
	var n int64
	if err := ct.tx.Model(&Change{}).Where("clinic_id = ? AND change_id = ?", ct.c.ID, id).Count(&n).Error; err != nil {
		return false, err
	}
	if n == 0 {
		if err := ct.tx.Model(&Parked{}).Where("clinic_id = ? AND change_id = ?", ct.c.ID, id).Count(&n).Error; err != nil {
			return false, err
		}
	}
	return n > 0, nil
}

func (ct *clinicTx) park(e wire.Envelope, waitKind wire.Kind, waitID ids.ID) error {
	b, err := e.AppendJSON(nil) // json.Marshal's bytes (wire/encode.go)
	if err != nil {
		return err
	}
	ct.res.Parked++
	yes := true
	ct.anyParked = &yes
	if ct.seen != nil {
		ct.seen[e.ChangeID] = true
	}
	return ct.tx.Create(&Parked{
		ClinicID: ct.c.ID, WaitKind: string(waitKind), WaitID: waitID, Kind: string(e.Kind),
		RecordID: e.RecordID, ChangeID: e.ChangeID, Envelope: string(b),
	}).Error
}

// unpark applies, in arrival order, the changes that waited for kind/id.
func (ct *clinicTx) unpark(kind wire.Kind, id ids.ID) error {
	if parked, err := ct.hasParked(); err != nil || !parked {
		return err
	}
	var ps []Parked
	if err := ct.tx.Where("clinic_id = ? AND wait_kind = ? AND wait_id = ?", ct.c.ID, kind, id).Order("id").Find(&ps).Error; err != nil {
		return err
	}
	if len(ps) == 0 {
		return nil
	}
	// Take them all off first: changes of one record park together, and a
	// change must not wait behind its own successors.
	pids := make([]int64, len(ps))
	for i, p := range ps {
		pids[i] = p.ID
	}
	if err := ct.tx.Delete(&Parked{}, pids).Error; err != nil {
		return err
	}
	for _, p := range ps {
		ct.res.Unparked++
		if ct.seen != nil {
			delete(ct.seen, p.ChangeID) // no longer parked: applied now
		}
		var e wire.Envelope
		if err := json.Unmarshal([]byte(p.Envelope), &e); err != nil {
			return fmt.Errorf("parked change %s: %w", p.ChangeID, err)
		}
		c, err := checkUp(ct.c.ID, e)
		if err != nil {
			return fmt.Errorf("parked change %s: %w", p.ChangeID, err)
		}
		if err := ct.applyUp(e, c); err != nil {
			return err
		}
	}
	return nil
}

// ParkedCount counts the changes of a clinic waiting for a record.
func (s *Store) ParkedCount(ctx context.Context, clinic ids.ID) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&Parked{}).Where("clinic_id = ?", clinic).Count(&n).Error
	return n, err
}
