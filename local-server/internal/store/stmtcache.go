package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"

	"modernc.org/sqlite"
)

// Statements prepared once per connection. SQLite compiles every
// statement before it runs; a statement run through database/sql without
// an explicit Prepare (everything gorm does) is compiled, run and thrown
// away, and compiling was 9–14% of sc-local's CPU under a burst of
// creates. gorm's PrepareStmt does not help here: a statement first seen
// inside a transaction is prepared on that transaction, which closes it at
// its commit, so every transaction (every group commit) prepares it again.
// The cache sits under database/sql instead: each connection keeps the
// statements it ran, by their text, and runs them again after a reset,
// inside a transaction or not.

// stmtConnector opens modernc.org/sqlite connections that keep their
// statements.
type stmtConnector struct {
	dsn string
	drv *sqlite.Driver
	max int // statements kept per connection
}

func (c *stmtConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	inner, ok := conn.(stmtConnInner)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("store: the SQLite driver's connection lacks context methods")
	}
	return &stmtConn{inner: inner, stmts: make(map[string]*cachedStmt), max: c.max}, nil
}

func (c *stmtConnector) Driver() driver.Driver { return c.drv }

// stmtConnInner is what the driver's connection offers (modernc's does).
type stmtConnInner interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// stmtStmt is what the driver's statements offer.
type stmtStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

type cachedStmt struct {
	s stmtStmt
	// busy: rows of it are open; running it again would reset them, so
	// the same text runs uncached meanwhile.
	busy bool
}

// stmtConn is a connection with its statement cache. database/sql never
// uses a connection from two goroutines at once, so it needs no lock.
type stmtConn struct {
	inner stmtConnInner
	stmts map[string]*cachedStmt
	max   int
}

// cached returns the statement kept for query, preparing it on first use;
// nil if query is not kept (a script of several statements, a statement
// whose rows are open).
func (c *stmtConn) cached(ctx context.Context, query string) (*cachedStmt, error) {
	if cs, ok := c.stmts[query]; ok {
		if cs.busy {
			return nil, nil
		}
		return cs, nil
	}
	// A script (migrations) runs as the driver runs it; a trailing
	// semicolon is a single statement still.
	if strings.Contains(strings.TrimRight(query, "; \t\n"), ";") {
		return nil, nil
	}
	ds, err := c.inner.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s, ok := ds.(stmtStmt)
	if !ok {
		_ = ds.Close()
		return nil, nil
	}
	if len(c.stmts) >= c.max {
		c.evict()
	}
	cs := &cachedStmt{s: s}
	c.stmts[query] = cs
	return cs, nil
}

// evict closes about a quarter of the idle statements (the map's order:
// any), so that a flood of one-off statements costs few evictions.
func (c *stmtConn) evict() {
	n := max(len(c.stmts)/4, 1)
	for q, cs := range c.stmts {
		if n == 0 {
			return
		}
		if cs.busy {
			continue
		}
		_ = cs.s.Close()
		delete(c.stmts, q)
		n--
	}
}

func (c *stmtConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.cached(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.inner.ExecContext(ctx, query, args)
	}
	return cs.s.ExecContext(ctx, args)
}

func (c *stmtConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.cached(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.inner.QueryContext(ctx, query, args)
	}
	r, err := cs.s.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	rows, ok := r.(stmtRowsInner)
	if !ok {
		_ = r.Close()
		return nil, errors.New("store: the SQLite driver's rows lack column types")
	}
	cs.busy = true
	return &stmtRows{stmtRowsInner: rows, cs: cs}, nil
}

// Prepare and PrepareContext (an explicit Prepare: its caller closes the
// statement) are not kept.
func (c *stmtConn) Prepare(query string) (driver.Stmt, error) {
	return c.inner.PrepareContext(context.Background(), query)
}

func (c *stmtConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.inner.PrepareContext(ctx, query)
}

func (c *stmtConn) Begin() (driver.Tx, error) {
	return c.inner.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *stmtConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.inner.BeginTx(ctx, opts)
}

func (c *stmtConn) Ping(ctx context.Context) error { return c.inner.Ping(ctx) }

func (c *stmtConn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }

func (c *stmtConn) IsValid() bool { return c.inner.IsValid() }

// Close finalizes the kept statements, then closes the connection.
func (c *stmtConn) Close() error {
	var errs []error
	for q, cs := range c.stmts {
		errs = append(errs, cs.s.Close())
		delete(c.stmts, q)
	}
	errs = append(errs, c.inner.Close())
	return errors.Join(errs...)
}

// stmtRowsInner is what the driver's rows offer (modernc's do): the column
// types gorm reads.
type stmtRowsInner interface {
	driver.Rows
	driver.RowsColumnTypeDatabaseTypeName
	driver.RowsColumnTypeLength
	driver.RowsColumnTypeNullable
	driver.RowsColumnTypePrecisionScale
	driver.RowsColumnTypeScanType
}

// stmtRows are the rows of a kept statement: closing them (which resets
// the statement) frees it for its next run.
type stmtRows struct {
	stmtRowsInner
	cs *cachedStmt
}

func (r *stmtRows) Close() error {
	err := r.stmtRowsInner.Close()
	r.cs.busy = false
	return err
}
