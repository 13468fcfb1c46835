package store

import (
	"strconv"
	"strings"
	"time"
)

// An accept transaction inserts a change row and an outbox row for every
// accepted change: a backfill's transaction thousands of each. A multi-row
// INSERT of them had a parameter per column and row (ten thousand for 500
// changes), each bound through gorm's and pgx's reflection, and parsed as
// such by PostgreSQL; insertChanges and insertOutbox send one array per
// column instead (INSERT … SELECT FROM unnest), a few parameters whatever
// the count.

// insertChanges is the statement inserting cs.
func insertChanges(cs []Change) stmt {
	var (
		clinic, seq, change, record, conflictOf, fence, savedBy = newIntArray(len(cs)), newIntArray(len(cs)), newIntArray(len(cs)),
			newIntArray(len(cs)), newIntArray(len(cs)), newIntArray(len(cs)), newIntArray(len(cs))
		kind, origin, base, next, conflict, session, savedByName, payload, at, acceptedAt = newTextArray(), newTextArray(),
			newTextArray(), newTextArray(), newTextArray(), newTextArray(), newTextArray(), newTextArray(), newTextArray(), newTextArray()
		deleted, unfenced, unsync = newBoolArray(len(cs)), newBoolArray(len(cs)), newBoolArray(len(cs))
	)
	for _, c := range cs {
		clinic.add(int64(c.ClinicID))
		seq.add(c.CloudSeq)
		change.add(int64(c.ChangeID))
		record.add(int64(c.RecordID))
		conflictOf.add(int64(c.ConflictOf))
		fence.add(c.Fence)
		savedBy.add(int64(c.SavedBy))
		kind.add(c.Kind)
		origin.add(c.Origin)
		base.add(c.BaseVersion.String())
		next.add(c.NewVersion.String())
		conflict.add(c.Conflict)
		session.add(c.Session)
		savedByName.add(c.SavedByName)
		payload.add(c.Payload)
		at.add(pgTime(c.At))
		acceptedAt.add(pgTime(c.AcceptedAt))
		deleted.add(c.Deleted)
		unfenced.add(c.Unfenced)
		unsync.add(c.Unsync)
	}
	return stmt{`INSERT INTO changes (clinic_id, cloud_seq, change_id, kind, record_id, origin, base_version, new_version, deleted,
	conflict, conflict_of, fence, unfenced, session, unsync, saved_by, saved_by_name, payload, at, accepted_at)
SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::boolean[],
	?::text[], ?::bigint[], ?::bigint[], ?::boolean[], ?::text[], ?::boolean[], ?::bigint[], ?::text[], ?::text[], ?::timestamptz[], ?::timestamptz[])`, []any{
		clinic.String(), seq.String(), change.String(), kind.String(), record.String(), origin.String(), base.String(), next.String(), deleted.String(),
		conflict.String(), conflictOf.String(), fence.String(), unfenced.String(), session.String(), unsync.String(), savedBy.String(),
		savedByName.String(), payload.String(), at.String(), acceptedAt.String()}}
}

// insertOutbox is the statement inserting os (their ids from the sequence).
func insertOutbox(os []Outbox) stmt {
	clinic, seq := newIntArray(len(os)), newIntArray(len(os))
	for _, o := range os {
		clinic.add(int64(o.ClinicID))
		seq.add(o.CloudSeq)
	}
	return stmt{"INSERT INTO outbox (clinic_id, cloud_seq, created_at) SELECT c, s, now() FROM unnest(?::bigint[], ?::bigint[]) AS u(c, s)",
		[]any{clinic.String(), seq.String()}}
}

// pgTime is t as PostgreSQL reads a timestamptz, to the microsecond.
func pgTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.999999Z07:00") }

// intArray, textArray and boolArray build PostgreSQL array literals.
type intArray struct{ b []byte }

func newIntArray(n int) *intArray { return &intArray{b: append(make([]byte, 0, n*20+2), '{')} }

func (a *intArray) add(v int64) {
	if len(a.b) > 1 {
		a.b = append(a.b, ',')
	}
	a.b = strconv.AppendInt(a.b, v, 10)
}

func (a *intArray) String() string { return string(append(a.b, '}')) }

type boolArray struct{ b []byte }

func newBoolArray(n int) *boolArray { return &boolArray{b: append(make([]byte, 0, n*2+2), '{')} }

func (a *boolArray) add(v bool) {
	if len(a.b) > 1 {
		a.b = append(a.b, ',')
	}
	if v {
		a.b = append(a.b, 't')
	} else {
		a.b = append(a.b, 'f')
	}
}

func (a *boolArray) String() string { return string(append(a.b, '}')) }

// textArray quotes every element: a literal's unquoted elements are
// trimmed and may read as NULL.
type textArray struct {
	b strings.Builder
	n int
}

func newTextArray() *textArray {
	a := &textArray{}
	a.b.WriteByte('{')
	return a
}

func (a *textArray) add(s string) {
	if a.n > 0 {
		a.b.WriteByte(',')
	}
	a.n++
	a.b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			a.b.WriteByte('\\')
		}
		a.b.WriteByte(s[i])
	}
	a.b.WriteByte('"')
}

// addNull adds a NULL element.
func (a *textArray) addNull() {
	if a.n > 0 {
		a.b.WriteByte(',')
	}
	a.n++
	a.b.WriteString("NULL")
}

func (a *textArray) String() string { return a.b.String() + "}" }
