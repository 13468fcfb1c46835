package rowscan

import (
	"context"
	"errors"
	"slices"
	"testing"
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
