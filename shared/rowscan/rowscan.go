// Package rowscan walks a large table in key order, one page at a time, so
// a caller can look at every row (anti-entropy's digests, a whole-table
// check) while holding one page in memory and no transaction open across
// pages: writers are never blocked for the length of the walk.
package rowscan

import "context"

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
