// Package store is the clinic's SQLite database: its records with their sync
// state, the outbox of changes not yet confirmed by the broker, and the
// checkpoint (last applied cloud_seq). Every write that must replicate commits
// together with its outbox row; applying a change from the cloud never writes
// one (no echo).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
	modernc "modernc.org/sqlite"

	"github.com/scsync/scsync/local-server/internal/schema"
	"github.com/scsync/scsync/shared/ids"
)

// Sync states of a local record (M6, M21).
const (
	StatePending  = "pending"  // changed here, not yet accepted by the cloud
	StateSynced   = "synced"   // the cloud accepted the current version
	StateConflict = "conflict" // needs a person
	StateExcluded = "excluded" // outside the sync scope
)

// stateIs is the condition sync_state = st. Each kind's index on
// sync_state holds only the rare states (schema migration 00004), and
// SQLite uses a partial index only for a condition it can see implies the
// index's: for pending and conflict the state is written as a literal,
// which a statement's plan can rely on (a bound state is seen only by
// preparing the statement again for the value bound, at every run). The
// other states are bound; synced reads the table in id order, and the
// excluded list the indexes of its two parts (Store.List).
func stateIs(st string) clause.Expr {
	switch st {
	case StatePending, StateConflict:
		return clause.Expr{SQL: "sync_state = '" + st + "'"}
	}
	return clause.Expr{SQL: "sync_state = ?", Vars: []any{st}}
}

// rareStates is the condition of each kind's partial index on sync_state,
// as the migration writes it: a query uses the index only with a term
// that is it, or implies it (SQLite compares the expressions), and
// sync_state = 'excluded' AND queued = 1 does not, being two terms.
const rareStates = "sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)"

var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("store: not found")
	// ErrVersionConflict: the caller's base version is not the current one.
	ErrVersionConflict = errors.New("store: version conflict")
)

// Outbox holds a change (its envelope as JSON) until the broker confirmed
// the message that carried it. Lane 0 is live changes, lane 1 the backfill:
// the relay sends live changes first.
type Outbox struct {
	ID        int64  `gorm:"primaryKey"`
	ChangeID  ids.ID `gorm:"not null;uniqueIndex"`
	Lane      int    `gorm:"not null;default:0;index"`
	Envelope  string `gorm:"type:text;not null"`
	CreatedAt time.Time
}

// Outbox lanes.
const (
	LaneLive     = 0
	LaneBackfill = 1
)

// TableName is "outbox".
func (Outbox) TableName() string { return "outbox" }

// KV is a small key/value table (checkpoint, last contact).
type KV struct {
	Key   string `gorm:"primaryKey"`
	Value string `gorm:"not null"`
}

// TableName is "meta".
func (KV) TableName() string { return "meta" }

const (
	metaCheckpoint  = "checkpoint"
	metaLastContact = "last_contact"
)

// Store is the clinic database.
type Store struct {
	db  *gorm.DB // the one writer
	rdb *gorm.DB // readers (query_only)
	// odb reads the outbox (query_only, one connection, a small cache):
	// the relay and the backfill's counts, many small reads a second.
	odb  *gorm.DB
	path string
	// importing counts bulk imports in progress: the backfill waits for
	// them, so it sends the whole imported history newest first.
	importing atomic.Int32
	clinic    ids.ID
	ids       *ids.Generator
	// afterBackfillPlan, set by tests, runs between a backfill batch's
	// read and its write.
	afterBackfillPlan func()
	// fewNeverQueuedAt, set by tests, replaces fewNeverQueued.
	fewNeverQueuedAt int
	// gc gathers the API's writes into group commits (commit.go).
	gc *committer
	// scopeKept is the sync scope as the committer last read it (nil: to
	// read), see scopeIn.
	scopeKept atomic.Pointer[Scope]
}

