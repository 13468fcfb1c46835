// Package filesdtest runs the cloud's file API for sc-local's tests: it
// builds cloud-server/internal/files/filesd once per test binary and starts
// it on a PostgreSQL database and a MinIO bucket of the test's own.
// local-server cannot import cloud-server's packages, so the clinic's tests
// talk to the real cloud code over HTTP, as in production. Only tests
// import this package.
package filesdtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	bin       string
	buildErr  error
)

// build builds filesd once per test binary (Remove deletes it).
func build(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			buildErr = fmt.Errorf("filesdtest: no source path")
			return
		}
		root := filepath.Join(filepath.Dir(file), "..", "..", "..", "cloud-server")
		if binDir, buildErr = os.MkdirTemp("", "filesd"); buildErr != nil {
			return
		}
		bin = filepath.Join(binDir, "filesd")
		cmd := exec.CommandContext(context.Background(), "go", "build", "-o", bin, "./internal/files/filesd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build filesd in %s: %w\n%s", root, err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("the cloud file API for these tests: %v", buildErr)
	}
	return bin
}

// Remove deletes the built binary; call it from TestMain after m.Run.
func Remove() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// Options of a filesd; zero values take the defaults.
type Options struct {
	PartSize, Threshold int64         // 8 MiB each
	URLExpiry           time.Duration // 5 minutes
	// Clinics are the clinics filesd knows besides Clinic, with their
	// tokens (8+ characters).
	Clinics map[ids.ID]string
}

// Server is a running filesd. Token authenticates Clinic.
type Server struct {
	URL    string
	Clinic ids.ID
	Token  string
	stderr *lockedWriter
}

// Log is what filesd wrote to its standard error so far.
func (s *Server) Log() string { return s.stderr.String() }

// Start starts a filesd for clinic, with a database and a bucket of its
// own, stopped (and its bucket dropped) when the test ends. Without MinIO
// the test fails under CI=true and skips otherwise.
func Start(t testing.TB, clinic ids.ID, o Options) *Server {
	t.Helper()
	endpoint := testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
	host := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	conn, err := (&net.Dialer{Timeout: 3 * time.Second}).DialContext(context.Background(), "tcp", host)
	if err != nil {
		testenv.Unavailable(t, "minio", err)
	}
	_ = conn.Close()
	pg := testenv.PostgresDB(t)
	bin := build(t)
	if o.PartSize == 0 {
		o.PartSize = 8 * filekey.MiB
	}
	if o.Threshold == 0 {
		o.Threshold = 8 * filekey.MiB
	}
	if o.URLExpiry == 0 {
		o.URLExpiry = 5 * time.Minute
	}
	token := "clinic-token-" + testenv.Name("t")
	bucket := strings.ReplaceAll(testenv.Name("scsync-transfer"), "_", "-")
	args := []string{"-postgres", pg, "-s3-endpoint", endpoint, "-bucket", bucket, "-ephemeral",
		"-clinic", clinic.String() + "=" + token, "-part-size", strconv.FormatInt(o.PartSize, 10),
		"-multipart-threshold", strconv.FormatInt(o.Threshold, 10), "-url-expiry", o.URLExpiry.String()}
	for c, tok := range o.Clinics {
		args = append(args, "-clinic", c.String()+"="+tok)
	}
	cmd := exec.CommandContext(context.Background(), bin, args...)
	cmd.Env = append(os.Environ(),
		"FILESD_S3_ACCESS_KEY="+testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		"FILESD_S3_SECRET_KEY="+testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"))
	stderr := &lockedWriter{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait() // it exits on the signal; its status is not the test's concern
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("filesd log:\n%s", stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if u, ok := strings.CutPrefix(s.Text(), "filesd listening on "); ok {
				line <- u
			}
		}
	}()
	select {
	case u := <-line:
		return &Server{URL: u, Clinic: clinic, Token: token, stderr: stderr}
	case <-time.After(30 * time.Second):
		t.Fatalf("filesd did not start; log:\n%s", stderr.String())
	}
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
