package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/wire"
)

// get does a GET with the protocol headers min/max ("" leaves one out).
func getWith(t *testing.T, url, token, lo, hi string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if lo != "" {
		req.Header.Set(wire.HeaderProtocolMin, lo)
	}
	if hi != "" {
		req.Header.Set(wire.HeaderProtocolMax, hi)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// TestPullNegotiatesProtocol: the pull API answers in the newest version
// both sides speak, states the cloud's range, records the range a clinic's
// own pull states (none: a release before ranges), and refuses a clinic
// with no version in common with a clear code; enrollment records the
// range it states.
func TestPullNegotiatesProtocol(t *testing.T) {
	t.Parallel()
	c := startCloud(t, nil)

	// Enrollment through the admin API with the headers records them.
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, c.base+"/v1/admin/clinics", strings.NewReader(`{"name":"Ranged"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	wire.Local().SetHTTP(req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var cl struct {
		ID          string `json:"id"`
		Token       string `json:"token"`
		ProtocolMin *int   `json:"protocol_min"`
		ProtocolMax *int   `json:"protocol_max"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&cl)
	resp.Body.Close()
	if resp.StatusCode != 201 || cl.ProtocolMin == nil || cl.ProtocolMax == nil || *cl.ProtocolMin != wire.MinProtocol || *cl.ProtocolMax != wire.MaxProtocol() {
		t.Fatalf("enroll with a range = %d %+v, want 201 and protocols %s", resp.StatusCode, cl, wire.Local())
	}
	if r := do(t, "POST", c.base+"/v1/clinics/"+cl.ID+"/patients", adminToken, map[string]any{"data": map[string]string{"name": "Kim"}}); r.status != 201 {
		t.Fatalf("cloud create: %d %s", r.status, r.body)
	}
	recorded := func() string {
		t.Helper()
		var list struct {
			Clinics []struct {
				ID          string `json:"id"`
				ProtocolMin *int   `json:"protocol_min"`
				ProtocolMax *int   `json:"protocol_max"`
			} `json:"clinics"`
		}
		do(t, "GET", c.base+"/v1/admin/clinics", adminToken, nil).decode(t, &list)
		for _, x := range list.Clinics {
			if x.ID == cl.ID {
				if x.ProtocolMin == nil || x.ProtocolMax == nil {
					return "none"
				}
				return wire.Range{Min: *x.ProtocolMin, Max: *x.ProtocolMax}.String()
			}
		}
		t.Fatalf("clinic %s not listed", cl.ID)
		return ""
	}

	pull := c.base + "/v1/clinics/" + cl.ID + "/changes?since=0&ack=true"
	tests := []struct {
		name     string
		lo, hi   string
		status   int
		code     string
		recorded string
	}{
		{"a release before ranges", "", "", 200, "", "none"},
		{"this build's range", "2", "2", 200, "", "2"},
		{"a newer clinic", "2", "9", 200, "", "2-9"},
		{"too new", "9", "9", 400, "protocol_unsupported", "2-9"},
		{"garbled", "x", "2", 400, "bad_request", "2-9"},
	}
	for _, tt := range tests {
		status, h, body := getWith(t, pull, cl.Token, tt.lo, tt.hi)
		if status != tt.status {
			t.Fatalf("%s: pull = %d %s, want %d", tt.name, status, body, tt.status)
		}
		if tt.code != "" {
			var e struct{ Code string }
			_ = json.Unmarshal(body, &e)
			if e.Code != tt.code {
				t.Errorf("%s: error code %q, want %q (%s)", tt.name, e.Code, tt.code, body)
			}
		} else {
			if p, stated, err := wire.RangeOfHTTP(h); !stated || err != nil || p != wire.Local() {
				t.Errorf("%s: answer states %v %v %v, want the cloud's %s", tt.name, p, stated, err, wire.Local())
			}
			// What a release before ranges decodes strictly: protocol 2.
			var page struct {
				Changes []json.RawMessage `json:"changes"`
			}
			_ = json.Unmarshal(body, &page)
			if len(page.Changes) != 1 || !strings.Contains(string(page.Changes[0]), `"protocol":2,`) {
				t.Errorf("%s: page %s, want one protocol 2 change", tt.name, body)
			}
		}
		if got := recorded(); got != tt.recorded {
			t.Errorf("%s: recorded range %s, want %s", tt.name, got, tt.recorded)
		}
	}

	// The node names its release in /readyz and scsync_build_info.
	var rd struct{ Build buildinfo.Release }
	do(t, "GET", c.base+"/readyz", "", nil).decode(t, &rd)
	if want := buildinfo.Read().Release(); rd.Build != want {
		t.Errorf("/readyz build = %+v, want %+v", rd.Build, want)
	}
	if m := do(t, "GET", c.base+"/metrics", "", nil); !strings.Contains(string(m.body), `scsync_build_info{commit="`) {
		t.Error("/metrics has no scsync_build_info with a commit label")
	}
	if m := do(t, "GET", c.base+"/metrics", "", nil); !strings.Contains(string(m.body), "\nscsync_cloud_events_lost_total 0\n") {
		t.Error("/metrics has no scsync_cloud_events_lost_total of 0 (nothing was lost)")
	}
}
