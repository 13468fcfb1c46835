package check

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"
)

// TestHelmTemplate checks what the real helm renders: `helm template` with
// the chart's defaults and with the values of a production install, every
// document parsed as YAML and checked as TestChartDefaults checks the Go
// rendering (names, selectors, probes, Secrets, requests, non-root,
// PodDisruptionBudgets). `make deploy-check` builds helm (scripts/tools.sh
// helm) and names it in SCSYNC_HELM; without it the test is skipped and the
// Go rendering above is what checks the chart.
func TestHelmTemplate(t *testing.T) {
	helm := os.Getenv("SCSYNC_HELM")
	if helm == "" {
		t.Skip("SCSYNC_HELM is not set: make deploy-check builds helm and runs this test with it")
	}
	for _, c := range []struct {
		name        string
		args        []string
		secrets     []string
		deployments int
		monitors    int
	}{
		{"defaults", nil, nil, 2, 0},
		{"production", []string{"-f", "../helm/production-values.yaml"}, []string{"scsync-cloud", "scsync-lockd"}, 2, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"template", "scsync", chartDir, "--namespace", "scsync"}, c.args...)
			cmd := exec.Command(helm, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
			kinds := checkObjects(t, objects(t, helmFiles(t, string(out))), c.secrets...)
			if n := len(kinds["Deployment"]); n != c.deployments {
				t.Errorf("Deployments: %d, want %d", n, c.deployments)
			}
			if n := len(kinds["PodDisruptionBudget"]); n != c.deployments {
				t.Errorf("PodDisruptionBudgets: %d, want %d", n, c.deployments)
			}
			if n := len(kinds["ServiceMonitor"]); n != c.monitors {
				t.Errorf("ServiceMonitors: %d, want %d", n, c.monitors)
			}
			if c.secrets != nil && len(kinds["Secret"]) != 0 {
				t.Errorf("a Secret was rendered although existingSecret is set")
			}
		})
	}
}

// helmFiles splits `helm template` output at its "# Source: chart/templates/x"
// lines into the rendered text of each template file.
func helmFiles(t *testing.T, out string) map[string]string {
	t.Helper()
	files := map[string]string{}
	cur := ""
	for line := range strings.Lines(out) {
		if src, ok := strings.CutPrefix(line, "# Source: "); ok {
			cur = path.Base(strings.TrimSpace(src))
			files[cur] += "---\n"
			continue
		}
		if cur != "" {
			files[cur] += line
		}
	}
	if len(files) == 0 {
		t.Fatalf("helm template printed no templates:\n%s", out)
	}
	return files
}
