package store

import (
	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/syncrules"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// acceptedAsSent finds the changes of es after checkpoint cp that accept
// this clinic's own pending change exactly as it sent it (every record of
// a backfill comes back so): for those ApplyDown only writes the sync marks
// (as applyOne does for syncrules.AcceptAsSent), so it reads only the sync
// columns of their records, not whole rows. It returns each such record's
// fence. A record that more than one change of es touches is left to
// applyOne, which follows each change's effect on the next.
func (s *Store) acceptedAsSent(tx *gorm.DB, es []wire.Envelope, cp int64) (map[records.Ref]int64, error) {
	times := map[records.Ref]int{}
	for _, e := range es {
		if e.CloudSeq > cp {
			times[records.Ref{Kind: e.Kind, ID: e.RecordID}]++
		}
	}
	byKind := map[wire.Kind][]ids.ID{}
	for _, e := range es {
		ref := records.Ref{Kind: e.Kind, ID: e.RecordID}
		if e.CloudSeq > cp && times[ref] == 1 && e.Clinic == s.clinic && e.Origin == wire.OriginLocal && !e.Unsync && !e.Deleted {
			byKind[e.Kind] = append(byKind[e.Kind], e.RecordID)
		}
	}
	type local struct {
		syncrules.Local
		fence int64
	}
	found := map[records.Ref]local{}
	for kind, list := range byKind {
		k, err := opsFor(kind)
		if err != nil {
			continue // applyOne skips it
		}
		if err := syncColumns(tx, k.spec.Table, s.clinic, list, func(id ids.ID, l syncrules.Local, fence int64) {
			found[records.Ref{Kind: kind, ID: id}] = local{Local: l, fence: fence}
		}); err != nil {
			return nil, err
		}
	}
	out := make(map[records.Ref]int64, len(found))
	for _, e := range es {
		ref := records.Ref{Kind: e.Kind, ID: e.RecordID}
		l, ok := found[ref]
		if !ok || e.CloudSeq <= cp {
			continue
		}
		// The very decision applyOne makes.
		d := syncrules.DecideDown(l.Local, e.CloudSeq-1, syncrules.Applied{ChangeID: int64(e.ChangeID), CloudSeq: e.CloudSeq,
			New: e.NewVersion, Deleted: e.Deleted, Unsync: e.Unsync, Conflict: e.Conflict, ConflictOf: int64(e.ConflictOf), Origin: e.Origin})
		if d.Outcome == syncrules.AcceptAsSent {
			out[ref] = l.fence
		}
	}
	return out, nil
}

// syncColumns reads what syncrules.DecideDown needs of the records idList
// names in table, and their fence, and calls f with each: one statement
// of fixed text per table (rawsql.go), whatever the number of ids.
func syncColumns(tx *gorm.DB, table string, clinic ids.ID, idList []ids.ID, f func(ids.ID, syncrules.Local, int64)) error {
	rows, err := queryRaw(tx, "SELECT id, version, origin, deleted, queued, sync_state, pending_change_id, fence FROM "+table+
		" WHERE clinic_id = ? AND id IN (SELECT value FROM json_each(?))", int64(clinic), jsonInts(idList))
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var (
			id, pending ids.ID
			v           version.V
			origin      string
			deleted     bool
			queued      bool
			state       string
			fence       int64
		)
		if err := rows.Scan(&id, &v, &origin, &deleted, &queued, &state, &pending, &fence); err != nil {
			return err
		}
		l := syncrules.Local{Exists: true, Queued: queued, Version: v, Deleted: deleted, Origin: wire.Origin(origin)}
		if state == StatePending {
			l.Pending = int64(pending)
		}
		f(id, l, fence)
	}
	return rows.Err()
}
