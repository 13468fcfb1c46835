package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// HTTP is the client every benchmark uses: many idle connections per host,
// so concurrent requests do not open a socket each.
var HTTP = &http.Client{
	Timeout:   2 * time.Minute,
	Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute},
}

// bounded is HTTP without its own timeout, for calls whose context
// carries a deadline of its own (a long one: a verify over a million).
var bounded = &http.Client{Transport: HTTP.Transport}

// StatusError is an unexpected HTTP answer.
type StatusError struct {
	Method, URL string
	Code        int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.URL, e.Code, tail(e.Body, 500))
}

// Call sends in as JSON (when not nil) and decodes a JSON answer into out
// (when not nil); an answer other than want is a *StatusError.
func Call(ctx context.Context, method, url, token string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return CallRaw(ctx, method, url, token, "application/json", body, out, want)
}

// CallRaw is Call with a body of the caller's own.
func CallRaw(ctx context.Context, method, url, token, contentType string, body io.Reader, out any, want int) error {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	if token == "" {
		token = LocalAPIToken // sc-local's; the cloud's public routes ignore it
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	hc := HTTP
	if _, ok := ctx.Deadline(); ok {
		hc = bounded // the caller's deadline, not HTTP's 2 minutes
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == want && out == nil {
		// Drained, not kept, so the connection goes back to the pool.
		_, err := io.Copy(io.Discard, resp.Body)
		return err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return &StatusError{Method: method, URL: url, Code: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, url, err)
		}
	}
	return nil
}

// Appliance is one benchmark's sc-cloud (one node) with its own vhost,
// database, Redis prefix and bucket.
type Appliance struct {
	Env        Env
	Bin        Binaries
	AMQPURL    string
	PGURL      string
	Bucket     string
	AdminToken string
	Cloud      string // base URL
	CloudProc  *Proc
	cl         *Cleanup
}

// Clinic is an enrolled clinic and, once started, its sc-local.
type Clinic struct {
	ID     string `json:"id"`
	NodeID int64  `json:"node_id"`
	Token  string `json:"token"`
	// AMQP is the clinic's own broker identity, when the cloud issues one
	// (its management API is configured).
	AMQP *ClinicAMQP `json:"amqp,omitempty"`
	Base string      `json:"-"`
	Dir  string      `json:"-"`
	Proc *Proc       `json:"-"`
}

// ClinicAMQP is the broker identity enrollment hands a clinic.
type ClinicAMQP struct {
	// URL is the AMQP URL with the clinic's own login (sc-local's amqp.url).
	URL string `json:"url"`
	// User is its broker login, the user-id of every message it publishes.
	User string `json:"user"`
}

// CloudPrefix is the clinic's API prefix on the cloud, ending in '/'.
func (c *Clinic) CloudPrefix(cloud string) string { return cloud + "/v1/clinics/" + c.ID + "/" }

// NewAppliance makes the resources and starts one sc-cloud with extraEnv.
func NewAppliance(ctx context.Context, cl *Cleanup, env Env, bin Binaries, name string, extraEnv ...string) (*Appliance, error) {
	a := &Appliance{Env: env, Bin: bin, AdminToken: Name("admin"), cl: cl}
	var err error
	if a.AMQPURL, err = env.Vhost(ctx, cl, "bench_"+name); err != nil {
		return nil, err
	}
	if a.PGURL, err = env.PostgresDB(ctx, cl, "bench_"+name); err != nil {
		return nil, err
	}
	_, redisPrefix, err := env.RedisPrefix(ctx, cl, "bench_"+name)
	if err != nil {
		return nil, err
	}
	a.Bucket = BucketName("bench-" + strings.ReplaceAll(name, "_", "-"))
	env.DeleteBucketAtClose(cl, a.Bucket)
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	cenv := cloudEnv(env, addr, a.PGURL, a.AMQPURL, redisPrefix, a.AdminToken, a.Bucket)
	p, err := Start(cl, "sc-cloud", bin.Cloud, append(cenv, extraEnv...))
	if err != nil {
		return nil, err
	}
	a.Cloud, a.CloudProc = "http://"+addr, p
	if err := p.WaitReady(ctx, a.Cloud, 90*time.Second); err != nil {
		return nil, err
	}
	return a, nil
}

// cloudEnv is sc-cloud's environment for a benchmark's resources.
func cloudEnv(env Env, addr, pgURL, amqpURL, redisPrefix, adminToken, bucket string) []string {
	return []string{
		"SC_CLOUD_LISTEN=" + addr,
		"SC_CLOUD_POSTGRES_URL=" + pgURL,
		"SC_CLOUD_AMQP_URL=" + amqpURL,
		"SC_CLOUD_REDIS_ADDR=" + env.RedisAddr,
		"SC_CLOUD_REDIS_PREFIX=" + redisPrefix,
		"SC_CLOUD_AUTH_ADMIN_TOKEN=" + adminToken,
		"SC_CLOUD_S3_ENDPOINT=" + env.S3Endpoint,
		"SC_CLOUD_S3_ACCESS_KEY=" + env.S3AccessKey,
		"SC_CLOUD_S3_SECRET_KEY=" + env.S3SecretKey,
		"SC_CLOUD_S3_BUCKET=" + bucket,
		"SC_CLOUD_LOG_LEVEL=warn",
	}
}

// Enroll creates a clinic in the cloud.
func (a *Appliance) Enroll(ctx context.Context, name string) (*Clinic, error) {
	return enroll(ctx, a.Cloud, a.AdminToken, name)
}

// enroll creates a clinic through the admin enrollment API of the cloud
// node at base.
func enroll(ctx context.Context, base, adminToken, name string) (*Clinic, error) {
	var c Clinic
	if err := Call(ctx, http.MethodPost, base+"/v1/admin/clinics", adminToken, map[string]string{"name": name}, &c, http.StatusCreated); err != nil {
		return nil, fmt.Errorf("enroll %s: %w", name, err)
	}
	return &c, nil
}

// StartLocal runs sc-local for c in a fresh data directory and waits until
// it is ready.
func (a *Appliance) StartLocal(ctx context.Context, c *Clinic, extraEnv ...string) error {
	return startLocal(ctx, a.cl, a.Bin, a.Cloud, a.AMQPURL, c, extraEnv...)
}

// LocalEnv is sc-local's environment for c with its data in dir.
func (a *Appliance) LocalEnv(c *Clinic, addr, dir string) []string {
	return localEnv(a.Cloud, a.AMQPURL, c, addr, dir)
}

func localEnv(cloud, amqpURL string, c *Clinic, addr, dir string) []string {
	return []string{
		"SC_LOCAL_LISTEN=" + addr,
		"SC_LOCAL_DATA_DIR=" + dir,
		"SC_LOCAL_CLINIC_ID=" + c.ID,
		fmt.Sprintf("SC_LOCAL_CLINIC_NODE=%d", c.NodeID),
		"SC_LOCAL_CLOUD_URL=" + cloud,
		"SC_LOCAL_CLOUD_TOKEN=" + c.Token,
		"SC_LOCAL_CLOUD_PULL_EVERY=2s",
		"SC_LOCAL_AMQP_URL=" + amqpURL,
		"SC_LOCAL_LOG_LEVEL=warn",
		"SC_LOCAL_AUTH_API_TOKEN=" + LocalAPIToken,
		// The benchmarks import files they wrote under the temporary
		// directory; imports are confined to it (files.import_dirs).
		"SC_LOCAL_FILES_IMPORT_DIRS=" + os.TempDir(),
	}
}

// LocalAPIToken is every bench sc-local's API token (an admin of the
// clinic server); Call sends it when given no token.
const LocalAPIToken = "bench-local-api-token-0123456789"

// startLocal runs sc-local for c, reaching the cloud at cloud and the
// broker at amqpURL, in a fresh data directory, and waits until it is
// ready.
func startLocal(ctx context.Context, cl *Cleanup, bin Binaries, cloud, amqpURL string, c *Clinic, extraEnv ...string) error {
	dir, err := os.MkdirTemp("", "scsync-bench-local")
	if err != nil {
		return err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	addr, err := FreeAddr()
	if err != nil {
		return err
	}
	p, err := Start(cl, "sc-local", bin.Local, append(localEnv(cloud, amqpURL, c, addr, dir), extraEnv...))
	if err != nil {
		return err
	}
	c.Base, c.Dir, c.Proc = "http://"+addr, dir, p
	return p.WaitReady(ctx, c.Base, 90*time.Second)
}

// StartLockd runs one lockd on addr (empty: a free one) over Redis with
// prefix, accepting serviceToken and the clinic tokens (token → clinic
// id); it returns its base URL.
func StartLockd(ctx context.Context, cl *Cleanup, env Env, bin Binaries, addr, prefix, serviceToken string, clinicTokens map[string]string, extraEnv ...string) (string, *Proc, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "auth:\n  service_tokens: [%q]\n  clinic_tokens:\n", serviceToken)
	for tok, clinic := range clinicTokens {
		fmt.Fprintf(&b, "    %q: %q\n", tok, clinic)
	}
	dir, err := os.MkdirTemp("", "scsync-bench-lockd")
	if err != nil {
		return "", nil, err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "lockd.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return "", nil, err
	}
	if addr == "" {
		if addr, err = FreeAddr(); err != nil {
			return "", nil, err
		}
	}
	p, err := Start(cl, "lockd", bin.Lockd, append([]string{
		"LOCKD_CONFIG=" + cfg, "LOCKD_LISTEN=" + addr, "LOCKD_REDIS_ADDR=" + env.RedisAddr,
		"LOCKD_REDIS_PREFIX=" + prefix, "LOCKD_LOG_LEVEL=warn",
	}, extraEnv...))
	if err != nil {
		return "", nil, err
	}
	base := "http://" + addr
	return base, p, p.WaitReady(ctx, base, 60*time.Second)
}
