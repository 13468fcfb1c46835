package store

import (
	"errors"
	"strings"
	"sync"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// Work on many records at once (import, backfill, applying a batch from the
// cloud) reads the rows it needs up front, a query per kind, and writes its
// version and outbox rows together at the end: per record it then costs the
// one write it must make, not four or five statements. On a million-record
// history that is most of the difference (docs/performance.md).

// rowCache holds the records a transaction read or wrote, by reference; a
// nil value means the record is known not to exist.
type rowCache map[records.Ref]Record

// inChunk bounds the ids of one IN list (SQLite's parameter limit is far
// above it; the statement stays small).
const inChunk = 500

// load reads the records of refs the cache does not hold yet.
func (c rowCache) load(tx *gorm.DB, clinic ids.ID, refs []records.Ref) error {
	byKind := map[wire.Kind][]ids.ID{}
	for _, r := range refs {
		if _, ok := c[r]; ok {
			continue
		}
		c[r] = nil // absent unless read below
		byKind[r.Kind] = append(byKind[r.Kind], r.ID)
	}
	for kind, list := range byKind {
		k, err := opsFor(kind)
		if err != nil {
			for _, id := range list {
				delete(c, records.Ref{Kind: kind, ID: id}) // the caller handles an unknown kind
			}
			continue
		}
		for start := 0; start < len(list); start += inChunk {
			part := list[start:min(start+inChunk, len(list))]
			rows, err := k.find(tx.Model(k.model).Where("clinic_id = ? AND id IN ?", clinic, part))
			if err != nil {
				return err
			}
			for _, r := range rows {
				c[records.Ref{Kind: kind, ID: r.meta().ID}] = r
			}
		}
	}
	return nil
}

// get returns the record of ref from the cache or, when the cache never
// heard of it, from the table (and remembers it).
func (c rowCache) get(tx *gorm.DB, clinic ids.ID, k kindOps, id ids.ID) (Record, bool, error) {
	ref := records.Ref{Kind: k.spec.Kind, ID: id}
	if rec, ok := c[ref]; ok {
		return rec, rec != nil, nil
	}
	rec := k.newRow()
	err := tx.Take(rec, "id = ? AND clinic_id = ?", id, clinic).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		c[ref] = nil
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	rec.meta().Kind = k.spec.Kind
	c[ref] = rec
	return rec, true, nil
}

// pending collects the version and outbox rows of a transaction, written
// in order by flush before it commits.
type pending struct {
	versions []Version
	outbox   []Outbox
	// marks, when set, collects per-row updates of sync columns; whoever
	// sets it flushes it before any other write to those rows.
	marks *bulkUpdate
}

// version adds e's version of its record to the history (once: an equal
// version kept before is left as it is).
func (p *pending) version(e wire.Envelope, session string) {
	p.versions = append(p.versions, versionOf(e, session))
}

// queue adds e to the outbox lane.
func (p *pending) queue(e wire.Envelope, lane int) error {
	o, err := outboxOf(e, lane)
	if err != nil {
		return err
	}
	p.outbox = append(p.outbox, o)
	return nil
}

// flush writes what was collected.
func (p *pending) flush(tx *gorm.DB) error {
	if len(p.versions) > 0 {
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).CreateInBatches(p.versions, rowsPerStatement(tx, &Version{})).Error; err != nil {
			return err
		}
	}
	if len(p.outbox) > 0 {
		if err := tx.CreateInBatches(p.outbox, rowsPerStatement(tx, &Outbox{})).Error; err != nil {
			return err
		}
	}
	p.versions, p.outbox = nil, nil
	return nil
}

func versionOf(e wire.Envelope, session string) Version {
	return Version{Kind: string(e.Kind), RecordID: e.RecordID, Version: e.NewVersion, Deleted: e.Deleted,
		Origin: string(e.Origin), ChangeID: e.ChangeID, Session: session, Fence: e.Fence, Unfenced: e.Unfenced,
		SavedBy: e.SavedBy, SavedByName: e.SavedByName, Content: string(e.Payload), At: e.At.UTC()}
}

// outboxOf is e's outbox row: its JSON, the bytes json.Marshal(e) gives
// (the relay sends rows as they are stored), written without reflection
// and without compacting the payload the save has just encoded again.
func outboxOf(e wire.Envelope, lane int) (Outbox, error) {
	buf := outboxBufs.Get().(*[]byte)
	b, err := e.AppendValid((*buf)[:0])
	row := string(b)
	if cap(b) <= maxPooledOutboxBuf {
		*buf = b[:0]
		outboxBufs.Put(buf)
	}
	if err != nil {
		return Outbox{}, err
	}
	return Outbox{ChangeID: e.ChangeID, Lane: lane, Envelope: row}, nil
}

