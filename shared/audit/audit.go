// Package audit is the append-only, hash-chained audit log both servers
// keep: who (person id) did what (action, kind, record id), when, from
// where, with what outcome. Each entry carries the hash of the one before,
// and a head row remembers the last, so Verify finds an entry that was
// changed, removed or cut off the end.
//
// An append is two statements: the head row moves from the head the log
// last wrote (kept in memory, a hint) to the new entry, guarded by that
// head's seq and hash, and the entry is inserted. When the guard matches
// no row (the append that set the hint was rolled back, another process
// appended, the chain is new), the head is read (and locked) from the
// database and the append goes on from there: the hint saves the read,
// never decides what the chain holds.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
)

// Entry is one audited event. Chain names the sequence it belongs to:
// "local:<clinic>" for a clinic's own (replicated to the cloud unchanged),
// "cloud:<clinic>" for what was done in the cloud, "cloud:operator" for the
// operator's actions.
type Entry struct {
	Chain    string    `gorm:"primaryKey;size:64" json:"chain"`
	Seq      int64     `gorm:"primaryKey;autoIncrement:false" json:"seq"`
	At       time.Time `gorm:"not null;index" json:"at"`
	Clinic   ids.ID    `gorm:"not null;default:0" json:"clinic"`
	Actor    string    `gorm:"not null;index" json:"actor"`
	Username string    `gorm:"not null;default:''" json:"username,omitempty"`
	Action   string    `gorm:"not null" json:"action"`
	Kind     string    `gorm:"not null;default:''" json:"kind,omitempty"`
	Target   string    `gorm:"not null;default:'';index" json:"target,omitempty"`
	Remote   string    `gorm:"not null;default:''" json:"remote,omitempty"`
	Outcome  int       `gorm:"not null" json:"outcome"`
	Detail   string    `gorm:"not null;default:''" json:"detail,omitempty"`
	Prev     string    `gorm:"not null" json:"prev"`
	Hash     string    `gorm:"not null" json:"hash"`
}

// TableName is audit_log.
func (Entry) TableName() string { return "audit_log" }

// head is the last entry of a chain.
type head struct {
	Chain string `gorm:"primaryKey;size:64"`
	Seq   int64  `gorm:"not null"`
	Hash  string `gorm:"not null"`
}

func (head) TableName() string { return "audit_heads" }

// Errors.
var (
	// ErrBroken: the chain does not verify (an entry changed, removed or
	// out of order).
	ErrBroken = errors.New("audit: chain broken")
	// ErrAhead: the entries to import start past this side's head.
	ErrAhead = errors.New("audit: entries start past the head")
	// errImportLost: an import's head row was not there to move (it
	// cannot be: the import holds it locked).
	errImportLost = errors.New("audit: the head row went away during the import")
)

// Hash is an entry's hash: SHA-256 over its fields and the previous hash,
// joined by \x1f (the seq, clinic and outcome in decimal, the time in UTC
// as RFC 3339 with nanoseconds), in hex. The text is built in one buffer:
// every append and every imported entry is hashed.
func Hash(e Entry) string {
	var buf [512]byte
	b := append(buf[:0], e.Chain...)
	b = append(strconv.AppendInt(append(b, sep), e.Seq, 10), sep)
	b = append(e.At.UTC().AppendFormat(b, time.RFC3339Nano), sep)
	b = append(strconv.AppendInt(b, int64(e.Clinic), 10), sep)
	for _, f := range [...]string{e.Actor, e.Username, e.Action, e.Kind, e.Target, e.Remote} {
		b = append(append(b, f...), sep)
	}
	b = append(strconv.AppendInt(b, int64(e.Outcome), 10), sep)
	b = append(append(append(b, e.Detail...), sep), e.Prev...)
	sum := sha256.Sum256(b)
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], sum[:])
	return string(out[:])
}

// sep separates an entry's fields in the text Hash hashes.
const sep = '\x1f'

// Log appends to and reads the audit tables of db.
type Log struct {
	db  *gorm.DB
	mu  sync.Mutex
	now func() time.Time
	// write, when set, runs Append's transaction (WithWriter).
	write func(ctx context.Context, fn func(tx *gorm.DB) error) error
	// hints holds, by chain, the head this log's last append wrote (see
	// the package's doc): valid or not, the head row's guard decides.
	hintMu sync.Mutex
	hints  map[string]head
}

