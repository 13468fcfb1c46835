package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"gopkg.in/yaml.v3"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// The mixed-version test (issue 18 #4): the previous release's binaries,
// built from the commit named in compat/previous, run beside this tree's
// against the real services — (a) a previous-release sc-local against the
// current cloud, (b) a cloud of previous-release and current sc-cloud nodes
// on one database and broker during a rolling upgrade. Records, edits under
// locks and files replicate both ways, nothing is dead-lettered, and every
// clinic ends equal to the cloud (digests and verify).

var (
	prevOnce    sync.Once
	prevDir     string
	prevErr     error
	prevMissing bool // the commit is not in this clone (shallow)
)

// previousBinaries returns the previous release's sc-cloud, sc-local and
// lockd, built once (cached across runs under the user's cache directory).
func previousBinaries(t *testing.T) (cloud, local, lockd string) {
	t.Helper()
	prevOnce.Do(func() {
		began := time.Now()
		prevDir, prevMissing, prevErr = buildPrevious()
		if prevErr == nil {
			t.Logf("previous release's binaries in %s (%s)", prevDir, time.Since(began).Round(time.Millisecond))
		}
	})
	if prevErr != nil {
		if prevMissing && !testenv.InCI() {
			t.Skip(prevErr)
		}
		t.Fatal(prevErr)
	}
	return filepath.Join(prevDir, "sc-cloud"), filepath.Join(prevDir, "sc-local"), filepath.Join(prevDir, "lockd")
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// previousCommit reads compat/previous under the repository root: its one
// line that is not a comment, a full commit id.
func previousCommit(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "compat", "previous"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !commitRE.MatchString(line) {
			return "", fmt.Errorf("compat/previous: %q is not a full 40-hex commit id", line)
		}
		return line, nil
	}
	return "", errors.New("compat/previous names no commit")
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// buildPrevious builds the previous release's binaries from a detached git
// worktree of its commit into <cache>/scsync/compat/<commit>/, unless a
// former run already did. missing reports that the commit is not in this
// clone.
func buildPrevious() (dir string, missing bool, err error) {
	root, err := git(".", "rev-parse", "--show-toplevel")
	if err != nil {
		return "", true, fmt.Errorf("the mixed-version test builds the previous release from git history, and this is no git checkout: %w", err)
	}
	commit, err := previousCommit(root)
	if err != nil {
		return "", false, err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir = filepath.Join(cache, "scsync", "compat", commit)
	have := true
	for _, b := range []string{"sc-cloud", "sc-local", "lockd"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || !st.Mode().IsRegular() {
			have = false
		}
	}
	if have {
		return dir, false, nil
	}
	if _, err := git(root, "cat-file", "-e", commit+"^{commit}"); err != nil {
		return "", true, fmt.Errorf("compat/previous names commit %s, which this clone does not have (a shallow clone?): "+
			"fetch the history (`git fetch --unshallow`, or CI checkout with fetch-depth: 0) to run the mixed-version test", commit)
	}
	tmp, err := os.MkdirTemp("", "scsync-previous-")
	if err != nil {
		return "", false, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	src := filepath.Join(tmp, "src")
	if _, err := git(root, "worktree", "add", "--detach", src, commit); err != nil {
		return "", false, err
	}
	defer func() {
		if _, rerr := git(root, "worktree", "remove", "--force", src); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", false, err
	}
	staging, err := os.MkdirTemp(filepath.Dir(dir), commit+".building-")
	if err != nil {
		return "", false, err
	}
	defer func() { _ = os.RemoveAll(staging) }() // left only on failure: renamed into place otherwise
	// The tree builds as it did at that commit: in its own workspace when it
	// has one, each module on its own (with its go.sum) otherwise.
	env := append(os.Environ(), "GOWORK=off", strings.TrimSpace("GOFLAGS="+os.Getenv("GOFLAGS")+" -mod=mod"))
	if _, err := os.Stat(filepath.Join(src, "go.work")); err == nil {
		env = append(os.Environ(), "GOWORK="+filepath.Join(src, "go.work"))
	}
	buildMu.Lock() // one build at a time: the dependencies it shares with this tree's come from the cache (harness_test.go)
	defer buildMu.Unlock()
	for _, b := range []struct{ dir, pkg, out string }{
		{"cloud-server", "./cmd/sc-cloud", "sc-cloud"},
		{"local-server", "./cmd/sc-local", "sc-local"},
		{"lockd", "./cmd/lockd", "lockd"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(staging, b.out), b.pkg)
		cmd.Dir = filepath.Join(src, b.dir)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", false, fmt.Errorf("build the previous release's %s (commit %s): %w\n%s", b.out, commit, err, out)
		}
	}
	if err := os.Rename(staging, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "lockd")); serr != nil { // not a concurrent run's build
			return "", false, err
		}
	}
	return dir, false, nil
}

