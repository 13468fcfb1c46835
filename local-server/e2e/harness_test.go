// Package e2e runs the real binaries — two sc-cloud nodes and sc-local —
// against real PostgreSQL, RabbitMQ (a private vhost), Redis and SQLite, and
// checks replication end to end through their REST APIs.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/tlsx"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error

	buildFastOnce sync.Once
	fastDir       string
	buildFastErr  error

	// buildMu runs the package's go builds one at a time. Started together
	// (parallel tests ask for the race build, the race-free one, the
	// protocol-bump build and the previous release at once), each compiles
	// the dependencies they share in full, since the build cache holds only
	// finished work: on a cold cache, as in CI, that was minutes of CPU and
	// test slots held for as long. In turn, each later build mostly links
	// what an earlier one compiled.
	buildMu sync.Mutex
)

var targets = []struct{ dir, pkg, out string }{
	{"../../cloud-server", "./cmd/sc-cloud", "sc-cloud"},
	{"..", "./cmd/sc-local", "sc-local"},
	{"../../lockd", "./cmd/lockd", "lockd"},
}

// build compiles the three binaries into a new directory.
func build(prefix string, flags ...string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	for _, b := range targets {
		args := append(append([]string{"build"}, flags...), "-o", filepath.Join(dir, b.out), b.pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = b.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("build %s: %w\n%s", b.out, err, out)
		}
	}
	return dir, nil
}

// fastBinaries builds sc-cloud and sc-local without the race detector, for
// tests whose volume (100,000 records through SQLite) it would slow tenfold.
func fastBinaries(t *testing.T) (cloud, local string) {
	t.Helper()
	buildFastOnce.Do(func() { fastDir, buildFastErr = build("scsync-e2e-fast") })
	if buildFastErr != nil {
		t.Fatal(buildFastErr)
	}
	return filepath.Join(fastDir, "sc-cloud"), filepath.Join(fastDir, "sc-local")
}

// binaries builds sc-cloud and sc-local once per test run.
func binaries(t *testing.T) (cloud, local string) {
	t.Helper()
	cloud, local, _ = allBinaries(t)
	return cloud, local
}

// allBinaries builds sc-cloud, sc-local and lockd once per test run.
func allBinaries(t *testing.T) (cloud, local, lockd string) {
	t.Helper()
	buildOnce.Do(func() { binDir, buildErr = build("scsync-e2e-bin", raceFlags...) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "sc-cloud"), filepath.Join(binDir, "sc-local"), filepath.Join(binDir, "lockd")
}

// slots is the package's limit on tests running at once: go test's
// -parallel (TestMain takes it over).
var slots = struct {
	mu             sync.Mutex
	cond           *sync.Cond
	running, limit int
}{limit: 1}

func init() { slots.cond = sync.NewCond(&slots.mu) }

// parallel is t.Parallel for a test of ordinary length: it runs once fewer
// than -parallel tests are running, long ones included.
// Its time as go test reports it includes the wait, logged apart.
func parallel(t *testing.T) {
	t.Parallel()
	began := time.Now()
	slots.mu.Lock()
	for slots.running >= slots.limit {
		slots.cond.Wait()
	}
	slots.running++
	slots.mu.Unlock()
	t.Cleanup(leaveSlot) // the first cleanup registered runs last
	if w := time.Since(began); w > time.Second {
		t.Logf("waited %s for a slot (-parallel %d)", w.Round(time.Second), slots.limit)
	}
}

// parallelLong is t.Parallel for a test of minutes (the chaos soak, the
// 100,000-record backfill): it starts at once, counted among the running
// tests but never waiting for a slot. go test starts parallel tests in no
// set order, and with a slot like the others these two were, as often as
// not, started last, leaving the run's final minutes to them alone.
func parallelLong(t *testing.T) {
	t.Parallel()
	slots.mu.Lock()
	slots.running++
	slots.mu.Unlock()
	t.Cleanup(leaveSlot)
}

func leaveSlot() {
	slots.mu.Lock()
	slots.running--
	slots.mu.Unlock()
	slots.cond.Broadcast()
}

// freeAddr is an address for a server of the test, outside the kernel's
// ephemeral ports (testenv.FreeAddr), so that a node killed and started
// again finds its port free.
func freeAddr(t *testing.T) string { return testenv.FreeAddr(t) }

// proc is a running binary whose output goes to the test log on failure.
type proc struct {
	name string
	bin  string
	env  []string
	args []string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   sync.Mutex
	done chan error
}

type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func start(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, bin: bin, env: env, args: args, out: &bytes.Buffer{}}
	p.launch(t)
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			p.mu.Lock()
			t.Logf("--- %s output ---\n%s", name, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

func (p *proc) launch(t *testing.T) {
	t.Helper()
	p.done = make(chan error, 1)
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout = lockedWriter{p}
	p.cmd.Stderr = lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(p.cmd, p.done)
}

// kill9 kills the process with SIGKILL (a crash) and waits for it to go.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	err := <-p.done // "signal: killed", expected
	_ = err
	p.done <- nil
	fmt.Fprintf(lockedWriter{p}, "\n=== killed with SIGKILL by the test ===\n")
}

// restart starts the process again with the same command and environment.
func (p *proc) restart(t *testing.T) {
	t.Helper()
	fmt.Fprintf(lockedWriter{p}, "\n=== restarted by the test ===\n")
	p.launch(t)
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *proc) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.done:
		if err != nil && !strings.Contains(err.Error(), "signal") {
			t.Errorf("%s exited: %v", p.name, err)
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		if err := <-p.done; err != nil {
			t.Logf("%s killed: %v", p.name, err)
		}
		t.Errorf("%s did not stop within 20s of SIGTERM", p.name)
	}
}