// WithWriter makes Append run its writes through write, which must run fn
// in a transaction on db and return once it is committed, one fn at a time:
// the clinic's group commit (local-server/internal/store), so that an
// audited request's entry shares a commit (and an fsync) with the other
// writes of the moment instead of costing one of its own. Appends then do
// not hold the log's own lock while they wait: write serializes them.
func (l *Log) WithWriter(write func(ctx context.Context, fn func(tx *gorm.DB) error) error) *Log {
	l.write = write
	return l
}

// Open returns the log over db's audit tables (made by the database's
// schema owner).
func Open(ctx context.Context, db *gorm.DB) (*Log, error) {
	m := db.WithContext(ctx).Migrator()
	if !m.HasTable(&Entry{}) || !m.HasTable(&head{}) {
		return nil, errors.New("audit: no audit tables (the database's schema owner migrates them first)")
	}
	return &Log{db: db, now: time.Now, hints: map[string]head{}}, nil
}

// DB is the log's database.
func (l *Log) DB() *gorm.DB { return l.db }

// Append adds e to its chain, setting Seq, At (when zero), Prev and Hash.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	if e.At.IsZero() {
		e.At = l.now()
	}
	e.At = e.At.UTC().Truncate(time.Microsecond)
	write := l.write
	if write == nil {
		l.mu.Lock() // one writer per process; FOR UPDATE on the head serializes nodes
		defer l.mu.Unlock()
		write = func(ctx context.Context, fn func(tx *gorm.DB) error) error {
			return l.db.WithContext(ctx).Transaction(fn)
		}
	}
	in := e
	err := write(ctx, func(tx *gorm.DB) error {
		var err error
		e, err = l.appendTx(tx, in)
		return err
	})
	if err != nil {
		return Entry{}, fmt.Errorf("audit: append: %w", err)
	}
	return e, nil
}

// AppendTx is Append inside the caller's transaction tx on the log's
// database, so that an entry commits together with the change it records.
// The caller must serialize its transactions with the log's other writers
// (on SQLite, one writer connection does; the clinic's group commit).
func (l *Log) AppendTx(tx *gorm.DB, e Entry) (Entry, error) {
	if e.At.IsZero() {
		e.At = l.now()
	}
	e.At = e.At.UTC().Truncate(time.Microsecond)
	e, err := l.appendTx(tx, e)
	if err != nil {
		return Entry{}, fmt.Errorf("audit: append: %w", err)
	}
	return e, nil
}

// appendTx appends e in tx: the head row moves from the hinted head to e
// (or, when the hint is missing or stale, from the head read and locked
// in tx), then e is inserted.
func (l *Log) appendTx(tx *gorm.DB, e Entry) (Entry, error) {
	q, ctx, conn := queriesFor(tx), txContext(tx), tx.Statement.ConnPool
	moved := false
	if h, ok := l.hint(e.Chain); ok {
		e.Seq, e.Prev = h.Seq+1, h.Hash
		e.Hash = Hash(e)
		stmt, args := q.advanceHead, []any{e.Seq, e.Hash, e.Chain, h.Seq, h.Hash}
		if q.appendAfter != "" {
			// Both at once: the entry is inserted only if the head moved.
			stmt = q.appendAfter
			args = append(args, e.At, e.Clinic, e.Actor, e.Username, e.Action, e.Kind, e.Target, e.Remote, e.Outcome, e.Detail, e.Prev)
		}
		res, err := conn.ExecContext(ctx, stmt, args...)
		if err != nil {
			return Entry{}, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return Entry{}, err
		}
		moved = n == 1
		if moved && q.appendAfter != "" {
			l.setHint(head{Chain: e.Chain, Seq: e.Seq, Hash: e.Hash})
			return e, nil
		}
	}
	if !moved {
		h, err := lockHead(ctx, conn, q, e.Chain)
		if err != nil {
			return Entry{}, err
		}
		e.Seq, e.Prev = h.Seq+1, h.Hash
		e.Hash = Hash(e)
		if err := saveHead(ctx, conn, q, head{Chain: e.Chain, Seq: e.Seq, Hash: e.Hash}); err != nil {
			return Entry{}, err
		}
	}
	if _, err := conn.ExecContext(ctx, q.insertEntry, e.Chain, e.Seq, e.At, e.Clinic, e.Actor, e.Username, e.Action,
		e.Kind, e.Target, e.Remote, e.Outcome, e.Detail, e.Prev, e.Hash); err != nil {
		return Entry{}, err
	}
	l.setHint(head{Chain: e.Chain, Seq: e.Seq, Hash: e.Hash})
	return e, nil
}

