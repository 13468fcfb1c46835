package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// bumpCommit is the commit the protocol-bump build states (-ldflags -X),
// so the test also sees the release identity flow to --version, /readyz
// and scsync_build_info.
const bumpCommit = "b0b0b0b0b0b0b0b0b0b0"

// TestProtocolBump is issue 18's "a test build that bumps the protocol
// keeps an older clinic replicating both ways": a cloud built to speak
// protocols 2-3 (wire.maxOverride=3) serves a clinic of this build (speaks
// only 2: it refuses a protocol 3 envelope, on its down queue and in its
// pulls) and a clinic built like the cloud (speaks 2-3). Records made on
// each clinic reach the cloud, records made in the cloud reach each clinic,
// both converge, nothing is rejected; the cloud records each clinic's
// range and sends each its newest common version.
func TestProtocolBump(t *testing.T) {
	parallel(t)
	dir, err := build("scsync-e2e-proto3", "-ldflags",
		"-X github.com/scsync/scsync/shared/wire.maxOverride=3 -X github.com/scsync/scsync/shared/buildinfo.Commit="+bumpCommit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	for _, bin := range []string{"sc-cloud", "sc-local", "lockd"} {
		out, err := exec.Command(filepath.Join(dir, bin), "--version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), bin+" ") || !strings.Contains(string(out), "(commit "+bumpCommit[:12]+")") {
			t.Errorf("%s --version = %q, %v; want its name and commit %s", bin, out, err, bumpCommit[:12])
		}
	}

	s := newStackWith(t, stackOpts{cloudNodes: 1, fast: true, cloudBin: filepath.Join(dir, "sc-cloud")})
	cloud := s.cloud[0]
	var ready struct {
		Build struct{ Version, Commit string }
	}
	if code := call(t, "GET", cloud+"/readyz", "-", nil, &ready); code != 200 || ready.Build.Commit != bumpCommit[:12] || ready.Build.Version == "" {
		t.Errorf("cloud /readyz = %d, build %+v; want commit %s", code, ready.Build, bumpCommit[:12])
	}
	if !hasMetricLine(t, cloud, `scsync_build_info{commit="`+bumpCommit[:12]+`"`) {
		t.Errorf("cloud /metrics has no scsync_build_info with commit %s", bumpCommit[:12])
	}

	older := s.enroll(t, "Older Clinic") // this build: protocol 2 only
	s.startLocal(t, older, t.TempDir())
	newer := s.enroll(t, "Newer Clinic") // the bumped build: 2-3
	current := s.localBin
	s.localBin = filepath.Join(dir, "sc-local")
	s.startLocal(t, newer, t.TempDir())
	s.localBin = current

	// The bumped sc-local names its release in /readyz and on /metrics.
	var localReady struct {
		Build struct{ Version, Commit string }
	}
	call(t, "GET", newer.base+"/readyz", "-", nil, &localReady)
	if localReady.Build.Commit != bumpCommit[:12] || !hasMetricLine(t, newer.base, `scsync_build_info{commit="`+bumpCommit[:12]+`"`) {
		t.Errorf("bumped sc-local: /readyz build %+v or scsync_build_info lacks commit %s", localReady.Build, bumpCommit[:12])
	}

	var st struct {
		Protocols struct{ Min, Max int }
	}
	for _, c := range []struct {
		c    *clinic
		want int
	}{{older, 2}, {newer, 3}} {
		if call(t, "GET", c.c.base+"/v1/status", "", nil, &st); st.Protocols.Max != c.want {
			t.Errorf("clinic %s status protocols = %+v, want max %d", c.c.ID, st.Protocols, c.want)
		}
	}

	// Up: a record made on each clinic. Down: one made in the cloud for
	// each, then an edit of the clinic's own record made in the cloud.
	for i, c := range []*clinic{older, newer} {
		var mine, theirs patient
		if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"chart_no": fmt.Sprintf("L-%d", i), "name": "Made at the clinic"}), &mine); code != 201 {
			t.Fatalf("clinic %s: create: status %d", c.ID, code)
		}
		if code := call(t, "POST", cloud+"/v1/clinics/"+c.ID+"/patients", c.person, save("", map[string]string{"chart_no": fmt.Sprintf("C-%d", i), "name": "Made in the cloud"}), &theirs); code != 201 {
			t.Fatalf("clinic %s: cloud create: status %d", c.ID, code)
		}
		testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			var p patient
			if code := call(t, "GET", cloud+"/v1/clinics/"+c.ID+"/patients/"+mine.ID, c.person, nil, &p); code != 200 {
				return fmt.Errorf("clinic %s's record not in the cloud: %d", c.ID, code)
			}
			if code := call(t, "GET", c.base+"/v1/patients/"+theirs.ID, "", nil, &p); code != 200 {
				return fmt.Errorf("cloud record not at clinic %s: %d", c.ID, code)
			}
			return nil
		})
		if code := call(t, "PUT", cloud+"/v1/clinics/"+c.ID+"/patients/"+mine.ID, c.person,
			save("1.0", map[string]string{"chart_no": fmt.Sprintf("L-%d", i), "name": "Edited in the cloud"}), nil); code != 200 {
			t.Fatalf("clinic %s: cloud edit: status %d", c.ID, code)
		}
		testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			var p patient
			call(t, "GET", c.base+"/v1/patients/"+mine.ID, "", nil, &p)
			if p.Data.Name != "Edited in the cloud" || p.SyncState != "synced" {
				return fmt.Errorf("clinic %s's copy: %+v", c.ID, p)
			}
			return nil
		})
		converged(t, c, cloudSide(cloud, c), 60*time.Second)
	}

	// The cloud recorded each clinic's range (stated on its pulls and up
	// messages) and sent each the newest version both speak.
	var list struct {
		Clinics []struct {
			ID          string `json:"id"`
			ProtocolMin *int   `json:"protocol_min"`
			ProtocolMax *int   `json:"protocol_max"`
		} `json:"clinics"`
	}
	if code := call(t, "GET", cloud+"/v1/admin/clinics", s.adminToken, nil, &list); code != 200 {
		t.Fatalf("list clinics: %d", code)
	}
	want := map[string]int{older.ID: 2, newer.ID: 3}
	for _, c := range list.Clinics {
		if w, ok := want[c.ID]; ok {
			if c.ProtocolMin == nil || c.ProtocolMax == nil || *c.ProtocolMin != 2 || *c.ProtocolMax != w {
				b, _ := json.Marshal(c)
				t.Errorf("clinic %s recorded as %s, want protocols 2-%d", c.ID, b, w)
			}
			delete(want, c.ID)
		}
	}
	if len(want) > 0 {
		t.Errorf("clinics %v not listed", want)
	}
	for _, v := range []string{"2", "3"} {
		if n := metric(t, cloud, `scsync_cloud_down_messages_total{protocol="`+v+`"}`); n < 1 {
			t.Errorf("down messages in protocol %s = %v, want ≥ 1", v, n)
		}
	}
	if hasMetricLine(t, cloud, "scsync_cloud_changes_rejected_total{") {
		t.Error("the cloud rejected up messages (scsync_cloud_changes_rejected_total is set)")
	}
	for _, c := range []*clinic{older, newer} {
		if n := metric(t, c.base, "scsync_local_changes_skipped_total"); n != 0 {
			t.Errorf("clinic %s skipped %v cloud changes", c.ID, n)
		}
	}
	// Live events: a mixed fleet loses none, and older servers' unnumbered
	// events are not taken for losses (the older clinic has no such metric).
	if n := metric(t, newer.base, "scsync_local_events_lost_total"); n != 0 {
		t.Errorf("the newer clinic found live events lost %v times", n)
	}
	if n := metric(t, cloud, "scsync_cloud_events_lost_total"); n != 0 {
		t.Errorf("the cloud found live events lost %v times", n)
	}
	for _, p := range []*proc{older.proc, newer.proc, s.nodes[0]} {
		if out := p.output(); strings.Contains(out, "amqp message dead-lettered") || strings.Contains(out, "amqp poison message") {
			t.Errorf("%s dead-lettered a message", p.name)
		}
	}
}

// output is what the process has written so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// hasMetricLine reports whether base's /metrics has a line starting with prefix.
func hasMetricLine(t *testing.T, base, prefix string) bool {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}
