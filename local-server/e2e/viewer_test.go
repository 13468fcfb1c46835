//go:build browser

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/scsync/scsync/shared/testenv"
)

// browser starts headless Chromium (Debian's chromium) for the test; it
// fails under CI=true when Chromium is missing.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := "/usr/bin/chromium"
	if _, err := os.Stat(path); err != nil {
		if path, err = exec.LookPath("chromium"); err != nil {
			testenv.Unavailable(t, "chromium", err)
		}
	}
	dir, err := os.MkdirTemp("", "scsync-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"profile", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		// Chromium makes a directory for its singleton socket under TMPDIR
		// (/tmp/org.chromium.Chromium.*) and leaves it when the test ends it:
		// under the test's own directory it goes with the test.
		chromedp.Env("TMPDIR="+filepath.Join(dir, "tmp")))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	// This chromedp cannot decode a few newer Chromium events; they are
	// irrelevant here, so their decode errors are not printed.
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(func(string, ...any) {}))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		// Chromium's helper processes can still write to the profile for a
		// moment after the browser is gone (CI once failed on t.TempDir's
		// "directory not empty"): removing it is tried again until it works.
		testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error { return os.RemoveAll(dir) })
	})
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// tab opens url in a new tab of the browser.
func tab(t *testing.T, b context.Context, url string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b)
	t.Cleanup(cancel)
	if err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return ctx
}

// waitText waits until the text of sel in the tab contains want.
func waitText(t *testing.T, ctx context.Context, what, sel, want string) {
	t.Helper()
	var got string
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := chromedp.Run(cctx, chromedp.Text(sel, &got, chromedp.ByQuery)); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if !strings.Contains(got, want) {
			return fmt.Errorf("%s shows %q, want %q", what, got, want)
		}
		return nil
	})
}

// edit waits for the page's editor to hold the record (the page fills it
// after the lock is granted), then replaces its content with data.
func edit(t *testing.T, ctx context.Context, holds, data string) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var v string
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := chromedp.Run(cctx, chromedp.Value("#editor", &v, chromedp.ByID)); err != nil {
			return err
		}
		if !strings.Contains(v, holds) {
			return fmt.Errorf("editor holds %q, want the record (%q)", v, holds)
		}
		return nil
	})
	if err := chromedp.Run(ctx, chromedp.SetValue("#editor", data, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
}

// loginPage fills the page's login form and waits until it shows who is
// logged in.
func loginPage(t *testing.T, ctx context.Context, user, pw string) {
	t.Helper()
	click(t, ctx, "#login-submit") // waits for the form; an empty form is refused by the browser
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(cctx, chromedp.SetValue("#login-username", user, chromedp.ByID),
		chromedp.SetValue("#login-password", pw, chromedp.ByID), chromedp.Click("#login-submit", chromedp.ByID)); err != nil {
		t.Fatalf("log in %s: %v", user, err)
	}
	testenv.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		var v string
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := chromedp.Run(cctx, chromedp.Value("#user", &v, chromedp.ByID)); err != nil {
			return err
		}
		if v != user {
			return fmt.Errorf("page shows %q logged in, want %q", v, user)
		}
		return nil
	})
}

// totpKeyB64 is the cloud's auth.totp_key in these tests (32 bytes).
const totpKeyB64 = "ZTJlLXZpZXdlci10b3RwLWtleS0zMi1ieXRlcy1sb24="

// enrolled is a confirmed second factor: its secret and the time of the
// code that confirmed it (that step's code is used).
type enrolled struct {
	secret string
	at     time.Time
}

// enrolTOTP enrols and confirms a second factor for the person of the
// session token.
func enrolTOTP(t *testing.T, cloudBase, token string) enrolled {
	t.Helper()
	var e struct {
		Secret string `json:"secret"`
	}
	if code := call(t, "POST", cloudBase+"/v1/me/totp", token, map[string]any{}, &e); code != 200 || e.Secret == "" {
		t.Fatalf("enrol a second factor: %d", code)
	}
	at := time.Now()
	now, err := totp.GenerateCode(e.Secret, at)
	if err != nil {
		t.Fatal(err)
	}
	if code := call(t, "POST", cloudBase+"/v1/me/totp/confirm", token, map[string]string{"code": now}, nil); code != 200 {
		t.Fatalf("confirm the second factor: %d", code)
	}
	return enrolled{secret: e.Secret, at: at}
}

