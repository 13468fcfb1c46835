package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"path/filepath"
	"testing"

	modernc "modernc.org/sqlite"
)

// TestStmtCacheKeepsStatements: a statement run again (in a transaction
// or not) is the one kept, not prepared anew; the same text run while
// its rows are open runs uncached and both read right; a script of several
// statements runs whole; the cache stays within its bound.
func TestStmtCacheKeepsStatements(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := sql.OpenDB(&stmtConnector{dsn: "file:" + filepath.Join(t.TempDir(), "c.db") + "?" + driverParams, drv: &modernc.Driver{}, max: 4})
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	var sc *stmtConn
	if err := conn.Raw(func(c any) error { sc = c.(*stmtConn); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a'), ('b');"); err != nil {
		t.Fatalf("script: %v", err)
	}
	if n := len(sc.stmts); n != 0 {
		t.Fatalf("after a script, %d statements kept, want 0", n)
	}
	const ins = "INSERT INTO t (v) VALUES (?)"
	if _, err := conn.ExecContext(ctx, ins, "c"); err != nil {
		t.Fatal(err)
	}
	kept := sc.stmts[ins]
	if kept == nil {
		t.Fatalf("%q not kept", ins)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, ins, "d"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if sc.stmts[ins] != kept {
		t.Fatalf("%q prepared again in a transaction", ins)
	}
	// The same query while its rows are open: the second runs uncached.
	const sel = "SELECT v FROM t WHERE id <= ? ORDER BY id"
	var outer, inner []string
	if err := func() error {
		rows, err := conn.QueryContext(ctx, sel, 4)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		return scanNested(ctx, rows, sc, sel, &outer, &inner)
	}(); err != nil {
		t.Fatal(err)
	}
	if got, want := len(outer), 4; got != want || outer[3] != "d" {
		t.Fatalf("outer rows = %v, want a b c d", outer)
	}
	if len(inner) != 4 || inner[0] != "a" {
		t.Fatalf("nested rows = %v, want a b c d", inner)
	}
	if sc.stmts[sel] == nil || sc.stmts[sel].busy {
		t.Fatalf("%q not kept, or still busy after its rows closed", sel)
	}
	for i := range 10 {
		q := "SELECT " + string(rune('0'+i)) + " + ?"
		if _, err := conn.ExecContext(ctx, q, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(sc.stmts); n > 4 {
		t.Fatalf("%d statements kept, want at most 4", n)
	}
}

// nested runs query on sc (as a second statement on the connection) and
// reads its one column into out.
func nested(ctx context.Context, sc *stmtConn, query string, out *[]string) error {
	r, err := sc.QueryContext(ctx, query, []driver.NamedValue{{Ordinal: 1, Value: int64(4)}})
	if err != nil {
		return err
	}
	defer func() { _ = r.Close() }()
	dest := make([]driver.Value, 1)
	for r.Next(dest) == nil {
		switch v := dest[0].(type) {
		case string:
			*out = append(*out, v)
		case []byte:
			*out = append(*out, string(v))
		}
	}
	return nil
}

// scanNested reads rows' one column into outer, running query again on sc
// (into inner) after the first row, while rows are open.
func scanNested(ctx context.Context, rows *sql.Rows, sc *stmtConn, query string, outer, inner *[]string) error {
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return err
		}
		*outer = append(*outer, v)
		if len(*outer) == 1 {
			// database/sql holds the connection for the open rows, so
			// the nested query goes through the stmtConn directly.
			if err := nested(ctx, sc, query, inner); err != nil {
				return err
			}
		}
	}
	return rows.Err()
}
