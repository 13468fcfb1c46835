//go:build browser

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	pngenc "image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/scsync/scsync/shared/testenv"
)

// The browser tests run with `make test-browser` (build tag browser): they
// need Debian's chromium, which `make test` on a fresh machine may not have.

// setField sets a form field's value as a person typing would (input and
// change events), after waiting for it.
func setField(t *testing.T, ctx context.Context, sel, value string) {
	t.Helper()
	waitJS(t, ctx, sel+" present", fmt.Sprintf(`!!document.querySelector(%q)`, sel))
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`, sel, value)
	var ok bool
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Run(cctx, chromedp.Evaluate(js, &ok)); err != nil {
		t.Fatalf("set %s: %v", sel, err)
	}
}

// waitJS waits until the expression is true in the tab.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 150*time.Millisecond, func() error {
		var ok bool
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := chromedp.Run(cctx, chromedp.Evaluate(expr, &ok)); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if !ok {
			return fmt.Errorf("%s: not yet", what)
		}
		return nil
	})
}

// screenshot saves the tab at a desktop and a phone width as
// $VIEWER_SCREENSHOTS/<name>-desktop.png and -phone.png (docs/viewer/);
// nothing without the variable.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("VIEWER_SCREENSHOTS")
	if dir == "" {
		return
	}
	for _, size := range []struct {
		name string
		w, h int64
	}{{"desktop", 1280, 860}, {"phone", 390, 844}} {
		var png []byte
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := chromedp.Run(cctx, chromedp.EmulateViewport(size.w, size.h), chromedp.Sleep(300*time.Millisecond),
			chromedp.FullScreenshot(&png, 100))
		cancel()
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+size.name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = chromedp.Run(cctx, chromedp.EmulateViewport(1280, 860))
}

// patientSettled waits until the clinic's patient id is in sync state want and the
// cloud holds the same version of it.
func patientSettled(t *testing.T, c *clinic, cloud side, id, want string) {
	t.Helper()
	testenv.CheckFor(t, 120*time.Second, 300*time.Millisecond, func() error {
		var l, r patient
		call(t, "GET", c.base+"/v1/patients/"+id, "", nil, &l)
		call(t, "GET", cloud.prefix+"patients/"+id, cloud.token, nil, &r)
		if l.SyncState != want || l.Version != r.Version {
			return fmt.Errorf("clinic %s at %s, cloud at %s; want %s and the same version", l.SyncState, l.Version, r.Version, want)
		}
		return nil
	})
}

// TestViewerWorkflow (issue 21) drives the clinic's and the cloud's pages in
// headless Chromium as people would: sign in; find one patient among 10,000
// by name, chart number and birth date; open the patient, a study, its
// images and reports; edit the patient with the form and save while the
// cloud page shows "Editing by local (…)" (also when opened during the
// edit: sessions are sent on connect), then "Saved" and the new version;
// roll back to the first version from the history; and resolve a keep-both
// conflict from the side-by-side view.
func TestViewerWorkflow(t *testing.T) {
	parallel(t)
	redis := testenv.StartPrivateRedis(t)
	serviceTok, clinicTok := "svc-"+testenv.Name("token"), "clinic-"+testenv.Name("token")
	lockAddr := freeAddr(t)
	s := newStackWith(t, stackOpts{cloudNodes: 1, cloudEnv: []string{"SC_CLOUD_LOCKD_URL=http://" + lockAddr, "SC_CLOUD_LOCKD_TOKEN=" + serviceTok}})
	c := s.enrollWith(t, "Gangneung Dental", "keep-both")
	startLockdAt(t, []string{lockAddr}, redis.Addr, serviceTok, map[string]string{clinicTok: c.ID})
	s.localEnv = []string{"SC_LOCAL_LOCKD_URL=http://" + lockAddr, "SC_LOCAL_LOCKD_TOKEN=" + clinicTok, "SC_LOCAL_CLINIC_NAME=Gangneung Dental"}
	amqpURL, amqpLink := viaProxy(t, s.amqpURL)
	cloudURL, apiLink := viaProxy(t, s.cloud[0])
	dataDir := t.TempDir()
	s.startLocalVia(t, c, dataDir, amqpURL, cloudURL)
	cloud := cloudSide(s.cloud[0], c)

	// 10,000 patients imported (history, sent by the backfill), and the one
	// a person looks for, created live with a study, an image and a report.
	const n = 10_000
	lines := make([]map[string]any, 0, n)
	for i := range n {
		lines = append(lines, map[string]any{"kind": "patient", "data": map[string]any{
			"name": fmt.Sprintf("Patient %05d", i), "chart_no": "C-" + strconv.Itoa(100000+i),
			"birth_date": fmt.Sprintf("19%02d-%02d-%02d", 40+i%60, 1+i%12, 1+i%28)}})
	}
	importLines(t, c.base, lines)
	var p, st, img, rep patient
	mustCreate := func(coll string, data map[string]any, out *patient) {
		t.Helper()
		if code := call(t, "POST", c.base+"/v1/"+coll, "", map[string]any{"data": data}, out); code != 201 {
			t.Fatalf("create %s: %d", coll, code)
		}
	}
	mustCreate("patients", map[string]any{"name": "Hana Seo", "chart_no": "C-777777", "birth_date": "1984-03-09", "sex": "F"}, &p)
	mustCreate("studies", map[string]any{"patient_id": p.ID, "study_date": "2026-11-02", "description": "Implant planning"}, &st)
	mustCreate("images", map[string]any{"study_id": st.ID, "modality": "PANO", "study_date": "2026-11-02", "file_name": "pano.png"}, &img)
	mustCreate("reports", map[string]any{"study_id": st.ID, "title": "Findings", "body": "No caries.", "status": "final"}, &rep)
	// The image's original: a PNG the imaging device wrote.
	pano := image.NewGray(image.Rect(0, 0, 1200, 600))
	for y := range 600 {
		for x := range 1200 {
			pano.SetGray(x, y, color.Gray{Y: uint8((x/4 + y/8) % 256)})
		}
	}
	var png bytes.Buffer
	if err := pngenc.Encode(&png, pano); err != nil {
		t.Fatal(err)
	}
	panoPath := filepath.Join(t.TempDir(), "pano.png")
	if err := os.WriteFile(panoPath, png.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": panoPath, "image_id": img.ID, "content_type": "image/png"}, nil); code != 202 {
		t.Fatalf("import the image's file: %d", code)
	}
	testenv.CheckFor(t, 90*time.Second, 300*time.Millisecond, func() error {
		var got patient
		if code := call(t, "GET", cloud.prefix+"reports/"+rep.ID, cloud.token, nil, &got); code != 200 {
			return fmt.Errorf("the cloud does not have the report yet (%d)", code)
		}
		return nil
	})

	if code := call(t, "POST", c.base+"/v1/users", "", map[string]string{"username": "dr.local", "role": "editor", "password": "pw-dr.local-long"}, nil); code != 201 {
		t.Fatalf("add clinic person: %d", code)
	}
	s.login(t, c, "dr.cloud", "editor")

	b := browser(t)
	local := tab(t, b, c.base+"/viewer/")
	loginPage(t, local, "dr.local", "pw-dr.local-long")
	waitJS(t, local, "clinic name in the title", `document.title.includes('Gangneung Dental') && document.getElementById('title').textContent.includes('Gangneung Dental')`)
	waitJS(t, local, "no access token field", `!document.getElementById('token')`)
	screenshot(t, local, "patients")

	// Search: by name, chart number and birth date, each finds Hana Seo
	// among 10,000 from the server's index.
	row := `#rows tr[data-kind="patient"][data-id="` + p.ID + `"]`
	for _, q := range []struct{ by, q string }{{"", "hana s"}, {"chart_no", "C-7777"}, {"", "1984-03-09"}} {
		start := time.Now()
		setField(t, local, "#search-by", q.by)
		setField(t, local, "#search-q", q.q)
		click(t, local, "#search-go")
		waitJS(t, local, "search "+q.q, `document.querySelectorAll('#rows tr').length >= 1 && !!document.querySelector('`+row+`')`)
		t.Logf("search %q (by %q) among %d patients: row shown in %v", q.q, q.by, n+1, time.Since(start).Round(time.Millisecond))
	}
	waitText(t, local, "found row", row+" .title", "Hana Seo")
	screenshot(t, local, "search")
	// Paging reaches every patient: the unfiltered list pages on by name.
	setField(t, local, "#search-by", "")
	setField(t, local, "#search-q", "")
	click(t, local, "#search-go")
	waitJS(t, local, "first page", `document.querySelectorAll('#rows tr').length === 50 && !document.getElementById('more').hidden`)
	click(t, local, "#more")
	waitJS(t, local, "second page", `document.querySelectorAll('#rows tr').length === 100`)

	// Patient → study → images and reports.
	setField(t, local, "#search-q", "C-777777")
	click(t, local, "#search-go")
	click(t, local, row+" .open")
	waitText(t, local, "patient detail", "#detail-title", "Hana Seo")
	studyRow := `#children tr[data-kind="study"][data-id="` + st.ID + `"]`
	waitText(t, local, "the patient's study", studyRow+" .title", "Implant planning")
	waitText(t, local, "sync state", "#detail-sync", "synced")
	click(t, local, studyRow+" .open")
	waitText(t, local, "study detail", "#detail-title", "Implant planning")
	waitText(t, local, "breadcrumb", "#crumbs", "Hana Seo")
	imgRow := `#children tr[data-kind="image"][data-id="` + img.ID + `"]`
	waitText(t, local, "the study's image", imgRow+" .title", "pano.png")
	waitJS(t, local, "the image's thumbnail", `(() => { const i = document.querySelector('`+imgRow+` img.thumb'); return !!i && i.complete && i.naturalWidth === 256 && i.naturalHeight === 128; })()`)
	if got, err := os.ReadFile(panoPath); err != nil || !bytes.Equal(got, png.Bytes()) {
		t.Errorf("the original changed after its thumbnail was made (%v)", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dataDir, "thumbnails", "*.jpg")); len(m) != 1 {
		t.Errorf("thumbnail cache holds %v, want one thumbnail", m)
	}
	waitText(t, local, "the study's report", `#children tr[data-kind="report"][data-id="`+rep.ID+`"] .title`, "Findings")
	screenshot(t, local, "study")
	// The image's page links its full file, served unchanged.
	click(t, local, imgRow+" .open")
	waitText(t, local, "image detail", "#detail-title", "pano.png")
	waitJS(t, local, "the full file through the page's link", fmt.Sprintf(`(() => {
		const a = document.querySelector('#detail-file a.original');
		if (!a) return false;
		if (window.__orig === undefined) {
			window.__orig = '';
			fetch(a.href).then(async r => { window.__orig = r.status + ':' + (await r.arrayBuffer()).byteLength; });
		}
		return window.__orig === '200:%d';
	})()`, png.Len()))
	waitJS(t, local, "breadcrumb link", `!!document.querySelector('#crumbs a:nth-of-type(2)')`)
	click(t, local, "#crumbs a:nth-of-type(2)")
	waitText(t, local, "back at the patient", "#detail-title", "Hana Seo")

	// Edit with the form: the clinic opens the patient; a cloud page opened
	// during the edit shows who edits on load.
	click(t, local, "#detail-edit")
	waitText(t, local, "my badge", "#detail-mode", "Editing by me")
	waitJS(t, local, "form", `document.getElementById('field-name').value === 'Hana Seo'`)
	remote := tab(t, b, s.cloud[0]+"/viewer/?clinic="+c.ID)
	loginPage(t, remote, "dr.cloud", "pw-dr.cloud-long")
	setField(t, remote, "#search-q", "hana")
	click(t, remote, "#search-go")
	waitText(t, remote, "cloud page: editing on load", row+" .mode", "Editing by local (dr.local)")
	screenshot(t, local, "edit")
	setField(t, local, "#field-name", "Hana Seo-Park")
	setField(t, local, "#field-phone", "010-5555-1234")
	click(t, local, "#save")
	waitText(t, local, "saved", "#status", "Saved version 2.0")
	waitText(t, remote, "cloud page: saved", row+" .mode", "Saved")
	waitText(t, remote, "cloud page: new version", row+" .version", "2.0")
	waitText(t, remote, "cloud page: new name", row+" .title", "Hana Seo-Park")
	screenshot(t, remote, "cloud-saved")
	// The cloud's page shows the image's thumbnail too, made from S3.
	setField(t, remote, "#search-q", "C-777777")
	click(t, remote, "#search-go")
	// The search's answer redraws the list (and its caption, which can move
	// the rows): click the row it shows, not the one of the last search.
	waitJS(t, remote, "cloud page: the chart number's search answered", `document.getElementById('caption').textContent.includes('C-777777') && !!document.querySelector('`+row+`')`)
	click(t, remote, row+" .open")
	waitText(t, remote, "cloud page: the patient", "#detail-title", "Hana Seo-Park")
	click(t, remote, `#children tr[data-kind="study"][data-id="`+st.ID+`"] .open`)
	testenv.CheckFor(t, 90*time.Second, 500*time.Millisecond, func() error {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, cloud.prefix+"images/"+img.ID+"/thumbnail", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+cloud.token)
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
			return fmt.Errorf("cloud thumbnail: %d %s", resp.StatusCode, b)
		}
		return nil
	})
	// The cloud's link to the full file: a redirect to a presigned GET in
	// S3 (followed without the person's credentials, as a browser does
	// with its cookie), whose bytes are the original's.
	func() {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, cloud.prefix+"images/"+img.ID+"/original", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+cloud.token)
		noFollow := &http.Client{Transport: httpc.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || !regexp.MustCompile(`[?&]X-Amz-Signature=`).MatchString(loc) {
			t.Fatalf("cloud original: %d to %q, want 302 to a presigned URL", resp.StatusCode, loc)
		}
		got, err := httpc.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		defer got.Body.Close()
		b, _ := io.ReadAll(got.Body)
		if got.StatusCode != http.StatusOK || !bytes.Equal(b, png.Bytes()) {
			t.Errorf("cloud original from S3: %d, %d bytes; want 200 and the original's %d", got.StatusCode, len(b), png.Len())
		}
	}()
	click(t, remote, "#reload")
	waitJS(t, remote, "the cloud page's thumbnail", `(() => { const i = document.querySelector('`+imgRow+` img.thumb'); return !!i && i.complete && i.naturalWidth === 256; })()`)
	click(t, remote, "#detail-back")
	click(t, local, "#close")
	waitJS(t, local, "editor closed", `document.getElementById('edit-panel').hidden`)

	// History: compare with 1.0, then roll back to it.
	click(t, local, "#detail-history")
	v1 := `#history-rows tr[data-version="1.0"]`
	click(t, local, v1+" button.diff")
	waitText(t, local, "diff", "#diff", "Hana Seo-Park")
	screenshot(t, local, "history")
	click(t, local, v1+" button.rollback")
	waitText(t, local, "rolled back", "#status", "Rolled back to version 1.0")
	waitJS(t, local, "content back", `document.getElementById('detail-title').textContent === 'Patient: Hana Seo'`)
	waitListed(t, remote, "cloud page: rollback version", row+" .version", "3.0")
	waitListed(t, remote, "cloud page: rolled back", row+" .title", "Hana Seo")

	// A keep-both conflict: both sides edit the patient while the clinic is
	// cut off; the cloud keeps both contents (the clinic's as a copy).
	patientSettled(t, c, cloud, p.ID, "synced")
	var cur patient
	call(t, "GET", c.base+"/v1/patients/"+p.ID, "", nil, &cur)
	amqpLink.Cut()
	apiLink.Cut()
	if code := call(t, "PUT", c.base+"/v1/patients/"+p.ID, "", map[string]any{"base_version": cur.Version, "data": map[string]any{"name": "Hana Seo (clinic)", "chart_no": "C-777777"}}, nil); code != 200 {
		t.Fatalf("clinic edit: %d", code)
	}
	if code := call(t, "PUT", cloud.prefix+"patients/"+p.ID, cloud.token, map[string]any{"base_version": cur.Version, "data": map[string]any{"name": "Hana Seo (cloud)", "chart_no": "C-777777"}}, nil); code != 200 {
		t.Fatalf("cloud edit: %d", code)
	}
	// The clinic's page has the patient open (its own edit pending) when
	// the cloud's resolution arrives: the record's flag and its copy, two
	// changes, each of which may come first; the side-by-side view opens
	// without a reload, with the copy in it.
	setField(t, local, "#search-q", "C-777777")
	click(t, local, "#search-go")
	click(t, local, row+" .open")
	waitText(t, local, "the clinic's pending edit open", "#detail-title", "Hana Seo (clinic)")
	amqpLink.Restore()
	apiLink.Restore()
	patientSettled(t, c, cloud, p.ID, "conflict")
	waitJS(t, local, "side by side, live", `!document.getElementById('conflict-panel').hidden && document.getElementById('conflict-other').textContent.includes('Hana Seo (clinic)')`)

	click(t, local, "#conflicts")
	waitText(t, local, "conflicts list", row+" .title", "Hana Seo (cloud)")
	click(t, local, row+" .open")
	waitJS(t, local, "side by side", `!document.getElementById('conflict-panel').hidden && document.getElementById('conflict-other').textContent.includes('Hana Seo (clinic)')`)
	screenshot(t, local, "conflict")
	click(t, local, "#resolve-use-copy")
	waitText(t, local, "resolved", "#status", "Kept the copy's content")
	waitJS(t, local, "conflict gone", `document.getElementById('conflict-panel').hidden`)
	patientSettled(t, c, cloud, p.ID, "synced")
	for _, sd := range []side{localSide(c), cloud} {
		var got struct {
			patient
			Conflict bool `json:"conflict"`
		}
		call(t, "GET", sd.prefix+"patients/"+p.ID, sd.token, nil, &got)
		if got.Data.Name != "Hana Seo (clinic)" || got.SyncState == "conflict" || got.Conflict {
			t.Errorf("%s after resolving: %q (sync %q, conflict %v), want the clinic's content, no conflict", sd.name, got.Data.Name, got.SyncState, got.Conflict)
		}
	}
	var copies struct {
		Items []struct {
			ID         string `json:"id"`
			ConflictOf string `json:"conflict_of"`
		} `json:"items"`
	}
	call(t, "GET", c.base+"/v1/patients/search?q=Hana&limit=10", "", nil, &copies)
	for _, it := range copies.Items {
		if it.ConflictOf == p.ID {
			t.Errorf("the conflict copy %s is still there", it.ID)
		}
	}
	if len(copies.Items) != 1 {
		t.Errorf("search Hana after resolving = %d patients, want 1", len(copies.Items))
	}
}

// waitListed waits until the list's element sel on the page shows want.
// The page normally learns it from a live event; under load a server
// disconnects a viewer too slow to read its events (the page reconnects,
// and shows what it missed on its next load), so after 10 s the page is
// taken back to its list and reloaded, every 5 s.
func waitListed(t *testing.T, ctx context.Context, what, sel, want string) {
	t.Helper()
	next := time.Now().Add(10 * time.Second)
	testenv.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		var got string
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent : ''; })()`, sel)
		if err := chromedp.Run(cctx, chromedp.Evaluate(js, &got)); err != nil {
			return err
		}
		if got == want || (want != "" && len(got) >= len(want) && got[:len(want)] == want && (len(got) == len(want) || got[len(want)] == ' ')) {
			return nil
		}
		if time.Now().After(next) {
			var ok bool
			_ = chromedp.Run(cctx, chromedp.Evaluate(`(() => { const b = document.getElementById('detail-back');
				if (b && b.offsetParent) b.click(); else document.getElementById('reload').click(); return true; })()`, &ok))
			next = time.Now().Add(5 * time.Second)
		}
		return fmt.Errorf("%s shows %q, want %q", what, got, want)
	})
}
