package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Backfill (M8) sends what the scope covers and the cloud never had:
// records that are excluded and were never queued. It is resumable by
// construction: a record leaves the set when its change is queued, in the
// same transaction, so a restart continues where it stopped.

// undated sorts records without a study date (patients, doctors, users,
// templates, settings: small, and parents of the rest) before dated ones.
const undated = "9999-12-31"

// candidate is one record the backfill may send.
type candidate struct {
	kind wire.Kind
	id   ids.ID
	date string
}

// backfillWhere is the SQL condition of kind k's records the scope covers
// and the backfill has not sent; args follow it.
func (s *Store) backfillWhere(sc Scope, k wire.Kind, table string) (string, []any) {
	base := table + ".clinic_id = ? AND " + table + ".sync_state = ? AND " + table + ".queued = ? AND " + table + ".deleted = ? AND " + table + ".sync_choice <> ?"
	args := []any{s.clinic, StateExcluded, false, false, ChoiceNever}
	if sc.All() {
		switch k {
		case wire.KindImage, wire.KindCapture, wire.KindReport, wire.KindProjectFile:
			// Children of a study the user keeps out stay out too.
			return base + " AND " + table + ".study_id NOT IN (SELECT id FROM studies WHERE clinic_id = ? AND sync_choice = ?)",
				append(args, s.clinic, ChoiceNever)
		}
		return base, args
	}
	from := sc.from(time.Now())
	var rule []string
	var rargs []any
	if !sc.kind(k) {
		rule = append(rule, "1 = 0")
	}
	dated := func(col string) {
		if from != "" {
			rule = append(rule, col+" >= ?")
			rargs = append(rargs, from)
		}
	}
	switch k {
	case wire.KindStudy:
		dated(table + ".study_date")
	case wire.KindImage:
		dated(table + ".study_date")
		if len(sc.Modalities) > 0 {
			rule = append(rule, table+".modality IN ?")
			rargs = append(rargs, sc.Modalities)
		}
		// The images of a study the user keeps out stay out too.
		rule = append(rule, table+".study_id NOT IN (SELECT id FROM studies WHERE clinic_id = ? AND sync_choice = ?)")
		rargs = append(rargs, s.clinic, ChoiceNever)
	case wire.KindCapture, wire.KindReport, wire.KindProjectFile:
		// They follow their study (its date and its own choice).
		sub := "SELECT id FROM studies WHERE clinic_id = ? AND sync_choice <> ?"
		sargs := []any{s.clinic, ChoiceNever}
		if from != "" {
			sub += " AND (study_date >= ? OR sync_choice = ?)"
			sargs = append(sargs, from, ChoiceAlways)
		}
		if !sc.kind(wire.KindStudy) {
			sub += " AND sync_choice = ?"
			sargs = append(sargs, ChoiceAlways)
		}
		rule = append(rule, table+".study_id IN ("+sub+")")
		rargs = append(rargs, sargs...)
	}
	if len(rule) == 0 {
		return base, args
	}
	return base + " AND (" + table + ".sync_choice = ? OR (" + strings.Join(rule, " AND ") + "))", append(append(args, ChoiceAlways), rargs...)
}

// sortDate is the backfill's sort key of content c (Meta.SortDate).
func (s *Store) sortDate(tx *gorm.DB, c records.Content) (string, error) {
	return sortDateOf(c, func(study ids.ID) (string, error) {
		var dates []string
		if err := tx.Model(&Row[records.Study]{}).Where("id = ? AND clinic_id = ?", study, s.clinic).
			Pluck("study_date", &dates).Error; err != nil || len(dates) == 0 {
			return "", err
		}
		return dates[0], nil
	})
}

// sortDateIn is sortDate with the study looked up in cache (which holds
// every record c refers to).
func sortDateIn(cache rowCache, c records.Content) string {
	d, _ := sortDateOf(c, func(study ids.ID) (string, error) {
		if st, ok := cache[records.Ref{Kind: wire.KindStudy, ID: study}].(*Row[records.Study]); ok && st != nil {
			return st.Data.StudyDate, nil
		}
		return "", nil
	})
	return d
}