// hint is the head this log last wrote for chain.
func (l *Log) hint(chain string) (head, bool) {
	l.hintMu.Lock()
	defer l.hintMu.Unlock()
	h, ok := l.hints[chain]
	return h, ok
}

func (l *Log) setHint(h head) {
	l.hintMu.Lock()
	defer l.hintMu.Unlock()
	if l.hints == nil {
		l.hints = map[string]head{}
	}
	l.hints[h.Chain] = h
}

func (l *Log) dropHint(chain string) {
	l.hintMu.Lock()
	defer l.hintMu.Unlock()
	delete(l.hints, chain)
}

// queries are the log's statements, run on the transaction's connection
// without gorm's statement building (an append is on every audited write,
// an import on every upload of a clinic's entries). On PostgreSQL (a round
// trip per statement), appendAfter moves the head and inserts the entry in
// one statement, the insert only if the head moved; SQLite (in the
// process) runs the two. ensureHead, lockHead and saveHead make, read (on
// PostgreSQL, lock) and move a chain's head row. An import's entries go in
// as importEntries on PostgreSQL (import.go), as insertRows on SQLite.
type queries struct {
	advanceHead, insertEntry, appendAfter string
	ensureHead, lockHead, saveHead        string
	importEntries, listAfter              string
	// insertRows[i] inserts 1<<i entries (multi-row VALUES).
	insertRows [importRowsLog + 1]string
}

var (
	sqliteQueries   = newQueries(false)
	postgresQueries = newQueries(true)
)

func queriesFor(tx *gorm.DB) queries {
	if tx.Name() == "postgres" {
		return postgresQueries
	}
	return sqliteQueries
}

func newQueries(dollar bool) queries {
	q := queries{
		advanceHead: "UPDATE audit_heads SET seq = ?, hash = ? WHERE chain = ? AND seq = ? AND hash = ?",
		insertEntry: "INSERT INTO audit_log (" + entryColumns + ") VALUES " + entryValues,
		ensureHead:  "INSERT INTO audit_heads (chain, seq, hash) VALUES (?, 0, '') ON CONFLICT DO NOTHING",
		lockHead:    "SELECT seq, hash FROM audit_heads WHERE chain = ?",
		saveHead:    "UPDATE audit_heads SET seq = ?, hash = ? WHERE chain = ?",
		listAfter:   "SELECT " + entryColumns + " FROM audit_log WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?",
	}
	if dollar {
		q.advanceHead, q.insertEntry = numbered(q.advanceHead), numbered(q.insertEntry)
		q.ensureHead, q.lockHead, q.saveHead = numbered(q.ensureHead), numbered(q.lockHead)+" FOR UPDATE", numbered(q.saveHead)
		q.listAfter = numbered(q.listAfter)
		q.importEntries = importEntriesPostgres
		// $1..$5 as advanceHead's; the entry's other columns are typed
		// (an INSERT … SELECT does not take them from the columns).
		q.appendAfter = "WITH h AS (UPDATE audit_heads SET seq = $1, hash = $2 WHERE chain = $3 AND seq = $4 AND hash = $5 RETURNING chain) " +
			"INSERT INTO audit_log (chain, seq, at, clinic, actor, username, action, kind, target, remote, outcome, detail, prev, hash) " +
			"SELECT h.chain, $1, $6::timestamptz, $7::bigint, $8::text, $9::text, $10::text, $11::text, $12::text, $13::text, " +
			"$14::bigint, $15::text, $16::text, $2 FROM h"
		return q
	}
	for i := range q.insertRows {
		q.insertRows[i] = "INSERT INTO audit_log (" + entryColumns + ") VALUES " +
			strings.Repeat(entryValues+", ", 1<<i-1) + entryValues
	}
	return q
}

