package store

import (
	"context"
	"database/sql/driver"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/scsync/scsync/shared/ids"
)

// A backfill's transaction creates thousands of records. gorm's
// CreateInBatches bound a parameter per column and row (25 of them per
// study), each through gorm's and pgx's reflection, wrote them into a
// statement PostgreSQL then parsed, and read back the columns it left to
// their defaults: 12–13% of sc-cloud's CPU during a backfill. insertRows
// sends a kind's new records as one statement of arrays instead (INSERT …
// SELECT FROM unnest, as insertChanges does), writing exactly what gorm's
// create wrote: the columns come from the kind's schema as gorm parses it,
// and a zero value is treated as gorm treats it (TestInsertRowsAsGormDoes).

// rowsInsert inserts rows of one kind: a column per field gorm writes on
// a create, in gorm's order, each sent as one array literal.
type rowsInsert struct {
	sql  string
	cols []rowColumn
}

// rowEnc is how a column's values go into its array.
type rowEnc int

const (
	encInt    rowEnc = iota // bigint
	encBool                 // boolean
	encText                 // text
	encTime                 // timestamptz
	encValuer               // a driver.Valuer or a gorm serializer: text
)

type rowColumn struct {
	f   *schema.Field
	enc rowEnc
	// dbDefault: for a zero value gorm writes DEFAULT (a default gorm
	// has no Go value for: a list's 'null'); the array holds NULL and the
	// statement the tag's default.
	dbDefault bool
	// def is what gorm writes for a zero value (the tag's default as gorm
	// parsed it: "" for a version, "null" for a JSON value) and setDef
	// whether it sets it in the row too (a default other than the field's
	// zero value; gorm always sets it).
	def    any
	setDef bool
	// autoTime: for a zero value gorm writes the time of the insert and
	// sets it in the row (created_at, updated_at).
	autoTime bool
}

var (
	// rowInserts holds a *rowsInsert per row type.
	rowInserts sync.Map
	// rowSchemas is gorm's schema cache for them.
	rowSchemas sync.Map

	valuerType = reflect.TypeFor[driver.Valuer]()
	timeType   = reflect.TypeFor[time.Time]()
	idType     = reflect.TypeFor[ids.ID]()
)

// rowsInsertOf is the insert of rows like model (a *Row[C]).
func rowsInsertOf(tx *gorm.DB, model any) (*rowsInsert, error) {
	t := reflect.TypeOf(model)
	if ri, ok := rowInserts.Load(t); ok {
		return ri.(*rowsInsert), nil
	}
	s, err := schema.Parse(model, &rowSchemas, tx.NamingStrategy)
	if err != nil {
		return nil, fmt.Errorf("store: schema of %s: %w", t, err)
	}
	ri, err := newRowsInsert(s)
	if err != nil {
		return nil, err
	}
	rowInserts.Store(t, ri)
	return ri, nil
}

