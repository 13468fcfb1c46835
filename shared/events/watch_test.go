package events

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

// authServer serves a hub for clinic A to requests bearing token, the way
// both servers do.
func authServer(t *testing.T, h *Hub, token string, connects *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if RequestToken(r) != token {
			httpapi.WriteError(w, nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "bad token"))
			return
		}
		connects.Add(1)
		h.ServeWS(w, r, clinicA)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// collector gathers what Watch passes to fn.
type collector struct {
	mu  sync.Mutex
	evs []Event
}

func (c *collector) add(e Event) {
	c.mu.Lock()
	c.evs = append(c.evs, e)
	c.mu.Unlock()
}

func (c *collector) events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.evs...)
}

// waitFor waits until the collector holds n events.
func (c *collector) waitFor(t *testing.T, n int) []Event {
	t.Helper()
	testenv.CheckFor(t, 15*time.Second, 5*time.Millisecond, func() error {
		if got := len(c.events()); got < n {
			return fmt.Errorf("watcher has %d events, want %d", got, n)
		}
		return nil
	})
	return c.events()
}

// TestWatchReconnectsAndResumes: when the server drops the connection, Watch
// reconnects with the last seq it saw and gets everything published
// meanwhile, with no gap, no duplicate and no reset. Not parallel: it checks
// for leaked goroutines.
func TestWatchReconnectsAndResumes(t *testing.T) {
	checkNoLeak(t)
	h := NewHub(HubConfig{}, nil)
	defer h.Close()
	var connects atomic.Int64
	srv := authServer(t, h, "s3cret", &connects)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var got collector
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, srv.URL, "s3cret", 0, got.add) }()

	evs := got.waitFor(t, 1)
	if evs[0].Type != TypeReset {
		t.Fatalf("first event = %+v, want a reset (started with since=0)", evs[0])
	}
	for i := 1; i <= 5; i++ {
		h.Publish(ev(clinicA, i))
	}
	got.waitFor(t, 6)
	for round := range 3 {
		// Kick only a subscribed watcher (the handler counts a connection
		// a moment before the hub subscribes it).
		want := int64(round + 1)
		testenv.CheckFor(t, 15*time.Second, 5*time.Millisecond, func() error {
			if n, c := connects.Load(), h.clientCount(); n != want || c != 1 {
				return fmt.Errorf("%d connections (want %d), %d subscribed (want 1)", n, want, c)
			}
			return nil
		})
		h.kickAll()
		for i := range 5 {
			h.Publish(ev(clinicA, 6+5*round+i)) // while the watcher is away
		}
	}
	h.Publish(ev(clinicA, 21))
	evs = got.waitFor(t, 22)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch() after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch() did not return within 10s of cancel")
	}
	if len(evs) != 22 {
		t.Fatalf("watcher got %d events, want 22: %+v", len(evs), evs)
	}
	for i, e := range evs[1:] {
		if e.Type != TypeSaved || e.Record != ids.ID(i+1) || e.Seq != evs[0].Seq+int64(i+1) {
			t.Fatalf("event %d = %+v, want record %d at seq %d", i+1, e, i+1, evs[0].Seq+int64(i+1))
		}
	}
	h.Close()
	srv.Close()
	checkNoLeak(t)
}

func TestWatchRejected(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{}, nil)
	defer h.Close()
	var connects atomic.Int64
	srv := authServer(t, h, "right", &connects)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Watch(ctx, srv.URL, "wrong", 0, func(Event) {})
	var rej *RejectedError
	if !errors.Is(err, ErrRejected) || !errors.As(err, &rej) || rej.Status != http.StatusUnauthorized {
		t.Fatalf("Watch(wrong token) = %v, want a RejectedError with status 401", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Watch(wrong token) retried until the deadline instead of giving up")
	}
}

func TestWatchRetriesUnreachable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := Watch(ctx, url, "", 0, func(Event) {}); err != nil {
		t.Fatalf("Watch(unreachable) = %v, want nil after retrying until ctx ended", err)
	}
}

// TestWatchResumesFromTheReset: the open sessions sent after a reset carry
// the seqs of their older editing events; Watch resumes from the reset's,
// so a reconnect replays nothing from before it connected.
func TestWatchResumesFromTheReset(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{}, nil)
	defer h.Close()
	var connects atomic.Int64
	srv := authServer(t, h, "tok", &connects)
	h.Publish(Event{Type: TypeEditing, Clinic: clinicA, Kind: "patient", Record: 1, Session: "s1"})
	h.Publish(ev(clinicA, 2)) // before the watcher: never to be seen

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got collector
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, srv.URL, "tok", 0, got.add) }()
	got.waitFor(t, 2) // the reset, then the session on record 1
	h.kickAll()
	testenv.CheckFor(t, 15*time.Second, 5*time.Millisecond, func() error {
		if n := connects.Load(); n < 2 || h.clientCount() == 0 {
			return fmt.Errorf("%d connections, %d clients: not reconnected yet", n, h.clientCount())
		}
		return nil
	})
	h.Publish(ev(clinicA, 3))
	evs := got.waitFor(t, 3)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	var records []ids.ID
	for _, e := range evs {
		if e.Type != TypeReset {
			records = append(records, e.Record)
		}
	}
	if fmt.Sprint(records) != "[1 3]" {
		t.Errorf("watcher saw records %v (resets left out), want [1 3]: the session, then the live event", records)
	}
}