// Open opens (creating if needed) the SQLite database at path for clinic,
// minting ids with gen.
func Open(path string, clinic ids.ID, gen *ids.Generator) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := privateFiles(path); err != nil {
		return nil, err
	}
	// temp_store(MEMORY): the savepoints of a group commit (commit.go)
	// copy each page they change to a sub-journal, which otherwise spills
	// to a temporary file past 64 KiB (a pwrite per page); it is never
	// needed after the transaction, the WAL is what makes a commit durable.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_pragma=cache_size(-" + strconv.Itoa(writerCacheKiB) + ")&_pragma=mmap_size(268435456)&_pragma=wal_autocheckpoint(4000)&_pragma=temp_store(MEMORY)&" + driverParams
	// One connection: SQLite has one writer, and this keeps transactions
	// strictly serialized instead of failing with SQLITE_BUSY.
	db, sqlDB, err := openConn(dsn, 1)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// The schema's one owner migrates the whole database (every package's
	// tables) before anything opens a table (docs/schema.md).
	if err := schema.Migrate(context.Background(), sqlDB); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := fillSortDates(db); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("store: fill sort dates: %w", err)
	}
	// A second connection, read-only, for work that only reads: the
	// backfill plans its batches on a snapshot through it (WAL lets it read
	// while the writer writes), and counting does not wait for writes.
	// It maps no memory and keeps a small page cache (readerCacheKiB for each of its
	// two connections): the writer's mmap already holds the hot pages, a
	// second map of the same file would count them twice in sc-local's RSS
	// (and SQLite sets a mapped page up again at every fetch: tried, it cost
	// more than it saved), and what it mostly does — a backfill's snapshot
	// reads, verify's scan of every row — passes over each page once. With
	// 16 MB each, verify of a million records peaked at 103 MiB of anonymous
	// memory (docs/verify.md). While the writer commits, each read
	// transaction starts by dropping the whole cache (SQLite's pager reset
	// when the WAL moved): with 8 MB each, freeing it took a tenth of
	// sc-local's CPU during a backfill (docs/performance.md, "Backfill: the
	// readers' resets"); 2 MB holds one backfill batch's reads.
	rdsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=cache_size(-" + strconv.Itoa(readerCacheKiB) + ")&_pragma=mmap_size(0)&" + driverParams
	rdb, _, err := openConn(rdsn, 2)
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// A third, for the outbox: the relay reads it every round and the
	// backfill counts its lanes every turn and while it waits. On the
	// readers above each of those small reads dropped the cache a batch
	// had filled; this one's holds only what the outbox reads touch.
	odsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=cache_size(-" + strconv.Itoa(outboxCacheKiB) + ")&_pragma=mmap_size(0)&" + driverParams
	odb, _, err := openConn(odsn, 1)
	if err != nil {
		_ = sqlDB.Close()
		if r, rerr := rdb.DB(); rerr == nil {
			_ = r.Close()
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{db: db, rdb: rdb, odb: odb, path: path, clinic: clinic, ids: gen, gc: newCommitter()}
	go s.commitLoop()
	return s, nil
}

// The page caches of the writer and of each read-only connection (KiB,
// SQLite's cache_size as it counts it); a scan of every row (verify)
// shrinks a reader's while it runs (scanCacheKiB). 2 MB holds one backfill
// batch's reads (see Open).
//
// What they cost is about twice that: the driver's allocator
// (modernc.org/memory) serves a request of up to 16 KiB from a slot of the
// next power of two, and SQLite allocates each cached page on its own, 4 KiB
// of page and a few hundred bytes of header: an 8 KiB slot. With 32 MB for
// the writer and 8 MB for each reader, sc-local held about 90 MiB of
// anonymous memory in SQLite's caches alone after a million-record backfill,
// which pushed verify past its 100 MB budget (docs/performance.md, "Verify at
// a million"). The writer reads through its memory map (mmap_size), so its
// cache mostly holds a transaction's dirty pages; past it SQLite spills them
// to the WAL before the commit, which costs writes, not durability.
const (
	writerCacheKiB = 16000
	readerCacheKiB = 2000
)

// outboxCacheKiB is the page cache of the outbox's read-only connection
// (KiB): a relay round reads up to a few thousand envelopes once.
const outboxCacheKiB = 2000

// openConn opens a pool of at most conns connections to dsn, each of
// which keeps up to stmtsKept prepared statements (stmtcache.go).
func openConn(dsn string, conns int) (*gorm.DB, *sql.DB, error) {
	sqlDB := sql.OpenDB(&stmtConnector{dsn: dsn, drv: &modernc.Driver{}, max: stmtsKept})
	sqlDB.SetMaxOpenConns(conns)
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: sqlDB}), &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		_ = sqlDB.Close()
		return nil, nil, err
	}
	return db, sqlDB, nil
}

// stmtsKept bounds the statements each connection keeps prepared: a
// statement's text varies with its number of arguments (IN lists, batched
// inserts).
const stmtsKept = 512

