//go:build browser

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestViewerResetReloadsChildren: a clinic's page has a patient open when
// sc-local restarts. The page cannot resume from the new events hub (its
// seqs start anew), so it is sent a reset when it reconnects; a study made
// under the patient while the page was cut off (its event missed) then
// shows in the patient's studies, without a reload of the page.
func TestViewerResetReloadsChildren(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Sokcho Dental")
	s.startLocal(t, c, t.TempDir())
	var p, first, missed patient
	mustCreate := func(coll string, data map[string]any, out *patient) {
		t.Helper()
		if code := call(t, "POST", c.base+"/v1/"+coll, "", map[string]any{"data": data}, out); code != 201 {
			t.Fatalf("create %s: %d", coll, code)
		}
	}
	mustCreate("patients", map[string]any{"name": "Mina Cho", "chart_no": "C-424242", "birth_date": "1990-05-17"}, &p)
	mustCreate("studies", map[string]any{"patient_id": p.ID, "study_date": "2026-10-01", "description": "First visit"}, &first)
	if code := call(t, "POST", c.base+"/v1/users", "", map[string]string{"username": "dr.local", "role": "editor", "password": "pw-dr.local-long"}, nil); code != 201 {
		t.Fatalf("add clinic person: %d", code)
	}

	// The page reaches sc-local through a proxy the test can cut; the
	// test's own calls go straight to sc-local.
	pageURL, link := viaProxy(t, c.base)
	b := browser(t)
	local := tab(t, b, pageURL+"/viewer/")
	run := func(what string, actions ...chromedp.Action) {
		t.Helper()
		cctx, cancel := context.WithTimeout(local, 10*time.Second)
		defer cancel()
		if err := chromedp.Run(cctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	loginPage(t, local, "dr.local", "pw-dr.local-long")
	row := `#rows tr[data-kind="patient"][data-id="` + p.ID + `"]`
	click(t, local, row+" .open")
	waitText(t, local, "patient detail", "#detail-title", "Mina Cho")
	studyRow := func(id string) string { return `#children tr[data-kind="study"][data-id="` + id + `"]` }
	waitText(t, local, "the patient's first study", studyRow(first.ID)+" .title", "First visit")
	waitJS(t, local, "events connected", `document.getElementById('conn').classList.contains('live')`)
	// A mark on the document: a reload or a navigation would drop it.
	run("mark the document", chromedp.Evaluate(`window.__sameDocument = true`, nil))

	// The page is cut off from sc-local (its events WebSocket cannot
	// reconnect) while sc-local restarts and the study is made.
	link.Cut()
	waitJS(t, local, "events disconnected", `!document.getElementById('conn').classList.contains('live')`)
	c.proc.stop(t)
	c.proc.restart(t)
	waitReady(t, c.proc, c.base)
	mustCreate("studies", map[string]any{"patient_id": p.ID, "study_date": "2026-12-07", "description": "Missed follow-up"}, &missed)
	var state struct {
		Live, Shown bool
	}
	run("read the page", chromedp.Evaluate(fmt.Sprintf(`({live: document.getElementById('conn').classList.contains('live'),
		shown: !!document.querySelector(%q)})`, studyRow(missed.ID)), &state))
	if state.Live || state.Shown {
		t.Fatalf("while cut off: page live %v, new study shown %v; want neither (the page must miss the study's event)", state.Live, state.Shown)
	}

	// Reconnected (within the page's backoff, at most 15 s), the page is
	// reset and reads the open patient again, its studies with it.
	link.Restore()
	waitJS(t, local, "events reconnected", `document.getElementById('conn').classList.contains('live')`)
	waitText(t, local, "the missed study among the patient's studies", studyRow(missed.ID)+" .title", "Missed follow-up")
	var same bool
	run("read the mark", chromedp.Evaluate(`window.__sameDocument === true && document.getElementById('detail-title').textContent.includes('Mina Cho')`, &same))
	if !same {
		t.Errorf("the page was reloaded or left the patient")
	}
	waitText(t, local, "the first study still listed", studyRow(first.ID)+" .title", "First visit")
}
