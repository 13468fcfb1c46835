package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"
)

// A transaction through database/sql costs a round trip for its begin and
// one for its commit, each a wake-up of PostgreSQL and of the node: on the
// live up path (a transaction of a few dozen changes, then a relay round)
// those and the statements between were most of both processes' CPU per
// change. A pinned transaction holds one connection of the pool and sends
// its begin with its first statement and its commit with its last, as
// pgx batches on the connection itself (one round trip each); the
// statements between go through gorm, on the same connection.

// pinned is a transaction on one connection of the pool.
type pinned struct {
	conn *sql.Conn
	// tx runs statements in the transaction, through gorm.
	tx *gorm.DB
	// texts are the statement texts commitWith prepares.
	texts *preparedTexts
}

// pin takes a connection of the pool for a transaction (not begun yet).
func (s *Store) pin(ctx context.Context) (*pinned, error) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return nil, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, err
	}
	tx := s.db.Session(&gorm.Session{Context: ctx, NewDB: true})
	tx.Statement.ConnPool = txConn{conn}
	return &pinned{conn: conn, tx: tx, texts: &s.texts}, nil
}

// txConn is a pinned connection as gorm sees it: a transaction in
// progress (a gorm.TxCommitter), so that a gorm Transaction inside it
// nests as a savepoint, as in a database/sql transaction, instead of
// beginning and committing one of its own; only the pinned transaction
// commits or rolls back.
type txConn struct{ *sql.Conn }

func (txConn) Commit() error   { return errPinnedTx }
func (txConn) Rollback() error { return errPinnedTx }

// raw calls fn with the pgx connection under p (nothing else may use the
// connection meanwhile).
func (p *pinned) raw(fn func(pc *pgx.Conn) error) error {
	return p.conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: a %T is not a pgx connection", dc)
		}
		return fn(sc.Conn())
	})
}

// release ends p: a transaction still open is rolled back, and the
// connection goes back to the pool. (The pool would not hand out again a
// connection left in a transaction either: pgx's stdlib checks its state
// first, ResetSession.)
func (p *pinned) release() {
	_ = p.raw(func(pc *pgx.Conn) error {
		rollback(pc)
		return nil
	})
	_ = p.conn.Close()
}

// rollback ends pc's transaction, if one is open, whatever the caller's
// context says.
func rollback(pc *pgx.Conn) {
	if pc.PgConn().IsClosed() || pc.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = pc.PgConn().Exec(ctx, "ROLLBACK").Close()
}

// read is a query and what reads each of its rows. Its arguments are
// int64s or []int64s (bigint, bigint[]).
type read struct {
	sql  string
	args []any
	scan func(pgx.Rows) error
}