// newLockedStack is a stack whose cloud takes edit locks from one lockd (the
// binary at lockdBin) on the shared Redis; it returns lockd's URL, which the
// cloud also hands clinics at enrollment.
func newLockedStack(t *testing.T, o stackOpts, lockdBin string) (*stack, string) {
	t.Helper()
	svc := "svc-" + testenv.Name("token")
	addr := freeAddr(t)
	lockURL := "http://" + addr
	o.cloudEnv = append(o.cloudEnv, "SC_CLOUD_LOCKD_URL="+lockURL, "SC_CLOUD_LOCKD_TOKEN="+svc)
	s := newStackWith(t, o)
	startLockdFrom(t, lockdBin, []string{addr}, testenv.RedisAddr(), svc, nil)
	return s, lockURL
}

// startEnrolled enrolls a clinic server as clinic IT does — bin's `enroll`
// command with a one-time token from the cloud at cloudBase, which writes the
// clinic's identity, broker login and lockd token into its config — and runs
// that sc-local from the config.
func (s *stack) startEnrolled(t *testing.T, bin, name, cloudBase string) *clinic {
	t.Helper()
	var en struct{ Token string }
	if code := call(t, "POST", cloudBase+"/v1/admin/enrollments", s.adminToken, map[string]string{"name": name}, &en); code != 201 {
		t.Fatalf("create enrollment: %d", code)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sc-local.yaml")
	if out, err := runLocal(t, bin, nil, "-config", cfg, "enroll", "-cloud", cloudBase, "-token", en.Token); err != nil {
		t.Fatalf("enroll %s with %s: %v\n%s", name, bin, err, out)
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Clinic struct {
			ID string `yaml:"id"`
		} `yaml:"clinic"`
		Cloud struct {
			Token string `yaml:"token"`
		} `yaml:"cloud"`
	}
	if err := yaml.Unmarshal(b, &conf); err != nil || conf.Clinic.ID == "" || conf.Cloud.Token == "" {
		t.Fatalf("config after enroll (%v):\n%s", err, b)
	}
	c := &clinic{ID: conf.Clinic.ID, Token: conf.Cloud.Token, person: s.adminToken}
	addr := freeAddr(t)
	c.base = "http://" + addr
	c.proc = start(t, "sc-local-enrolled-"+c.ID, bin, []string{
		"SC_LOCAL_LISTEN=" + addr,
		"SC_LOCAL_DATA_DIR=" + filepath.Join(dir, "data"),
		"SC_LOCAL_CLOUD_PULL_EVERY=2s",
		"SC_LOCAL_LOG_LEVEL=debug",
		"SC_LOCAL_FILES_IMPORT_DIRS=" + os.TempDir(),
	}, "-config", cfg)
	waitReady(t, c.proc, c.base)
	return c
}

// upgradeNode replaces cloud node i in place — same address, database,
// broker and bucket — with the sc-cloud at bin, as a rolling upgrade does.
func (s *stack) upgradeNode(t *testing.T, i int, bin string) {
	t.Helper()
	upgrade(t, s.nodes[i], bin, s.cloud[i])
	t.Logf("cloud node %d upgraded to %s", i+1, bin)
}

// upgrade stops p and starts the binary at bin in its place, with the same
// arguments and environment (its data, its address), and waits until it
// answers at base.
func upgrade(t *testing.T, p *proc, bin, base string) {
	t.Helper()
	p.stop(t)
	p.bin = bin
	p.restart(t)
	waitReady(t, p, base)
}

// recordsBothWays: the clinic makes a record of every kind and changes some,
// and so does the cloud through each of the nodes at clouds in turn.
func recordsBothWays(t *testing.T, c *clinic, clouds []string, seed uint64) {
	t.Helper()
	sides := []side{localSide(c)}
	for _, base := range clouds {
		sides = append(sides, cloudSide(base, c))
	}
	for i, sd := range sides {
		w := newWorkload(t, sd, seed*100+uint64(i))
		w.seedAll()
		for range 8 {
			w.step()
		}
	}
}

// lockedEdits: the clinic edits a patient under its lock while the cloud
// (at cloud) is refused the lock; then the cloud edits it under the lock
// while the clinic is refused; each edit reaches the other side.
func lockedEdits(t *testing.T, c *clinic, cloud side) {
	t.Helper()
	var p patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Before the edits"}), &p); code != 201 {
		t.Fatalf("create: %d", code)
	}
	waitName(t, cloud, p.ID, "Before the edits")
	clinicSide := localSide(c)
	editUnderLock(t, clinicSide, cloud, p.ID, "Edited on the clinic")
	waitName(t, cloud, p.ID, "Edited on the clinic")
	editUnderLock(t, cloud, clinicSide, p.ID, "Edited in the cloud")
	waitName(t, clinicSide, p.ID, "Edited in the cloud")
}

