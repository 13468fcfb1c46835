package check

import (
	"bufio"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const composeFile = "../compose/compose.yaml"

// composeVar is a ${NAME}, ${NAME:-default} or ${NAME:?message} reference.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}`)

// TestComposeFile is the check of the compose file that runs everywhere,
// also where no compose tool is installed (make deploy-check runs
// `docker compose config` or Debian's docker-compose as well where they
// are): the file parses with its anchors and merge keys, every service has
// an image, every depends_on and volume names something defined, and every
// variable without a default is in example.env.
func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image     string         `yaml:"image"`
			DependsOn map[string]any `yaml:"depends_on"`
			Volumes   []string       `yaml:"volumes"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	if len(doc.Services) == 0 {
		t.Fatalf("%s has no services", composeFile)
	}
	for _, want := range []string{"sc-cloud-1", "sc-cloud-2", "sc-cloud-3", "lockd-1", "postgres", "redis-1", "redis-2", "sentinel-1", "sentinel-2", "sentinel-3"} {
		if _, ok := doc.Services[want]; !ok {
			t.Errorf("service %s is missing", want)
		}
	}
	for name, s := range doc.Services {
		if s.Image == "" {
			t.Errorf("service %s has no image", name)
		}
		for dep := range s.DependsOn {
			if _, ok := doc.Services[dep]; !ok {
				t.Errorf("service %s depends on %s, which is not a service", name, dep)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := doc.Volumes[src]; !ok {
					t.Errorf("service %s mounts volume %s, which is not declared", name, src)
				}
			}
		}
	}

	env := map[string]bool{}
	f, err := os.Open("../compose/example.env")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, _, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			env[strings.TrimSpace(k)] = true
		}
	}
	var missing []string
	for _, m := range composeVar.FindAllStringSubmatch(string(raw), -1) {
		if !strings.HasPrefix(m[2], ":-") && !strings.HasPrefix(m[2], "-") && !env[m[1]] {
			missing = append(missing, m[1])
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("variables without a default that example.env does not set: %v", missing)
	}
}
