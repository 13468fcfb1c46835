package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/testenv"
)

// auditLine is what a test asserts of an audit entry: who, what, outcome.
type auditLine struct {
	Actor, Action, Kind, Target string
	Outcome                     int
}

func (l auditLine) String() string {
	return fmt.Sprintf("%s %s %s/%s %d", l.Actor, l.Action, l.Kind, l.Target, l.Outcome)
}

func auditLines(es []audit.Entry) []auditLine {
	out := make([]auditLine, 0, len(es))
	for _, e := range es {
		out = append(out, auditLine{e.Actor, e.Action, e.Kind, e.Target, e.Outcome})
	}
	return out
}

// sameLines fails the test when have is not exactly want, showing both.
func sameLines(t *testing.T, what string, have []audit.Entry, want []auditLine) {
	t.Helper()
	got := auditLines(have)
	if slices.Equal(got, want) {
		return
	}
	var b strings.Builder
	for i := range max(len(got), len(want)) {
		g, w := "-", "-"
		if i < len(got) {
			g = got[i].String()
		}
		if i < len(want) {
			w = want[i].String()
		}
		mark := "  "
		if g != w {
			mark = "≠ "
		}
		fmt.Fprintf(&b, "%s%2d  have %-70s want %s\n", mark, i+1, g, w)
	}
	t.Fatalf("%s:\n%s", what, b.String())
}