// sortDateOf is c's sort key; a capture, report or project file has its
// study's date, which studyDate looks up.
func sortDateOf(c records.Content, studyDate func(ids.ID) (string, error)) (string, error) {
	switch v := c.(type) {
	case records.Study:
		return v.StudyDate, nil
	case records.Image:
		return v.StudyDate, nil
	case records.Capture, records.Report, records.ProjectFile:
		refs := c.Refs()
		if len(refs) == 0 || refs[0].Kind != wire.KindStudy {
			return "", nil
		}
		return studyDate(refs[0].ID)
	}
	return undated, nil
}

// fillSortDates fills the sort key of rows that have none: rows written
// before the key existed, and children written before their study arrived.
// (The backfill's partial indexes on the key are in the schema's baseline.)
func fillSortDates(db *gorm.DB) error {
	for _, sp := range records.Kinds {
		t := sp.Table
		var fill string
		switch sp.Kind {
		case wire.KindStudy, wire.KindImage:
			fill = "study_date"
		case wire.KindCapture, wire.KindReport, wire.KindProjectFile:
			fill = "COALESCE((SELECT st.study_date FROM studies st WHERE st.id = " + t + ".study_id), '')"
		default:
			fill = "'" + undated + "'"
		}
		if err := db.Exec("UPDATE " + t + " SET sort_date = " + fill + " WHERE sort_date = ''").Error; err != nil {
			return err
		}
	}
	return nil
}

// BackfillRemaining counts the records the backfill still has to send.
func (s *Store) BackfillRemaining(ctx context.Context) (int64, error) {
	db := s.rdb.WithContext(ctx) // a scan of every table: not on the writer
	sc, err := s.scope(db)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, sp := range records.Kinds {
		where, args := s.backfillWhere(sc, sp.Kind, sp.Table)
		// The records never queued are the backfill index's (the literal
		// queued = 0 lets SQLite use it); their ids gathered first, the
		// rows are read in id order, as the table lies, not in the index's
		// order of dates, one random page each (400,000 of a million: 10 s
		// against 1 s; sync_state's index no longer holds them to walk).
		var n int64
		if err := db.Table(sp.Table).Where(sp.Table+".id IN (SELECT id FROM "+sp.Table+" WHERE queued = 0)").
			Where(where, args...).Count(&n).Error; err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// BackfillBatch is what one Backfill call queued.
type BackfillBatch struct {
	Records int   // records queued (referenced parents included)
	Bytes   int64 // payload bytes queued
}

// Backfill queues up to limit records the scope covers and the cloud never
// had, newest study first (undated parents before), each after the records
// it refers to, on the backfill lane of the outbox: the relay sends live
// changes first. It is PlanBackfill and CommitBackfill one after the other.
func (s *Store) Backfill(ctx context.Context, limit int) (BackfillBatch, error) {
	plan, err := s.PlanBackfill(ctx, limit, nil)
	if err != nil || plan.Records() == 0 {
		return BackfillBatch{}, err
	}
	b, _, err := s.CommitBackfill(ctx, plan)
	return b, err
}

// BackfillPlan is a batch of the backfill read and built, not yet written.
type BackfillPlan struct {
	p *backfillPlan
	// scope is the sync scope the batch was read under, as stored.
	scope string
	// last is the batch's last candidate in the backfill's order: a batch
	// planned after this one starts below it.
	last  candidate
	limit int
}

// Records is how many records the plan queues.
func (p *BackfillPlan) Records() int {
	if p == nil {
		return 0
	}
	return p.p.out.Records
}

// PlanBackfill reads the next batch of up to limit records on a snapshot,
// through the reader connection, and builds its changes, while the one
// writer goes on applying the cloud's acceptances and saving users' edits.
//
// With after (a plan not committed yet, whose CommitBackfill runs
// meanwhile) it plans the batch that follows that one: candidates after
// its last in the backfill's order, and its records taken for queued, so
// the two batches share no record and this one's references to them are
// not sent twice. Such a plan may be committed only after after committed
// exactly (CommitBackfill's exact): after's records are then queued, as
// this plan took them to be. It is empty when the scope changed since
// after was read, or when no candidate follows after's last (there may
// still be some before it, newly covered: plan again without after).
func (s *Store) PlanBackfill(ctx context.Context, limit int, after *BackfillPlan) (*BackfillPlan, error) {
	var plan *BackfillPlan
	err := s.rdb.WithContext(ctx).Transaction(func(rtx *gorm.DB) error {
		var err error
		plan, err = s.planBackfill(rtx, limit, after)
		return err
	})
	return plan, err
}

// CommitBackfill writes plan: marks each record only if it is still what
// the snapshot saw (same version, still not queued, still a candidate
// under the scope as it is now) and queues the changes. If any is not, the
// batch is rolled back and done again under the write lock, and exact is
// false: what was queued is not plan (a plan made after it is void).
func (s *Store) CommitBackfill(ctx context.Context, plan *BackfillPlan) (b BackfillBatch, exact bool, err error) {
	if plan.Records() == 0 {
		return BackfillBatch{}, true, nil
	}
	if s.afterBackfillPlan != nil {
		s.afterBackfillPlan()
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return s.commitBackfill(tx, plan.p) })
	if !errors.Is(err, errBackfillRaced) {
		if err != nil {
			return BackfillBatch{}, false, err
		}
		return plan.p.out, true, nil
	}
	var again *BackfillPlan
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if again, err = s.planBackfill(tx, plan.limit, nil); err != nil || again.Records() == 0 {
			return err
		}
		return s.commitBackfill(tx, again.p)
	})
	if err != nil {
		return BackfillBatch{}, false, err
	}
	return again.p.out, false, nil
}