func waitReady(t *testing.T, p *proc, base string) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited before ready: %v", p.name, err)
		default:
		}
		resp, err := httpc.Get(base + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s readyz %d: %s", p.name, resp.StatusCode, b)
		}
		return linksUp(b)
	})
}

// linksUp: sc-local is ready (200) as soon as it can serve its clinic, with
// the cloud and the broker only "degraded" while they connect; the tests
// want them connected before they start, as they were before.
func linksUp(readyz []byte) error {
	var r struct{ Checks map[string]string }
	if err := json.Unmarshal(readyz, &r); err != nil {
		return fmt.Errorf("readyz body: %w", err)
	}
	for _, c := range []string{"rabbitmq", "cloud_api"} {
		if s, ok := r.Checks[c]; ok && s != "ok" {
			return fmt.Errorf("readyz: %s is %s", c, s)
		}
	}
	return nil
}

// httpc is the tests' HTTP client: plain HTTP, and HTTPS to the servers
// of a stack with TLS, each trusted through its own test CA.
var httpc = &http.Client{Transport: hostTransport{}}

// tlsHosts maps the host:port of a server listening with a test's CA to a
// transport trusting that CA.
var tlsHosts sync.Map

type hostTransport struct{}

func (hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if tr, ok := tlsHosts.Load(r.URL.Host); ok {
		return tr.(http.RoundTripper).RoundTrip(r)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// trustHost makes httpc reach addr over TLS trusting caFile.
func trustHost(t *testing.T, addr, caFile string) {
	t.Helper()
	hc, err := tlsx.Client{CAFile: caFile}.HTTPClient(0)
	if err != nil {
		t.Fatal(err)
	}
	tlsHosts.Store(addr, hc.Transport)
	t.Cleanup(func() { tlsHosts.Delete(addr) })
}

// call does an HTTP request with a JSON body and decodes a JSON answer.
func call(t *testing.T, method, url, token string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	switch token {
	case "-": // no credentials at all
	case "": // the clinic server's API token (the cloud ignores it on public routes)
		req.Header.Set("Authorization", "Bearer "+localAPIToken)
	default:
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, b, err)
		}
	}
	return resp.StatusCode
}

// stack is one running appliance: cloud nodes and clinics.
type stack struct {
	amqpURL, vhost, pgURL string
	cloudBin, localBin    string
	adminToken            string
	bucket                string   // the cloud's S3 bucket
	cloud                 []string // base URLs of the cloud nodes
	nodes                 []*proc
	// localEnv is added to every sc-local's environment.
	localEnv []string
	// tls, when set, makes every listener HTTPS with the test CA, and
	// sc-local run with require_tls.
	tls *stackTLS
}

