package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

const (
	adminToken   = "admin-token-for-tests-0001"
	serviceToken = "service-token-for-tests-001"
	tokenA       = "clinic-a-token-for-tests-01"
	tokenB       = "clinic-b-token-for-tests-01"
	// hashedToken is configured only as its SHA-256.
	hashedToken = "clinic-c-token-for-tests-01"

	clinicA ids.ID = 101
	clinicB ids.ID = 202
	clinicC ids.ID = 303
)

func TestMain(m *testing.M) {
	redis.SetLogger(RedisLogger(slog.New(slog.DiscardHandler)))
	os.Exit(m.Run())
}

// testConfig is a lockd config over the Redis at addr, keys under prefix.
func testConfig(addr, prefix string) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Redis.Addr = addr
	cfg.Redis.Prefix = prefix
	cfg.Redis.Timeout = time.Second
	cfg.Nodes.Prefix = prefix
	cfg.Nodes.TTL = time.Second
	cfg.Nodes.Quarantine = time.Second
	cfg.Locks.MinTTL = 100 * time.Millisecond
	sum := sha256.Sum256([]byte(hashedToken))
	cfg.Auth = config.Auth{
		AdminToken:    adminToken,
		ServiceTokens: []string{serviceToken},
		ClinicTokens: map[string]string{
			tokenA:                                 clinicA.String(),
			tokenB:                                 clinicB.String(),
			"sha256:" + hex.EncodeToString(sum[:]): clinicC.String(),
		},
	}
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs a lockd replica until the test ends and returns its base URL;
// logs (JSON, debug level) go to logs when it is not nil.
func start(t *testing.T, cfg config.Config, logs io.Writer) string {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, log, func(a string) { addrc <- a })
	}()
	t.Cleanup(func() {
		// Connections a client dialled but never used would hold up the
		// graceful shutdown for 5s (net/http treats them as active).
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		client.DefaultTransport.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-addrc:
		return "http://" + a
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("lockd did not start")
	}
	return ""
}

// startShared runs a replica over the shared Redis under a fresh prefix.
func startShared(t *testing.T, logs io.Writer) (string, config.Config) {
	t.Helper()
	_, prefix := testenv.Redis(t)
	cfg := testConfig(testenv.RedisAddr(), prefix)
	return start(t, cfg, logs), cfg
}

func readyz(t *testing.T, base string) (int, httpapi.Readiness) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r httpapi.Readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, r
}

func acquireReq(clinic ids.ID, resource, user string, side lockapi.Side) lockapi.AcquireRequest {
	return lockapi.AcquireRequest{
		Resource: resource,
		Holder:   lockapi.Holder{Clinic: clinic, Side: side, Client: "ws-" + user, User: user},
		Version:  "2.0",
	}
}

// status returns the HTTP status and code of a lockd error answer.
func status(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return fmt.Sprintf("%d %s", e.Status, e.Code)
	}
	return fmt.Sprint(err)
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	if code, r := readyz(t, base); code != 200 || r.Checks["redis"] != "ok" {
		t.Errorf("readyz with Redis up = %d %+v, want 200", code, r)
	}
	// A Redis nobody listens on: readyz names it.
	if code, r := readyz(t, start(t, testConfig("127.0.0.1:1", "x:"), nil)); code != 503 || len(r.Down) != 1 || r.Down[0] != "redis" {
		t.Errorf("readyz with Redis down = %d %+v, want 503 naming redis", code, r)
	}
}