// editUnderLock opens an edit session on sd (a fenced one: lockd granted the
// lock), checks that other cannot open one meanwhile, saves name and closes.
func editUnderLock(t *testing.T, sd, other side, id, name string) {
	t.Helper()
	url := sd.prefix + "patients/" + id
	var si sessionInfo
	if code := call(t, "POST", url+"/edit", sd.token, map[string]string{"client": sd.name + "-ws", "user": "dr.kim"}, &si); code != 200 || si.Unfenced || si.Fence == 0 {
		t.Fatalf("%s: edit = %d %+v, want a fenced session", sd.name, code, si)
	}
	var e apiError
	if code := call(t, "POST", other.prefix+"patients/"+id+"/edit", other.token, map[string]string{"client": other.name + "-ws", "user": "dr.lee"}, &e); code != 409 {
		t.Fatalf("%s: edit while %s holds the lock = %d %+v, want 409", other.name, sd.name, code, e)
	}
	if code := call(t, "POST", url+"/save", sd.token, map[string]any{"session": si.Session, "data": map[string]string{"name": name}}, &e); code != 200 {
		t.Fatalf("%s: save under the lock = %d %+v", sd.name, code, e)
	}
	if code := call(t, "POST", url+"/close", sd.token, map[string]string{"session": si.Session}, nil); code != 200 {
		t.Fatalf("%s: close = %d", sd.name, code)
	}
}

func waitName(t *testing.T, sd side, id, name string) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var p patient
		if code := call(t, "GET", sd.prefix+"patients/"+id, sd.token, nil, &p); code != 200 || p.Data.Name != name {
			return fmt.Errorf("%s: patient %s = %d %q, want %q", sd.name, id, code, p.Data.Name, name)
		}
		return nil
	})
}