// localCLI runs an sc-local command with the clinic server's own
// environment (its config, the API token), plus env.
func localCLI(s *stack, c *clinic, env []string, args ...string) (string, error) {
	cmd := exec.Command(s.localBin, args...)
	cmd.Env = append(append(os.Environ(), c.proc.env...), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// jsonLines decodes a stream of audit entries, one JSON object a line.
func jsonLines(t *testing.T, b []byte) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// cloudExport is the cloud's JSON-lines export of a clinic's chain (side
// local: the clinic's own, as replicated; cloud: what was done in the
// cloud).
func cloudExport(t *testing.T, s *stack, c *clinic, side string) []audit.Entry {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet,
		s.cloud[0]+"/v1/admin/audit/export?clinic="+c.ID+"&side="+side, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		t.Fatalf("audit export: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return jsonLines(t, b)
}

// sameChain checks the cloud's copy holds exactly the clinic's entries,
// hashes and all.
func sameChain(local, cloud []audit.Entry) error {
	if len(cloud) != len(local) {
		return fmt.Errorf("the cloud holds %d of the clinic's %d entries", len(cloud), len(local))
	}
	for i := range local {
		if cloud[i] != local[i] {
			return fmt.Errorf("entry %d differs: clinic %+v, cloud %+v", local[i].Seq, local[i], cloud[i])
		}
	}
	return nil
}

// TestAuditSessionBothSides (issue 15): a clinic day told by the audit
// trail on both sides. The first admin is made at the machine's console
// (`sc-local users add`); the person logs in (a wrong password first),
// creates, lists, reads, edits and saves, deletes, un-syncs and re-syncs
// a patient and takes a backup on the clinic; logs in to the cloud with the
// same account, reads there and downloads the backup. The clinic's chain
// (`sc-local audit -json`) holds exactly those entries with the person's id,
// and reaches the cloud unchanged (the export, JSON lines); the cloud's own
// chain holds what was done there. The machine dies: `sc-local restore`
// onto a fresh data directory brings the chain back, including the entry
// made after the snapshot, and records the restore; the person's old
// session does not come back to life. Then an entry changed in SQLite is
// found by `sc-local audit -verify` and the API, and an entry removed from
// PostgreSQL by the cloud's verification.
func TestAuditSessionBothSides(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	// No scheduled backups or verifications: every entry comes from the
	// script.
	s.localEnv = []string{"SC_LOCAL_BACKUP_EVERY=0", "SC_LOCAL_VERIFY_EVERY=0"}
	c := s.enroll(t, "Audit Trail Dental")
	dir := t.TempDir()
	s.startLocal(t, c, dir)
	cloud := cloudSide(s.cloud[0], c)
	const pw = "pw-dr.kim-long-enough"

	// The first admin, made at the console with the machine's API token.
	out, err := localCLI(s, c, []string{"SC_LOCAL_PASSWORD=" + pw}, "users", "add", "-username", "dr.kim", "-role", "admin", "-name", "Dr Kim")
	m := regexp.MustCompile(`created with id (\d+)`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("sc-local users add: %v\n%s", err, out)
	}
	kim := m[1]

	if code := call(t, "POST", c.base+"/v1/login", "-", map[string]string{"username": "dr.kim", "password": "not-the-password"}, nil); code != 401 {
		t.Fatalf("login with a wrong password: %d, want 401", code)
	}
	var sess struct {
		Token string `json:"token"`
	}
	if code := call(t, "POST", c.base+"/v1/login", "-", map[string]string{"username": "dr.kim", "password": pw}, &sess); code != 200 {
		t.Fatalf("login: %d", code)
	}
	tok := sess.Token
	var p, q patient
	if code := call(t, "POST", c.base+"/v1/patients", tok, save("", map[string]string{"name": "Audit Kept"}), &p); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if code := call(t, "POST", c.base+"/v1/patients", tok, save("", map[string]string{"name": "Audit Gone"}), &q); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if code := call(t, "GET", c.base+"/v1/patients", tok, nil, nil); code != 200 {
		t.Fatalf("list: %d", code)
	}
	if code := call(t, "GET", c.base+"/v1/patients/"+p.ID, tok, nil, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	var edit struct {
		Session string `json:"session"`
		User    string `json:"user"`
	}
	if code := call(t, "POST", c.base+"/v1/patients/"+p.ID+"/edit", tok, map[string]any{"client": "e2e", "user": "someone-else", "anyway": true}, &edit); code != 200 {
		t.Fatalf("edit: %d", code)
	}
	if edit.User != "dr.kim" {
		t.Errorf("edit session user = %q, want the logged-in person dr.kim", edit.User)
	}
	if code := call(t, "POST", c.base+"/v1/patients/"+p.ID+"/save", tok, map[string]any{"session": edit.Session, "data": map[string]string{"name": "Audit Kept II"}}, nil); code != 200 {
		t.Fatalf("save: %d", code)
	}
	if code := call(t, "POST", c.base+"/v1/patients/"+p.ID+"/close", tok, map[string]string{"session": edit.Session}, nil); code != 200 {
		t.Fatalf("close: %d", code)
	}
	if code := call(t, "DELETE", c.base+"/v1/patients/"+q.ID, tok, nil, nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code := call(t, "POST", c.base+"/v1/patients/"+p.ID+"/unsync", tok, nil, nil); code != 200 {
		t.Fatalf("unsync: %d", code)
	}
	if code := call(t, "PUT", c.base+"/v1/patients/"+p.ID+"/sync", tok, map[string]string{"choice": ""}, nil); code != 200 {
		t.Fatalf("re-sync: %d", code)
	}
	var bk struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if code := call(t, "POST", c.base+"/v1/backup", tok, nil, &bk); code != 201 || bk.State != "complete" {
		t.Fatalf("backup: %d %+v", code, bk)
	}

	svc := "service"
	clinicDay := []auditLine{
		{svc, "user.create", "users", kim, 201},
		{kim, "login", "users", kim, 401},
		{kim, "login", "users", kim, 200},
		{kim, "create", "patients", p.ID, 201},
		{kim, "create", "patients", q.ID, 201},
		{kim, "list", "patients", "", 200},
		{kim, "read", "patients", p.ID, 200},
		{kim, "edit.open", "patients", p.ID, 200},
		{kim, "edit.save", "patients", p.ID, 200},
		{kim, "edit.close", "patients", p.ID, 200},
		{kim, "delete", "patients", q.ID, 200},
		{kim, "unsync", "patients", p.ID, 200},
		{kim, "sync.choice", "patients", p.ID, 200},
		{kim, "backup", "", bk.ID, 201},
	}
	clinicChain := func() []audit.Entry {
		t.Helper()
		out, err := localCLI(s, c, nil, "audit", "-json")
		if err != nil {
			t.Fatalf("sc-local audit -json: %v\n%s", err, out)
		}
		return jsonLines(t, []byte(out))
	}
	here := clinicChain()
	sameLines(t, "the clinic's audit chain after the day", here, clinicDay)
	for _, e := range here {
		if e.Remote == "" || e.At.IsZero() || e.Clinic.String() != c.ID {
			t.Errorf("entry %d lacks where, when or the clinic: %+v", e.Seq, e)
		}
		if e.Actor == kim && e.Username != "dr.kim" {
			t.Errorf("entry %d by %s names %q, want dr.kim", e.Seq, kim, e.Username)
		}
	}
	// The chain reaches the cloud unchanged.
	testenv.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		return sameChain(here, cloudExport(t, s, c, "local"))
	})

	// The same person in the cloud: the account replicated (same id).
	testenv.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		var us struct {
			Items []struct {
				ID       string `json:"id"`
				Username string `json:"username"`
			} `json:"items"`
		}
		call(t, "GET", cloud.prefix+"users", s.adminToken, nil, &us)
		for _, u := range us.Items {
			if u.Username == "dr.kim" && u.ID == kim {
				return nil
			}
		}
		return fmt.Errorf("the cloud has no dr.kim with id %s yet: %+v", kim, us.Items)
	})
	converged(t, c, cloud, 60*time.Second)
	var cloudSess struct {
		Token string `json:"token"`
	}
	if code := call(t, "POST", s.cloud[0]+"/v1/login", "-", map[string]string{"clinic": c.ID, "username": "dr.kim", "password": pw}, &cloudSess); code != 200 {
		t.Fatalf("cloud login: %d", code)
	}
	if code := call(t, "GET", cloud.prefix+"patients/"+p.ID, cloudSess.Token, nil, nil); code != 200 {
		t.Fatalf("cloud read: %d", code)
	}
	var dl struct {
		Get struct {
			URL string `json:"url"`
		} `json:"get"`
	}
	if code := call(t, "GET", cloud.prefix+"backups/latest/download", cloudSess.Token, nil, &dl); code != 200 || dl.Get.URL == "" {
		t.Fatalf("backup download by the person: %d %+v", code, dl)
	}

	// The machine dies; a replacement is restored onto a fresh data
	// directory with IT's copy of the recovery key.
	keyCopy := filepath.Join(t.TempDir(), "backup-identity.txt")
	if b, err := os.ReadFile(filepath.Join(dir, "backup-identity.txt")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(keyCopy, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.proc.kill9(t)
	fresh := t.TempDir()
	out, err = localCLI(s, c, []string{"SC_LOCAL_DATA_DIR=" + fresh}, "restore", "-identity", keyCopy)
	t.Logf("sc-local restore:\n%s", out)
	if err != nil || !strings.Contains(out, "restored backup "+bk.ID) {
		t.Fatalf("restore onto a fresh directory: %v", err)
	}
	// The backup's snapshot was taken before its own entry was written:
	// that entry comes back from the cloud, and the restore follows it.
	if want := fmt.Sprintf("up to entry %d; the restore is entry %d", len(clinicDay), len(clinicDay)+1); !strings.Contains(out, want) {
		t.Errorf("restore output lacks %q", want)
	}
	s.startLocal(t, c, fresh)
	if code := call(t, "GET", c.base+"/v1/patients", tok, nil, nil); code != 401 {
		t.Errorf("the old machine's session on the restored one: %d, want 401 (sessions end with the machine)", code)
	}
	if code := call(t, "POST", c.base+"/v1/login", "-", map[string]string{"username": "dr.kim", "password": pw}, &sess); code != 200 {
		t.Fatalf("login on the restored machine: %d", code)
	}
	if code := call(t, "GET", c.base+"/v1/patients/"+p.ID, sess.Token, nil, nil); code != 200 {
		t.Fatalf("read on the restored machine: %d", code)
	}
	afterRestore := append(slices.Clone(clinicDay),
		auditLine{svc, "backup.restore", "", bk.ID, 200},
		auditLine{"anonymous", "list", "", "", 401},
		auditLine{kim, "login", "users", kim, 200},
		auditLine{kim, "read", "patients", p.ID, 200},
	)
	restored := clinicChain()
	sameLines(t, "the restored clinic's audit chain", restored, afterRestore)
	for i := range here {
		if restored[i] != here[i] {
			t.Fatalf("entry %d changed across the restore: %+v, was %+v", here[i].Seq, restored[i], here[i])
		}
	}
	if out, err := localCLI(s, c, nil, "audit", "-verify"); err != nil || !strings.Contains(out, fmt.Sprintf("verified: %d entries", len(afterRestore))) {
		t.Fatalf("sc-local audit -verify after the restore: %v\n%s", err, out)
	}
	testenv.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		return sameChain(restored, cloudExport(t, s, c, "local"))
	})

	// The cloud's own chain: the machine's backup calls, and the person.
	machine := "machine:" + c.ID
	cloudDay := []auditLine{
		{machine, "backup.begin", "", "", 201},
		{machine, "backup.complete", "", bk.ID, 200},
		{kim, "login", "users", kim, 200},
		{kim, "read", "patients", p.ID, 200},
		{kim, "backup.download", "", "latest", 200},
		{machine, "backup.download", "", "latest", 200},
	}
	sameLines(t, "the cloud's audit chain of the clinic", cloudExport(t, s, c, "cloud"), cloudDay)
	for _, side := range []string{"local", "cloud"} {
		var v audit.Verification
		call(t, "GET", cloud.prefix+"audit/verify?side="+side, s.adminToken, nil, &v)
		if !v.OK {
			t.Fatalf("cloud verify of side %s = %+v, want ok", side, v)
		}
	}

	// Tampering on the clinic: the failed login becomes a success.
	db, err := gorm.Open(sqlite.Open(filepath.Join(fresh, "scsync.db")+"?_pragma=busy_timeout(10000)"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("UPDATE audit_log SET outcome = 200 WHERE seq = 2").Error; err != nil {
		t.Fatal(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		_ = sqlDB.Close()
	}
	if out, err := localCLI(s, c, nil, "audit", "-verify"); err == nil || !strings.Contains(out, "entry 2 was changed") {
		t.Errorf("sc-local audit -verify after a changed entry: %v\n%s; want a failure naming entry 2", err, out)
	}
	var v audit.Verification
	call(t, "GET", c.base+"/v1/audit/verify", "", nil, &v)
	if v.OK || !strings.Contains(v.Problem, "entry 2 was changed") {
		t.Errorf("GET /v1/audit/verify after a changed entry = %+v", v)
	}
	// The cloud's copy still tells the truth.
	if e := cloudExport(t, s, c, "local")[1]; e.Seq != 2 || e.Outcome != 401 {
		t.Errorf("the cloud's copy of entry 2 = %+v, want the failed login (401)", e)
	}

	// Tampering in the cloud: the person's first read is removed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := pgx.Connect(ctx, s.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	tag, err := pg.Exec(ctx, "DELETE FROM audit_log WHERE chain = $1 AND seq = 7", "local:"+c.ID)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("delete an entry in PostgreSQL: %v (%d rows)", err, tag.RowsAffected())
	}
	call(t, "GET", cloud.prefix+"audit/verify?side=local", s.adminToken, nil, &v)
	if v.OK || !strings.Contains(v.Problem, "entry 7 is missing") {
		t.Errorf("cloud verify after a removed entry = %+v, want entry 7 missing", v)
	}
}
