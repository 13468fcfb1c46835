package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

func digest(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// TestClinicTokensInRedis (issue 14): a clinic token the cloud registers
// through one replica works on the other at once, with no config edit or
// restart; it reaches only its clinic; rotating replaces it and revoking
// removes it on every replica; only a service token may register tokens;
// the whole set can be put back after Redis lost it.
func TestClinicTokensInRedis(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	cfg := testConfig(testenv.RedisAddr(), prefix)
	r1, r2 := start(t, cfg, nil), start(t, cfg, nil)
	svc := client.New(r1, serviceToken, nil)
	ctx := context.Background()
	clinic := ids.ID(777001)
	inspect := func(base, tok string, c ids.ID) int {
		code, _ := call(t, http.MethodGet, base+"/v1/locks/"+c.String()+"/patient:1", tok, "")
		return code
	}

	if code := inspect(r2, "scl_first", clinic); code != http.StatusUnauthorized {
		t.Fatalf("unregistered token: %d, want 401", code)
	}
	if err := svc.SetClinicToken(ctx, clinic, digest("scl_first")); err != nil {
		t.Fatal(err)
	}
	if code := inspect(r2, "scl_first", clinic); code != http.StatusNotFound {
		t.Errorf("registered token on the other replica: %d, want 404 not_held", code)
	}
	if code := inspect(r2, "scl_first", clinicA); code != http.StatusForbidden {
		t.Errorf("registered token on another clinic: %d, want 403", code)
	}
	// Rotation: the new one works, the old one no longer does.
	if err := svc.SetClinicToken(ctx, clinic, digest("scl_second")); err != nil {
		t.Fatal(err)
	}
	if a, b := inspect(r1, "scl_first", clinic), inspect(r2, "scl_second", clinic); a != http.StatusUnauthorized || b != http.StatusNotFound {
		t.Errorf("after rotation: old %d (want 401), new %d (want 404)", a, b)
	}
	// Only a service token registers tokens.
	body := `{"sha256":"` + digest("scl_mine") + `"}`
	if code, _ := call(t, http.MethodPut, r1+"/v1/clinic-tokens/"+clinic.String(), "scl_second", body); code != http.StatusForbidden {
		t.Errorf("a clinic token registering a token: %d, want 403", code)
	}
	if code, _ := call(t, http.MethodPut, r1+"/v1/clinic-tokens/"+clinic.String(), serviceToken, `{"sha256":"nope"}`); code != http.StatusBadRequest {
		t.Errorf("a malformed digest: %d, want 400", code)
	}
	// Revocation.
	if err := svc.DeleteClinicToken(ctx, clinic); err != nil {
		t.Fatal(err)
	}
	if code := inspect(r2, "scl_second", clinic); code != http.StatusUnauthorized {
		t.Errorf("revoked token: %d, want 401", code)
	}
	// Redis loses everything: not synced until the set is put back.
	if ok, err := svc.ClinicTokensSynced(ctx); err != nil || ok {
		t.Fatalf("synced before any put = %v, %v; want false", ok, err)
	}
	if err := svc.SetClinicToken(ctx, clinic, digest("scl_third")); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, prefix+"ctok*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	if code := inspect(r1, "scl_third", clinic); code != http.StatusUnauthorized {
		t.Fatalf("token after its key was wiped: %d, want 401", code)
	}
	if err := svc.PutClinicTokens(ctx, lockapi.ClinicTokens{Tokens: []lockapi.ClinicTokenEntry{{Clinic: clinic, SHA256: digest("scl_third")}}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := svc.ClinicTokensSynced(ctx); err != nil || !ok {
		t.Errorf("synced after put = %v, %v; want true", ok, err)
	}
	if code := inspect(r2, "scl_third", clinic); code != http.StatusNotFound {
		t.Errorf("token put back: %d, want 404", code)
	}
	// The YAML list still works beside them.
	if code := inspect(r2, tokenA, clinicA); code != http.StatusNotFound {
		t.Errorf("a configured clinic token: %d, want 404", code)
	}
}