// stackTLS are a test CA and a certificate for 127.0.0.1 (testenv.PKI).
type stackTLS struct{ ca, cert, key string }

// stackOpts shapes a stack.
type stackOpts struct {
	cloudNodes int
	amqpURL    string // a private broker; empty: a fresh vhost of the shared one
	// mgmtURL is the private broker's management API (guest): clinics then
	// get their own broker identities there too.
	mgmtURL  string
	cloudEnv []string // added to every sc-cloud's environment
	// fast runs binaries built without the race detector (volume tests).
	fast bool
	// cloudBin, when set, is the sc-cloud every node runs instead of the
	// one built from this tree (the previous release: mixed_version_test;
	// a build that speaks a newer protocol: protocol_bump_test).
	cloudBin string
	// tls serves every listener over HTTPS with this CA's certificate;
	// sc-local then runs with require_tls (its links must be TLS too).
	tls *stackTLS
}

type clinic struct {
	ID     string `json:"id"`
	NodeID int64  `json:"node_id"`
	Token  string `json:"token"`
	// AMQP is the clinic's own broker identity (a stack on the shared
	// broker provisions one at enrollment, as production does).
	AMQP *struct {
		URL    string `json:"url"`
		User   string `json:"user"`
		Secret string `json:"secret"`
	} `json:"amqp"`
	// Lockd is the clinic's lockd token, when the cloud has a lockd.
	Lockd *struct {
		URL   string `json:"url"`
		Token string `json:"token"`
	} `json:"lockd"`
	// person is the credential for the cloud's person routes: the
	// operator's admin token (the clinic's machine token cannot act as a
	// person); tests of people log in with s.login.
	person string
	base   string // sc-local base URL, when running
	proc   *proc
}

func newStack(t *testing.T, cloudNodes int) *stack {
	t.Helper()
	return newStackOn(t, cloudNodes, "")
}

// newStackOn runs the cloud nodes on the broker at amqpURL (a private
// broker), or on a fresh vhost of the shared broker when it is empty.
func newStackOn(t *testing.T, cloudNodes int, amqpURL string) *stack {
	t.Helper()
	return newStackWith(t, stackOpts{cloudNodes: cloudNodes, amqpURL: amqpURL})
}

