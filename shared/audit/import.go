package audit

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// An import's new entries are written as fixed statements on the
// transaction's connection, not through gorm: the cloud imports every
// entry of every clinic (the clinics' audit shippers upload up to 500 at a
// time), and gorm's CreateInBatches built each batch's INSERT by
// reflection, a parameter per column and entry, most of the import's CPU.
// On PostgreSQL one statement inserts them all from one array per column
// (INSERT … SELECT FROM unnest, as the cloud's accept path inserts its
// changes) and moves the head; on SQLite (in the process, the statements
// kept compiled by the clinic's connector) they go in as multi-row INSERTs
// of 64, 32, … 1 rows, a few fixed texts whatever the count.

const (
	entryColumns = "chain, seq, at, clinic, actor, username, action, kind, target, remote, outcome, detail, prev, hash"
	entryValues  = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	// importRowsLog: SQLite's largest INSERT of an import has 1<<6 = 64
	// rows (896 parameters; SQLite allows 32,766).
	importRowsLog = 6
	// importEntriesPostgres moves the (locked) head to $2, $3 and inserts
	// the entries, one array per column but the chain, with the head's
	// chain: inserted only if the head row was there to move.
	importEntriesPostgres = "WITH h AS (UPDATE audit_heads SET seq = $2, hash = $3 WHERE chain = $1 RETURNING chain) " +
		"INSERT INTO audit_log (" + entryColumns + ") SELECT h.chain, u.* FROM h, unnest($4::bigint[], $5::timestamptz[], " +
		"$6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[], " +
		"$15::text[], $16::text[]) AS u"
)

// Import appends entries made elsewhere (a clinic's, replicated to the
// cloud; or the cloud's copy, brought back to a restored clinic) keeping
// their hashes. Entries up to the head already here are skipped; the rest
// must continue the chain. It returns the head's seq after the import.
func (l *Log) Import(ctx context.Context, chain string, es []Entry) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropHint(chain) // the next append reads the head (this import's, or what it left)
	var seq int64
	err := l.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q, ctx, conn := queriesFor(tx), txContext(tx), tx.Statement.ConnPool
		h, err := lockHead(ctx, conn, q, chain)
		if err != nil {
			return err
		}
		fresh := make([]Entry, 0, len(es))
		for _, e := range es {
			e.At = e.At.UTC()
			if e.Chain != chain || Hash(e) != e.Hash {
				return fmt.Errorf("%w: entry %d does not match its hash", ErrBroken, e.Seq)
			}
			if e.Seq <= h.Seq {
				continue // sent again
			}
			if e.Seq != h.Seq+1 {
				return fmt.Errorf("%w: entry %d after head %d", ErrAhead, e.Seq, h.Seq)
			}
			if e.Prev != h.Hash {
				return fmt.Errorf("%w: entry %d does not follow entry %d", ErrBroken, e.Seq, h.Seq)
			}
			fresh = append(fresh, e)
			h = head{Chain: chain, Seq: e.Seq, Hash: e.Hash}
		}
		seq = h.Seq
		if len(fresh) == 0 {
			return nil // all sent again: the head is where it was
		}
		// The whole chain is checked above, so the new entries go in
		// together, not one round trip each.
		if q.importEntries != "" {
			return importPostgres(ctx, conn, q, h, fresh)
		}
		if err := insertEntries(ctx, conn, q, fresh); err != nil {
			return err
		}
		return saveHead(ctx, conn, q, h)
	})
	if err != nil {
		return 0, fmt.Errorf("audit: import: %w", err)
	}
	return seq, nil
}

// importPostgres inserts es and moves the head to h in one statement.
func importPostgres(ctx context.Context, conn gorm.ConnPool, q queries, h head, es []Entry) error {
	n := len(es)
	var (
		seq, clinic, outcome                                                = make([]int64, n), make([]int64, n), make([]int64, n)
		at                                                                  = make([]time.Time, n)
		actor, username, action, kind, target, remote, detail, prev, hashes = make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n)
	)
	for i, e := range es {
		seq[i], at[i], clinic[i], outcome[i] = e.Seq, e.At, int64(e.Clinic), int64(e.Outcome)
		actor[i], username[i], action[i], kind[i], target[i] = e.Actor, e.Username, e.Action, e.Kind, e.Target
		remote[i], detail[i], prev[i], hashes[i] = e.Remote, e.Detail, e.Prev, e.Hash
	}
	res, err := conn.ExecContext(ctx, q.importEntries, h.Chain, h.Seq, h.Hash,
		seq, at, clinic, actor, username, action, kind, target, remote, outcome, detail, prev, hashes)
	if err != nil {
		return err
	}
	got, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if got != int64(n) {
		return errImportLost
	}
	return nil
}

// insertEntries inserts es as multi-row INSERTs of q.insertRows, the
// largest that fits first.
func insertEntries(ctx context.Context, conn gorm.ConnPool, q queries, es []Entry) error {
	args := make([]any, 0, 14<<importRowsLog)
	for len(es) > 0 {
		k := importRowsLog
		for 1<<k > len(es) {
			k--
		}
		args = args[:0]
		for _, e := range es[:1<<k] {
			args = append(args, e.Chain, e.Seq, e.At, e.Clinic, e.Actor, e.Username, e.Action, e.Kind, e.Target,
				e.Remote, e.Outcome, e.Detail, e.Prev, e.Hash)
		}
		if _, err := conn.ExecContext(ctx, q.insertRows[k], args...); err != nil {
			return err
		}
		es = es[1<<k:]
	}
	return nil
}
