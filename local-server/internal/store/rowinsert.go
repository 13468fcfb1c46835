package store

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// A save's new row is inserted with a statement built once per kind from
// gorm's schema of its table, its values taken as gorm's Create takes them
// (defaults, creation and update times, serializers): gorm building the
// INSERT anew for every row cost as much CPU as SQLite inserting it.
// TestRowInsertMatchesGorm holds the two to the same row.

// rowInsert is one kind's INSERT of a whole row.
type rowInsert struct {
	query  string
	fields []*schema.Field
	// dbDefaults are columns whose default is the database's: gorm leaves
	// them out when zero, so a row with one zero goes through gorm.
	dbDefaults []*schema.Field
}

var rowInserts sync.Map // wire.Kind → *rowInsert

// rowInsertOf builds (once) the INSERT of kind k's rows.
func rowInsertOf(tx *gorm.DB, k kindOps) (*rowInsert, error) {
	if ri, ok := rowInserts.Load(k.spec.Kind); ok {
		return ri.(*rowInsert), nil
	}
	stmt := &gorm.Statement{DB: tx}
	if err := stmt.Parse(k.model); err != nil {
		return nil, fmt.Errorf("store: schema of %s: %w", k.spec.Kind, err)
	}
	sch := stmt.Schema
	ri := &rowInsert{}
	var cols []string
	for _, db := range sch.DBNames {
		if f := sch.FieldsByDBName[db]; !f.HasDefaultValue || f.DefaultValueInterface != nil {
			ri.fields = append(ri.fields, f)
			cols = append(cols, db)
		}
	}
	for _, f := range sch.FieldsWithDefaultDBValue {
		if f.DefaultValueInterface == nil {
			ri.dbDefaults = append(ri.dbDefaults, f)
			cols = append(cols, f.DBName)
		}
	}
	ri.query = "INSERT INTO " + sch.Table + " (" + strings.Join(cols, ", ") + ") VALUES (?" + strings.Repeat(", ?", len(cols)-1) + ")"
	rowInserts.Store(k.spec.Kind, ri)
	return ri, nil
}

// createRow inserts rec, a new row of kind k, in tx, as tx.Create(rec)
// would (setting the fields gorm sets: zero ones with a default, the
// creation and update times).
func createRow(tx *gorm.DB, k kindOps, rec Record) error {
	ri, err := rowInsertOf(tx, k)
	if err != nil {
		return err
	}
	ctx := tx.Statement.Context
	if ctx == nil {
		ctx = context.Background()
	}
	rv := reflect.ValueOf(rec).Elem()
	args := make([]any, 0, len(ri.fields)+len(ri.dbDefaults))
	for _, f := range ri.dbDefaults {
		if _, zero := f.ValueOf(ctx, rv); zero {
			return tx.Create(rec).Error
		}
	}
	now := tx.NowFunc()
	for _, f := range ri.fields {
		v, zero := f.ValueOf(ctx, rv)
		if zero {
			switch {
			case f.DefaultValueInterface != nil:
				v = f.DefaultValueInterface
				if err := f.Set(ctx, rv, v); err != nil {
					return err
				}
			case f.AutoCreateTime > 0 || f.AutoUpdateTime > 0:
				if err := f.Set(ctx, rv, now); err != nil {
					return err
				}
				v, _ = f.ValueOf(ctx, rv)
			}
		}
		args = append(args, v)
	}
	for _, f := range ri.dbDefaults {
		v, _ := f.ValueOf(ctx, rv)
		args = append(args, v)
	}
	return execRaw(tx, ri.query, args...)
}
