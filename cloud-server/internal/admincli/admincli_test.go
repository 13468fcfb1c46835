package admincli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/cloud-server/internal/admincli"
	"github.com/scsync/scsync/cloud-server/internal/app"
	"github.com/scsync/scsync/cloud-server/internal/blob"
	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/shared/testenv"
)

// startCloud runs one sc-cloud node in the test process on real
// PostgreSQL, RabbitMQ (management enabled: clinics get their own broker
// identities), Redis and MinIO, and returns its base URL and admin token.
func startCloud(t *testing.T) (base, adminToken string) {
	t.Helper()
	amqpURL, _ := testenv.RabbitVhost(t)
	mgmt, user, pass, prefix := testenv.RabbitManagement(t)
	_, redisPrefix := testenv.Redis(t)
	adminToken = "admin-" + testenv.Name("tok")
	env := map[string]string{
		"LISTEN":                   "127.0.0.1:0",
		"POSTGRES_URL":             testenv.PostgresDB(t),
		"AMQP_URL":                 amqpURL,
		"AMQP_MANAGEMENT_URL":      mgmt,
		"AMQP_MANAGEMENT_USER":     user,
		"AMQP_MANAGEMENT_PASSWORD": pass,
		"AMQP_USER_PREFIX":         prefix,
		"REDIS_ADDR":               testenv.RedisAddr(),
		"REDIS_PREFIX":             redisPrefix,
		"AUTH_ADMIN_TOKEN":         adminToken,
		"S3_ENDPOINT":              testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
		"S3_ACCESS_KEY":            testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		"S3_SECRET_KEY":            testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"),
		"S3_BUCKET":                strings.ReplaceAll(testenv.Name("admincli"), "_", "-"),
		// Second factors can be enrolled (users reset-totp).
		"AUTH_TOTP_KEY": "c2NzeW5jLWFkbWluY2xpLXRlc3QtdG90cC1rZXktMzI=",
	}
	removeBucketAtEnd(t, env["S3_ENDPOINT"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"], env["S3_BUCKET"])
	for k, v := range env {
		t.Setenv(config.EnvPrefix+"_"+k, v)
	}
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- app.Run(ctx, cfg, log, func(a string) { addr <- a }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("sc-cloud stopped with: %v", err)
			}
		case <-time.After(90 * time.Second):
			t.Error("sc-cloud did not stop")
		}
	})
	select {
	case a := <-addr:
		return "http://" + a, adminToken
	case err := <-done:
		t.Fatalf("sc-cloud stopped: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("sc-cloud did not start")
	}
	return "", ""
}

// removeBucketAtEnd deletes the (empty) bucket sc-cloud creates at start,
// after the cloud stopped (cleanups run last-registered first).
func removeBucketAtEnd(t *testing.T, endpoint, key, secret, bucket string) {
	t.Helper()
	c := files.NewS3Client(blob.Config{Endpoint: endpoint, AccessKey: key, SecretKey: secret, Region: "us-east-1", PathStyle: true, Bucket: bucket})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Logf("delete bucket %s: %v", bucket, err)
		}
	})
}

// cli runs `sc-cloud admin args...` against the cloud.
type cli struct {
	t         *testing.T
	base, tok string
	stdin     string // what the command reads from stdin
	password  string // SC_CLOUD_USER_PASSWORD
}

