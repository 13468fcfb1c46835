package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/lockd/lockapi"
)

// postBatch sends a batch and decodes the answer.
func postBatch(t *testing.T, base, token string, req lockapi.BatchRequest) (int, lockapi.BatchResponse, lockapi.Error) {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.NewRequest(http.MethodPost, base+"/v1/locks/batch", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var (
		out lockapi.BatchResponse
		e   lockapi.Error
	)
	if resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(b, &out)
	} else {
		err = json.Unmarshal(b, &e)
	}
	if err != nil {
		t.Fatalf("batch answer %d is not JSON: %v: %s", resp.StatusCode, err, b)
	}
	return resp.StatusCode, out, e
}

// TestBatch: every operation of a batch gets the outcome its own endpoint
// would give: grants with growing fencing tokens, held with the holder,
// not_yours, expired, invalid, and forbidden for another clinic's lock,
// checked per operation against the caller's token.
func TestBatch(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	ctx := context.Background()
	a := client.New(base, tokenA, nil)
	b := client.New(base, tokenB, nil)

	held, err := a.Acquire(ctx, acquireReq(clinicA, "patient/held", "anna", lockapi.SideLocal))
	if err != nil {
		t.Fatal(err)
	}
	old, err := a.Acquire(ctx, acquireReq(clinicA, "patient/old", "anna", lockapi.SideLocal))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, old.ReleaseRequest()); err != nil {
		t.Fatal(err)
	}
	gb, err := b.Acquire(ctx, acquireReq(clinicB, "patient/b", "berta", lockapi.SideLocal))
	if err != nil {
		t.Fatal(err)
	}
	wrong := held
	wrong.Secret = strings.Repeat("0", len(held.Secret))
	fresh := acquireReq(clinicA, "patient/old", "anna", lockapi.SideLocal) // was granted (old) before
	other := acquireReq(clinicB, "patient/b2", "anna", lockapi.SideLocal)
	bad := acquireReq(clinicA, "patient/../x", "anna", lockapi.SideLocal)
	renew, release := held.RenewRequest(60000), gb.ReleaseRequest()
	wrongRelease, oldRelease := wrong.ReleaseRequest(), old.ReleaseRequest()
	second := acquireReq(clinicA, "patient/held", "bob", lockapi.SideCloud)

	code, out, e := postBatch(t, base, tokenA, lockapi.BatchRequest{Ops: []lockapi.BatchOp{
		{Acquire: &fresh},                    // 0 granted, token above old's
		{Acquire: &second},                   // 1 held by anna
		{Renew: &renew},                      // 2 renewed
		{Release: &wrongRelease},             // 3 not_yours
		{Release: &oldRelease},               // 4 expired (released before)
		{Acquire: &other},                    // 5 forbidden: clinic B
		{Release: &release},                  // 6 forbidden: clinic B's lock, secret known
		{Acquire: &bad},                      // 7 invalid
		{},                                   // 8 invalid: no operation
		{Acquire: &fresh, Release: &release}, // 9 invalid: two operations
	}})
	if code != http.StatusOK {
		t.Fatalf("batch = %d %+v, want 200", code, e)
	}
	want := []string{"200", "409 held", "200", "403 not_yours", "410 expired", "403 forbidden", "403 forbidden", "400 invalid", "400 invalid", "400 invalid"}
	if len(out.Results) != len(want) {
		t.Fatalf("batch has %d results, want %d: %+v", len(out.Results), len(want), out)
	}
	for i, r := range out.Results {
		got := strconv.Itoa(r.Status)
		if r.Error != nil {
			got += " " + r.Error.Code
		}
		if got != want[i] {
			t.Errorf("result %d = %s (%+v), want %s", i, got, r.Error, want[i])
		}
	}
	if g := out.Results[0].Grant; g == nil || g.Token <= old.Token || g.Secret == "" || g.Holder.User != "anna" {
		t.Errorf("batch grant = %+v, want a token above %d", g, old.Token)
	} else if err := a.Release(ctx, g.ReleaseRequest()); err != nil {
		t.Errorf("releasing the batch grant alone: %v", err)
	}
	if e := out.Results[1].Error; e == nil || e.Lock == nil || e.Lock.Token != held.Token || e.Lock.Holder.User != "anna" {
		t.Errorf("held result = %+v, want anna's lock", e)
	}
	if r := out.Results[2].Renewal; r == nil || r.Token != held.Token || !r.ExpiresAt.After(held.ExpiresAt) {
		t.Errorf("renewal = %+v, want a later expiry", r)
	}
	// Clinic B's lock is untouched, and B nothing got granted for A.
	if st, err := b.Inspect(ctx, clinicB, "patient/b"); err != nil || st.Token != gb.Token {
		t.Errorf("B's lock after A's batch = %+v, %v, want intact", st, err)
	}
	if _, err := b.Inspect(ctx, clinicB, "patient/b2"); !errors.Is(err, client.ErrNotHeld) {
		t.Errorf("B's patient/b2 after A's batch: err = %v, want not_held", err)
	}
	// The batch as a whole: its token is checked, its size bounded.
	if code, _, e := postBatch(t, base, "some-unknown-bearer-token", lockapi.BatchRequest{Ops: []lockapi.BatchOp{{Acquire: &fresh}}}); code != 401 || e.Code != lockapi.CodeUnauthorized {
		t.Errorf("batch with a bad token = %d %+v, want 401 unauthorized", code, e)
	}
	if code, _, e := postBatch(t, base, tokenA, lockapi.BatchRequest{}); code != 400 || e.Code != lockapi.CodeInvalid {
		t.Errorf("empty batch = %d %+v, want 400 invalid", code, e)
	}
	if code, _, e := postBatch(t, base, tokenA, lockapi.BatchRequest{Ops: make([]lockapi.BatchOp, lockapi.MaxBatch+1)}); code != 400 || e.Code != lockapi.CodeInvalid {
		t.Errorf("batch over %d = %d %+v, want 400 invalid", lockapi.MaxBatch, code, e)
	}
	if code, e := call(t, http.MethodPost, base+"/v1/locks/batch", tokenA, `{"ops":[{"acquire":{}}],"x":1}`); code != 400 || e.Code != lockapi.CodeInvalid {
		t.Errorf("batch with an unknown field = %d %+v, want 400 invalid", code, e)
	}
	// A service token acts for any clinic, per operation too.
	cloudOp := acquireReq(clinicB, "patient/b3", "carl", lockapi.SideCloud)
	if _, out, _ := postBatch(t, base, serviceToken, lockapi.BatchRequest{Ops: []lockapi.BatchOp{{Acquire: &cloudOp}, {Acquire: &fresh}}}); len(out.Results) != 2 || out.Results[0].Status != 200 || out.Results[1].Status != 200 {
		t.Errorf("service batch = %+v, want both granted", out)
	}
}