// newRowsInsert builds the insert of s's rows, taking the columns as
// gorm's create does (callbacks.ConvertToCreateValues): every field it
// may create, except one whose default no Go value stands for, which gorm
// writes only when some row sets it (dbDefault: here always, NULL standing
// for the default). A field of a type not handled here is an error.
func newRowsInsert(s *schema.Schema) (*rowsInsert, error) {
	ri := &rowsInsert{}
	var cols, sel, params, names []string
	for _, name := range s.DBNames {
		f := s.FieldsByDBName[name]
		if !f.Creatable || (f.HasDefaultValue && f.DefaultValueInterface == nil && f.DataType == "") {
			continue // gorm never writes it on a create
		}
		c := rowColumn{f: f}
		var pgType string
		switch {
		case f.FieldType == idType && f.Serializer == nil:
			c.enc, pgType = encInt, "bigint" // its Value is int64(id)
		case f.Serializer != nil || f.FieldType.Implements(valuerType):
			if f.DataType != schema.String && !strings.EqualFold(string(f.DataType), "text") {
				return nil, fmt.Errorf("store: insert %s: column %s: a %s valued as %q is not handled", s.Table, name, f.FieldType, f.DataType)
			}
			c.enc, pgType = encValuer, "text"
		case f.FieldType == timeType:
			c.enc, pgType = encTime, "timestamptz"
		default:
			switch f.FieldType.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				c.enc, pgType = encInt, "bigint"
			case reflect.Bool:
				c.enc, pgType = encBool, "boolean"
			case reflect.String:
				c.enc, pgType = encText, "text"
			default:
				return nil, fmt.Errorf("store: insert %s: column %s: type %s is not handled", s.Table, name, f.FieldType)
			}
		}
		c.dbDefault = f.HasDefaultValue && f.DefaultValueInterface == nil
		c.autoTime = f.AutoCreateTime > 0 || f.AutoUpdateTime > 0
		if c.def = f.DefaultValueInterface; c.def != nil {
			d := reflect.ValueOf(c.def)
			c.setDef = !d.IsZero() || d.Kind() != f.FieldType.Kind()
			want := map[rowEnc]reflect.Kind{encInt: reflect.Int64, encBool: reflect.Bool, encText: reflect.String, encValuer: reflect.String, encTime: reflect.Invalid}[c.enc]
			if d.Kind() != want {
				return nil, fmt.Errorf("store: insert %s: column %s: a %T default is not handled", s.Table, name, c.def)
			}
		}
		if c.dbDefault && (c.enc == encInt || c.enc == encBool || f.DefaultValue == "" || strings.Contains(f.DefaultValue, "?")) {
			return nil, fmt.Errorf("store: insert %s: column %s: default %q is not handled", s.Table, name, f.DefaultValue)
		}
		u := "u.c" + strconv.Itoa(len(ri.cols))
		if c.dbDefault {
			u = "COALESCE(" + u + ", " + f.DefaultValue + ")"
		}
		cols = append(cols, `"`+name+`"`)
		sel = append(sel, u)
		params = append(params, "?::"+pgType+"[]")
		names = append(names, "c"+strconv.Itoa(len(ri.cols)))
		ri.cols = append(ri.cols, c)
	}
	ri.sql = `INSERT INTO "` + s.Table + `" (` + strings.Join(cols, ", ") + ") SELECT " + strings.Join(sel, ", ") +
		" FROM unnest(" + strings.Join(params, ", ") + ") AS u(" + strings.Join(names, ", ") + ")"
	return ri, nil
}

// stmt is the statement inserting rows (addressable structs of the
// schema's type); now is the time a zero created_at or updated_at gets.
// Like gorm's create, it sets in the rows what it writes for their zero
// values. Each column goes as a Go slice, which pgx sends as a binary
// array (a column with a NULL among its values as pgtype's nullable
// elements).
func (ri *rowsInsert) stmt(ctx context.Context, now time.Time, rows []reflect.Value) (stmt, error) {
	args := make([]any, len(ri.cols))
	for i := range ri.cols {
		c := &ri.cols[i]
		var err error
		switch c.enc {
		case encInt:
			args[i], err = scalarColumn(ctx, c, rows, now, reflect.Value.Int)
		case encBool:
			args[i], err = scalarColumn(ctx, c, rows, now, reflect.Value.Bool)
		case encTime:
			args[i], err = nullableColumn(ctx, c, rows, now, func(_ context.Context, _ *rowColumn, v, _ reflect.Value) (time.Time, bool, error) {
				return v.Interface().(time.Time), true, nil
			}, func(t time.Time, ok bool) pgtype.Timestamptz { return pgtype.Timestamptz{Time: t, Valid: ok} })
		default:
			args[i], err = nullableColumn(ctx, c, rows, now, textOf, func(s string, ok bool) pgtype.Text { return pgtype.Text{String: s, Valid: ok} })
		}
		if err != nil {
			return stmt{}, err
		}
	}
	return stmt{ri.sql, args}, nil
}

// scalarColumn is column c of rows (never NULL): each row's value (get),
// or the default its zero value gets.
func scalarColumn[T any](ctx context.Context, c *rowColumn, rows []reflect.Value, now time.Time, get func(reflect.Value) T) ([]T, error) {
	out := make([]T, len(rows))
	for i, rv := range rows {
		v, def, _, err := c.value(ctx, rv, now)
		if err != nil {
			return nil, err
		}
		if def != nil {
			out[i] = def.(T)
		} else {
			out[i] = get(v)
		}
	}
	return out, nil
}

