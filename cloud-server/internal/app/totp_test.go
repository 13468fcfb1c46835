package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/ids"
)

func totpKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// code is the TOTP code of secret at now+offset (the library the server
// uses, as an authenticator app computes it).
func code(t *testing.T, secret string, offset time.Duration) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, time.Now().Add(offset))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wrongCode is a 6-digit code valid at no step the server accepts now.
func wrongCode(t *testing.T, secret string) string {
	t.Helper()
	valid := []string{code(t, secret, -time.Minute), code(t, secret, -30*time.Second), code(t, secret, 0),
		code(t, secret, 30*time.Second), code(t, secret, time.Minute)}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", 123456+i*7919)
		if !slices.Contains(valid, c) {
			return c
		}
	}
}

type errBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func loginWith(t *testing.T, base string, clinic ids.ID, user, totpCode string) (reply, errBody, string) {
	t.Helper()
	body := map[string]any{"clinic": clinic, "username": user, "password": "pw-" + user + "-long"}
	if totpCode != "" {
		body["code"] = totpCode
	}
	got := do(t, "POST", base+"/v1/login", "", body)
	var e errBody
	var ok struct {
		Token string `json:"token"`
	}
	if got.status == 200 {
		got.decode(t, &ok)
	} else {
		got.decode(t, &e)
	}
	return got, e, ok.Token
}

func enrol(t *testing.T, base, tok string) (secret, url string) {
	t.Helper()
	var e struct {
		Secret string `json:"secret"`
		URL    string `json:"url"`
	}
	got := do(t, "POST", base+"/v1/me/totp", tok, map[string]any{})
	if got.status != 200 {
		t.Fatalf("enrol = %d %s", got.status, got.body)
	}
	got.decode(t, &e)
	if e.Secret == "" || !strings.HasPrefix(e.URL, "otpauth://totp/") || !strings.Contains(e.URL, "secret="+e.Secret) {
		t.Fatalf("enrolment answer %s", got.body)
	}
	return e.Secret, e.URL
}