// loginPageTOTP logs in on a page whose person has a second factor: after
// the password the page shows the code field (the server answered
// totp_required) and the current code is typed there (the next step's
// while the confirmation's step lasts: a code is good once).
func loginPageTOTP(t *testing.T, ctx context.Context, user, pw string, f enrolled) {
	t.Helper()
	click(t, ctx, "#login-submit")
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(cctx, chromedp.SetValue("#login-username", user, chromedp.ByID),
		chromedp.SetValue("#login-password", pw, chromedp.ByID), chromedp.Click("#login-submit", chromedp.ByID)); err != nil {
		t.Fatalf("log in %s: %v", user, err)
	}
	// The password is checked first (argon2id: seconds on a loaded machine).
	testenv.CheckFor(t, 90*time.Second, 200*time.Millisecond, func() error {
		var shown bool
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := chromedp.Run(cctx, chromedp.Evaluate(`!document.getElementById('login-code-row').hidden`, &shown)); err != nil {
			return err
		}
		if !shown {
			return fmt.Errorf("the page does not ask for %s's code", user)
		}
		return nil
	})
	at := time.Now()
	if at.Unix()/30 <= f.at.Unix()/30 {
		at = at.Add(30 * time.Second)
	}
	code, err := totp.GenerateCode(f.secret, at)
	if err != nil {
		t.Fatal(err)
	}
	cctx2, cancel2 := context.WithTimeout(ctx, 20*time.Second)
	defer cancel2()
	if err := chromedp.Run(cctx2, chromedp.SetValue("#login-code", code, chromedp.ByID), chromedp.Click("#login-submit", chromedp.ByID)); err != nil {
		t.Fatalf("log in %s with the code: %v", user, err)
	}
	testenv.CheckFor(t, 90*time.Second, 200*time.Millisecond, func() error {
		var v string
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := chromedp.Run(cctx, chromedp.Value("#user", &v, chromedp.ByID)); err != nil {
			return err
		}
		if v != user {
			return fmt.Errorf("page shows %q logged in, want %q", v, user)
		}
		return nil
	})
}