// numbered turns the ? placeholders of query into PostgreSQL's $1, $2…
func numbered(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// lockHead reads chain's head in tx, locked on PostgreSQL, making it
// (seq 0) when the chain is new.
func lockHead(ctx context.Context, conn gorm.ConnPool, q queries, chain string) (head, error) {
	if _, err := conn.ExecContext(ctx, q.ensureHead, chain); err != nil {
		return head{}, err
	}
	h := head{Chain: chain}
	err := conn.QueryRowContext(ctx, q.lockHead, chain).Scan(&h.Seq, &h.Hash)
	return h, err
}

func saveHead(ctx context.Context, conn gorm.ConnPool, q queries, h head) error {
	_, err := conn.ExecContext(ctx, q.saveHead, h.Seq, h.Hash, h.Chain)
	return err
}

// txContext is the context tx runs with.
func txContext(tx *gorm.DB) context.Context {
	if ctx := tx.Statement.Context; ctx != nil {
		return ctx
	}
	return context.Background()
}

// Head is the seq of a chain's last entry (0: empty).
func (l *Log) Head(ctx context.Context, chain string) (int64, error) {
	var h head
	err := l.db.WithContext(ctx).Where("chain = ?", chain).Limit(1).Find(&h).Error
	return h.Seq, err
}

// Query selects entries.
type Query struct {
	Chain  string
	After  int64
	Limit  int
	Actor  string
	Target string
}

// List returns entries of a chain in order.
func (l *Log) List(ctx context.Context, q Query) ([]Entry, error) {
	if q.Limit <= 0 || q.Limit > 5000 {
		q.Limit = 500
	}
	if q.Actor == "" && q.Target == "" {
		return l.listAfter(ctx, q)
	}
	db := l.db.WithContext(ctx).Where("chain = ? AND seq > ?", q.Chain, q.After)
	if q.Actor != "" {
		db = db.Where("actor = ?", q.Actor)
	}
	if q.Target != "" {
		db = db.Where("target = ?", q.Target)
	}
	var out []Entry
	if err := db.Order("seq").Limit(q.Limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	return out, nil
}

// listAfter is List without filters (the clinic's audit shipper, Verify)
// as fixed text on the connection, its rows read without reflection: the
// shipper reads a chain's new entries a few times a second while the clinic
// saves.
func (l *Log) listAfter(ctx context.Context, q Query) ([]Entry, error) {
	db := l.db.WithContext(ctx)
	rows, err := db.Statement.ConnPool.QueryContext(ctx, queriesFor(db).listAfter, q.Chain, q.After, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.Chain, &e.Seq, &e.At, &e.Clinic, &e.Actor, &e.Username, &e.Action, &e.Kind, &e.Target,
			&e.Remote, &e.Outcome, &e.Detail, &e.Prev, &e.Hash); err != nil {
			return nil, fmt.Errorf("audit: list: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	return out, nil
}

// Verification is the result of Verify.
type Verification struct {
	Chain   string `json:"chain"`
	Entries int64  `json:"entries"`
	OK      bool   `json:"ok"`
	// Problem says where the chain breaks.
	Problem string `json:"problem,omitempty"`
}

// Verify walks a chain: every entry's hash, every link, no gap, and the
// last entry is the head.
func (l *Log) Verify(ctx context.Context, chain string) (Verification, error) {
	v := Verification{Chain: chain}
	var h head
	if err := l.db.WithContext(ctx).Where("chain = ?", chain).Limit(1).Find(&h).Error; err != nil {
		return v, fmt.Errorf("audit: verify: %w", err)
	}
	var prev Entry
	after := int64(0)
	for {
		es, err := l.List(ctx, Query{Chain: chain, After: after, Limit: 1000})
		if err != nil {
			return v, err
		}
		for _, e := range es {
			switch {
			case e.Seq != prev.Seq+1:
				v.Problem = fmt.Sprintf("entry %d is missing", prev.Seq+1)
			case e.Prev != prev.Hash:
				v.Problem = fmt.Sprintf("entry %d does not follow entry %d", e.Seq, prev.Seq)
			case Hash(e) != e.Hash:
				v.Problem = fmt.Sprintf("entry %d was changed", e.Seq)
			}
			if v.Problem != "" {
				return v, nil
			}
			prev = e
			v.Entries++
		}
		if len(es) < 1000 {
			break
		}
		after = prev.Seq
	}
	if prev.Seq != h.Seq || prev.Hash != h.Hash {
		v.Problem = fmt.Sprintf("the chain ends at entry %d but its head is entry %d", prev.Seq, h.Seq)
		return v, nil
	}
	v.OK = true
	return v, nil
}