// The SQLite driver is modernc.org/sqlite (pure Go: the Windows build has
// no cgo) through its gorm dialect github.com/libtnb/sqlite; it keeps a
// prepared statement's compiled program and only resets it between runs
// (docs/performance.md says why this driver). The store's connections are
// modernc's, opened through stmtConnector; the dialect is given the pool,
// so the parameters it would add itself are in driverParams. Times are
// written as before (SQLite's "YYYY-MM-DD HH:MM:SS.SSS+HH:MM" text), and
// text is turned into a time only in columns declared as one, as the
// previous driver did: the dialect's default would also turn date-shaped
// text of untyped columns (MAX(...), COALESCE(...)) into times.
const driverParams = "_time_format=sqlite&_texttotime=0&_inttotime=0"

// OpenPlain opens the SQLite database at path with the store's driver
// and settings, without the store (a snapshot, a restore being checked);
// ClosePlain closes it.
func OpenPlain(path string) (*gorm.DB, error) {
	db, err := gorm.Open(sqlite.Open("file:"+path+"?_pragma=busy_timeout(10000)&"+driverParams), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// ClosePlain closes a database OpenPlain opened.
func ClosePlain(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		_ = sqlDB.Close()
	}
}

// Close closes the database.
func (s *Store) Close() error {
	s.gc.stop() // after the batch it runs: its writers get their answer
	var errs []error
	for _, db := range []*gorm.DB{s.odb, s.rdb, s.db} {
		sqlDB, err := db.DB()
		if err == nil {
			err = sqlDB.Close()
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.db.WithContext(ctx).Exec("SELECT 1").Error
}

// DB is the database handle, for components keeping their own tables in
// the clinic's database (edit sessions, file transfers).
func (s *Store) DB() *gorm.DB { return s.db }

// Clinic is the clinic this database belongs to.
func (s *Store) Clinic() ids.ID { return s.clinic }

// NextOutbox returns up to limit unpublished messages, live lane first,
// oldest first; what the relay sends of them (CreatedAt is not read).
func (s *Store) NextOutbox(ctx context.Context, limit int) ([]Outbox, error) {
	rows, err := queryRaw(s.odb.WithContext(ctx), selectOutbox, limit)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Outbox
	for rows.Next() {
		var o Outbox
		if err := rows.Scan(&o.ID, &o.ChangeID, &o.Lane, &o.Envelope); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// DeleteOutbox removes changes whose message the broker confirmed.
func (s *Store) DeleteOutbox(ctx context.Context, ids ...int64) error {
	if len(ids) == 0 {
		return nil
	}
	list := jsonInts(ids)
	// In the group commit of the moment: the relay deletes after every
	// confirmed publish, a commit (and an fsync) of its own otherwise.
	return s.write(ctx, func(tx *gorm.DB) error { return execRaw(tx, deleteOutbox, list) })
}

// The relay's statements (rawsql.go).
const (
	selectOutbox = "SELECT id, change_id, lane, envelope FROM outbox ORDER BY lane, id LIMIT ?"
	deleteOutbox = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
)

// Checkpoint is the last cloud_seq applied here.
func (s *Store) Checkpoint(ctx context.Context) (int64, error) {
	v, err := s.meta(s.db.WithContext(ctx), metaCheckpoint)
	if err != nil || v == "" {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// meta is the value of key in the meta table ("": none).
func (s *Store) meta(db *gorm.DB, key string) (string, error) {
	var v string
	err := db.Statement.ConnPool.QueryRowContext(ctxOf(db), "SELECT value FROM meta WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// setMeta sets keys of the meta table: key, value, key, value…
func setMeta(db *gorm.DB, kv ...string) error {
	if len(kv) == 0 || len(kv)%2 != 0 {
		return fmt.Errorf("store: setMeta with %d arguments", len(kv))
	}
	args := make([]any, len(kv))
	for i, v := range kv {
		args[i] = v
	}
	return execRaw(db, "INSERT INTO meta (key, value) VALUES (?, ?)"+strings.Repeat(", (?, ?)", len(kv)/2-1)+
		" ON CONFLICT (key) DO UPDATE SET value = excluded.value", args...)
}

// TouchContact records that the cloud was heard from.
func (s *Store) TouchContact(ctx context.Context) error {
	at := time.Now().UTC().Format(time.RFC3339Nano)
	return s.write(ctx, func(tx *gorm.DB) error { return setMeta(tx, metaLastContact, at) })
}

// privateFiles creates the database file with mode 0600 before SQLite opens
// it, and narrows an existing one (and its -wal and -shm) to 0600: SQLite
// gives the WAL and shared-memory files the database file's permissions.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: %w", err)
		}
	}
	return nil
}