func (c cli) run(args ...string) (code int, stdout, stderr string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	env := func(k string) string {
		switch k {
		case admincli.EnvURL:
			return c.base
		case admincli.EnvToken:
			return c.tok
		case admincli.EnvPassword:
			return c.password
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code = admincli.Run(ctx, args, env, strings.NewReader(c.stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs args with --json, expects success and decodes the answer.
func (c cli) ok(out any, args ...string) {
	c.t.Helper()
	code, stdout, stderr := c.run(append(args, "--json")...)
	if code != 0 {
		c.t.Fatalf("sc-cloud admin %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		c.t.Fatalf("sc-cloud admin %s --json: not JSON: %v\n%s", strings.Join(args, " "), err, stdout)
	}
}

// clinicStatus is the status of a clinic-token call to the cloud API.
func clinicStatus(t *testing.T, base, id, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/clinics/"+id+"/changes?since=0&limit=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func wantStatus(t *testing.T, base, id, token string, want int) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		if got := clinicStatus(t, base, id, token); got != want {
			return fmt.Errorf("clinic call: status %d, want %d", got, want)
		}
		return nil
	})
}

type added struct {
	ID    json.Number `json:"id"`
	Name  string      `json:"name"`
	Token string      `json:"token"`
	AMQP  *struct {
		User   string `json:"user"`
		Secret string `json:"secret"`
	} `json:"amqp"`
}

func TestAdminCLIEndToEnd(t *testing.T) {
	base, adminTok := startCloud(t)
	c := cli{t: t, base: base, tok: adminTok}

	// add: a clinic with credentials, whose token works.
	var cl added
	c.ok(&cl, "clinics", "add", "--name", "Clinic A")
	if cl.ID == "" || cl.Token == "" || cl.Name != "Clinic A" {
		t.Fatalf("add answered %+v", cl)
	}
	if cl.AMQP == nil || cl.AMQP.User == "" {
		t.Fatalf("add: no broker identity in %+v", cl)
	}
	id := cl.ID.String()
	wantStatus(t, base, id, cl.Token, http.StatusOK)

	// enroll-token: a one-time token for clinic IT.
	var et struct {
		Name      string `json:"name"`
		Token     string `json:"token"`
		ExpiresAt string `json:"expires_at"`
	}
	c.ok(&et, "clinics", "enroll-token", "--name", "Clinic B", "--ttl", "2h")
	if et.Token == "" || et.Name != "Clinic B" || et.ExpiresAt == "" {
		t.Fatalf("enroll-token answered %+v", et)
	}

	// list: JSON and the human table both show the clinic.
	var list struct {
		Clinics []struct {
			ID         json.Number `json:"id"`
			Name       string      `json:"name"`
			DisabledAt *string     `json:"disabled_at"`
		} `json:"clinics"`
	}
	c.ok(&list, "clinics", "list")
	if len(list.Clinics) != 1 || list.Clinics[0].ID.String() != id || list.Clinics[0].DisabledAt != nil {
		t.Fatalf("list answered %+v", list)
	}
	if code, out, stderr := c.run("clinics", "list"); code != 0 || !strings.Contains(out, "Clinic A") || !strings.Contains(out, "enabled") || !strings.Contains(out, "ID") {
		t.Fatalf("list table: exit %d\n%s%s", code, out, stderr)
	}

	// disable: the clinic's token is refused; the list says so.
	var dis struct {
		DisabledAt *string `json:"disabled_at"`
	}
	c.ok(&dis, "clinics", "disable", id)
	if dis.DisabledAt == nil {
		t.Fatalf("disable answered no disabled_at")
	}
	wantStatus(t, base, id, cl.Token, http.StatusUnauthorized)
	if code, out, _ := c.run("clinics", "list"); code != 0 || !strings.Contains(out, "disabled") {
		t.Fatalf("list after disable: exit %d\n%s", code, out)
	}

	// enable: the token works again, with fresh broker credentials.
	var en struct {
		AMQP *struct {
			Secret string `json:"secret"`
		} `json:"amqp"`
	}
	c.ok(&en, "clinics", "enable", id)
	if en.AMQP == nil || en.AMQP.Secret == "" || en.AMQP.Secret == cl.AMQP.Secret {
		t.Fatalf("enable: no fresh broker secret in %+v", en)
	}
	wantStatus(t, base, id, cl.Token, http.StatusOK)

	// rotate: the old token is refused, the new one works.
	var rot struct {
		Token string `json:"token"`
	}
	c.ok(&rot, "clinics", "rotate", id)
	if rot.Token == "" || rot.Token == cl.Token {
		t.Fatalf("rotate answered %+v", rot)
	}
	wantStatus(t, base, id, cl.Token, http.StatusUnauthorized)
	wantStatus(t, base, id, rot.Token, http.StatusOK)

	// policy: set, then get (flags after the positional arguments work).
	var pol struct {
		ConflictPolicy string `json:"conflict_policy"`
	}
	c.ok(&pol, "clinics", "policy", id, "keep-both")
	if pol.ConflictPolicy != "keep-both" {
		t.Fatalf("policy set answered %+v", pol)
	}
	pol.ConflictPolicy = ""
	c.ok(&pol, "clinics", "policy", id)
	if pol.ConflictPolicy != "keep-both" {
		t.Fatalf("policy get answered %+v", pol)
	}
	if code, out, _ := c.run("clinics", "policy", id); code != 0 || !strings.Contains(out, "keep-both") {
		t.Fatalf("policy get table: exit %d\n%s", code, out)
	}

	// retention: set delete after 30 days, then get.
	var ret struct {
		Policy struct {
			Mode      string `json:"mode"`
			AfterDays int    `json:"after_days"`
		} `json:"policy"`
	}
	c.ok(&ret, "clinics", "retention", id, "delete", "--after-days", "30")
	if ret.Policy.Mode != "delete" || ret.Policy.AfterDays != 30 {
		t.Fatalf("retention set answered %+v", ret)
	}
	ret.Policy.Mode = ""
	c.ok(&ret, "clinics", "retention", id)
	if ret.Policy.Mode != "delete" {
		t.Fatalf("retention get answered %+v", ret)
	}

	// errors: the API's code and message, exit 1; usage errors exit 2.
	if code, _, stderr := c.run("clinics", "policy", id, "newest-wins"); code != 1 || !strings.Contains(stderr, "invalid_clinic") || !strings.Contains(stderr, "conflict_policy must be") {
		t.Fatalf("bad policy: exit %d: %s", code, stderr)
	}
	if code, _, stderr := c.run("clinics", "disable", "999999"); code != 1 || !strings.Contains(stderr, "not_found") {
		t.Fatalf("unknown clinic: exit %d: %s", code, stderr)
	}
	bad := cli{t: t, base: base, tok: "not-the-admin-token"}
	if code, _, stderr := bad.run("clinics", "list"); code != 1 || !strings.Contains(stderr, "unauthorized") || strings.Contains(stderr, "not-the-admin-token") {
		t.Fatalf("bad admin token: exit %d: %s", code, stderr)
	}
	if code, _, _ := c.run("clinics", "rotate"); code != 2 {
		t.Fatalf("rotate without an id: exit %d, want 2", code)
	}
}

func TestAdminCLIUsage(t *testing.T) {
	c := cli{t: t}
	for _, args := range [][]string{nil, {"clinics"}, {"bogus"}, {"clinics", "bogus"}, {"clinics", "list", "--nope"}} {
		if code, _, _ := c.run(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	for _, sub := range []string{"list", "add", "enroll-token", "disable", "enable", "rotate", "policy", "retention"} {
		code, _, stderr := c.run("clinics", sub, "--help")
		if code != 0 || !strings.Contains(stderr, "usage: sc-cloud admin clinics "+sub) || !strings.Contains(stderr, "-json") {
			t.Errorf("%s --help: exit %d: %s", sub, code, stderr)
		}
	}
	for _, sub := range []string{"list", "add", "disable", "enable", "reset-totp"} {
		code, _, stderr := c.run("users", sub, "--help")
		if code != 0 || !strings.Contains(stderr, "usage: sc-cloud admin users "+sub) || !strings.Contains(stderr, "-clinic") {
			t.Errorf("users %s --help: exit %d: %s", sub, code, stderr)
		}
	}
	for _, args := range [][]string{{"users"}, {"users", "bogus"}, {"users", "disable"}} {
		if code, _, _ := c.run(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	// Without a cloud URL or token: a usage error, not a call.
	if code, _, stderr := c.run("clinics", "list"); code != 2 || !strings.Contains(stderr, admincli.EnvToken) {
		t.Errorf("no credentials: exit %d: %s", code, stderr)
	}
}
