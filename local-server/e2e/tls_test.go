package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// syncBuffer is a bytes.Buffer safe for a process writing and a test
// reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestTLSEverywhere (issue 15, transmission security): every link and
// listener of a clinic and its cloud over TLS with a test CA. RabbitMQ
// (private) listens over TLS only, its management API too; sc-cloud serves
// HTTPS, reaches the broker with amqps:// and makes the clinic's broker
// identity through the management API over HTTPS; sc-local runs with require_tls: an HTTPS listener,
// the cloud over https:// and the broker over amqps://. A change made on
// each side replicates to the other; sc-local's commands (status, users,
// audit, watch with the record's title) work against its TLS-only listener, and a plaintext
// request to it is refused. With require_tls, an amqp:// broker URL is
// refused at start with an error naming the setting.
func TestTLSEverywhere(t *testing.T) {
	parallel(t)
	ca, cert, key := testenv.PKI(t, t.TempDir())
	broker := testenv.StartPrivateRabbitTLS(t, testenv.RabbitTLS{CAFile: ca, CertFile: cert, KeyFile: key, Managed: true})
	s := newStackWith(t, stackOpts{cloudNodes: 1, amqpURL: broker.URL, mgmtURL: broker.MgmtURL, tls: &stackTLS{ca: ca, cert: cert, key: key}})
	if !strings.HasPrefix(s.cloud[0], "https://") {
		t.Fatalf("cloud at %s, want https", s.cloud[0])
	}
	c := s.enroll(t, "Sealed Dental")
	// The clinic's own broker identity, made through the management API
	// over HTTPS, with an amqps:// URL.
	if c.AMQP == nil || !strings.HasPrefix(c.AMQP.URL, "amqps://") {
		t.Fatalf("enrollment's broker identity = %+v, want an amqps:// URL", c.AMQP)
	}
	s.startLocal(t, c, t.TempDir())
	if !strings.HasPrefix(c.base, "https://") {
		t.Fatalf("sc-local at %s, want https", c.base)
	}
	cloud := cloudSide(s.cloud[0], c)

	// Replication both ways, over amqps:// and https:// only.
	var here, there patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Made In The Clinic"}), &here); code != 201 {
		t.Fatalf("clinic create: %d", code)
	}
	if code := call(t, "POST", cloud.prefix+"patients", c.person, save("", map[string]string{"name": "Made In The Cloud"}), &there); code != 201 {
		t.Fatalf("cloud create: %d", code)
	}
	converged(t, c, cloud, 90*time.Second)
	var got patient
	if code := call(t, "GET", c.base+"/v1/patients/"+there.ID, "", nil, &got); code != 200 || got.Data.Name != "Made In The Cloud" {
		t.Fatalf("the cloud's patient in the clinic: %d %+v", code, got)
	}

	// A plaintext request to the TLS listener is refused.
	plain := "http://" + strings.TrimPrefix(c.base, "https://") + "/v1/status"
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(plain); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plaintext GET to the TLS listener = %d, want 400", resp.StatusCode)
		}
	}

	// sc-local's commands reach the TLS-only listener (its config: the
	// same environment as the server's).
	run := func(env []string, args ...string) string {
		t.Helper()
		out, err := localCLI(s, c, env, args...)
		if err != nil {
			t.Fatalf("sc-local %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := run(nil, "status"); !strings.Contains(out, "clinic            "+c.ID) {
		t.Errorf("sc-local status over TLS:\n%s", out)
	}
	if out := run([]string{"SC_LOCAL_PASSWORD=pw-dr.tls-long"}, "users", "add", "-username", "dr.tls", "-role", "editor"); !strings.Contains(out, "created with id") {
		t.Errorf("sc-local users add over TLS:\n%s", out)
	}
	if out := run(nil, "users", "list"); !strings.Contains(out, "dr.tls") {
		t.Errorf("sc-local users list over TLS:\n%s", out)
	}
	if out := run(nil, "audit", "-verify"); !strings.Contains(out, "unbroken") {
		t.Errorf("sc-local audit -verify over TLS:\n%s", out)
	}
	if out := run(nil, "audit"); !strings.Contains(out, "user.create") {
		t.Errorf("sc-local audit over TLS:\n%s", out)
	}
	// watch: the live events over wss://.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := exec.CommandContext(ctx, s.localBin, "watch")
	watch.Env = append(os.Environ(), c.proc.env...)
	var wout syncBuffer
	watch.Stdout, watch.Stderr = &wout, &wout
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = watch.Wait() }()
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(wout.String(), "watching wss://") {
			return fmt.Errorf("sc-local watch: %q", wout.String())
		}
		return nil
	})
	var live patient
	// The watch is connected once it prints; a change made a little later
	// is certainly seen live.
	testenv.CheckFor(t, 30*time.Second, time.Second, func() error {
		if live.ID == "" {
			if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Seen Live"}), &live); code != 201 {
				t.Fatalf("create: %d", code)
			}
		}
		// With the record's title, as the viewer shows it.
		if !strings.Contains(wout.String(), "patient "+live.ID+` "Seen Live"`) {
			return fmt.Errorf("sc-local watch has not shown %s with its title: %q", live.ID, wout.String())
		}
		return nil
	})

	// require_tls refuses a plaintext broker URL at start, naming it.
	plainAMQP := "amqp://guest:guest@" + strings.TrimPrefix(broker.URL, "amqps://guest:guest@")
	cmd := exec.Command(s.localBin)
	cmd.Env = append(append(os.Environ(), c.proc.env...), "SC_LOCAL_AMQP_URL="+plainAMQP, "SC_LOCAL_DATA_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "require_tls: plaintext: amqp.url is not encrypted") {
		t.Errorf("sc-local with require_tls and %s: %v\n%s; want a refusal naming amqp.url", plainAMQP, err, out)
	}
	if strings.Contains(string(out), "cloud.url") {
		t.Errorf("the refusal names cloud.url, which is https: %s", out)
	}
	cmd = exec.Command(s.cloudBin)
	cmd.Env = append(append(os.Environ(), s.nodes[0].env...), "SC_CLOUD_REQUIRE_TLS=true", "SC_CLOUD_AMQP_URL="+plainAMQP)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "require_tls: plaintext: amqp.url is not encrypted") {
		t.Errorf("sc-cloud with require_tls and %s: %v\n%s; want a refusal naming amqp.url", plainAMQP, err, out)
	}
}