func newStackWith(t *testing.T, o stackOpts) *stack {
	t.Helper()
	cloudNodes, amqpURL := o.cloudNodes, o.amqpURL
	s := &stack{adminToken: "admin-" + testenv.Name("tok"), tls: o.tls}
	s.cloudBin, s.localBin = binaries(t)
	if o.fast {
		s.cloudBin, s.localBin = fastBinaries(t)
	}
	if o.cloudBin != "" {
		s.cloudBin = o.cloudBin
	}
	var mgmtEnv []string
	if amqpURL != "" {
		s.amqpURL = amqpURL
		if o.mgmtURL != "" {
			mgmtEnv = []string{"SC_CLOUD_AMQP_MANAGEMENT_URL=" + o.mgmtURL, "SC_CLOUD_AMQP_MANAGEMENT_USER=guest",
				"SC_CLOUD_AMQP_MANAGEMENT_PASSWORD=guest"}
		}
	} else {
		s.amqpURL, s.vhost = testenv.RabbitVhost(t)
		// Every clinic gets its own broker identity at enrollment.
		mgmt, user, pass, prefix := testenv.RabbitManagement(t)
		mgmtEnv = []string{"SC_CLOUD_AMQP_MANAGEMENT_URL=" + mgmt, "SC_CLOUD_AMQP_MANAGEMENT_USER=" + user,
			"SC_CLOUD_AMQP_MANAGEMENT_PASSWORD=" + pass, "SC_CLOUD_AMQP_USER_PREFIX=" + prefix}
	}
	s.pgURL = testenv.PostgresDB(t)
	_, redisPrefix := testenv.Redis(t)
	// One bucket for every node, as in production: a file uploaded through
	// one node is downloaded through any other.
	bucket := strings.ReplaceAll(testenv.Name("e2e"), "_", "-")
	s.bucket = bucket
	dropBucketAtEnd(t, bucket)
	for i := range cloudNodes {
		addr := freeAddr(t)
		env := []string{
			"SC_CLOUD_LISTEN=" + addr,
			"SC_CLOUD_POSTGRES_URL=" + s.pgURL,
			"SC_CLOUD_AMQP_URL=" + s.amqpURL,
			"SC_CLOUD_REDIS_ADDR=" + testenv.RedisAddr(),
			"SC_CLOUD_REDIS_PREFIX=" + redisPrefix,
			"SC_CLOUD_AUTH_ADMIN_TOKEN=" + s.adminToken,
			"SC_CLOUD_S3_ENDPOINT=" + testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
			"SC_CLOUD_S3_ACCESS_KEY=" + testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
			"SC_CLOUD_S3_SECRET_KEY=" + testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"),
			"SC_CLOUD_S3_BUCKET=" + bucket,
			"SC_CLOUD_LOG_LEVEL=debug",
		}
		env = append(env, mgmtEnv...)
		base := "http://" + addr
		if s.tls != nil {
			env = append(env, "SC_CLOUD_TLS_CERT_FILE="+s.tls.cert, "SC_CLOUD_TLS_KEY_FILE="+s.tls.key, "SC_CLOUD_TLS_CA_FILE="+s.tls.ca)
			base = "https://" + addr
			trustHost(t, addr, s.tls.ca)
		}
		env = append(env, o.cloudEnv...)
		p := start(t, fmt.Sprintf("sc-cloud-%d", i+1), s.cloudBin, env)
		waitReady(t, p, base)
		s.cloud = append(s.cloud, base)
		s.nodes = append(s.nodes, p)
	}
	return s
}

// enroll creates a clinic in the cloud.
func (s *stack) enroll(t *testing.T, name string) *clinic {
	t.Helper()
	var c clinic
	if code := call(t, "POST", s.cloud[0]+"/v1/admin/clinics", s.adminToken, map[string]string{"name": name}, &c); code != 201 {
		t.Fatalf("enroll %s: status %d", name, code)
	}
	c.person = s.adminToken
	return &c
}

// login makes a person of clinic c in the cloud and returns a session token.
func (s *stack) login(t *testing.T, c *clinic, username, role string) string {
	t.Helper()
	pw := "pw-" + username + "-long"
	if code := call(t, "POST", s.cloud[0]+"/v1/clinics/"+c.ID+"/users", s.adminToken,
		map[string]string{"username": username, "role": role, "password": pw}, nil); code != 201 {
		t.Fatalf("add %s: status %d", username, code)
	}
	var out struct {
		Token string `json:"token"`
	}
	if code := call(t, "POST", s.cloud[0]+"/v1/login", "-", map[string]string{"clinic": c.ID, "username": username, "password": pw}, &out); code != 200 {
		t.Fatalf("login %s: status %d", username, code)
	}
	return out.Token
}

// localAPIToken is every sc-local's API token in these tests (set in the
// environment by TestMain, so the servers and the CLI commands the tests
// run share it).
const localAPIToken = "e2e-local-api-token-0123456789"

