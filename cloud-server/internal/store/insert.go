package store

import "time"

// An accept transaction inserts a change row and an outbox row for every
// accepted change: a backfill's transaction thousands of each. A multi-row
// INSERT of them had a parameter per column and row (ten thousand for 500
// changes), each bound through gorm's and pgx's reflection, and parsed as
// such by PostgreSQL; insertChanges and insertOutbox send one array per
// column instead (INSERT … SELECT FROM unnest), a few parameters whatever
// the count. The arrays are Go slices, sent in PostgreSQL's binary array
// format: each element length-prefixed, nothing to escape here or to
// parse there (array literals were 4% of sc-cloud's CPU on the live up
// path, a byte at a time, and PostgreSQL scanned each again). As a
// transaction's last statement (commitWith) they are encoded by
// encodeParams, into one buffer of their size; otherwise by pgx.

// insertChanges is the statement inserting cs.
func insertChanges(cs []Change) stmt {
	n := len(cs)
	var (
		clinic, seq, change, record, conflictOf, fence, savedBy = make([]int64, n), make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		kind, origin, base, next, conflict, session, savedByName, payload = make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		at, acceptedAt            = make([]time.Time, n), make([]time.Time, n)
		deleted, unfenced, unsync = make([]bool, n), make([]bool, n), make([]bool, n)
	)
	for i, c := range cs {
		clinic[i], seq[i], change[i], record[i] = int64(c.ClinicID), c.CloudSeq, int64(c.ChangeID), int64(c.RecordID)
		conflictOf[i], fence[i], savedBy[i] = int64(c.ConflictOf), c.Fence, int64(c.SavedBy)
		kind[i], origin[i], base[i], next[i] = c.Kind, c.Origin, c.BaseVersion.String(), c.NewVersion.String()
		conflict[i], session[i], savedByName[i], payload[i] = c.Conflict, c.Session, c.SavedByName, c.Payload
		at[i], acceptedAt[i] = c.At, c.AcceptedAt
		deleted[i], unfenced[i], unsync[i] = c.Deleted, c.Unfenced, c.Unsync
	}
	return stmt{`INSERT INTO changes (clinic_id, cloud_seq, change_id, kind, record_id, origin, base_version, new_version, deleted,
	conflict, conflict_of, fence, unfenced, session, unsync, saved_by, saved_by_name, payload, at, accepted_at)
SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::boolean[],
	?::text[], ?::bigint[], ?::bigint[], ?::boolean[], ?::text[], ?::boolean[], ?::bigint[], ?::text[], ?::text[], ?::timestamptz[], ?::timestamptz[])`, []any{
		clinic, seq, change, kind, record, origin, base, next, deleted,
		conflict, conflictOf, fence, unfenced, session, unsync, savedBy, savedByName, payload, at, acceptedAt}}
}

// insertOutbox is the statement inserting os (their ids from the sequence).
func insertOutbox(os []Outbox) stmt {
	clinic, seq := make([]int64, len(os)), make([]int64, len(os))
	for i, o := range os {
		clinic[i], seq[i] = int64(o.ClinicID), o.CloudSeq
	}
	return stmt{"INSERT INTO outbox (clinic_id, cloud_seq, created_at) SELECT c, s, now() FROM unnest(?::bigint[], ?::bigint[]) AS u(c, s)",
		[]any{clinic, seq}}
}
