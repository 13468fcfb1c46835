package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/config"
)

func TestExampleConfigLoads(t *testing.T) {
	// The shipped example must parse (strict keys) and validate once the
	// enrollment values are filled in, here through the environment.
	t.Setenv("SC_LOCAL_CLINIC_ID", "382860661667921920")
	t.Setenv("SC_LOCAL_CLINIC_NODE", "17")
	t.Setenv("SC_LOCAL_CLOUD_TOKEN", "sct_x")
	c, err := Load("../../../deployments/sc-local.example.yaml")
	if err != nil {
		t.Fatalf("Load(example) = %v", err)
	}
	if c.Clinic.Node != 17 || c.DataDir != "/var/lib/scsync" || c.AMQP.Prefetch != 64 {
		t.Fatalf("Load(example) = %+v", c)
	}
}

func TestValidateNamesSettings(t *testing.T) {
	_, err := Load("")
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Load(defaults) = %v, want ErrInvalid (no enrollment yet)", err)
	}
	for _, setting := range []string{"clinic.id", "clinic.node", "cloud.url", "cloud.token"} {
		if !strings.Contains(err.Error(), setting) {
			t.Errorf("error %q does not name %s", err, setting)
		}
	}
	t.Setenv("SC_LOCAL_CLINIC_NODE", "12288") // a cloud node id
	_, err = Load("")
	if err == nil || !strings.Contains(err.Error(), "clinic.node must be 1..12287") {
		t.Errorf("cloud-range node accepted: %v", err)
	}
}

func TestValidateURLs(t *testing.T) {
	t.Setenv("SC_LOCAL_CLINIC_ID", "382860661667921920")
	t.Setenv("SC_LOCAL_CLINIC_NODE", "17")
	t.Setenv("SC_LOCAL_CLOUD_TOKEN", "sct_x")
	for _, tt := range []struct{ env, val, want string }{
		{"SC_LOCAL_CLOUD_URL", "cloud.example.com", "cloud.url"},
		{"SC_LOCAL_CLOUD_URL", "ftp://cloud.example.com", "cloud.url"},
		{"SC_LOCAL_AMQP_URL", "http://broker:5672", "amqp.url"},
		{"SC_LOCAL_LOCKD_URL", "lockd:8090", "lockd.url"},
	} {
		t.Run(tt.val, func(t *testing.T) {
			t.Setenv("SC_LOCAL_CLOUD_URL", "https://cloud.example.com")
			t.Setenv("SC_LOCAL_LOCKD_TOKEN", "x")
			t.Setenv(tt.env, tt.val)
			_, err := Load("")
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load with %s=%s = %v, want an error naming %s", tt.env, tt.val, err, tt.want)
			}
		})
	}
	t.Setenv("SC_LOCAL_CLOUD_URL", "https://cloud.example.com")
	if _, err := Load(""); err != nil {
		t.Errorf("Load with valid URLs = %v", err)
	}
}

func TestDefaultPaths(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tt := range []struct {
		goos string
		env  map[string]string
		want Paths
	}{
		{"windows", map[string]string{"ProgramData": `D:\ProgramData`}, Paths{`D:\ProgramData\scsync\sc-local.yaml`, `D:\ProgramData\scsync\data`}},
		{"windows", map[string]string{"ProgramData": `C:\ProgramData\`}, Paths{`C:\ProgramData\scsync\sc-local.yaml`, `C:\ProgramData\scsync\data`}},
		{"windows", nil, Paths{`C:\ProgramData\scsync\sc-local.yaml`, `C:\ProgramData\scsync\data`}},
		{"linux", nil, Paths{"/etc/scsync/sc-local.yaml", "/var/lib/scsync"}},
	} {
		if got := DefaultPaths(tt.goos, env(tt.env)); got != tt.want {
			t.Errorf("DefaultPaths(%s, %v) = %+v, want %+v", tt.goos, tt.env, got, tt.want)
		}
	}
}

// TestRequireTLS: with require_tls a plaintext listener or link refuses to
// start, naming each setting; all-TLS settings pass.
func TestRequireTLS(t *testing.T) {
	t.Setenv("SC_LOCAL_CLINIC_ID", "382860661667921920")
	t.Setenv("SC_LOCAL_CLINIC_NODE", "17")
	t.Setenv("SC_LOCAL_CLOUD_URL", "http://cloud.example.com")
	t.Setenv("SC_LOCAL_CLOUD_TOKEN", "sct_x")
	t.Setenv("SC_LOCAL_LOCKD_URL", "https://lockd.example.com")
	t.Setenv("SC_LOCAL_LOCKD_TOKEN", "lt_x")
	if _, err := Load(""); err != nil {
		t.Fatalf("Load without require_tls = %v, want nil", err)
	}
	t.Setenv("SC_LOCAL_REQUIRE_TLS", "true")
	_, err := Load("")
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Load(require_tls, plaintext) = %v, want ErrInvalid", err)
	}
	for _, s := range []string{"tls.cert_file", "cloud.url", "amqp.url"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if strings.Contains(err.Error(), "lockd.url") {
		t.Errorf("error %q names lockd.url, which is https", err)
	}
	t.Setenv("SC_LOCAL_TLS_CERT_FILE", "/etc/scsync/tls/cert.pem")
	t.Setenv("SC_LOCAL_TLS_KEY_FILE", "/etc/scsync/tls/key.pem")
	t.Setenv("SC_LOCAL_CLOUD_URL", "https://cloud.example.com")
	t.Setenv("SC_LOCAL_AMQP_URL", "amqps://clinic:pw@broker.example.com:5671/")
	if _, err := Load(""); err != nil {
		t.Errorf("Load(require_tls, all TLS) = %v, want nil", err)
	}
}