// TestCloudTOTP: a person enrols a TOTP factor (the secret shown once,
// confirmed by a first code); from then on the cloud login needs a code
// (totp_required without, totp_invalid when wrong or replayed), five wrong
// codes lock the factor, an admin resets it (the person's sessions end),
// the secret is stored sealed and never leaves the cloud (not in the user
// record, not in the change feed the clinic pulls), and every step is in
// the audit log with the person's id.
func TestCloudTOTP(t *testing.T) {
	var pgURL string
	srv := startCloud(t, func(c *config.Config) {
		c.Auth.TOTPKey = totpKey(t)
		pgURL = c.Postgres.URL
	})
	base := srv.base
	cl := newClinic(t, base, "TOTP Clinic")
	pc := base + "/v1/clinics/" + cl.ID.String() + "/"
	kim := addUser(t, base, cl.ID, "kim", "editor")
	adm := addUser(t, base, cl.ID, "adm", "admin")
	admTok := login(t, base, cl.ID, "adm")
	kimTok := login(t, base, cl.ID, "kim")

	// Only a person enrols; the clinic's machine token and the operator cannot.
	if got := do(t, "POST", base+"/v1/me/totp", cl.Token, map[string]any{}); got.status != 403 {
		t.Errorf("machine token enrols = %d, want 403", got.status)
	}
	if got := do(t, "POST", base+"/v1/me/totp", adminToken, map[string]any{}); got.status != 403 || !strings.Contains(string(got.body), "person_only") {
		t.Errorf("operator enrols = %d %s, want 403 person_only", got.status, got.body)
	}
	// A pending enrolment is not asked at login; confirming needs the right code.
	secret, _ := enrol(t, base, kimTok)
	if got, e, _ := loginWith(t, base, cl.ID, "kim", ""); got.status != 200 {
		t.Errorf("login with a pending (unconfirmed) factor = %d %+v, want 200", got.status, e)
	}
	if got := do(t, "POST", base+"/v1/me/totp/confirm", kimTok, map[string]string{"code": wrongCode(t, secret)}); got.status != 400 || !strings.Contains(string(got.body), "totp_invalid") {
		t.Errorf("confirm with a wrong code = %d %s, want 400 totp_invalid", got.status, got.body)
	}
	secret, _ = enrol(t, base, kimTok) // a new secret replaces the pending one
	first := code(t, secret, 0)
	if got := do(t, "POST", base+"/v1/me/totp/confirm", kimTok, map[string]string{"code": first}); got.status != 200 || !strings.Contains(string(got.body), `"enrolled":true`) {
		t.Fatalf("confirm = %d %s", got.status, got.body)
	}
	// The secret is shown once: not in the status, not again by enrolling.
	if got := do(t, "GET", base+"/v1/me/totp", kimTok, nil); got.status != 200 || strings.Contains(string(got.body), secret) || !strings.Contains(string(got.body), `"enrolled":true`) {
		t.Errorf("status = %d %s", got.status, got.body)
	}
	if got := do(t, "POST", base+"/v1/me/totp", kimTok, map[string]any{}); got.status != 409 || !strings.Contains(string(got.body), "totp_enrolled") {
		t.Errorf("enrol again = %d %s, want 409 totp_enrolled", got.status, got.body)
	}

	// Login: the code is required, a wrong one and a used one are refused.
	if got, e, _ := loginWith(t, base, cl.ID, "kim", ""); got.status != 401 || e.Code != "totp_required" {
		t.Errorf("login without a code = %d %+v, want 401 totp_required", got.status, e)
	}
	if got, e, _ := loginWith(t, base, cl.ID, "kim", wrongCode(t, secret)); got.status != 401 || e.Code != "totp_invalid" {
		t.Errorf("login with a wrong code = %d %+v, want 401 totp_invalid", got.status, e)
	}
	if got, e, _ := loginWith(t, base, cl.ID, "kim", first); got.status != 401 || e.Code != "totp_invalid" {
		t.Errorf("login replaying the confirmation's code = %d %+v, want 401 totp_invalid", got.status, e)
	}
	if got, e, _ := loginWith(t, base, cl.ID, "nobody", "123456"); got.status != 401 || e.Code != "login_failed" {
		t.Errorf("unknown person with a code = %d %+v, want 401 login_failed", got.status, e)
	}
	// The next step's code (an app 30 s ahead; the server allows one step).
	got, e, tok := loginWith(t, base, cl.ID, "kim", code(t, secret, 30*time.Second))
	if got.status != 200 || tok == "" {
		t.Fatalf("login with the code = %d %+v", got.status, e)
	}
	if got := do(t, "GET", pc+"patients", tok, nil); got.status != 200 {
		t.Errorf("session after a two-factor login = %d", got.status)
	}

	// Lockout: the 5th wrong code in a row locks the factor; then even a
	// right code is refused.
	for i := 1; i <= 5; i++ {
		got, e, _ := loginWith(t, base, cl.ID, "kim", wrongCode(t, secret))
		want, wantCode := 401, "totp_invalid"
		if i == 5 {
			want, wantCode = 429, "totp_locked"
		}
		if got.status != want || e.Code != wantCode {
			t.Errorf("wrong code %d = %d %+v, want %d %s", i, got.status, e, want, wantCode)
		}
	}
	if got, e, _ := loginWith(t, base, cl.ID, "kim", code(t, secret, time.Minute)); got.status != 429 || e.Code != "totp_locked" {
		t.Errorf("right code while locked = %d %+v, want 429 totp_locked", got.status, e)
	}

	// An admin's list shows who has a factor (never the secret).
	var users struct {
		Items []struct {
			ID   ids.ID `json:"id"`
			TOTP *bool  `json:"totp"`
		} `json:"items"`
	}
	lst := do(t, "GET", pc+"users", admTok, nil)
	lst.decode(t, &users)
	for _, u := range users.Items {
		if u.TOTP == nil || *u.TOTP != (u.ID == kim) {
			t.Errorf("users list: %s totp=%v (list %s)", u.ID, u.TOTP, lst.body)
		}
	}
	if strings.Contains(string(lst.body), secret) {
		t.Error("users list holds the secret")
	}

	// Reset: only an admin (or the operator); the person's sessions end and
	// the password alone logs in again.
	if got := do(t, "DELETE", pc+"users/"+kim.String()+"/totp", tok, nil); got.status != 403 {
		t.Errorf("editor resets = %d, want 403", got.status)
	}
	if got := do(t, "DELETE", pc+"users/999/totp", admTok, nil); got.status != 404 {
		t.Errorf("reset of nobody = %d, want 404", got.status)
	}
	if got := do(t, "DELETE", pc+"users/"+kim.String()+"/totp", admTok, nil); got.status != 200 || !strings.Contains(string(got.body), `"had_factor":true`) {
		t.Fatalf("admin resets = %d %s", got.status, got.body)
	}
	if got := do(t, "GET", pc+"patients", tok, nil); got.status != 401 {
		t.Errorf("session after the reset = %d, want 401", got.status)
	}
	if got, e, _ := loginWith(t, base, cl.ID, "kim", ""); got.status != 200 {
		t.Errorf("login after the reset = %d %+v, want 200", got.status, e)
	}
	// Another clinic's admin cannot reset this clinic's person.
	other := newClinic(t, base, "Other Clinic")
	addUser(t, base, other.ID, "oadm", "admin")
	if got := do(t, "DELETE", pc+"users/"+kim.String()+"/totp", login(t, base, other.ID, "oadm"), nil); got.status != 404 {
		t.Errorf("another clinic's admin resets = %d, want 404", got.status)
	}

	// Storage: sealed in person_totp, in no record and no change the clinic pulls.
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if sdb, err := db.DB(); err == nil {
		defer sdb.Close()
	}
	secret2, _ := enrol(t, base, login(t, base, cl.ID, "kim"))
	var sealed []string
	if err := db.WithContext(context.Background()).Raw("SELECT sealed FROM person_totp WHERE user_id = ?", kim).Scan(&sealed).Error; err != nil {
		t.Fatal(err)
	}
	if len(sealed) != 1 || sealed[0] == "" || strings.Contains(sealed[0], secret2) {
		t.Errorf("person_totp.sealed = %q, want one sealed secret", sealed)
	}
	var leaks int64
	if err := db.Raw("SELECT count(*) FROM changes WHERE payload LIKE ?", "%"+secret2+"%").Scan(&leaks).Error; err != nil {
		t.Fatal(err)
	}
	if feed := do(t, "GET", pc+"changes?since=0&limit=5000", cl.Token, nil); leaks != 0 || strings.Contains(string(feed.body), secret2) || strings.Contains(string(feed.body), "totp") {
		t.Errorf("the secret or the factor reaches the clinic's change feed (%d rows)", leaks)
	}

	// Audit: enrolment, confirmation, the refused codes, the lock and the
	// reset, each with the person's id (the reset with the admin's).
	var entries struct {
		Items []audit.Entry `json:"items"`
	}
	do(t, "GET", pc+"audit?limit=5000", adminToken, nil).decode(t, &entries)
	var have []string
	for _, e := range entries.Items {
		if strings.HasPrefix(e.Action, "totp.") || strings.HasPrefix(e.Action, "login.") {
			have = append(have, fmt.Sprintf("%s %s %s %d", e.Actor, e.Action, e.Target, e.Outcome))
		}
	}
	k, a := kim.String(), adm.String()
	want := []string{
		k + " totp.enrol " + k + " 200",
		k + " totp.confirm " + k + " 400",
		k + " totp.enrol " + k + " 200",
		k + " totp.confirm " + k + " 200",
		k + " totp.enrol " + k + " 409",
		k + " login.totp_required " + k + " 401",
		k + " login.totp_invalid " + k + " 401",
		k + " login.totp_invalid " + k + " 401",
		k + " login.totp_invalid " + k + " 401",
		k + " login.totp_invalid " + k + " 401",
		k + " login.totp_invalid " + k + " 401",
		k + " login.totp_invalid " + k + " 401",
		k + " login.totp_locked " + k + " 429",
		k + " login.totp_locked " + k + " 429",
		a + " totp.reset " + k + " 200",
		k + " totp.enrol " + k + " 200",
	}
	if !slices.Equal(have, want) {
		t.Errorf("second-factor audit entries:\n%q\nwant\n%q", have, want)
	}
	var v audit.Verification
	do(t, "GET", pc+"audit/verify", adminToken, nil).decode(t, &v)
	if !v.OK {
		t.Errorf("the cloud chain does not verify: %+v", v)
	}
}

