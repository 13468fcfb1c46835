package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// memLocker is a small in-memory lockd for the version rules (lockd itself
// is tested over real Redis in its module, and end to end in e2e).
type memLocker struct {
	mu    sync.Mutex
	down  bool
	held  map[string]editing.Grant
	fence map[string]int64
	saved map[string]string
}

func (l *memLocker) Acquire(_ context.Context, res string, h editing.Holder, ttl time.Duration, _ string) (editing.Grant, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return editing.Grant{}, editing.ErrLockUnavailable
	}
	if _, ok := l.held[res]; ok {
		return editing.Grant{}, &editing.LockedError{Holder: h}
	}
	l.fence[res]++
	g := editing.Grant{Fence: l.fence[res], Secret: "s", ExpiresAt: time.Now().Add(ttl), SavedVersion: l.saved[res]}
	l.held[res] = g
	return g, nil
}

func (l *memLocker) Renew(_ context.Context, _ ids.ID, res string, g editing.Grant, ttl time.Duration) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return time.Time{}, editing.ErrLockUnavailable
	}
	if cur, ok := l.held[res]; !ok || cur.Fence != g.Fence {
		return time.Time{}, editing.ErrLockLost
	}
	return time.Now().Add(ttl), nil
}

func (l *memLocker) Release(_ context.Context, _ ids.ID, res string, g editing.Grant, saved string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.held[res]; ok && cur.Fence == g.Fence {
		delete(l.held, res)
		if saved != "" {
			l.saved[res] = saved
		}
	}
	return nil
}

type noteLog struct {
	mu    sync.Mutex
	notes []editing.Note
}

func (n *noteLog) add(_ context.Context, e editing.Note) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.notes = append(n.notes, e)
}

func (n *noteLog) types() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, e := range n.notes {
		out = append(out, e.Type+":"+e.Reason)
	}
	return out
}

func setup(t *testing.T, cfg editing.Config) (*store.Store, *editing.Manager, *memLocker, *noteLog) {
	t.Helper()
	dir := t.TempDir()
	gen, err := ids.NewGenerator(7, ids.GeneratorOptions{StateFile: filepath.Join(dir, "ids.state")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "db"), 9001, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l := &memLocker{held: map[string]editing.Grant{}, fence: map[string]int64{}, saved: map[string]string{}}
	n := &noteLog{}
	cfg.Side = "local"
	m, err := editing.New(context.Background(), st.DB(), l, EditRecords{St: st}, n.add, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return st, m, l, n
}

func name(s string) records.Content { return records.Patient{Name: s} }

// TestVersionRules (M18): saves in one session bump B, a new session bumps
// A, a session without a save changes nothing, a new record is 1.0, and a
// rollback writes an old version's content as a new version.
func TestVersionRules(t *testing.T) {
	st, m, _, _ := setup(t, editing.Config{})
	ctx := context.Background()
	r, err := st.Save(ctx, store.Edit{Kind: wire.KindPatient, Content: name("v1")})
	if err != nil {
		t.Fatal(err)
	}
	id := store.RecordMeta(r).ID
	var sess editing.Session
	steps := []struct {
		do   string // open, save:<name>, close, rollback:<version>
		want string // version after the step
	}{
		{"open", "1.0"},
		{"close", "1.0"}, // a session with no save changes nothing
		{"open", "1.0"},
		{"save:a", "2.0"}, // first save of a session: A+1
		{"save:b", "2.1"}, // further saves: B+1
		{"save:c", "2.2"},
		{"close", "2.2"},
		{"open", "2.2"},
		{"save:d", "3.0"},
		{"rollback:2.1", "3.1"}, // rollback = old content as a new version
		{"close", "3.1"},
	}
	for i, st2 := range steps {
		switch {
		case st2.do == "open":
			if sess, err = m.Open(ctx, 9001, wire.KindPatient, id, "dr.kim", "ws1", false); err != nil {
				t.Fatalf("step %d open: %v", i, err)
			}
		case st2.do == "close":
			if err := m.Close(ctx, 9001, sess.ID); err != nil {
				t.Fatalf("step %d close: %v", i, err)
			}
		case st2.do[:5] == "save:":
			if _, _, err := m.Save(ctx, 9001, sess.ID, name(st2.do[5:])); err != nil {
				t.Fatalf("step %d save: %v", i, err)
			}
		default:
			v, _ := version.Parse(st2.do[9:])
			c, err := st.VersionContent(ctx, wire.KindPatient, id, v)
			if err != nil {
				t.Fatalf("step %d: content of %s: %v", i, v, err)
			}
			if _, _, err := m.Save(ctx, 9001, sess.ID, c); err != nil {
				t.Fatalf("step %d rollback save: %v", i, err)
			}
		}
		got, _ := st.Get(ctx, wire.KindPatient, id)
		if v := store.RecordMeta(got).Version.String(); v != st2.want {
			t.Fatalf("after step %d (%s): version %s, want %s", i, st2.do, v, st2.want)
		}
	}
	got, _ := st.Get(ctx, wire.KindPatient, id)
	if n := store.RecordContent(got).(records.Patient).Name; n != "b" {
		t.Fatalf("content after rollback to 2.1 = %q, want %q", n, "b")
	}
	vs, err := st.Versions(ctx, wire.KindPatient, id)
	var list []string
	for _, v := range vs {
		list = append(list, v.Version.String())
	}
	if err != nil || fmt.Sprint(list) != "[1.0 2.0 2.1 2.2 3.0 3.1]" {
		t.Fatalf("Versions = %v, %v; want every version kept", list, err)
	}
}

func TestSessionLocking(t *testing.T) {
	st, m, l, notes := setup(t, editing.Config{})
	ctx := context.Background()
	r, _ := st.Save(ctx, store.Edit{Kind: wire.KindPatient, Content: name("x")})
	id := store.RecordMeta(r).ID

	a, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.kim", "ws1", false)
	if err != nil || a.Fence != 1 || a.VersionAtLock != version.First {
		t.Fatalf("open = %+v, %v", a, err)
	}
	if _, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.lee", "ws2", false); !errors.Is(err, editing.ErrLocked) {
		t.Fatalf("second open = %v, want ErrLocked", err)
	}
	// The lock is lost (expired, taken over): saving is refused and the
	// session closes.
	l.mu.Lock()
	delete(l.held, editing.Resource(wire.KindPatient, id))
	l.mu.Unlock()
	if _, _, err := m.Save(ctx, 9001, a.ID, name("late")); !errors.Is(err, editing.ErrLockLost) {
		t.Fatalf("save after lock loss = %v, want ErrLockLost", err)
	}
	b, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.lee", "ws2", false)
	if err != nil || b.Fence != 2 {
		t.Fatalf("reopen = %+v, %v", b, err)
	}
	if _, _, err := m.Save(ctx, 9001, b.ID, name("lee")); err != nil {
		t.Fatal(err)
	}
	// A save presenting an older token than the last accepted is refused.
	if _, err := st.Save(ctx, store.Edit{Kind: wire.KindPatient, ID: id, Content: name("stale"), Fence: 1, Session: "old"}); !errors.Is(err, store.ErrStaleFence) {
		t.Fatalf("stale-token save = %v, want ErrStaleFence", err)
	}
	if err := m.Close(ctx, 9001, b.ID); err != nil {
		t.Fatal(err)
	}

	// lockd unreachable: Open says so; anyway gives an unfenced session
	// whose saves are marked.
	l.mu.Lock()
	l.down = true
	l.mu.Unlock()
	if _, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.kim", "ws1", false); !errors.Is(err, editing.ErrLockUnavailable) {
		t.Fatalf("open with lockd down = %v, want ErrLockUnavailable", err)
	}
	u, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.kim", "ws1", true)
	if err != nil || !u.Unfenced {
		t.Fatalf("edit anyway = %+v, %v", u, err)
	}
	if _, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.lee", "ws2", true); !errors.Is(err, editing.ErrLocked) {
		t.Fatalf("second edit-anyway on this server = %v, want ErrLocked", err)
	}
	if _, _, err := m.Save(ctx, 9001, u.ID, name("offline edit")); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Get(ctx, wire.KindPatient, id)
	if mt := store.RecordMeta(got); !mt.Unfenced || mt.Version.String() != "3.0" {
		t.Fatalf("unfenced save = %+v", mt)
	}
	want := "[editing: closed:expired editing: saved: closed:released editing: saved:]"
	if got := notes.types(); fmt.Sprint(got) != want {
		t.Fatalf("notes = %v, want %s", got, want)
	}
}

