// Package schema owns the clinic database's schema: the SQL migrations in
// migrations/, embedded in sc-local, applied in order by goose and recorded
// in its goose_db_version table. sc-local runs Migrate once when it opens
// the database, before anything reads or writes a table; no other package
// creates or alters tables (docs/schema.md).
package schema

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var embedded embed.FS

// Migrations are the clinic schema's migrations, oldest first.
func Migrations() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	return sub
}

// provider is goose over db. sc-local is the only process on its database
// (its data directory is locked), so no database lock is taken.
func provider(db *sql.DB) (*goose.Provider, error) {
	p, err := goose.NewProvider(goose.DialectSQLite3, db, Migrations(), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return p, nil
}

// Migrate brings db up to the newest migration. Each migration runs in a
// transaction with its version row, so a crash leaves it applied or not.
// A database made by release edfbac7 (before versioned migrations) passes
// the baseline unchanged (00001 creates only what is missing).
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