// filesBothWays: a file imported on the clinic for a clinic-made image is
// present in the cloud, and one a cloud client uploads (presigned PUT) for a
// cloud-made image reaches the clinic.
func filesBothWays(t *testing.T, c *clinic, cloud side, seed uint64) {
	t.Helper()
	w := newWorkload(t, localSide(c), seed)
	w.mu.Lock()
	w.create(wire.KindPatient)
	w.create(wire.KindStudy)
	w.mu.Unlock()
	refs := map[wire.Kind]ids.ID{wire.KindStudy: w.live[wire.KindStudy][0]}
	var image record
	if code := call(t, "POST", c.base+"/v1/images", "", map[string]any{"data": records.Sample(wire.KindImage, int(seed), refs)}, &image); code != 201 {
		t.Fatalf("create image: %d", code)
	}
	path, upSum := randomFile(t, t.TempDir(), 256<<10)
	if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": path, "image_id": image.ID, "content_type": "application/dicom"}, nil); code != 202 {
		t.Fatalf("import: %d", code)
	}
	// The cloud's photo belongs to the clinic's study: wait for it there.
	studies, _ := records.SpecOf(wire.KindStudy)
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		if code := call(t, "GET", fmt.Sprintf("%s%s/%s", cloud.prefix, studies.Table, refs[wire.KindStudy]), cloud.token, nil, nil); code != 200 {
			return fmt.Errorf("the clinic's study in the cloud: %d", code)
		}
		return nil
	})

	data := make([]byte, 128<<10)
	_, _ = rand.Read(data)
	h := sha256.Sum256(data)
	downSum := hex.EncodeToString(h[:])
	var begin filekey.BeginResponse
	if code := call(t, "POST", cloud.prefix+"files/"+downSum+"/upload", c.Token, filekey.BeginRequest{Size: int64(len(data)), ContentType: "image/jpeg"}, &begin); code != 200 || begin.Put == nil {
		t.Fatalf("cloud begin upload: %d %+v", code, begin)
	}
	req, _ := http.NewRequestWithContext(context.Background(), begin.Put.Method, begin.Put.URL, bytes.NewReader(data))
	begin.Put.Request(req.Header)
	req.ContentLength = int64(len(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("presigned PUT: %d %s", resp.StatusCode, body)
	}
	if code := call(t, "POST", cloud.prefix+"files/"+downSum+"/upload/complete", c.Token, nil, nil); code != 200 {
		t.Fatalf("complete upload: %d", code)
	}
	photo := records.Sample(wire.KindImage, int(seed)+1, refs).(records.Image)
	photo.Modality, photo.SHA256, photo.Size, photo.ContentType = "PHOTO", downSum, int64(len(data)), "image/jpeg"
	if code := call(t, "POST", cloud.prefix+"images", c.person, map[string]any{"data": photo}, nil); code != 201 {
		t.Fatalf("cloud image: %d", code)
	}

	testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		var f struct{ State string }
		if code := call(t, "GET", cloud.prefix+"files/"+upSum, c.Token, nil, &f); code != 200 || f.State != "present" {
			return fmt.Errorf("clinic's file in the cloud: %d %+v", code, f)
		}
		var l struct{ Items []transferRow }
		call(t, "GET", c.base+"/v1/files?sha256="+downSum, "", nil, &l)
		if len(l.Items) != 1 || l.Items[0].State != "present" || l.Items[0].Direction != "down" {
			return fmt.Errorf("cloud's file on the clinic: %+v", l.Items)
		}
		return nil
	})
}

// settled: each clinic holds what the cloud holds, read through every node,
// with no conflicts; verify finds them equal; no message was dead-lettered.
func settled(t *testing.T, s *stack, clinics ...*clinic) {
	t.Helper()
	for _, c := range clinics {
		for _, base := range s.cloud {
			converged(t, c, cloudSide(base, c), 2*time.Minute)
		}
		var st localStatus
		call(t, "GET", c.base+"/v1/status", "", nil, &st)
		if st.Conflict != 0 {
			t.Errorf("clinic %s: %d records in conflict, want none", c.ID, st.Conflict)
		}
		if r := runVerify(t, c, false); !r.Equal || len(r.Differences) != 0 {
			t.Errorf("clinic %s: verify = %+v, want equal", c.ID, r)
		}
	}
	noDeadLetters(t, s)
	t.Logf("%d clinics settled: equal to the cloud through %d nodes, nothing dead-lettered", len(clinics), len(s.cloud))
}

