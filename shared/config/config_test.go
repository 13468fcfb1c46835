package config

import (
	"errors"
	"os"
	"path/filepath"
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
