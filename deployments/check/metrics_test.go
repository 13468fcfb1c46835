package check

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// The Grafana dashboard is valid JSON with unique panel ids and a query in
// every panel, and names only metrics the code exports.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../grafana/scsync-cloud.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) < 10 {
		t.Fatalf("dashboard %q (uid %q) has %d panels", d.Title, d.UID, len(d.Panels))
	}
	seen := map[int]bool{}
	var exprs []string
	for _, p := range d.Panels {
		if seen[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		seen[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	checkExported(t, "dashboard", strings.Join(exprs, "\n"))
}

// The alert rules name only metrics the code exports (promtool checks the
// syntax; this checks the names).
func TestAlertRuleMetricsExist(t *testing.T) {
	raw, err := os.ReadFile("../prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	checkExported(t, "alerts.yml", string(raw))
}

var metricRE = regexp.MustCompile(`\bscsync_[a-z0-9_]+`)

// checkExported fails for every scsync_* metric in text that no Go source
// of the repository defines. A metric scsync_<sub>_<name> counts as
// defined when one non-test source file holds the string literal "<name>"
// and either "<sub>" or the prefix "scsync_<sub>_" — how the code builds
// its names (prometheus.Opts{Namespace, Subsystem, Name}, or a prefix plus
// a name for collectors).
func checkExported(t *testing.T, what, text string) {
	t.Helper()
	var sources []string
	err := filepath.WalkDir("../..", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && (e.Name() == ".git" || e.Name() == "testdata" || e.Name() == "deployments" || e.Name() == "bench") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sources = append(sources, string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if defined("scsync_cloud_no_such_metric_total", sources) || !defined("scsync_http_requests_total", sources) {
		t.Fatal("the metric lookup itself is broken")
	}
	names := map[string]bool{}
	for _, m := range metricRE.FindAllString(text, -1) {
		names[m] = true
	}
	if len(names) < 5 {
		t.Fatalf("%s: only %d scsync metrics found", what, len(names))
	}
	for m := range names {
		if !defined(m, sources) {
			t.Errorf("%s names %s, which no Go source defines", what, m)
		}
	}
}

func defined(metric string, sources []string) bool {
	base := metric
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		base = strings.TrimSuffix(base, suf)
	}
	rest := strings.TrimPrefix(base, "scsync_")
	// Try every split of rest into <sub>_<name> (and no subsystem at all).
	cands := [][2]string{{"", rest}}
	for i := range len(rest) {
		if rest[i] == '_' {
			cands = append(cands, [2]string{rest[:i], rest[i+1:]})
		}
	}
	for _, src := range sources {
		if strings.Contains(src, `"`+base+`"`) {
			return true
		}
		for _, c := range cands {
			if !strings.Contains(src, `"`+c[1]+`"`) {
				continue
			}
			if c[0] == "" && strings.Contains(src, `Namespace: "scsync"`) {
				return true
			}
			if c[0] != "" && (strings.Contains(src, `"`+c[0]+`"`) || strings.Contains(src, `"scsync_`+c[0]+`_"`)) {
				return true
			}
		}
	}
	return false
}

// Every alert links a runbook section that exists in docs/cloud-ops.md.
func TestAlertRunbooksExist(t *testing.T) {
	rules, err := os.ReadFile("../prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/cloud-ops.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "#") {
			h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
			h = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(h, "")
			anchors[strings.ReplaceAll(h, " ", "-")] = true
		}
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1)
	links := regexp.MustCompile(`runbook_url: docs/cloud-ops\.md#(\S+)`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) == 0 || len(links) != len(alerts) {
		t.Fatalf("%d alerts, %d runbook links: want one link per alert", len(alerts), len(links))
	}
	for _, l := range links {
		if !anchors[l[1]] {
			t.Errorf("runbook #%s has no section in docs/cloud-ops.md", l[1])
		}
	}
}
