// Package rowscan walks a large table in key order, one page at a time, so
// a caller can look at every row (anti-entropy's digests, a whole-table
// check) while holding one page in memory and no transaction open across
// pages: writers are never blocked for the length of the walk.
package rowscan

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"
)

// PageSize is the default number of rows per page.
const PageSize = 2000

// Walk calls fn with every row, in key order: fetch returns up to limit
// rows with a key greater than after (the zero K: from the start), in key
// order; key gives a row's key. It stops at the first error, of fetch, of
// fn, or of ctx. size <= 0 means PageSize.
func Walk[R any, K any](ctx context.Context, size int, fetch func(after K, limit int) ([]R, error), key func(R) K, fn func(R) error) error {
	if size <= 0 {
		size = PageSize
	}
	var after K
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows, err := fetch(after, size)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(rows) < size {
			return nil
		}
		after = key(rows[len(rows)-1])
	}
}

// Split cuts the keys (lo, hi] into at most n ranges (lo_i, hi_i] that
// cover them once, in order, so that several walks can share a table.
func Split[K ~int64](lo, hi K, n int) [][2]K {
	if n < 1 || hi <= lo {
		return [][2]K{{lo, hi}}
	}
	width := (uint64(hi) - uint64(lo)) / uint64(n)
	if width == 0 {
		return [][2]K{{lo, hi}}
	}
	var out [][2]K
	for from := lo; from < hi; {
		to := K(uint64(from) + width)
		if to > hi || len(out) == n-1 {
			to = hi
		}
		out = append(out, [2]K{from, to})
		from = to
	}
	return out
}

// Parallel calls fn with every part on at most workers goroutines, each
// taking the next part in order when it is done with one. It stops at the
// first error (of fn or ctx) and returns it; fn's ctx is cancelled then.
func Parallel[P any](ctx context.Context, workers int, parts []P, fn func(ctx context.Context, p P) error) error {
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	next := 0
	take := func() (P, bool) {
		mu.Lock()
		defer mu.Unlock()
		var p P
		if next == len(parts) {
			return p, false
		}
		next++
		return parts[next-1], true
	}
	for range max(1, min(workers, len(parts))) {
		g.Go(func() error {
			for {
				if err := gctx.Err(); err != nil {
					return err
				}
				p, ok := take()
				if !ok {
					return nil
				}
				if err := fn(gctx, p); err != nil {
					return err
				}
			}
		})
	}
	return g.Wait()
}

// Columns lists the columns of model's table (as db's gorm maps it) that
// a scan of every row needs: those named in meta, and every column of the
// embedded struct field named embedded. Reading only them spares the
// database and the driver the rest of each row. Cached per model and
// arguments.
func Columns(db *gorm.DB, model any, embedded string, meta ...string) ([]string, error) {
	key := columnsKey{reflect.TypeOf(model), embedded, strings.Join(meta, ",")}
	if cols, ok := columnCache.Load(key); ok {
		return cols.([]string), nil
	}
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(model); err != nil {
		return nil, err
	}
	var cols []string
	for _, f := range stmt.Schema.Fields {
		if f.DBName == "" {
			continue
		}
		if slices.Contains(meta, f.DBName) || (len(f.BindNames) > 1 && f.BindNames[0] == embedded) {
			cols = append(cols, f.DBName)
		}
	}
	columnCache.Store(key, cols)
	return cols, nil
}

type columnsKey struct {
	model          reflect.Type
	embedded, meta string
}

var columnCache sync.Map // columnsKey → []string