func TestLockAPI(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	ctx := context.Background()
	local := client.New(base, tokenA, nil)
	cloud := client.New(base, serviceToken, nil)
	admin := client.New(base, adminToken, nil)
	const res = "patient/1"

	g, err := local.Acquire(ctx, acquireReq(clinicA, res, "anna", lockapi.SideLocal))
	if err != nil {
		t.Fatalf("Acquire = %v", err)
	}
	if g.Token <= 0 || g.Secret == "" || g.Holder.User != "anna" || g.Version != "2.0" || !g.ExpiresAt.After(g.Since) {
		t.Fatalf("Acquire = %+v", g)
	}

	// A cloud user is denied and told who edits.
	_, err = cloud.Acquire(ctx, acquireReq(clinicA, res, "bob", lockapi.SideCloud))
	if !errors.Is(err, client.ErrHeld) || status(err) != "409 held" {
		t.Fatalf("Acquire of a held lock err = %v, want 409 held", err)
	}
	if l, ok := client.HeldBy(err); !ok || l.Holder != g.Holder || l.Token != g.Token || !l.Since.Equal(g.Since) || !l.ExpiresAt.Equal(g.ExpiresAt) {
		t.Errorf("HeldBy = %+v, %v, want anna's lock %+v", l, ok, g.Lock)
	}

	st, err := cloud.Inspect(ctx, clinicA, res)
	if err != nil || st.Holder != g.Holder || st.Token != g.Token || st.LastToken != g.Token || st.Version != "2.0" || !st.ExpiresAt.Equal(g.ExpiresAt) {
		t.Errorf("Inspect = %+v, %v, want anna's lock", st, err)
	}

	r, err := local.Renew(ctx, g.RenewRequest(60000))
	if err != nil || !r.ExpiresAt.After(g.ExpiresAt) {
		t.Errorf("Renew = %+v, %v, want a later expiry than %v", r, err, g.ExpiresAt)
	}
	bad := g
	bad.Secret = strings.Repeat("0", len(g.Secret))
	if _, err := local.Renew(ctx, bad.RenewRequest(0)); !errors.Is(err, client.ErrNotYours) || status(err) != "403 not_yours" {
		t.Errorf("Renew with a wrong secret err = %v, want 403 not_yours", err)
	}
	if err := cloud.Release(ctx, bad.ReleaseRequest()); !errors.Is(err, client.ErrNotYours) {
		t.Errorf("Release with a wrong secret err = %v, want not_yours", err)
	}

	if err := local.Release(ctx, g.ReleaseRequest()); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if err := local.Release(ctx, g.ReleaseRequest()); !errors.Is(err, client.ErrExpired) || status(err) != "410 expired" {
		t.Errorf("second Release err = %v, want 410 expired", err)
	}
	if _, err := local.Renew(ctx, g.RenewRequest(0)); !errors.Is(err, client.ErrExpired) {
		t.Errorf("Renew after release err = %v, want expired", err)
	}
	st, err = local.Inspect(ctx, clinicA, res)
	if !errors.Is(err, client.ErrNotHeld) || status(err) != "404 not_held" || st.LastToken != g.Token {
		t.Errorf("Inspect of a free lock = %+v, %v, want 404 not_held with last token %d", st, err, g.Token)
	}

	g2, err := cloud.Acquire(ctx, acquireReq(clinicA, res, "bob", lockapi.SideCloud))
	if err != nil || g2.Token <= g.Token {
		t.Fatalf("Acquire after release = %+v, %v, want token > %d", g2, err, g.Token)
	}
	for name, c := range map[string]*client.Client{"clinic": local, "service": cloud} {
		if _, err := c.ForceRelease(ctx, clinicA, res); !errors.Is(err, client.ErrForbidden) || status(err) != "403 forbidden" {
			t.Errorf("ForceRelease with a %s token err = %v, want 403 forbidden", name, err)
		}
	}
	l, err := admin.ForceRelease(ctx, clinicA, res)
	if err != nil || l.Token != g2.Token || l.Holder.User != "bob" {
		t.Fatalf("ForceRelease = %+v, %v, want bob's lock", l, err)
	}
	if _, err := admin.ForceRelease(ctx, clinicA, res); !errors.Is(err, client.ErrNotHeld) {
		t.Errorf("second ForceRelease err = %v, want not_held", err)
	}
	if _, err := cloud.Renew(ctx, g2.RenewRequest(0)); !errors.Is(err, client.ErrExpired) {
		t.Errorf("Renew after force-release err = %v, want expired", err)
	}
	g3, err := local.Acquire(ctx, acquireReq(clinicA, res, "anna", lockapi.SideLocal))
	if err != nil || g3.Token <= g2.Token {
		t.Fatalf("Acquire after force-release = %+v, %v, want token > %d", g3, err, g2.Token)
	}
}

