package transfer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/local-server/internal/filesdtest"
	"github.com/scsync/scsync/local-server/internal/schema"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
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
	filesdtest.Remove()
	os.Exit(code)
}

// --- the cloud: cloud-server's file API, run as a process (filesd) ---

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
	s := filesdtest.Start(t, testClinic, filesdtest.Options{PartSize: o.partSize, Threshold: o.threshold, URLExpiry: o.urlExpiry})
	return &cloud{URL: s.URL, Clinic: s.Clinic, Token: s.Token, Client: NewClient(s.URL, s.Token, s.Clinic, nil)}
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
