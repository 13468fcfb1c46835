package store

import (
	"context"
	"testing"
)

// While one holder runs under a clinic's lock, another gets false at once
// and runs nothing; another clinic's lock is free; once released it is free.
func TestWithClinicLock(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		ran, err := s.WithClinicLock(ctx, 41, func(context.Context) error {
			close(inside)
			<-release
			return nil
		})
		if err == nil && !ran {
			t.Error("the first holder did not run")
		}
		done <- err
	}()
	<-inside
	ran, err := s.WithClinicLock(ctx, 41, func(context.Context) error {
		t.Error("ran while another holds the clinic's lock")
		return nil
	})
	if err != nil || ran {
		t.Errorf("second holder = %v, %v; want false, nil", ran, err)
	}
	ran, err = s.WithClinicLock(ctx, 42, func(context.Context) error { return nil })
	if err != nil || !ran {
		t.Errorf("another clinic's lock = %v, %v; want true, nil", ran, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ran, err = s.WithClinicLock(ctx, 41, func(context.Context) error { return nil })
	if err != nil || !ran {
		t.Errorf("after release = %v, %v; want true, nil", ran, err)
	}
}
