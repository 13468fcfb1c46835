// Package schema owns the cloud database's schema: the SQL migrations in
// migrations/, embedded in sc-cloud, applied in order by goose and recorded
// in its goose_db_version table. Every sc-cloud node runs Migrate when it
// opens the database, before anything reads or writes a table; a
// PostgreSQL session advisory lock makes nodes starting together apply
// each migration once. No other package creates or alters tables
// (docs/schema.md).
package schema

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var embedded embed.FS

// LockID is the PostgreSQL advisory lock key Migrate holds (next to the
// keys the previous release took around its AutoMigrate: 4242001, 4242019).
const LockID = 4242030

// lockWait bounds how long a node waits for another node's migration:
// probes a second apart, for ten minutes.
const (
	lockProbeSeconds = 1
	lockProbes       = 600
)

// Migrations are the cloud schema's migrations, oldest first.
func Migrations() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	return sub
}

func provider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(LockID), lock.WithLockTimeout(lockProbeSeconds, lockProbes))
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return p, nil
}

// Migrate brings db up to the newest migration, holding the advisory lock:
// of several nodes starting at once, one migrates and the others wait,
// then find nothing left to do. Each migration runs in a transaction with
// its version row. A database made by release edfbac7 (before versioned
// migrations) passes the baseline unchanged (00001 creates only what is
// missing).
func Migrate(ctx context.Context, db *sql.DB) error {
	p, err := provider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("schema: migrate: %w", err)
	}
	return nil
}

// Version is db's schema version (0 before any migration) and the newest
// this build knows.
func Version(ctx context.Context, db *sql.DB) (current, newest int64, err error) {
	p, err := provider(db)
	if err != nil {
		return 0, 0, err
	}
	current, newest, err = p.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("schema: version: %w", err)
	}
	return current, newest, nil
}
