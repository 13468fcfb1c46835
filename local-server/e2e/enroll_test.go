package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runLocal runs an sc-local command to its end and returns its output.
func runLocal(t *testing.T, bin string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestEnrollAndDoctor (issue 6 item 6, in part): clinic IT enrolls the
// server with a one-time token, which writes its identity into the config;
// the token cannot be used twice; doctor says what works and what is wrong.
func TestEnrollAndDoctor(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	var en struct{ Token string }
	if code := call(t, "POST", s.cloud[0]+"/v1/admin/enrollments", s.adminToken, map[string]string{"name": "Mokpo Dental"}, &en); code != 201 || !strings.HasPrefix(en.Token, "sce_") {
		t.Fatalf("create enrollment: %d %+v", code, en)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sc-local.yaml")
	if err := os.WriteFile(cfg, []byte("# clinic server\nlog:\n  level: debug # kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runLocal(t, s.localBin, nil, "-config", cfg, "enroll", "-cloud", s.cloud[0], "-token", en.Token)
	if err != nil || !strings.Contains(out, "enrolled \"Mokpo Dental\" as clinic") {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(cfg)
	// The cloud gave the clinic its own broker login; clinic IT types nothing.
	for _, want := range []string{"clinic:", "node:", "token: \"sct_", "level: debug # kept", "amqp:", "clinic-"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config after enroll lacks %q:\n%s", want, b)
		}
	}
	if st, _ := os.Stat(cfg); st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", st.Mode().Perm())
	}
	// The token is spent; the same server does not enroll twice either.
	other := filepath.Join(t.TempDir(), "other.yaml")
	if out, err := runLocal(t, s.localBin, nil, "-config", other, "enroll", "-cloud", s.cloud[0], "-token", en.Token); err == nil || !strings.Contains(out, "already used") {
		t.Errorf("second use of the token: %v\n%s", err, out)
	}
	if out, err := runLocal(t, s.localBin, nil, "-config", cfg, "enroll", "-cloud", s.cloud[0], "-token", en.Token); err == nil || !strings.Contains(out, "already names clinic") {
		t.Errorf("enrolling an enrolled server: %v\n%s", err, out)
	}

	env := []string{"SC_LOCAL_LISTEN=" + freeAddr(t), "SC_LOCAL_DATA_DIR=" + filepath.Join(dir, "data")}
	p := start(t, "sc-local-enrolled", s.localBin, env, "-config", cfg)
	waitReady(t, p, "http://"+strings.TrimPrefix(env[0], "SC_LOCAL_LISTEN="))
	out, err = runLocal(t, s.localBin, env, "-config", cfg, "doctor")
	if err != nil {
		t.Fatalf("doctor on a healthy clinic: %v\n%s", err, out)
	}
	for _, want := range []string{"ok       cloud API", "token accepted", "ok       S3", "signed requests accepted", "ok       RabbitMQ", "ok       sc-local", "ok       data dir", "everything answers"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	bad := append(env, "SC_LOCAL_CLOUD_TOKEN=sct_wrong", "SC_LOCAL_AMQP_URL=amqp://guest:guest@127.0.0.1:1/")
	out, err = runLocal(t, s.localBin, bad, "-config", cfg, "doctor")
	if err == nil || !strings.Contains(out, "refuses this clinic's token") || !strings.Contains(out, "PROBLEM  RabbitMQ") || !strings.Contains(out, "PROBLEM  S3") {
		t.Errorf("doctor with a wrong token and broker: %v\n%s", err, out)
	}
}