func TestMain(m *testing.M) {
	_ = os.Setenv("SC_LOCAL_AUTH_API_TOKEN", localAPIToken)
	// The tests run -parallel at once under this package's own limit
	// (parallel, parallelLong), and go test's is lifted so that it never holds a
	// long test back.
	flag.Parse()
	limit := 1
	if f := flag.Lookup("test.parallel"); f != nil {
		if n, err := strconv.Atoi(f.Value.String()); err == nil && n > 0 {
			limit = n
		}
		_ = f.Value.Set(strconv.Itoa(limit + 64))
	}
	slots.limit = limit
	code := m.Run()
	// The binaries (about 135 MB a build) go with the run.
	for _, dir := range []string{binDir, fastDir} {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// startLocal runs sc-local for c with its data in dir.
func (s *stack) startLocal(t *testing.T, c *clinic, dir string) {
	t.Helper()
	s.startLocalVia(t, c, dir, s.amqpURL, s.cloud[len(s.cloud)-1])
}

// startLocalVia runs sc-local reaching the broker and the cloud API at the
// given URLs (through proxies a test can cut).
func (s *stack) startLocalVia(t *testing.T, c *clinic, dir, amqpURL, cloudURL string) {
	t.Helper()
	amqpURL = clinicAMQP(t, c, amqpURL)
	addr := freeAddr(t)
	env := []string{
		"SC_LOCAL_LISTEN=" + addr,
		"SC_LOCAL_DATA_DIR=" + dir,
		"SC_LOCAL_CLINIC_ID=" + c.ID,
		fmt.Sprintf("SC_LOCAL_CLINIC_NODE=%d", c.NodeID),
		"SC_LOCAL_CLOUD_URL=" + cloudURL,
		"SC_LOCAL_CLOUD_TOKEN=" + c.Token,
		"SC_LOCAL_CLOUD_PULL_EVERY=2s",
		"SC_LOCAL_AMQP_URL=" + amqpURL,
		"SC_LOCAL_LOG_LEVEL=debug",
		// Tests write the files they import under the temporary directory
		// (t.TempDir); imports are confined to it (files.import_dirs).
		"SC_LOCAL_FILES_IMPORT_DIRS=" + os.TempDir(),
	}
	c.base = "http://" + addr
	if s.tls != nil {
		env = append(env, "SC_LOCAL_TLS_CERT_FILE="+s.tls.cert, "SC_LOCAL_TLS_KEY_FILE="+s.tls.key, "SC_LOCAL_TLS_CA_FILE="+s.tls.ca,
			"SC_LOCAL_REQUIRE_TLS=true")
		c.base = "https://" + addr
		trustHost(t, addr, s.tls.ca)
	}
	env = append(env, s.localEnv...)
	c.proc = start(t, "sc-local-"+c.ID, s.localBin, env)
	waitReady(t, c.proc, c.base)
}

// clinicAMQP is amqpURL (the broker, or a proxy in front of it) with the
// clinic's own broker login when it has one.
func clinicAMQP(t *testing.T, c *clinic, amqpURL string) string {
	t.Helper()
	if c.AMQP == nil {
		return amqpURL
	}
	return amqpAs(t, amqpURL, c.AMQP.User, c.AMQP.Secret)
}

// amqpAs is amqpURL with the login user/secret.
func amqpAs(t *testing.T, amqpURL, user, secret string) string {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("amqp url: %v", err)
	}
	u.User = url.UserPassword(user, secret)
	return u.String()
}

// startLockdAt runs one lockd replica on each of addrs.
func startLockdAt(t *testing.T, addrs []string, redisAddr, serviceToken string, clinicTokens map[string]string) []*proc {
	t.Helper()
	_, _, bin := allBinaries(t)
	return startLockdFrom(t, bin, addrs, redisAddr, serviceToken, clinicTokens)
}

// startLockdFrom is startLockdAt running the lockd binary at bin.
func startLockdFrom(t *testing.T, bin string, addrs []string, redisAddr, serviceToken string, clinicTokens map[string]string) []*proc {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "auth:\n  service_tokens: [%q]\n  clinic_tokens:\n", serviceToken)
	for tok, clinic := range clinicTokens {
		fmt.Fprintf(&b, "    %q: %q\n", tok, clinic)
	}
	cfg := filepath.Join(t.TempDir(), "lockd.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var procs []*proc
	prefix := testenv.Name("lk") + ":" // one key space for every replica
	testenv.CleanupRedisPrefix(t, redisAddr, prefix)
	for i, addr := range addrs {
		p := start(t, fmt.Sprintf("lockd-%d", i+1), bin, []string{
			"LOCKD_CONFIG=" + cfg, "LOCKD_LISTEN=" + addr, "LOCKD_REDIS_ADDR=" + redisAddr,
			"LOCKD_REDIS_PREFIX=" + prefix, "LOCKD_LOG_LEVEL=info",
		})
		waitReady(t, p, "http://"+addr)
		procs = append(procs, p)
	}
	return procs
}