func TestTTLExpiry(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	ctx := context.Background()
	c := client.New(base, tokenA, nil)
	req := acquireReq(clinicA, "study/4", "anna", lockapi.SideLocal)
	req.TTLMillis = 300
	g, err := c.Acquire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if d := g.ExpiresAt.Sub(g.Since); d != 300*time.Millisecond {
		t.Errorf("lease = %s, want the 300ms asked for", d)
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, err := c.Inspect(ctx, clinicA, "study/4"); !errors.Is(err, client.ErrNotHeld) {
			return fmt.Errorf("still held (%w)", err)
		}
		return nil
	})
	g2, err := c.Acquire(ctx, acquireReq(clinicA, "study/4", "bob", lockapi.SideLocal))
	if err != nil || g2.Token <= g.Token {
		t.Fatalf("Acquire after expiry = %+v, %v, want token > %d", g2, err, g.Token)
	}
	if _, err := c.Renew(ctx, g.RenewRequest(0)); !errors.Is(err, client.ErrExpired) {
		t.Errorf("Renew of the expired grant err = %v, want expired", err)
	}
	if err := c.Release(ctx, g.ReleaseRequest()); !errors.Is(err, client.ErrExpired) {
		t.Errorf("Release of the expired grant err = %v, want expired", err)
	}
}

func TestClinicIsolation(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	ctx := context.Background()
	a := client.New(base, tokenA, nil)
	b := client.New(base, tokenB, nil)
	const res = "patient/5"

	gb, err := b.Acquire(ctx, acquireReq(clinicB, res, "berta", lockapi.SideLocal))
	if err != nil {
		t.Fatal(err)
	}
	// Clinic A's token cannot touch clinic B's lock, even knowing its secret.
	if _, err := a.Acquire(ctx, acquireReq(clinicB, "patient/6", "anna", lockapi.SideLocal)); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("A acquires B's resource: err = %v, want forbidden", err)
	}
	if _, err := a.Renew(ctx, gb.RenewRequest(0)); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("A renews B's lock: err = %v, want forbidden", err)
	}
	if err := a.Release(ctx, gb.ReleaseRequest()); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("A releases B's lock: err = %v, want forbidden", err)
	}
	if _, err := a.Inspect(ctx, clinicB, res); !errors.Is(err, client.ErrForbidden) || status(err) != "403 forbidden" {
		t.Errorf("A inspects B's lock: err = %v, want 403 forbidden", err)
	}
	if _, err := a.ForceRelease(ctx, clinicB, res); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("A force-releases B's lock: err = %v, want forbidden", err)
	}
	// The same resource name in clinic A is another lock.
	ga, err := a.Acquire(ctx, acquireReq(clinicA, res, "anna", lockapi.SideLocal))
	if err != nil {
		t.Fatalf("A acquires its own %s: %v", res, err)
	}
	if err := b.Release(ctx, lockapi.ReleaseRequest{Resource: res, Clinic: clinicB, Token: ga.Token, Secret: ga.Secret}); err == nil {
		t.Error("B released its lock with A's token and secret")
	}
	// B's lock is untouched.
	if st, err := b.Inspect(ctx, clinicB, res); err != nil || st.Token != gb.Token || st.Holder.User != "berta" {
		t.Errorf("B's lock after A's attempts = %+v, %v, want intact", st, err)
	}
	// A token given only as its SHA-256 works for its clinic only.
	c := client.New(base, hashedToken, nil)
	if _, err := c.Acquire(ctx, acquireReq(clinicC, res, "carl", lockapi.SideLocal)); err != nil {
		t.Errorf("hashed token acquires for its clinic: %v", err)
	}
	if _, err := c.Inspect(ctx, clinicA, res); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("hashed token inspects clinic A: err = %v, want forbidden", err)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	ctx := context.Background()
	for _, token := range []string{"", "not-a-configured-token-123"} {
		_, err := client.New(base, token, nil).Acquire(ctx, acquireReq(clinicA, "patient/1", "anna", lockapi.SideLocal))
		if !errors.Is(err, client.ErrUnauthorized) || status(err) != "401 unauthorized" {
			t.Errorf("Acquire with token %q err = %v, want 401 unauthorized", token, err)
		}
	}
	if _, err := client.New(base, tokenA, nil).LeaseNode(ctx, "sneaky"); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("LeaseNode with a clinic token err = %v, want forbidden", err)
	}
}