// noDeadLetters fails the test with the reasons of every message in the
// dead-letter queue (read as the operator, left in place).
func noDeadLetters(t *testing.T, s *stack) {
	t.Helper()
	conn, err := amqp.Dial(s.amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(wire.DeadQueue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("dead-letter queue %s: %v", wire.DeadQueue, err)
	}
	if q.Messages == 0 {
		return
	}
	var reasons []string
	for range q.Messages {
		d, ok, err := ch.Get(wire.DeadQueue, false)
		if err != nil || !ok {
			break
		}
		r, _ := d.Headers["x-scsync-dead-reason"].(string)
		from, _ := d.Headers["x-scsync-dead-queue"].(string)
		reasons = append(reasons, fmt.Sprintf("%s (from %s): %s", r, from, d.Body))
	}
	t.Errorf("%d messages dead-lettered:\n%s", q.Messages, strings.Join(reasons, "\n"))
}

// TestMixedVersionOldClinic (issue 18 #4a): a clinic server of the previous
// release, enrolled by its own `enroll` command, against the current cloud
// and lockd; then the same clinic upgraded in place to the current sc-local.
func TestMixedVersionOldClinic(t *testing.T) {
	parallel(t)
	_, oldLocal, _ := previousBinaries(t)
	_, _, lockdBin := allBinaries(t)
	s, _ := newLockedStack(t, stackOpts{cloudNodes: 1}, lockdBin)
	c := s.startEnrolled(t, oldLocal, "Previous Release Dental", s.cloud[0])
	cloud := cloudSide(s.cloud[0], c)
	t.Log("previous-release clinic enrolled and running")

	recordsBothWays(t, c, s.cloud, 1)
	lockedEdits(t, c, cloud)
	filesBothWays(t, c, cloud, 2)
	settled(t, s, c)

	// The clinic upgrades in place: the current sc-local on the previous
	// release's data directory and config carries on.
	upgrade(t, c.proc, s.localBin, c.base)
	t.Log("clinic upgraded to the current sc-local")
	recordsBothWays(t, c, s.cloud, 3)
	lockedEdits(t, c, cloud)
	settled(t, s, c)
}

// TestMixedVersionRollingCloud (issue 18 #4b): a cloud of two previous-release
// nodes is upgraded one node at a time on its database and broker, with a
// current clinic server and a previous-release one attached (each to its own
// node) and the previous release's lockd. Between the two steps, one old
// and one new node serve together; records, locked edits and files go both
// ways through both.
func TestMixedVersionRollingCloud(t *testing.T) {
	parallel(t)
	oldCloud, oldLocal, oldLockd := previousBinaries(t)
	newCloud, _ := binaries(t)
	s, lockURL := newLockedStack(t, stackOpts{cloudNodes: 2, cloudBin: oldCloud}, oldLockd)

	current := s.enroll(t, "Current Release Dental")
	s.localEnv = []string{"SC_LOCAL_LOCKD_URL=" + lockURL, "SC_LOCAL_LOCKD_TOKEN=" + current.Lockd.Token}
	s.startLocalVia(t, current, t.TempDir(), s.amqpURL, s.cloud[0])
	previous := s.startEnrolled(t, oldLocal, "Previous Release Dental", s.cloud[1])
	clinics := []*clinic{current, previous}
	t.Log("two previous-release cloud nodes, a current and a previous-release clinic running")

	// Both nodes of the previous release: data written by it.
	for i, c := range clinics {
		recordsBothWays(t, c, s.cloud[:1], uint64(10+i))
	}
	for _, c := range clinics {
		converged(t, c, cloudSide(s.cloud[0], c), 2*time.Minute)
	}
	// The current clinic verifies through a previous-release node, which
	// refuses the summary request: it falls back to sending its hashes.
	if r := runVerify(t, current, false); !r.Equal || r.Records == 0 || r.CloudCount != r.Records {
		t.Errorf("current clinic's verify through a previous-release node = %+v, want equal over its records", r)
	}

	// Node 1 upgraded: a previous-release and a current node side by side.
	s.upgradeNode(t, 0, newCloud)
	for i, c := range clinics {
		recordsBothWays(t, c, s.cloud, uint64(20+i))
		for _, base := range s.cloud {
			lockedEdits(t, c, cloudSide(base, c))
		}
		filesBothWays(t, c, cloudSide(s.cloud[i], c), uint64(30+i))
	}
	settled(t, s, clinics...)

	// Node 2 upgraded: the cloud is all current.
	s.upgradeNode(t, 1, newCloud)
	for i, c := range clinics {
		recordsBothWays(t, c, s.cloud, uint64(40+i))
		lockedEdits(t, c, cloudSide(s.cloud[1], c))
	}
	settled(t, s, clinics...)
}
