package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// PrivateMinIO is a MinIO server of the test's own on free loopback ports
// with its data in a temporary directory, so a test can stop S3 for a while
// without touching the shared one. It runs the binary `make stack-up`
// builds.
type PrivateMinIO struct {
	// Endpoint is the S3 endpoint URL; AccessKey and SecretKey its root
	// credentials.
	Endpoint, AccessKey, SecretKey string
	t                              testing.TB
	bin, dir                       string
	port, console                  int
	kms                            string
	cmd                            *exec.Cmd
	done                           chan struct{}
}

// newKMSKey is a MinIO built-in KMS key (name:base64 of 32 bytes): the
// cloud's default SSE-S3 needs one. It lives as long as the server's data.
func newKMSKey(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "scsync-test-key:" + base64.StdEncoding.EncodeToString(b)
}

// minioBin finds the MinIO binary: SCSYNC_MINIO_BIN, then the one
// scripts/tools.sh builds into ~/.cache/scsync/bin, then PATH.
func minioBin() (string, error) {
	if b := os.Getenv("SCSYNC_MINIO_BIN"); b != "" {
		return b, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		b := filepath.Join(Env("SCSYNC_CACHE", filepath.Join(home, ".cache", "scsync")), "bin", "minio")
		if _, err := os.Stat(b); err == nil {
			return b, nil
		}
	}
	return exec.LookPath("minio")
}

// StartPrivateMinIO starts a private MinIO server, stopped when the test
// ends. It fails (never skips) under CI=true when the binary is missing.
func StartPrivateMinIO(t testing.TB) *PrivateMinIO {
	t.Helper()
	bin, err := minioBin()
	if err != nil {
		Unavailable(t, "minio", err)
	}
	m := &PrivateMinIO{t: t, bin: bin, dir: t.TempDir(), port: freePort(t), console: freePort(t),
		AccessKey: "scsync", SecretKey: "scsync-private-secret", kms: newKMSKey(t)}
	m.Endpoint = "http://127.0.0.1:" + strconv.Itoa(m.port)
	m.Start()
	t.Cleanup(m.Kill)
	return m
}

// Start starts the server (again, after Kill) on the same port and data
// directory and waits until it answers its health check.
func (m *PrivateMinIO) Start() {
	m.t.Helper()
	out, err := os.OpenFile(filepath.Join(m.dir, "server.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	m.cmd = exec.CommandContext(context.Background(), m.bin, "server", filepath.Join(m.dir, "data"),
		"--address", "127.0.0.1:"+strconv.Itoa(m.port), "--console-address", "127.0.0.1:"+strconv.Itoa(m.console), "--quiet")
	m.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_KMS_SECRET_KEY="+m.kms)
	m.cmd.Stdout, m.cmd.Stderr = out, out
	ownGroup(m.cmd)
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start private minio: %v", err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}, out *os.File) {
		_ = cmd.Wait()
		_ = out.Close()
		close(done)
	}(m.cmd, m.done, out)
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, m.Endpoint+"/minio/health/live", nil)
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-m.done:
			b, _ := os.ReadFile(filepath.Join(m.dir, "server.out"))
			m.t.Fatalf("private minio exited while starting:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatal(fmt.Errorf("private minio not healthy on %s after 60s", m.Endpoint))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL; the objects it stored stay for the
// next Start.
func (m *PrivateMinIO) Kill() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	killGroup(m.cmd)
	<-m.done
}
