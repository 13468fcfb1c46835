package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Listen string `yaml:"listen"`
	AMQP   struct {
		URL      string        `yaml:"url"`
		Prefetch int           `yaml:"prefetch"`
		Timeout  time.Duration `yaml:"timeout"`
	} `yaml:"amqp"`
	Debug bool     `yaml:"debug"`
	Tags  []string `yaml:"tags"`
}

func TestLoadLayers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("listen: :1\namqp:\n  url: amqp://file\n  prefetch: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("T_AMQP_URL", "amqp://env")
	t.Setenv("T_AMQP_TIMEOUT", "3s")
	t.Setenv("T_DEBUG", "true")
	t.Setenv("T_TAGS", "a,b")
	c := sample{Listen: ":0"}
	c.AMQP.Prefetch = 64
	if err := Load(path, "T", &c); err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":1" || c.AMQP.URL != "amqp://env" || c.AMQP.Prefetch != 5 || c.AMQP.Timeout != 3*time.Second || !c.Debug || len(c.Tags) != 2 {
		t.Fatalf("Load = %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "u.yaml")
	_ = os.WriteFile(unknown, []byte("listne: :1\n"), 0o600)
	empty := filepath.Join(dir, "e.yaml")
	_ = os.WriteFile(empty, nil, 0o600)
	var c sample
	if err := Load(unknown, "T", &c); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown key: err = %v, want ErrInvalid", err)
	}
	if err := Load(filepath.Join(dir, "missing.yaml"), "T", &c); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: err = %v, want ErrInvalid", err)
	}
	if err := Load(empty, "T", &c); err != nil {
		t.Errorf("empty file: err = %v", err)
	}
	t.Setenv("T_AMQP_PREFETCH", "lots")
	if err := Load("", "T", &c); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad env: err = %v, want ErrInvalid", err)
	}
}

func TestPlainYAMLErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ yaml, want string }{
		{"listne: :1\n", `line 1: unknown setting "listne"`},
		{"amqp:\n  prefetch: lots\n", `line 2: "lots" is not a whole number`},
		{"amqp:\n  timeout: soon\n", `"soon" is not a duration`},
		{"debug: maybe\n", `"maybe" is not true or false`},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var c sample
		err := Load(path, "T", &c)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%q) = %v, want %q", tt.yaml, err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "config.") || strings.Contains(err.Error(), "type ") || strings.Contains(err.Error(), "!!")) {
			t.Errorf("Load(%q) = %v: names a Go or YAML type", tt.yaml, err)
		}
	}
}

func TestCheckURL(t *testing.T) {
	for _, tt := range []struct {
		raw, want string // want "" = valid
	}{
		{"https://cloud.example.com", ""},
		{"http://127.0.0.1:8081/", ""},
		{"", ""},
		{"cloud.example.com", "has no scheme"},
		{"cloud.example.com:8081", "has no scheme"},
		{"ftp://cloud.example.com", "must start with http://, https://"},
		{"https://", "has no host"},
		{"https:///path", "has no host"},
		{"http://a b", "is not a URL"},
	} {
		err := CheckURL("cloud.url", tt.raw, "http", "https")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckURL(%q) = %v, want nil", tt.raw, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "cloud.url ")):
			t.Errorf("CheckURL(%q) = %v, want an error naming cloud.url with %q", tt.raw, err, tt.want)
		}
	}
	if err := CheckURL("amqp.url", "ftp://guest:secret@h/", "amqp", "amqps"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("CheckURL with a password = %v, want an error without the password", err)
	}
}