func TestInvalidRequests(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	okHolder := `"holder":{"clinic":"101","side":"local","client":"ws1","user":"anna"}`
	tests := []struct {
		name, method, path, body string
	}{
		{"not JSON", "POST", "/v1/locks/acquire", `{`},
		{"empty body", "POST", "/v1/locks/acquire", ``},
		{"unknown field", "POST", "/v1/locks/acquire", `{"resource":"p/1",` + okHolder + `,"version":"1.0","extra":1}`},
		{"no resource", "POST", "/v1/locks/acquire", `{` + okHolder + `,"version":"1.0"}`},
		{"dot-dot resource", "POST", "/v1/locks/acquire", `{"resource":"p/../q",` + okHolder + `,"version":"1.0"}`},
		{"space in resource", "POST", "/v1/locks/acquire", `{"resource":"p 1",` + okHolder + `,"version":"1.0"}`},
		{"no clinic", "POST", "/v1/locks/acquire", `{"resource":"p/1","holder":{"side":"local","client":"ws1","user":"anna"},"version":"1.0"}`},
		{"bad clinic", "POST", "/v1/locks/acquire", `{"resource":"p/1","holder":{"clinic":"x","side":"local","client":"ws1","user":"anna"},"version":"1.0"}`},
		{"bad side", "POST", "/v1/locks/acquire", `{"resource":"p/1","holder":{"clinic":"101","side":"moon","client":"ws1","user":"anna"},"version":"1.0"}`},
		{"no user", "POST", "/v1/locks/acquire", `{"resource":"p/1","holder":{"clinic":"101","side":"local","client":"ws1"},"version":"1.0"}`},
		{"no version", "POST", "/v1/locks/acquire", `{"resource":"p/1",` + okHolder + `}`},
		{"bad version", "POST", "/v1/locks/acquire", `{"resource":"p/1",` + okHolder + `,"version":"two"}`},
		{"ttl too long", "POST", "/v1/locks/acquire", `{"resource":"p/1",` + okHolder + `,"version":"1.0","ttl_ms":86400000}`},
		{"ttl negative", "POST", "/v1/locks/acquire", `{"resource":"p/1",` + okHolder + `,"version":"1.0","ttl_ms":-5}`},
		{"renew without token", "POST", "/v1/locks/renew", `{"resource":"p/1","clinic":"101","secret":"abc"}`},
		{"release without secret", "POST", "/v1/locks/release", `{"resource":"p/1","clinic":"101","token":3}`},
		{"trailing data", "POST", "/v1/locks/acquire", `{"resource":"p/1",` + okHolder + `,"version":"1.0"} {}`},
		{"ttl as a string", "POST", "/v1/locks/acquire", `{"resource":"p/1",` + okHolder + `,"version":"1.0","ttl_ms":"5"}`},
		{"null holder", "POST", "/v1/locks/acquire", `{"resource":"p/1","holder":null,"version":"1.0"}`},
		{"token beyond int64", "POST", "/v1/locks/release", `{"resource":"p/1","clinic":"101","token":9223372036854775808,"secret":"abc"}`},
		{"token with a fraction", "POST", "/v1/locks/renew", `{"resource":"p/1","clinic":"101","token":3.5,"secret":"abc"}`},
		{"batch op not an object", "POST", "/v1/locks/batch", `{"ops":[[]]}`},
		{"inspect bad clinic", "GET", "/v1/locks/abc/p/1", ``},
		{"node outside the cloud range", "POST", "/v1/nodes/renew", `{"node":5,"secret":"abc"}`},
		{"lease without owner", "POST", "/v1/nodes/lease", `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := tokenA
			if strings.HasPrefix(tt.path, "/v1/nodes") {
				token = serviceToken
			}
			code, e := call(t, tt.method, base+tt.path, token, tt.body)
			if code != 400 || e.Code != lockapi.CodeInvalid || e.Message == "" {
				t.Errorf("%s %s %.40q = %d %+v, want 400 invalid", tt.method, tt.path, tt.body, code, e)
			}
		})
	}
	if code, e := call(t, "GET", base+"/v1/nothing", tokenA, ""); code != 404 || e.Code != lockapi.CodeNotFound {
		t.Errorf("unknown path = %d %+v, want 404 not_found", code, e)
	}
}

// TestLockBodiesInAnyForm: lockd reads lock bodies with
// segmentio/encoding/json (internal/lockjson) and every body that does not
// read strictly with encoding/json, so a body in another valid form
// (escapes, a key in other case, a number as clinic) is still accepted, and
// one over the size limit still refused with its own code.
func TestLockBodiesInAnyForm(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	for _, body := range []string{
		`{"resource":"patient\u002fodd1","holder":{"clinic":101,"side":"local","client":"ws1","user":"Zo\u00eb"},"version":"1.0"}`,
		`{"Resource":"patient/odd2","HOLDER":{"clinic":"101","side":"local","client":"ws1","user":"anna"},"version":"1.0"}`,
		"\n {\"resource\":\"patient/odd3\",\"holder\":{\"clinic\":\"101\",\"side\":\"local\",\"client\":\"ws1\",\"user\":\"anna\"},\"version\":\"1.0\"}\n",
	} {
		if code, e := call(t, http.MethodPost, base+"/v1/locks/acquire", tokenA, body); code != http.StatusOK {
			t.Errorf("acquire %.60q = %d %+v, want 200", body, code, e)
		}
	}
	huge := `{"resource":"p/1","version":"1.0","holder":{"clinic":"101","side":"local","client":"ws1","user":"` + strings.Repeat("a", 1<<20) + `"}}`
	if code, e := call(t, http.MethodPost, base+"/v1/locks/acquire", tokenA, huge); code != http.StatusRequestEntityTooLarge || e.Code != lockapi.CodeTooLarge {
		t.Errorf("acquire over 1 MiB = %d %+v, want 413 too_large", code, e)
	}
}

// TestServerLimits: what the server refuses before any handler runs is
// answered in JSON too, and a large body does not stand before the token
// check.
func TestServerLimits(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	huge := `{"resource":"p/1","user":"` + strings.Repeat("a", 2<<20) + `"}`
	if code, e := call(t, http.MethodPost, base+"/v1/locks/acquire", "wrong-token", huge); code != http.StatusUnauthorized || e.Code != lockapi.CodeUnauthorized {
		t.Errorf("acquire of 2 MiB with a wrong token = %d %+v, want 401 unauthorized", code, e)
	}
	if code, e := call(t, http.MethodPost, base+"/v1/locks/release", tokenA, huge); code != http.StatusRequestEntityTooLarge || e.Code != lockapi.CodeTooLarge {
		t.Errorf("release of 2 MiB = %d %+v, want 413 too_large", code, e)
	}
	req, err := http.NewRequest(http.MethodGet, base+"/v1/locks/101/p/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Padding", strings.Repeat("a", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e lockapi.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a request with a 100 KiB header = %d (%v), want 431 in JSON", resp.StatusCode, err)
	}
}

// TestRefusedWhileSending: a client still sending a request lockd has
// already refused (a head over the limit; a large body behind a wrong
// token or over the limit) gets to send all of it and then reads lockd's
// JSON answer, as a client that writes its request before it reads does;
// it is not cut off by a connection reset. lockd drops what is still
// coming before it closes the connection.
func TestRefusedWhileSending(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	addr := strings.TrimPrefix(base, "http://")
	padding := `{"resource":"p/1","user":"` + strings.Repeat("a", 4<<20) + `"}`
	for _, tt := range []struct {
		name    string
		request string
		status  int
		code    string
	}{
		{"head of 4 MiB", "GET /v1/locks/101/p/1 HTTP/1.1\r\nHost: lockd\r\nAuthorization: Bearer " + tokenA + "\r\nX-Padding: " + padding + "\r\n\r\n",
			http.StatusRequestHeaderFieldsTooLarge, httpapi.CodeBadRequest},
		{"body of 4 MiB with a wrong token", "POST /v1/locks/acquire HTTP/1.1\r\nHost: lockd\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(padding)) + "\r\n\r\n" + padding,
			http.StatusUnauthorized, lockapi.CodeUnauthorized},
		{"body of 4 MiB over the limit", "POST /v1/locks/release HTTP/1.1\r\nHost: lockd\r\nAuthorization: Bearer " + tokenA + "\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(padding)) + "\r\n\r\n" + padding,
			http.StatusRequestEntityTooLarge, lockapi.CodeTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 5 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, tt.request); err != nil {
					_ = c.Close()
					t.Fatalf("sending the request: %v", err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					_ = c.Close()
					t.Fatalf("reading the answer: %v", err)
				}
				var e lockapi.Error
				err = json.NewDecoder(resp.Body).Decode(&e)
				_ = c.Close()
				if err != nil || resp.StatusCode != tt.status || e.Code != tt.code {
					t.Fatalf("answer = %d %+v (%v), want %d %s in JSON", resp.StatusCode, e, err, tt.status, tt.code)
				}
			}
		})
	}
}

// call sends a raw request and decodes the error answer.
func call(t *testing.T, method, url, token, body string) (int, lockapi.Error) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e lockapi.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, url, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	return resp.StatusCode, e
}

// TestReplicasRace: two replicas over one Redis, 50 concurrent acquires of
// one resource: exactly one wins, and every loser is told who did.
func TestReplicasRace(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	cfg := testConfig(testenv.RedisAddr(), prefix)
	// 50 concurrent acquires under -race on a loaded 2-core machine can
	// take longer than the 1 s test timeout; this test is about the race,
	// not about outages.
	cfg.Redis.Timeout = 5 * time.Second
	replicas := []*client.Client{
		client.New(start(t, cfg, nil), serviceToken, nil),
		client.New(start(t, cfg, nil), serviceToken, nil),
	}
	ctx := context.Background()
	const n = 50
	grants := make([]lockapi.Grant, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			side := lockapi.SideCloud
			if i%3 == 0 {
				side = lockapi.SideLocal
			}
			grants[i], errs[i] = replicas[i%2].Acquire(ctx, acquireReq(clinicA, "image/77", "user"+strconv.Itoa(i), side))
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("two winners: user%d (token %d) and user%d (token %d)", winner, grants[winner].Token, i, grants[i].Token)
		case err == nil:
			winner = i
		case !errors.Is(err, client.ErrHeld):
			t.Errorf("acquire %d err = %v, want held", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no acquire won")
	}
	for i, err := range errs {
		if l, ok := client.HeldBy(err); i != winner && (!ok || l.Token != grants[winner].Token) {
			t.Errorf("loser %d told holder %+v, want the winner's token %d", i, l, grants[winner].Token)
		}
	}
	// Each replica sees the winner.
	for i, c := range replicas {
		if st, err := c.Inspect(ctx, clinicA, "image/77"); err != nil || st.Token != grants[winner].Token {
			t.Errorf("replica %d Inspect = %+v, %v, want the winner", i, st, err)
		}
	}

	// Node ids leased concurrently through both replicas are unique.
	if err := rdb.Set(ctx, prefix+"nodes:epoch", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	const leasers = 20
	nodes := make([]lockapi.NodeLease, leasers)
	for i := range leasers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = replicas[i%2].LeaseNode(ctx, "cloud-"+strconv.Itoa(i))
		}()
	}
	wg.Wait()
	seen := map[int64]int{}
	for i, l := range nodes {
		if errs[i] != nil {
			t.Fatalf("LeaseNode %d = %v", i, errs[i])
		}
		if prev, dup := seen[l.Node]; dup || !ids.ValidCloudNode(l.Node) {
			t.Fatalf("leasers %d and %d both got node %d", prev, i, l.Node)
		}
		seen[l.Node] = i
	}
	// Renew through the other replica, release, and the id is quarantined.
	l := nodes[0]
	if _, err := replicas[1].RenewNode(ctx, l.Node, l.Secret); err != nil {
		t.Errorf("RenewNode = %v", err)
	}
	rel, err := replicas[1].ReleaseNode(ctx, l.Node, l.Secret)
	if err != nil || !rel.QuarantinedUntil.After(time.Now()) {
		t.Fatalf("ReleaseNode = %+v, %v", rel, err)
	}
	if next, err := replicas[0].LeaseNode(ctx, "next"); err != nil || next.Node == l.Node {
		t.Errorf("LeaseNode after release = %+v, %v, want an id other than the quarantined %d", next, err, l.Node)
	}
	if _, err := replicas[0].RenewNode(ctx, l.Node, l.Secret); !errors.Is(err, client.ErrExpired) {
		t.Errorf("RenewNode after release err = %v, want expired", err)
	}
}

// privateRedis is a redis-server of the test's own, which it may stop and
// start again; the shared Redis is never touched.
type privateRedis struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
}

func newPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Unavailable(t, "redis-server", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	r := &privateRedis{t: t, bin: bin, port: port}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *privateRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// start runs redis-server without persistence: a restart loses every key.
func (r *privateRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.t.TempDir())
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	testenv.CheckFor(r.t, 10*time.Second, 20*time.Millisecond, func() error {
		c, err := net.DialTimeout("tcp", r.addr(), time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		b := make([]byte, 7)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "+PONG\r\n" {
			return fmt.Errorf("PING = %q, %w", b, err)
		}
		return nil
	})
}

func (r *privateRedis) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// TestRedisRestart: while lockd's Redis is down every call fails fast with
// 503 unavailable (never a hang); after it is back lockd serves again, and
// fencing tokens stay above the ones granted before, though Redis lost them.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	rs := newPrivateRedis(t)
	cfg := testConfig(rs.addr(), "lockd:")
	base := start(t, cfg, nil)
	c := client.New(base, serviceToken, nil)
	ctx := context.Background()

	before, err := c.Acquire(ctx, acquireReq(clinicA, "patient/3", "anna", lockapi.SideCloud))
	if err != nil {
		t.Fatal(err)
	}
	rs.stop()
	for _, op := range []string{"acquire", "renew", "inspect"} {
		begin := time.Now()
		switch op {
		case "acquire":
			_, err = c.Acquire(ctx, acquireReq(clinicA, "patient/3", "bob", lockapi.SideCloud))
		case "renew":
			_, err = c.Renew(ctx, before.RenewRequest(0))
		case "inspect":
			_, err = c.Inspect(ctx, clinicA, "patient/3")
		}
		if !errors.Is(err, client.ErrUnavailable) || status(err) != "503 unavailable" {
			t.Errorf("%s with Redis down err = %v, want 503 unavailable", op, err)
		}
		// Redis.Timeout is 1 s: an answer within a few timeouts is fast
		// (a loaded CI machine adds seconds), a hang is not.
		if d := time.Since(begin); d > 8*time.Second {
			t.Errorf("%s with Redis down took %s, want fast", op, d)
		}
	}
	if code, _ := readyz(t, base); code != 503 {
		t.Errorf("readyz with Redis down = %d, want 503", code)
	}

	rs.start()
	var after lockapi.Grant
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		after, err = c.Acquire(ctx, acquireReq(clinicA, "patient/3", "bob", lockapi.SideCloud))
		return err
	})
	if after.Token <= before.Token {
		t.Errorf("token after the Redis restart = %d, want > %d from before", after.Token, before.Token)
	}
	if code, _ := readyz(t, base); code != 200 {
		t.Errorf("readyz after the restart = %d, want 200", code)
	}
}

// TestMetricsAndLogs: the counters move, and neither secrets nor bearer
// tokens ever reach the log.
func TestMetricsAndLogs(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	base, _ := startShared(t, &logs)
	ctx := context.Background()
	c := client.New(base, tokenA, nil)
	g, err := c.Acquire(ctx, acquireReq(clinicA, "patient/8", "anna", lockapi.SideLocal))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Acquire(ctx, acquireReq(clinicA, "patient/8", "bob", lockapi.SideLocal))
	if _, err := c.Renew(ctx, g.RenewRequest(0)); err != nil {
		t.Fatal(err)
	}
	bad := g
	bad.Secret = "wrong"
	_ = c.Release(ctx, bad.ReleaseRequest())
	if err := c.Release(ctx, g.ReleaseRequest()); err != nil {
		t.Fatal(err)
	}
	_, _ = client.New(base, "some-unknown-bearer-token", nil).Inspect(ctx, clinicA, "patient/8")

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"scsync_lockd_grants_total 1",
		`scsync_lockd_denials_total{reason="held"} 1`,
		`scsync_lockd_denials_total{reason="not_yours"} 1`,
		`scsync_lockd_denials_total{reason="unauthorized"} 1`,
		"scsync_lockd_renewals_total 1",
		`scsync_lockd_releases_total{how="holder"} 1`,
		`scsync_lockd_requests_total{code="ok",op="acquire"} 1`,
		`scsync_lockd_request_duration_seconds_count{op="acquire"} 2`,
		// The per-route request metrics every HTTP server has (telemetry.HTTPMetrics).
		`scsync_http_requests_total{code="200",method="POST",route="POST /v1/locks/acquire"} 1`,
		`scsync_http_requests_total{code="401",method="GET",route="GET /v1/locks/{clinic}/{resource...}"} 1`,
		`scsync_http_request_duration_seconds_count{method="POST",route="POST /v1/locks/acquire"} 2`,
		"scsync_http_requests_in_flight 1", // the scrape itself
		"scsync_build_info{",
		`scsync_dependency_up{dependency="redis"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	out := logs.String()
	if !strings.Contains(out, `"msg":"lock granted"`) {
		t.Errorf("log lacks the grant: %s", out)
	}
	for _, secret := range []string{g.Secret, tokenA, "some-unknown-bearer-token"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret or token %q", secret)
		}
	}
}