// nullableColumn is column c of rows: a []T, or, when a row's value is
// NULL (the column's default, or a Valuer's nil), a pgtype.FlatArray of
// nullable elements (wrap). get is a row's value (false: NULL); a
// default, a string, is taken as it is.
func nullableColumn[T any, N any](ctx context.Context, c *rowColumn, rows []reflect.Value, now time.Time,
	get func(ctx context.Context, c *rowColumn, v, rv reflect.Value) (T, bool, error), wrap func(T, bool) N) (any, error) {
	out := make([]T, len(rows))
	var valid []bool // nil while every value is set
	for i, rv := range rows {
		v, def, null, err := c.value(ctx, rv, now)
		ok := !null
		switch {
		case err != nil:
			return nil, err
		case null:
		case def != nil:
			out[i] = def.(T)
		default:
			if out[i], ok, err = get(ctx, c, v, rv); err != nil {
				return nil, err
			}
		}
		if !ok && valid == nil {
			valid = make([]bool, len(rows))
			for j := range i {
				valid[j] = true
			}
		}
		if valid != nil {
			valid[i] = ok
		}
	}
	if valid == nil {
		return out, nil
	}
	flat := make(pgtype.FlatArray[N], len(rows))
	for i := range out {
		flat[i] = wrap(out[i], valid[i])
	}
	return flat, nil
}

// value is c's field of rv as gorm's create writes it: a zero value
// replaced by the column's default (def, and set in the row), or the time
// of the insert (set in the row), or null where PostgreSQL writes the
// column's default.
func (c *rowColumn) value(ctx context.Context, rv reflect.Value, now time.Time) (v reflect.Value, def any, null bool, err error) {
	v = c.f.ReflectValueOf(ctx, rv)
	switch {
	case !v.IsZero():
		return v, nil, false, nil
	case c.dbDefault:
		return v, nil, true, nil
	case c.def != nil:
		if c.setDef {
			err = c.f.Set(ctx, rv, c.def)
		}
		def = c.def
	case c.autoTime:
		if err = c.f.Set(ctx, rv, now); err == nil {
			v = c.f.ReflectValueOf(ctx, rv)
		}
	}
	if err != nil {
		err = fmt.Errorf("store: insert %s: column %s: %w", c.f.Schema.Table, c.f.DBName, err)
	}
	return v, def, false, err
}

// textOf is the text of c's field v of the row rv: a string, or what a
// driver.Valuer or a gorm serializer gives for it, as gorm would have
// bound it (false: NULL).
func textOf(ctx context.Context, c *rowColumn, v, rv reflect.Value) (string, bool, error) {
	if c.enc == encText {
		return v.String(), true, nil
	}
	fv, _ := c.f.ValueOf(ctx, rv)
	dv, err := fv.(driver.Valuer).Value()
	if err != nil {
		return "", false, fmt.Errorf("store: insert %s: column %s: %w", c.f.Schema.Table, c.f.DBName, err)
	}
	switch v := dv.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, true, nil
	case []byte:
		return string(v), true, nil
	default:
		return "", false, fmt.Errorf("store: insert %s: column %s: a %T value is not handled", c.f.Schema.Table, c.f.DBName, dv)
	}
}

// insertRecords is the statements inserting rs, one per kind.
func insertRecords(tx *gorm.DB, rs []Record) ([]stmt, error) {
	byKind := map[reflect.Type][]reflect.Value{}
	var order []Record
	for _, r := range rs {
		rv := reflect.ValueOf(r)
		t := rv.Type()
		if byKind[t] == nil {
			order = append(order, r)
		}
		byKind[t] = append(byKind[t], rv.Elem())
	}
	now := tx.NowFunc()
	ctx := tx.Statement.Context
	if ctx == nil {
		ctx = context.Background()
	}
	out := make([]stmt, 0, len(order))
	for _, r := range order {
		ri, err := rowsInsertOf(tx, r)
		if err != nil {
			return nil, err
		}
		st, err := ri.stmt(ctx, now, byKind[reflect.TypeOf(r)])
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
