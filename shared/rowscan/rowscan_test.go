package rowscan

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWalkVisitsEveryRowOnceInOrder(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 6, 7, 20} {
		table := make([]int, n)
		for i := range table {
			table[i] = (i + 1) * 10
		}
		var fetches int
		fetch := func(after, limit int) ([]int, error) {
			fetches++
			i, _ := slices.BinarySearch(table, after+1)
			return table[i:min(i+limit, len(table))], nil
		}
		var got []int
		err := Walk(context.Background(), 3, fetch, func(r int) int { return r }, func(r int) error {
			got = append(got, r)
			return nil
		})
		if err != nil || !slices.Equal(got, table) {
			t.Errorf("Walk over %d rows = %v, %v; want %v", n, got, err, table)
		}
		if want := n/3 + 1; fetches != want {
			t.Errorf("Walk over %d rows fetched %d pages, want %d", n, fetches, want)
		}
	}
}

func TestWalkStopsAtFirstError(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	var seen int
	fetch := func(after, limit int) ([]int, error) { return []int{after + 1, after + 2}, nil }
	err := Walk(context.Background(), 2, fetch, func(r int) int { return r }, func(r int) error {
		seen++
		if r == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || seen != 5 {
		t.Errorf("Walk = %v after %d rows, want stop after 5", err, seen)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Walk(ctx, 2, fetch, func(r int) int { return r }, func(int) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Walk with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestSplitCoversTheRangeOnce(t *testing.T) {
	t.Parallel()
	type id int64
	for _, c := range []struct {
		lo, hi id
		n      int
	}{{0, 1, 16}, {5, 20, 16}, {99, 100 + 16*7, 16}, {387622673929207807, 387999999999999999, 16}, {0, 1 << 62, 3}, {7, 7, 4}, {3, 90, 0}} {
		got := Split(c.lo, c.hi, c.n)
		if len(got) == 0 || len(got) > max(c.n, 1) {
			t.Fatalf("Split(%d, %d, %d) = %d ranges, want 1..%d", c.lo, c.hi, c.n, len(got), c.n)
		}
		from := c.lo
		for _, r := range got {
			if r[0] != from || (r[1] <= r[0] && c.hi > c.lo) {
				t.Fatalf("Split(%d, %d, %d) = %v: range %v does not follow %d", c.lo, c.hi, c.n, got, r, from)
			}
			from = r[1]
		}
		if from != c.hi {
			t.Fatalf("Split(%d, %d, %d) = %v: ends at %d", c.lo, c.hi, c.n, got, from)
		}
	}
}

func TestParallelRunsEveryPartOnceAndStopsAtFirstError(t *testing.T) {
	t.Parallel()
	parts := make([]int, 100)
	for i := range parts {
		parts[i] = i
	}
	var mu sync.Mutex
	seen := map[int]int{}
	err := Parallel(context.Background(), 3, parts, func(_ context.Context, p int) error {
		mu.Lock()
		defer mu.Unlock()
		seen[p]++
		return nil
	})
	if err != nil || len(seen) != len(parts) {
		t.Fatalf("Parallel = %v, saw %d parts; want nil and %d", err, len(seen), len(parts))
	}
	for p, n := range seen {
		if n != 1 {
			t.Fatalf("part %d ran %d times", p, n)
		}
	}
	stop := errors.New("stop")
	var ran atomic.Int32
	err = Parallel(context.Background(), 2, parts, func(ctx context.Context, p int) error {
		ran.Add(1)
		switch {
		case p == 10:
			return stop
		case p > 10: // the other worker waits for the stop
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Second):
				return nil
			}
		}
		return nil
	})
	if !errors.Is(err, stop) || ran.Load() >= int32(len(parts)) {
		t.Fatalf("Parallel with a failing part = %v after %d parts; want %v before the end", err, ran.Load(), stop)
	}
}