// errBackfillRaced: a record of a planned batch changed before its write.
var errBackfillRaced = errors.New("store: backfill: records changed since the batch was read")

// backfillPlan is a batch of the backfill, read and built, not yet written.
type backfillPlan struct {
	out BackfillBatch
	// The sync marks of the candidates and of the never-queued records
	// they refer to (sent first, whatever the scope): id, change id,
	// version each.
	cands, parents *bulkUpdate
	p              pending // the outbox rows
	// taken: the records the batch marks (candidates and parents);
	// nParents how many of them are not candidates (they may sort after
	// the batch's last candidate).
	taken    map[records.Ref]bool
	nParents int
}

// planBackfill reads the next batch and builds its changes (after: see
// PlanBackfill).
func (s *Store) planBackfill(tx *gorm.DB, limit int, after *BackfillPlan) (*BackfillPlan, error) {
	now := time.Now().UTC()
	const set = "queued = 1, backfilled = 1, sync_state = ?, pending_since = ?, pending_change_id = v.column2"
	plan := &backfillPlan{cands: newBulkUpdate(set, 3, StatePending, now), parents: newBulkUpdate(set, 3, StatePending, now), taken: map[records.Ref]bool{}}
	out := &BackfillPlan{p: plan, limit: limit}
	rawScope, err := s.meta(tx, metaScope)
	if err != nil {
		return nil, err
	}
	out.scope = rawScope
	if after != nil && after.scope != rawScope {
		return out, nil // newly covered records may sort before after's last
	}
	sc, err := s.scope(tx)
	if err != nil {
		return nil, err
	}
	var cands []candidate
	scan := limit
	if after != nil {
		scan += after.p.nParents // skipped below
	}
	for _, sp := range records.Kinds {
		where, args := s.backfillWhere(sc, sp.Kind, sp.Table)
		var rows []struct {
			ID   ids.ID
			Date string
		}
		// Walk the partial index of records not queued yet, newest
		// first (the literal queued = 0 is what lets SQLite use it):
		// each batch reads what it takes, not the whole history.
		q := tx.Table(sp.Table + " INDEXED BY " + sp.Table + "_backfill").Select(sp.Table + ".id AS id, " + sp.Table + ".sort_date AS date").
			Where(sp.Table + ".queued = 0")
		if after != nil {
			// Below after's last: a range of the same index.
			q = q.Where("("+sp.Table+".sort_date, "+sp.Table+".id) < (?, ?)", after.last.date, after.last.id)
		}
		err := q.Where(where, args...).Order(sp.Table + ".sort_date DESC, " + sp.Table + ".id DESC").Limit(scan).Scan(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("backfill candidates of %s: %w", sp.Kind, err)
		}
		for _, r := range rows {
			if after != nil && after.p.taken[records.Ref{Kind: sp.Kind, ID: r.ID}] {
				continue // a parent after queues
			}
			cands = append(cands, candidate{kind: sp.Kind, id: r.ID, date: r.Date})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].date != cands[j].date {
			return cands[i].date > cands[j].date
		}
		return cands[i].id > cands[j].id
	})
	if len(cands) > limit {
		cands = cands[:limit]
	}
	if len(cands) > 0 {
		out.last = cands[len(cands)-1]
	}
	// Read the candidates and the records they refer to up front, a
	// query per kind and level. What after queues is taken for queued.
	cache := rowCache{}
	if after != nil {
		for ref := range after.p.taken {
			if k, err := opsFor(ref.Kind); err == nil {
				stub := k.newRow()
				m := stub.meta()
				m.ID, m.ClinicID, m.Queued = ref.ID, s.clinic, true
				cache[ref] = stub
			}
		}
	}
	level := make([]records.Ref, len(cands))
	for i, c := range cands {
		level[i] = records.Ref{Kind: c.kind, ID: c.id}
	}
	for depth := 0; depth < 3 && len(level) > 0; depth++ {
		load := cache.load
		if depth > 0 {
			// The records referred to were mostly sent before (a
			// history's few patients, each with many studies): read
			// in full only those not queued yet.
			load = cache.loadUnqueued
		}
		if err := load(tx, s.clinic, level); err != nil {
			return nil, err
		}
		var next []records.Ref
		for _, r := range level {
			if rec := cache[r]; rec != nil && !rec.meta().Queued {
				for _, ref := range rec.content().Refs() {
					if _, ok := cache[ref]; !ok {
						next = append(next, ref)
					}
				}
			}
		}
		level = next
	}
	done := map[records.Ref]bool{} // handled in this batch (parents repeat)
	for _, c := range cands {
		if err := s.backfillOne(tx, c.kind, c.id, now, done, 0, cache, plan); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// loadUnqueued is load for the backfill's references: a record queued
// already (the backfill skips it) is cached as a stub that only says so,
// without reading its content.
func (c rowCache) loadUnqueued(tx *gorm.DB, clinic ids.ID, refs []records.Ref) error {
	byKind := map[wire.Kind][]ids.ID{}
	for _, r := range refs {
		if _, ok := c[r]; !ok {
			byKind[r.Kind] = append(byKind[r.Kind], r.ID)
		}
	}
	var full []records.Ref
	for kind, list := range byKind {
		k, err := opsFor(kind)
		if err != nil {
			continue // load leaves an unknown kind to the caller
		}
		for start := 0; start < len(list); start += inChunk {
			part := list[start:min(start+inChunk, len(list))]
			var rows []struct {
				ID     ids.ID
				Queued bool
			}
			if err := tx.Table(k.spec.Table).Select("id, queued").Where("clinic_id = ? AND id IN ?", clinic, part).Scan(&rows).Error; err != nil {
				return err
			}
			for _, r := range rows {
				ref := records.Ref{Kind: kind, ID: r.ID}
				if !r.Queued {
					full = append(full, ref)
					continue
				}
				stub := k.newRow()
				m := stub.meta()
				m.ID, m.ClinicID, m.Queued = r.ID, clinic, true
				c[ref] = stub
			}
		}
	}
	if err := c.load(tx, clinic, full); err != nil {
		return err
	}
	for kind, list := range byKind {
		for _, id := range list {
			if _, ok := c[records.Ref{Kind: kind, ID: id}]; !ok {
				if _, err := opsFor(kind); err == nil {
					c[records.Ref{Kind: kind, ID: id}] = nil // absent
				}
			}
		}
	}
	return nil
}

// commitBackfill writes plan: the marks, each only where its record is as
// planned (errBackfillRaced otherwise), then the outbox rows.
func (s *Store) commitBackfill(tx *gorm.DB, plan *backfillPlan) error {
	sc, err := s.scope(tx)
	if err != nil {
		return err
	}
	unchanged := func(table string) string { return table + ".queued = 0 AND " + table + ".version = v.column3" }
	n, err := plan.cands.flushWhere(tx, s.clinic, func(table string) (string, []any) {
		sp, ok := records.SpecOfTable(table)
		if !ok {
			return "1 = 0", nil
		}
		where, args := s.backfillWhere(sc, sp.Kind, table)
		return unchanged(table) + " AND " + where, args
	})
	if err != nil {
		return err
	}
	m, err := plan.parents.flushWhere(tx, s.clinic, func(table string) (string, []any) { return unchanged(table), nil })
	if err != nil {
		return err
	}
	if n+m != int64(plan.out.Records) {
		return errBackfillRaced
	}
	return plan.p.flush(tx)
}

// backfillOne queues one record (after the never-queued records it refers
// to); a record queued already is skipped.
func (s *Store) backfillOne(tx *gorm.DB, kind wire.Kind, id ids.ID, now time.Time, done map[records.Ref]bool, depth int, cache rowCache, plan *backfillPlan) error {
	ref := records.Ref{Kind: kind, ID: id}
	if done[ref] {
		return nil
	}
	done[ref] = true
	if depth > 8 {
		return fmt.Errorf("backfill: references of %s %s nest too deep", kind, id)
	}
	k, err := opsFor(kind)
	if err != nil {
		return err
	}
	rec, ok, err := cache.get(tx, s.clinic, k, id)
	if err != nil || !ok {
		return err
	}
	m := rec.meta()
	if m.Queued {
		return nil
	}
	for _, ref := range rec.content().Refs() {
		if err := s.backfillOne(tx, ref.Kind, ref.ID, now, done, depth+1, cache, plan); err != nil {
			return err
		}
	}
	changeID, err := s.ids.Next()
	if err != nil {
		return err
	}
	m.Kind = kind
	e := wire.Envelope{
		Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: s.clinic, Origin: wire.OriginLocal,
		ChangeID: changeID, Kind: kind, RecordID: m.ID, BaseVersion: version.V{}, NewVersion: m.Version,
		Deleted: m.Deleted, At: createdAt(m.CreatedAt), // new to the cloud: its creation time
	}
	if !m.Deleted {
		if e.Payload, err = json.Marshal(rec.content()); err != nil {
			return err
		}
	}
	// Only the sync columns change: the content is as it was.
	marks := plan.parents
	if depth == 0 {
		marks = plan.cands
	} else {
		plan.nParents++
	}
	marks.add(k.spec.Table, m.ID, int64(changeID), m.Version.String())
	plan.taken[ref] = true
	m.Queued, m.Backfilled, m.SyncState, m.PendingChangeID, m.PendingSince = true, true, StatePending, changeID, &now
	plan.out.Records++
	plan.out.Bytes += int64(len(e.Payload))
	return plan.p.queue(e, LaneBackfill)
}

// OutboxLanes counts the changes not yet confirmed by the cloud on each
// lane: live changes (the backfill waits while there are many) and the
// backfill's own (it queues only a bounded amount ahead of the relay).
func (s *Store) OutboxLanes(ctx context.Context) (live, backfill int64, err error) {
	var rows []struct {
		Lane int
		N    int64
	}
	err = s.odb.WithContext(ctx).Model(&Outbox{}).Select("lane, COUNT(*) AS n").Group("lane").Scan(&rows).Error
	for _, r := range rows {
		switch r.Lane {
		case LaneLive:
			live = r.N
		case LaneBackfill:
			backfill = r.N
		}
	}
	return live, backfill, err
}