// click waits until sel is an enabled element (the page disables Edit
// while it still has a record open), then clicks it.
func click(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	// The element is looked up and clicked again when the page redrew it
	// between the two (a list re-rendered by a search that just came back:
	// "Could not find node with given id").
	var failed error
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var enabled bool
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && !e.disabled; })()`, sel)
		if err := chromedp.Run(cctx, chromedp.Evaluate(js, &enabled)); err != nil {
			return err
		}
		if !enabled {
			return fmt.Errorf("%s is missing or disabled", sel)
		}
		cctx, cancel = context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err := chromedp.Run(cctx, chromedp.Click(sel, chromedp.ByQuery))
		if err != nil && strings.Contains(err.Error(), "Could not find node") {
			return fmt.Errorf("click %s: %w", sel, err) // gone before the click: again
		}
		failed = err // clicked, or failed in a way a second click could double
		return nil
	})
	if failed != nil {
		t.Fatalf("click %s: %v", sel, failed)
	}
}

// TestViewerPagesLive (M11, M14, M16): the clinic's and the cloud's viewer
// pages in headless Chromium; an edit taken in the cloud page shows
// "Editing by cloud" in the clinic page, then "Saved", then the new
// version; and the other way round.
func TestViewerPagesLive(t *testing.T) {
	parallel(t)
	redis := testenv.StartPrivateRedis(t)
	serviceTok, clinicTok := "svc-"+testenv.Name("token"), "clinic-"+testenv.Name("token")
	lockAddr := freeAddr(t)
	s := newStackWith(t, stackOpts{cloudNodes: 1, cloudEnv: []string{"SC_CLOUD_LOCKD_URL=http://" + lockAddr, "SC_CLOUD_LOCKD_TOKEN=" + serviceTok,
		"SC_CLOUD_AUTH_TOTP_KEY=" + totpKeyB64}})
	c := s.enroll(t, "Gangneung Dental")
	lockd := startLockdAt(t, []string{lockAddr}, redis.Addr, serviceTok, map[string]string{clinicTok: c.ID})
	s.localEnv = []string{"SC_LOCAL_LOCKD_URL=http://" + lockAddr, "SC_LOCAL_LOCKD_TOKEN=" + clinicTok}
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)
	var p patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Browser Patient"}), &p); code != 201 {
		t.Fatalf("create: %d", code)
	}
	converged(t, c, cloud, 60*time.Second)

	b := browser(t)
	// People log in on each page: an editor of the clinic, and an editor in
	// the cloud (the clinic's machine token no longer opens the cloud page).
	if code := call(t, "POST", c.base+"/v1/users", "", map[string]string{"username": "dr.local", "role": "editor", "password": "pw-dr.local-long"}, nil); code != 201 {
		t.Fatalf("add clinic person: %d", code)
	}
	// The cloud person has a TOTP second factor: the cloud page asks for
	// its code after the password.
	factor := enrolTOTP(t, s.cloud[0], s.login(t, c, "dr.cloud", "editor"))
	local := tab(t, b, c.base+"/viewer/")
	remote := tab(t, b, s.cloud[0]+"/viewer/?clinic="+c.ID)
	loginPage(t, local, "dr.local", "pw-dr.local-long")
	loginPageTOTP(t, remote, "dr.cloud", "pw-dr.cloud-long", factor)
	row := `tr[data-id="` + p.ID + `"]`
	waitText(t, local, "clinic page", row+" .title", "Browser Patient")
	waitText(t, remote, "cloud page", row+" .title", "Browser Patient")

	// Cloud edits: the clinic sees it live.
	click(t, remote, row+" .edit")
	waitText(t, local, "clinic page mode", row+" .mode", "Editing by cloud (dr.cloud)")
	edit(t, remote, "Browser Patient", `{"name":"Edited in the cloud"}`)
	click(t, remote, "#save")
	waitText(t, local, "clinic page mode", row+" .mode", "Saved")
	waitText(t, local, "clinic page version", row+" .version", "2.0")
	waitText(t, local, "clinic page title", row+" .title", "Edited in the cloud")
	click(t, remote, "#close")
	// The cloud's session is closed (its lock released) once the page
	// closed its editor: only then may the clinic take the lock.
	waitJS(t, remote, "cloud editor closed", `document.getElementById('edit-panel').hidden`)

	// The clinic edits: the cloud sees it live.
	testenv.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		var items struct{ Items []any }
		call(t, "GET", c.base+"/v1/editing", "", nil, &items)
		if len(items.Items) != 0 {
			return fmt.Errorf("%d open sessions", len(items.Items))
		}
		return nil
	})
	click(t, local, row+" .edit")
	waitText(t, remote, "cloud page mode", row+" .mode", "Editing by local")
	edit(t, local, "Edited in the cloud", `{"name":"Edited in the clinic"}`)
	click(t, local, "#save")
	waitText(t, remote, "cloud page mode", row+" .mode", "Saved")
	waitText(t, remote, "cloud page version", row+" .version", "3.0")
	click(t, local, "#close")

	// lockd is down (M13): the clinic page offers edit anyway or view
	// only; editing anyway still tells the cloud.
	lockd[0].kill9(t)
	click(t, local, row+" .edit")
	waitText(t, local, "lock dialog", "#lock-dialog", "conflict")
	click(t, local, "#edit-anyway")
	waitText(t, local, "unfenced warning", "#unfenced-warning", "conflict")
	testenv.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		var open struct {
			Items []struct {
				Unfenced bool   `json:"unfenced"`
				Side     string `json:"side"`
			} `json:"items"`
		}
		call(t, "GET", c.base+"/v1/editing", "", nil, &open)
		if len(open.Items) != 1 || !open.Items[0].Unfenced || open.Items[0].Side != "local" {
			return fmt.Errorf("open sessions %+v, want one unfenced local session", open.Items)
		}
		return nil
	})
}
