package store

import (
	"context"
	"database/sql"
	"strconv"

	"gorm.io/gorm"
)

// The relay's and the down path's statements run as fixed text on the
// connection (kept prepared: stmtcache.go), like a save's (records.go):
// through gorm each was built anew, its rows read through reflection, a
// few hundred times a second while the clinic saves. A list of ids goes as
// one JSON array argument (json_each) rather than an IN list of its
// length, so the text, and its compiled program, is the same for every
// batch.

// ctxOf is the context db's statements run under.
func ctxOf(db *gorm.DB) context.Context {
	if ctx := db.Statement.Context; ctx != nil {
		return ctx
	}
	return context.Background()
}

// queryRaw runs query with args on db's connection (a transaction's, or
// the pool's).
func queryRaw(db *gorm.DB, query string, args ...any) (*sql.Rows, error) {
	return db.Statement.ConnPool.QueryContext(ctxOf(db), query, args...)
}

// execRawN is execRaw that returns how many rows the statement changed.
func execRawN(db *gorm.DB, query string, args ...any) (int64, error) {
	res, err := db.Statement.ConnPool.ExecContext(ctxOf(db), query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// jsonInts is list as a JSON array of integers, the argument of a
// json_each(?) that stands for an IN list.
func jsonInts[T ~int64](list []T) string {
	b := make([]byte, 0, 2+len(list)*20)
	b = append(b, '[')
	for i, v := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(v), 10)
	}
	return string(append(b, ']'))
}