func TestIdleSessionWarnedThenClosed(t *testing.T) {
	st, m, l, notes := setup(t, editing.Config{IdleWarn: 300 * time.Millisecond, IdleGrace: 300 * time.Millisecond, Tick: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, _ := st.Save(ctx, store.Edit{Kind: wire.KindPatient, Content: name("x")})
	id := store.RecordMeta(r).ID
	s, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.kim", "ws1", false)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = m.Run(ctx) }()
	// Heartbeats without activity keep the lock but not the session.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := m.Heartbeat(ctx, 9001, s.ID, false); errors.Is(err, editing.ErrNoSession) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := fmt.Sprint(notes.types()); got != "[editing: idle_warning: closed:idle]" {
			return fmt.Errorf("notes = %s, want editing, idle warning, closed (idle)", got)
		}
		return nil
	})
	l.mu.Lock()
	_, held := l.held[editing.Resource(wire.KindPatient, id)]
	l.mu.Unlock()
	if held {
		t.Fatal("the idle session's lock was not released")
	}
}

// TestNotSyncedRefused: the last holder (on the other side) saved a version
// this server has not received yet; opening the record now would build on
// stale data, so it is refused until replication catches up.
func TestNotSyncedRefused(t *testing.T) {
	st, m, l, _ := setup(t, editing.Config{})
	ctx := context.Background()
	r, _ := st.Save(ctx, store.Edit{Kind: wire.KindPatient, Content: name("x")})
	id := store.RecordMeta(r).ID
	res := editing.Resource(wire.KindPatient, id)
	l.mu.Lock()
	l.saved[res] = "3.0" // saved elsewhere; this server still has 1.0
	l.mu.Unlock()
	if _, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.kim", "ws1", false); !errors.Is(err, editing.ErrNotSynced) {
		t.Fatalf("Open behind the last save = %v, want ErrNotSynced", err)
	}
	l.mu.Lock()
	_, held := l.held[res]
	l.mu.Unlock()
	if held {
		t.Fatal("the refused open kept the lock")
	}
	// Once this server has it, editing goes on; a session that saved hands
	// its version to the next holder.
	if _, err := st.Save(ctx, store.Edit{Kind: wire.KindPatient, ID: id, Content: name("y")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Save(ctx, store.Edit{Kind: wire.KindPatient, ID: id, Content: name("z")}); err != nil {
		t.Fatal(err)
	}
	s, err := m.Open(ctx, 9001, wire.KindPatient, id, "dr.kim", "ws1", false)
	if err != nil {
		t.Fatalf("Open when synced = %v", err)
	}
	if _, _, err := m.Save(ctx, 9001, s.ID, name("w")); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx, 9001, s.ID); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.saved[res] != "4.0" {
		t.Fatalf("saved version handed on = %q, want 4.0", l.saved[res])
	}
}
