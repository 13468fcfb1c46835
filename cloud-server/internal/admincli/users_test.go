package admincli_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// person calls the cloud's HTTP API as a person (or anonymously) and
// decodes the answer into out.
func person(t *testing.T, method, url, token string, in, out any) int {
	t.Helper()
	var body *bytes.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	} else {
		body = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

type loginAnswer struct {
	Token string `json:"token"`
	Code  string `json:"code"`
}

func cloudLogin(t *testing.T, base, clinic, user, pw, code string) (int, loginAnswer) {
	t.Helper()
	var a loginAnswer
	in := map[string]string{"clinic": clinic, "username": user, "password": pw}
	if code != "" {
		in["code"] = code
	}
	st := person(t, "POST", base+"/v1/login", "", in, &a)
	return st, a
}

// TestAdminCLIUsers: the operator makes a clinic's first admin with
// `sc-cloud admin users add` (password on stdin or in the environment, never
// a flag), lists people with their second factor, resets a lost factor and
// disables and enables a person; each takes effect on the cloud at once.
func TestAdminCLIUsers(t *testing.T) {
	base, adminTok := startCloud(t)
	c := cli{t: t, base: base, tok: adminTok}
	var cl added
	c.ok(&cl, "clinics", "add", "--name", "People Clinic")
	id := cl.ID.String()

	// The first admin, password from stdin.
	c.stdin = "first-admin-password\n"
	var boss struct {
		ID       json.Number `json:"id"`
		Username string      `json:"username"`
		Role     string      `json:"role"`
	}
	c.ok(&boss, "users", "add", "--clinic", id, "--username", "Boss", "--role", "admin", "--display-name", "Dr Boss")
	if boss.ID == "" || boss.Username != "boss" || boss.Role != "admin" {
		t.Fatalf("users add answered %+v", boss)
	}
	st, a := cloudLogin(t, base, id, "boss", "first-admin-password", "")
	if st != 200 || a.Token == "" {
		t.Fatalf("the new admin logs in: %d", st)
	}
	// The admin is a clinic admin: it may manage the clinic's people itself.
	if st := person(t, "GET", base+"/v1/clinics/"+id+"/users", a.Token, nil, nil); st != 200 {
		t.Errorf("the new admin lists people: %d", st)
	}
	// A second person, password from the environment.
	c.stdin, c.password = "", "second-person-password"
	var ed struct {
		ID json.Number `json:"id"`
	}
	c.ok(&ed, "users", "add", "--clinic", id, "--username", "ed", "--role", "editor")
	if st, _ := cloudLogin(t, base, id, "ed", "second-person-password", ""); st != 200 {
		t.Errorf("the second person logs in: %d", st)
	}
	c.password = ""

	// boss enrols a second factor; the list shows it.
	var enr struct {
		Secret string `json:"secret"`
	}
	if st := person(t, "POST", base+"/v1/me/totp", a.Token, map[string]any{}, &enr); st != 200 || enr.Secret == "" {
		t.Fatalf("enrol: %d", st)
	}
	now, _ := totp.GenerateCode(enr.Secret, time.Now())
	if st := person(t, "POST", base+"/v1/me/totp/confirm", a.Token, map[string]string{"code": now}, nil); st != 200 {
		t.Fatalf("confirm: %d", st)
	}
	var list struct {
		Items []struct {
			ID       json.Number `json:"id"`
			Username string      `json:"username"`
			TOTP     *bool       `json:"totp"`
			Disabled bool        `json:"disabled"`
		} `json:"items"`
	}
	c.ok(&list, "users", "list", "--clinic", id)
	if len(list.Items) != 2 || list.Items[0].Username != "boss" || list.Items[0].TOTP == nil || !*list.Items[0].TOTP ||
		list.Items[1].TOTP == nil || *list.Items[1].TOTP {
		t.Fatalf("users list answered %+v", list)
	}
	code, out, stderr := c.run("users", "list", "--clinic", id)
	if code != 0 || !strings.Contains(out, "TOTP") || !strings.Contains(out, "boss") || !strings.Contains(out, "yes") || !strings.Contains(out, "Dr Boss") {
		t.Fatalf("users list table: exit %d\n%s%s", code, out, stderr)
	}
	if st, la := cloudLogin(t, base, id, "boss", "first-admin-password", ""); st != 401 || la.Code != "totp_required" {
		t.Fatalf("login without the code: %d %q", st, la.Code)
	}

	// reset-totp (by username): the password alone logs in again; boss's sessions ended.
	var reset struct {
		HadFactor bool `json:"had_factor"`
	}
	c.ok(&reset, "users", "reset-totp", "--clinic", id, "boss")
	if !reset.HadFactor {
		t.Errorf("reset-totp answered %+v", reset)
	}
	if st := person(t, "GET", base+"/v1/me", a.Token, nil, nil); st != 401 {
		t.Errorf("boss's session after the reset: %d, want 401", st)
	}
	st, a = cloudLogin(t, base, id, "boss", "first-admin-password", "")
	if st != 200 {
		t.Fatalf("login after reset-totp: %d", st)
	}

	// disable (by id): refused at once; enable: back.
	var dis struct {
		Disabled bool `json:"disabled"`
	}
	c.ok(&dis, "users", "disable", ed.ID.String(), "--clinic", id)
	if !dis.Disabled {
		t.Errorf("disable answered %+v", dis)
	}
	if st, _ := cloudLogin(t, base, id, "ed", "second-person-password", ""); st != 401 {
		t.Errorf("disabled person logs in: %d", st)
	}
	c.ok(&dis, "users", "enable", "--clinic", id, "ed")
	if st, _ := cloudLogin(t, base, id, "ed", "second-person-password", ""); st != 200 || dis.Disabled {
		t.Errorf("enabled person logs in: %d (%+v)", st, dis)
	}

	// The cloud audited each change as the operator.
	var audit struct {
		Items []struct {
			Actor  string `json:"actor"`
			Action string `json:"action"`
			Target string `json:"target"`
		} `json:"items"`
	}
	person(t, "GET", base+"/v1/clinics/"+id+"/audit?limit=5000", adminTok, nil, &audit)
	got := map[string]int{}
	for _, e := range audit.Items {
		if e.Actor == "operator" {
			got[e.Action]++
		}
	}
	if got["user.create"] != 2 || got["user.update"] != 2 || got["totp.reset"] != 1 {
		t.Errorf("operator's audit entries %v, want 2 user.create, 2 user.update, 1 totp.reset", got)
	}

	// Errors: no password, a weak one, an unknown person, another clinic.
	c.stdin = ""
	if code, _, stderr := c.run("users", "add", "--clinic", id, "--username", "x", "--role", "viewer"); code != 2 || !strings.Contains(stderr, "SC_CLOUD_USER_PASSWORD") {
		t.Errorf("add without a password: exit %d: %s", code, stderr)
	}
	c.stdin = "short\n"
	if code, _, stderr := c.run("users", "add", "--clinic", id, "--username", "x", "--role", "viewer"); code != 1 || !strings.Contains(stderr, "8 characters") {
		t.Errorf("add with a short password: exit %d: %s", code, stderr)
	}
	if code, _, stderr := c.run("users", "disable", "--clinic", id, "nobody"); code != 1 || !strings.Contains(stderr, "not_found") {
		t.Errorf("disable nobody: exit %d: %s", code, stderr)
	}
	if code, _, stderr := c.run("users", "list"); code != 2 || !strings.Contains(stderr, "--clinic is required") {
		t.Errorf("list without --clinic: exit %d: %s", code, stderr)
	}
	if code, _, stderr := c.run("users", "list", "--clinic", "999999"); code != 1 || !strings.Contains(stderr, "not_found") {
		t.Errorf("list of an unknown clinic: exit %d: %s", code, stderr)
	}
}