// TestCloudRequireTOTP: with auth.require_totp a person without a factor
// logs in with the password to a session that may only enrol one (every
// other route answers 403 totp_enrolment_required); confirming it opens
// the same session, and later logins need the code.
func TestCloudRequireTOTP(t *testing.T) {
	srv := startCloud(t, func(c *config.Config) {
		c.Auth.TOTPKey = totpKey(t)
		c.Auth.RequireTOTP = true
	})
	base := srv.base
	cl := newClinic(t, base, "Strict Clinic")
	pc := base + "/v1/clinics/" + cl.ID.String() + "/"
	addUser(t, base, cl.ID, "lee", "editor")
	got, e, tok := loginWith(t, base, cl.ID, "lee", "")
	if got.status != 200 || !strings.Contains(string(got.body), `"totp_enrolment_required":true`) {
		t.Fatalf("first login = %d %s %+v", got.status, got.body, e)
	}
	if got := do(t, "GET", pc+"patients", tok, nil); got.status != 403 || !strings.Contains(string(got.body), "totp_enrolment_required") {
		t.Errorf("records before enrolling = %d %s, want 403 totp_enrolment_required", got.status, got.body)
	}
	if got := do(t, "GET", base+"/v1/me", tok, nil); got.status != 200 || !strings.Contains(string(got.body), `"totp_enrolment_required":true`) {
		t.Errorf("me before enrolling = %d %s", got.status, got.body)
	}
	var st struct {
		Required  bool `json:"required"`
		Available bool `json:"available"`
		Enrolled  bool `json:"enrolled"`
	}
	do(t, "GET", base+"/v1/me/totp", tok, nil).decode(t, &st)
	if !st.Required || !st.Available || st.Enrolled {
		t.Errorf("status before enrolling = %+v", st)
	}
	secret, _ := enrol(t, base, tok)
	if got := do(t, "POST", base+"/v1/me/totp/confirm", tok, map[string]string{"code": code(t, secret, 0)}); got.status != 200 {
		t.Fatalf("confirm = %d %s", got.status, got.body)
	}
	if got := do(t, "GET", pc+"patients", tok, nil); got.status != 200 {
		t.Errorf("records after enrolling = %d %s, want 200", got.status, got.body)
	}
	if got, e, _ := loginWith(t, base, cl.ID, "lee", ""); got.status != 401 || e.Code != "totp_required" {
		t.Errorf("next login without a code = %d %+v, want 401 totp_required", got.status, e)
	}
	if got, e, tok := loginWith(t, base, cl.ID, "lee", code(t, secret, 30*time.Second)); got.status != 200 || strings.Contains(string(got.body), "totp_enrolment_required") {
		t.Errorf("next login with a code = %d %+v %s", got.status, e, got.body)
	} else if got := do(t, "GET", pc+"patients", tok, nil); got.status != 200 {
		t.Errorf("records after a two-factor login = %d", got.status)
	}
	// The operator's token is no person: require_totp does not hold it back.
	if got := do(t, "GET", pc+"patients", adminToken, nil); got.status != 200 {
		t.Errorf("operator = %d", got.status)
	}
}
