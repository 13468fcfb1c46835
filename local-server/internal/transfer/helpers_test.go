package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/local-server/internal/schema"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

// childEnv makes the test binary run childMain instead of the tests: the
// crash and memory tests upload from a child process they can kill or
// measure.
const childEnv = "SCSYNC_TRANSFER_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	code := m.Run()
	if filesdDir != "" {
		_ = os.RemoveAll(filesdDir)
	}
	os.Exit(code)
}

// --- the cloud: cloud-server's file API, run as a process (filesd) ---

var (
	filesdOnce sync.Once
	filesdBin  string
	filesdDir  string
	filesdErr  error
)

// buildFilesd builds cloud-server/internal/files/filesd once per test run.
// local-server cannot import cloud-server's internal packages, so the
// clinic's tests talk to the real cloud code over HTTP, as in production.
func buildFilesd(t *testing.T) string {
	t.Helper()
	filesdOnce.Do(func() {
		root, err := filepath.Abs("../../../cloud-server")
		if err != nil {
			filesdErr = err
			return
		}
		if filesdDir, filesdErr = os.MkdirTemp("", "filesd"); filesdErr != nil {
			return
		}
		filesdBin = filepath.Join(filesdDir, "filesd")
		cmd := exec.Command("go", "build", "-o", filesdBin, "./internal/files/filesd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			filesdErr = fmt.Errorf("go build filesd in %s: %w\n%s", root, err, out)
		}
	})
	if filesdErr != nil {
		t.Fatalf("the cloud file API for these tests: %v", filesdErr)
	}
	return filesdBin
}

// cloud is a running filesd with a database and a bucket of its own.
type cloud struct {
	URL    string
	Clinic ids.ID
	Token  string
	Client *Client
}

type cloudOpts struct {
	partSize, threshold int64
	urlExpiry           time.Duration
}

const testClinic = ids.ID(4242)

func startCloud(t *testing.T, o cloudOpts) *cloud {
	t.Helper()
	endpoint := testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
	host := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	conn, err := net.DialTimeout("tcp", host, 3*time.Second)
	if err != nil {
		testenv.Unavailable(t, "minio", err)
	}
	_ = conn.Close()
	pg := testenv.PostgresDB(t)
	bin := buildFilesd(t)
	if o.partSize == 0 {
		o.partSize = 8 * filekey.MiB
	}
	if o.threshold == 0 {
		o.threshold = 8 * filekey.MiB
	}
	if o.urlExpiry == 0 {
		o.urlExpiry = 5 * time.Minute
	}
	token := "clinic-token-" + testenv.Name("t")
	bucket := strings.ReplaceAll(testenv.Name("scsync-transfer"), "_", "-")
	cmd := exec.Command(bin, "-postgres", pg, "-s3-endpoint", endpoint, "-bucket", bucket, "-ephemeral",
		"-clinic", testClinic.String()+"="+token, "-part-size", strconv.FormatInt(o.partSize, 10),
		"-multipart-threshold", strconv.FormatInt(o.threshold, 10), "-url-expiry", o.urlExpiry.String())
	cmd.Env = append(os.Environ(),
		"FILESD_S3_ACCESS_KEY="+testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		"FILESD_S3_SECRET_KEY="+testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"))
	var stderr bytes.Buffer
	cmd.Stderr = &lockedWriter{w: &stderr}
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
			t.Logf("filesd log:\n%s", cmd.Stderr.(*lockedWriter).String())
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
		return &cloud{URL: u, Clinic: testClinic, Token: token, Client: NewClient(u, token, testClinic, nil)}
	case <-time.After(30 * time.Second):
		t.Fatalf("filesd did not start; log:\n%s", cmd.Stderr.(*lockedWriter).String())
	}
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// relayed is filesd's count of API body bytes (files.Relayed).
type relayed struct {
	RequestBytes, ResponseBytes, VerifyRead int64
}

func (c *cloud) relayed(t *testing.T) relayed {
	t.Helper()
	resp, err := http.Get(c.URL + "/debug/relayed")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r relayed
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// --- the clinic ---

// openDB opens (creating) the SQLite database at path like sc-local does.
func openDB(t testing.TB, path string) *gorm.DB {
	t.Helper()
	db, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return db
}

func openSQLite(path string) (*gorm.DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)"
	db, err := gorm.Open(sqlite.Open(dsn), &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true,
		NowFunc: func() time.Time { return time.Now().UTC() }})
	if err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxOpenConns(1)
	return db, schema.Migrate(context.Background(), sqlDB)
}

// makeFile writes a file of size bytes that no other test writes (each MiB
// is a random block stamped with its index) and returns its path and
// SHA-256. It is fast enough for a GiB even under -race.
func makeFile(t testing.TB, dir string, size int64) (string, string) {
	t.Helper()
	block := make([]byte, filekey.MiB)
	if _, err := rand.Read(block); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, hex.EncodeToString(block[:6])+".img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	out := io.MultiWriter(f, h)
	for i := int64(0); i*filekey.MiB < size; i++ {
		binary.BigEndian.PutUint64(block, uint64(i))
		n := min(filekey.MiB, size-i*filekey.MiB)
		if _, err := out.Write(block[:n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, hex.EncodeToString(h.Sum(nil))
}

// --- the child process ---

// childResult is what the child prints as its last line.
type childResult struct {
	Err       string `json:"err,omitempty"`
	PartsSent int64  `json:"parts_sent"`
	VmHWMKiB  int64  `json:"vmhwm_kib"`
	Seconds   float64
}

// runChild runs the test binary as an uploading child with env.
func runChild(t *testing.T, env map[string]string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=upload")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// childMain uploads one file with the settings in the environment and
// prints a childResult.
func childMain() int {
	start := time.Now()
	res := childResult{}
	err := func() error {
		db, err := openSQLite(os.Getenv("CHILD_DB"))
		if err != nil {
			return err
		}
		clinic, err := ids.Parse(os.Getenv("CHILD_CLINIC"))
		if err != nil {
			return err
		}
		bps, _ := strconv.ParseInt(os.Getenv("CHILD_BPS"), 10, 64)
		size, _ := strconv.ParseInt(os.Getenv("CHILD_SIZE"), 10, 64)
		w := New(db, NewClient(os.Getenv("CHILD_URL"), os.Getenv("CHILD_TOKEN"), clinic, nil),
			Options{BytesPerSecond: bps, PartConcurrency: 2, RetryBase: 100 * time.Millisecond}, nil)
		ctx := context.Background()
		tr, err := w.EnqueueUpload(ctx, Upload{Path: os.Getenv("CHILD_FILE"), SHA256: os.Getenv("CHILD_SHA"), Size: size})
		if err != nil {
			return err
		}
		err = w.Process(ctx, tr.ID)
		res.PartsSent = w.PartsSent()
		return err
	}()
	if err != nil {
		res.Err = err.Error()
	}
	res.VmHWMKiB = vmHWM()
	res.Seconds = time.Since(start).Seconds()
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if err != nil {
		return 1
	}
	return 0
}

// vmHWM is the process's peak resident set size in KiB (Linux), or -1.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// parseChild reads the childResult from the child's output.
func parseChild(t *testing.T, out []byte) childResult {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r childResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	return r
}