// beginWith begins p's transaction and runs reads in it, in order, in one
// round trip. Each runs after the one before it has finished (a lock it
// waited for is held) and sees what was committed until then, as if sent
// alone. Each is an unnamed statement, planned when it runs: prepared once
// for the connection, PostgreSQL would keep a generic plan made while the
// tables were small (see pairsIn).
func (p *pinned) beginWith(ctx context.Context, reads ...read) error {
	return p.raw(func(pc *pgx.Conn) error {
		b := &pgconn.Batch{}
		b.ExecParams("BEGIN", nil, nil, nil, nil)
		for _, r := range reads {
			vals := make([][]byte, len(r.args))
			oids := make([]uint32, len(r.args))
			for i, a := range r.args {
				switch a.(type) {
				case int64:
					oids[i] = pgtype.Int8OID
				case []int64:
					oids[i] = pgtype.Int8ArrayOID
				default:
					return fmt.Errorf("store: a %T argument is not handled", a)
				}
				var err error
				if vals[i], err = pc.TypeMap().Encode(oids[i], pgtype.BinaryFormatCode, a, nil); err != nil {
					return err
				}
			}
			b.ExecParams(r.sql, vals, oids, []int16{pgtype.BinaryFormatCode}, []int16{pgtype.BinaryFormatCode})
		}
		mrr := pc.PgConn().ExecBatch(ctx, b)
		var err error
		for i := 0; mrr.NextResult(); i++ {
			if i == 0 || err != nil {
				if _, cerr := mrr.ResultReader().Close(); err == nil {
					err = cerr
				}
				continue
			}
			rows := pgx.RowsFromResultReader(pc.TypeMap(), mrr.ResultReader())
			for rows.Next() {
				if err = reads[i-1].scan(rows); err != nil {
					break
				}
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
		if cerr := mrr.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// commitWith runs last (nil: none) and commits p's transaction, in one
// round trip. If last fails, the transaction is left open, aborted, for
// release to roll back. last is prepared on the connection the first time
// it runs there (as pgx's statement cache did), and its arguments encoded
// by encodeParams.
func (p *pinned) commitWith(ctx context.Context, last *stmt) error {
	return p.raw(func(pc *pgx.Conn) error {
		b := &pgconn.Batch{}
		n := 1
		if last != nil {
			sd, err := p.texts.prepare(ctx, pc, last.sql)
			if err != nil {
				return err
			}
			if sd == nil {
				return commitWithPgx(ctx, pc, last)
			}
			vals, formats, err := encodeParams(pc.TypeMap(), sd.ParamOIDs, last.args)
			if err != nil {
				return err
			}
			results := make([]int16, len(sd.Fields))
			for i, f := range sd.Fields {
				results[i] = pc.TypeMap().FormatCodeForOID(f.DataTypeOID)
			}
			b.ExecStatement(sd, vals, formats, results)
			n++
		}
		return execCommit(ctx, pc, b, n)
	})
}

// execCommit queues COMMIT after the n-1 statements of b, sends them in one
// round trip, and is the first statement's error, or ErrNotCommitted unless
// every statement answered and the last was a COMMIT.
func execCommit(ctx context.Context, pc *pgx.Conn, b *pgconn.Batch, n int) error {
	b.ExecParams("COMMIT", nil, nil, nil, nil)
	res, err := pc.PgConn().ExecBatch(ctx, b).ReadAll()
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	if len(res) != n {
		return fmt.Errorf("%w: %d results of %d", ErrNotCommitted, len(res), n)
	}
	return committed(res[n-1].CommandTag)
}

// commitWithPgx is commitWith through pgx's batch and statement cache,
// for a statement text past maxPreparedTexts.
func commitWithPgx(ctx context.Context, pc *pgx.Conn, last *stmt) error {
	b := &pgx.Batch{}
	b.Queue(last.sql, last.args...)
	b.Queue("COMMIT")
	br := pc.SendBatch(ctx, b)
	var err error
	for i := range b.Len() {
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err != nil {
			break
		}
		if i == b.Len()-1 {
			err = committed(tag)
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// maxPreparedTexts bounds the statement texts commitWith prepares on a
// connection (pgx's Conn.Prepare keeps each for the connection's life).
// The texts are few (a statement per kind of record created, the changes,
// the outbox rows, last_seq: a handful of combinations on the live path),
// but the kinds come in the order a transaction meets them; past this
// many, a text goes through pgx's statement cache (a bounded LRU).
const maxPreparedTexts = 256

// preparedTexts is the set of statement texts commitWith prepares, shared
// by a Store's connections.
type preparedTexts struct {
	mu    sync.Mutex
	texts map[string]bool
}

// prepare is the description of sql prepared on pc (prepared now, a round
// trip, if it was not yet), or nil when sql is not one of the texts
// prepared so.
func (pt *preparedTexts) prepare(ctx context.Context, pc *pgx.Conn, sql string) (*pgconn.StatementDescription, error) {
	pt.mu.Lock()
	ok := pt.texts[sql]
	if !ok && len(pt.texts) < maxPreparedTexts {
		if pt.texts == nil {
			pt.texts = map[string]bool{}
		}
		pt.texts[sql], ok = true, true
	}
	pt.mu.Unlock()
	if !ok {
		return nil, nil
	}
	return pc.Prepare(ctx, sql, sql)
}

// committed is ErrNotCommitted unless tag is a COMMIT's: PostgreSQL
// answers the COMMIT of a transaction in which a statement failed with a
// rollback, and no error.
func committed(tag pgconn.CommandTag) error {
	if tag.String() != "COMMIT" {
		return fmt.Errorf("%w: %s", ErrNotCommitted, tag)
	}
	return nil
}