// TestClientCoalesces: concurrent callers of one Client share batches,
// and each still gets its own grant and fencing token, strictly growing per
// resource, and its own errors.
func TestClientCoalesces(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	ctx := context.Background()
	c := client.New(base, tokenA, nil)
	const workers, rounds = 16, 20
	var (
		mu   sync.Mutex
		last = map[string]int64{}
	)
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for n := range rounds {
				res := fmt.Sprintf("patient/%d", (w+n)%4) // contended
				g, err := c.Acquire(ctx, acquireReq(clinicA, res, "u"+strconv.Itoa(w), lockapi.SideLocal))
				if errors.Is(err, client.ErrHeld) {
					if _, ok := client.HeldBy(err); !ok {
						errs <- fmt.Errorf("held without its holder: %w", err)
					}
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if g.Token <= last[res] {
					errs <- fmt.Errorf("%s: token %d after %d", res, g.Token, last[res])
				}
				last[res] = g.Token
				mu.Unlock()
				if _, err := c.Renew(ctx, g.RenewRequest(0)); err != nil {
					errs <- fmt.Errorf("renew: %w", err)
				}
				bad := g
				bad.Secret = "not-the-secret"
				if err := c.Release(ctx, bad.ReleaseRequest()); !errors.Is(err, client.ErrNotYours) {
					errs <- fmt.Errorf("release with a wrong secret: %w, want not_yours", err)
				}
				if err := c.Release(ctx, g.ReleaseRequest()); err != nil {
					errs <- fmt.Errorf("release: %w", err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Calls did go in batches.
	if n := metric(t, base, `scsync_lockd_requests_total{code="ok",op="batch"}`); n == 0 {
		t.Error("no batch was sent by 16 concurrent callers")
	}
}

// metric reads one sample of lockd's /metrics.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestClientWithoutBatchEndpoint: behind a lockd (here a proxy) that
// answers 404 to the batch endpoint, as one older than it does, concurrent
// calls all still succeed, one by one.
func TestClientWithoutBatchEndpoint(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	rp := httputil.NewSingleHostReverseProxy(u)
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/locks/batch" {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code":"not_found","message":"no such endpoint: POST /v1/locks/batch"}`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer old.Close()
	c := client.New(old.URL, tokenA, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for n := range 10 {
				g, err := c.Acquire(ctx, acquireReq(clinicA, fmt.Sprintf("study/%d-%d", w, n), "u", lockapi.SideLocal))
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				if err := c.Release(ctx, g.ReleaseRequest()); err != nil {
					t.Errorf("release: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Error("no batch was tried: 16 callers never overlapped")
	}
	if n := refused.Load(); n > 4 { // at most maxStalled senders at once
		t.Errorf("the client tried the batch endpoint %d times within a minute, want at most once per sender", n)
	}
}

// TestBatchWithoutCachedScripts: a batch on a Redis that has flushed
// lockd's scripts (a restart, SCRIPT FLUSH) still runs every operation: the
// pipeline's EVALSHA fails with NOSCRIPT without running, and each such
// operation is run on its own, which loads the script.
func TestBatchWithoutCachedScripts(t *testing.T) {
	t.Parallel()
	rs := newPrivateRedis(t)
	base := start(t, testConfig(rs.addr(), "lockd:"), nil)
	rdb := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rdb.Close()
	ctx := context.Background()
	for round := range 2 {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		a1 := acquireReq(clinicA, fmt.Sprintf("patient/%d-1", round), "anna", lockapi.SideLocal)
		a2 := acquireReq(clinicA, fmt.Sprintf("patient/%d-2", round), "anna", lockapi.SideLocal)
		code, out, e := postBatch(t, base, tokenA, lockapi.BatchRequest{Ops: []lockapi.BatchOp{{Acquire: &a1}, {Acquire: &a2}}})
		if code != 200 || len(out.Results) != 2 {
			t.Fatalf("round %d: batch = %d %+v %+v", round, code, out, e)
		}
		var rels []lockapi.BatchOp
		for i, r := range out.Results {
			if r.Status != 200 || r.Grant == nil {
				t.Fatalf("round %d: result %d = %+v %+v, want a grant", round, i, r, r.Error)
			}
			rel := r.Grant.ReleaseRequest()
			rels = append(rels, lockapi.BatchOp{Release: &rel})
		}
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		_, out, _ = postBatch(t, base, tokenA, lockapi.BatchRequest{Ops: rels})
		for i, r := range out.Results {
			if r.Status != 200 || r.Released == nil {
				t.Errorf("round %d: release %d = %+v %+v, want released", round, i, r, r.Error)
			}
		}
	}
}