// outboxBufs holds buffers outboxOf encodes into before its row's string
// copies the bytes: one allocation an envelope instead of the buffer's
// growth. A buffer grown beyond maxPooledOutboxBuf (a large record) is
// left to the collector.
const maxPooledOutboxBuf = 64 << 10

var outboxBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// bulkUpdate sets the same columns of many rows, each row with its own
// values, in one UPDATE … FROM (VALUES …) per table and up to maxParams values:
// SQLite compiles every statement it runs, and per row that costs more
// than the update itself.
type bulkUpdate struct {
	set   string // the assignments; v.column2, v.column3… are a row's values after its id
	args  []any  // arguments of set's own placeholders
	width int    // values per row, the id first
	rows  map[string][]any
	order []string
}

func newBulkUpdate(set string, width int, args ...any) *bulkUpdate {
	return &bulkUpdate{set: set, args: args, width: width, rows: map[string][]any{}}
}

// add queues the update of one row of table: its id, then its values.
func (u *bulkUpdate) add(table string, id ids.ID, vals ...any) {
	if _, ok := u.rows[table]; !ok {
		u.order = append(u.order, table)
	}
	u.rows[table] = append(append(u.rows[table], int64(id)), vals...)
}

// maxParams bounds the parameters of one statement. The SQLite driver
// binds each parameter by scanning the statement's arguments from the
// first, so binding costs the square of their number: 200 rows of 22
// columns spent more time binding than SQLite spent inserting them
// (docs/performance.md). A few hundred keep both costs small.
const maxParams = 300

// rowsPerStatement is how many rows of model one multi-row INSERT takes.
func rowsPerStatement(db *gorm.DB, model any) int {
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(model); err != nil || len(stmt.Schema.DBNames) == 0 {
		return 10
	}
	return max(1, maxParams/len(stmt.Schema.DBNames))
}

// rowsPerStatement is how many rows one UPDATE sets.
func (u *bulkUpdate) rowsPerStatement() int { return max(1, maxParams/u.width) }

// statement is the UPDATE of rows rows of table, on those where also cond
// holds ("": no condition). Its arguments: set's, the rows' values, the
// clinic, cond's.
func (u *bulkUpdate) statement(table string, rows int, cond string) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?,", u.width), ",") + ")"
	// OR FAIL: a statement that changes many rows and may stop at a
	// constraint (OR ABORT, the default) makes SQLite copy every page it
	// changes to a statement journal first, to undo that statement alone;
	// a batch's marks spent a few percent of sc-local's CPU there. Every
	// caller runs in a transaction (or a group commit's savepoint) that is
	// rolled back whole when a statement fails, so undoing the statement
	// alone is never needed. (On a full disk or out of memory SQLite then
	// rolls back the whole transaction itself, not the statement: a group
	// commit's other writes run again on their own, commit.go.)
	q := "UPDATE OR FAIL " + table + " SET " + u.set + " FROM (VALUES " + strings.TrimSuffix(strings.Repeat(one+",", rows), ",") +
		") AS v WHERE " + table + ".id = v.column1 AND " + table + ".clinic_id = ?"
	if cond != "" {
		// As one opaque term: SQLite must find each row by its id, not
		// pick an index for the condition's columns (sync_state, the
		// backfill's partial index) and walk all of its rows, which made
		// every statement of a million-record backfill a scan.
		q += " AND CASE WHEN " + cond + " THEN 1 ELSE 0 END"
	}
	return q
}

// flush runs the queued updates.
func (u *bulkUpdate) flush(tx *gorm.DB, clinic ids.ID) error {
	_, err := u.flushWhere(tx, clinic, nil)
	return err
}

// flushWhere runs the queued updates on the rows where also where(table)
// holds (nil: every row queued), and returns how many rows they changed.
func (u *bulkUpdate) flushWhere(tx *gorm.DB, clinic ids.ID, where func(table string) (string, []any)) (int64, error) {
	step := u.rowsPerStatement() * u.width
	var changed int64
	for _, table := range u.order {
		cond, condArgs := "", []any(nil)
		if where != nil {
			cond, condArgs = where(table)
		}
		vals := u.rows[table]
		for start := 0; start < len(vals); start += step {
			part := vals[start:min(start+step, len(vals))]
			n := len(part) / u.width
			q := u.statement(table, n, cond)
			args := make([]any, 0, len(u.args)+len(part)+1+len(condArgs))
			args = append(append(append(append(args, u.args...), part...), int64(clinic)), condArgs...)
			// On the connection as it is (kept prepared, rawsql.go) unless
			// the condition's arguments need gorm's expansion (IN ? lists).
			var n64 int64
			var err error
			if len(condArgs) == 0 {
				n64, err = execRawN(tx, q, args...)
			} else {
				res := tx.Exec(q, args...)
				n64, err = res.RowsAffected, res.Error
			}
			if err != nil {
				return changed, err
			}
			changed += n64
		}
	}
	u.rows, u.order = map[string][]any{}, nil
	return changed, nil
}
