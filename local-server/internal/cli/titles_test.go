package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
)

// syncBuffer is a bytes.Buffer that Watch's goroutine writes and the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// recordServer is the part of sc-local's API that watch uses: the event
// hub (the real one) and GET /v1/{collection}/{id} over records the test
// sets, counting the reads.
type recordServer struct {
	hub   *events.Hub
	mu    sync.Mutex
	data  map[string]map[string]any // "patients/7" → data
	reads map[string]int
}

func newRecordServer(t *testing.T) (*recordServer, string) {
	t.Helper()
	rs := &recordServer{hub: events.NewHub(events.HubConfig{}, nil), data: map[string]map[string]any{}, reads: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) { rs.hub.ServeWS(w, r, 1) })
	mux.HandleFunc("GET /v1/{collection}/{id}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("collection") + "/" + r.PathValue("id")
		rs.mu.Lock()
		defer rs.mu.Unlock()
		rs.reads[key]++
		d, ok := rs.data[key]
		if !ok {
			http.Error(w, `{"code":"not_found"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": r.PathValue("id"), "version": "1.0", "data": d})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { rs.hub.Close(); srv.Close() })
	return rs, srv.URL
}

func (rs *recordServer) set(key string, data map[string]any) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.data[key] = data
}

func (rs *recordServer) readsOf(key string) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.reads[key]
}

// watch runs Watch until stop is called, and waits until it is connected
// (a probe event is shown).
func (rs *recordServer) watch(t *testing.T, base string, withTitles bool) (out *syncBuffer, stop func()) {
	t.Helper()
	out = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, out, base, "", withTitles) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch = %v", err)
		}
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		rs.hub.Publish(events.Event{Type: events.TypeDivergence, Clinic: 1, Kind: "verify", Reason: "probe"})
		if !strings.Contains(out.String(), "probe") {
			return fmt.Errorf("watch not connected yet: %q", out.String())
		}
		return nil
	})
	return out, stop
}

// TestWatchShowsTitles: each line about a record names its title as the
// viewer does (a patient's name, a study's description), read once and again
// after the record changed; a record that is gone prints its id alone; with
// titles off nothing is read.
func TestWatchShowsTitles(t *testing.T) {
	rs, base := newRecordServer(t)
	rs.set("patients/7", map[string]any{"name": "Kim Minji", "chart_no": "1042"})
	rs.set("studies/8", map[string]any{"patient_id": "7", "description": "CBCT follow-up", "study_date": "2026-11-03"})
	out, stop := rs.watch(t, base, true)

	v := func(a, b int) version.V { return version.V{A: uint32(a), B: uint32(b)} }
	ev := func(typ, kind string, rec int64, ver version.V) events.Event {
		return events.Event{Type: typ, Clinic: 1, Kind: kind, Record: ids.ID(rec), Version: ver, Side: events.SideLocal, User: "dr.kim"}
	}
	rs.hub.Publish(ev(events.TypeEditing, "patient", 7, v(1, 0)))
	rs.hub.Publish(ev(events.TypeEditing, "patient", 7, v(1, 0))) // remembered: not read again
	rs.hub.Publish(ev(events.TypeEditing, "study", 8, v(1, 0)))
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), `study 8 "CBCT follow-up"  Editing by local (dr.kim)`) {
			return fmt.Errorf("no study line yet: %q", out.String())
		}
		return nil
	})
	// The person renames the patient; the save is announced as saved and,
	// twice, as changed (shown once).
	rs.set("patients/7", map[string]any{"name": "Kim Minji-ah", "chart_no": "1042"})
	rs.hub.Publish(ev(events.TypeSaved, "patient", 7, v(1, 1)))
	rs.hub.Publish(ev(events.TypeChanged, "patient", 7, v(1, 1)))
	rs.hub.Publish(ev(events.TypeChanged, "patient", 7, v(1, 1)))
	rs.hub.Publish(ev(events.TypeChanged, "patient", 99, v(2, 0))) // gone
	rs.hub.Publish(ev(events.TypeClosed, "patient", 7, version.V{}))
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "Closed") {
			return fmt.Errorf("no closed line yet: %q", out.String())
		}
		return nil
	})
	stop()

	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.Contains(l, "probe") && !strings.HasPrefix(l, "watching ") {
			lines = append(lines, l[len("15:04:05  "):])
		}
	}
	want := []string{
		`patient 7 "Kim Minji"  Editing by local (dr.kim)  v1.0`,
		`patient 7 "Kim Minji"  Editing by local (dr.kim)  v1.0`,
		`study 8 "CBCT follow-up"  Editing by local (dr.kim)  v1.0`,
		`patient 7 "Kim Minji-ah"  Saved v1.1  by local (dr.kim)`,
		`patient 7 "Kim Minji-ah"  Changed v1.1  on local`,
		`patient 99  Changed v2.0  on local`,
		`patient 7 "Kim Minji-ah"  Closed  by local (dr.kim)`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("Watch printed\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// Read once at first sight, once per saved or changed event shown.
	for key, n := range map[string]int{"patients/7": 3, "studies/8": 1, "patients/99": 1} {
		if got := rs.readsOf(key); got != n {
			t.Errorf("reads of %s = %d, want %d", key, got, n)
		}
	}

	// Titles off: the ids alone, nothing read.
	out, stop = rs.watch(t, base, false)
	rs.hub.Publish(ev(events.TypeChanged, "study", 8, v(3, 0)))
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "study 8  Changed v3.0") {
			return fmt.Errorf("no line yet: %q", out.String())
		}
		return nil
	})
	stop()
	if got := rs.readsOf("studies/8"); got != 1 {
		t.Errorf("reads of studies/8 with titles off = %d, want still 1", got)
	}
}

func TestRecordTitle(t *testing.T) {
	for _, tt := range []struct {
		r    recordTitle
		want string
	}{
		{recordTitle{Name: "Kim Minji", Title: "x"}, "Kim Minji"},
		{recordTitle{Name: " ", Title: "Report 3", Description: "y"}, "Report 3"},
		{recordTitle{Description: "CBCT follow-up", FileName: "a.dcm"}, "CBCT follow-up"},
		{recordTitle{FileName: "scan.stl"}, "scan.stl"},
		{recordTitle{}, ""},
	} {
		if got := tt.r.title(); got != tt.want {
			t.Errorf("%+v.title() = %q, want %q", tt.r, got, tt.want)
		}
	}
}
