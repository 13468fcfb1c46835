package check

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"gopkg.in/yaml.v3"
)

// The chart is rendered here the way `helm template` does: Go's
// text/template with the sprig function library plus Helm's own include,
// tpl, toYaml and required. It runs in seconds without helm, so a developer
// (and `make test`) checks the chart without building helm; and it checks
// what helm does not: the options below, a refused value. `make
// deploy-check` also renders the chart with the real helm (helm_test.go).

const chartDir = "../helm/scsync-cloud"

type chartMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Name       string `yaml:"name"`
	Version    string `yaml:"version"`
	AppVersion string `yaml:"appVersion"`
	Type       string `yaml:"type"`
}

// render renders every template of the chart with the values file merged
// with overrides (nested maps are merged key by key) and returns the
// rendered text of each file by name.
func render(t *testing.T, overrides map[string]any) (map[string]string, error) {
	t.Helper()
	var meta chartMeta
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &meta)
	values := map[string]any{}
	readYAML(t, filepath.Join(chartDir, "values.yaml"), &values)
	merge(values, overrides)

	root := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["required"] = func(msg string, v any) (any, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["include"] = func(name string, data any) (string, error) {
		var b bytes.Buffer
		err := root.ExecuteTemplate(&b, name, data)
		return b.String(), err
	}
	funcs["tpl"] = func(text string, data any) (string, error) {
		tt, err := root.Clone()
		if err != nil {
			return "", err
		}
		tt, err = tt.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		err = tt.Execute(&b, data)
		return b.String(), err
	}
	root.Funcs(funcs)

	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no templates in %s: %v", chartDir, err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := root.New(filepath.Base(f)).Parse(string(src)); err != nil {
			return nil, fmt.Errorf("parse %s: %w", f, err)
		}
	}
	data := map[string]any{
		"Values":       values,
		"Chart":        map[string]any{"Name": meta.Name, "Version": meta.Version, "AppVersion": meta.AppVersion},
		"Release":      map[string]any{"Name": "scsync", "Namespace": "scsync", "Service": "Helm", "IsInstall": true},
		"Capabilities": map[string]any{"KubeVersion": map[string]any{"Version": "v1.30.0"}},
	}
	out := map[string]string{}
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasPrefix(name, "_") {
			continue
		}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, name, data); err != nil {
			return nil, fmt.Errorf("render %s: %w", name, err)
		}
		out[name] = strings.ReplaceAll(b.String(), "<no value>", "")
	}
	return out, nil
}

func toYAML(v any) string {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func readYAML(t *testing.T, path string, dst any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, dst); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

type object = map[string]any

// objects parses the rendered manifests (NOTES.txt aside) into objects.
func objects(t *testing.T, files map[string]string) []object {
	t.Helper()
	var objs []object
	for name, text := range files {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		dec := yaml.NewDecoder(strings.NewReader(text))
		for {
			var o object
			err := dec.Decode(&o)
			if err != nil {
				if err.Error() == "EOF" {
					break
				}
				t.Fatalf("%s does not render to valid YAML: %v\n%s", name, err, text)
			}
			if o == nil {
				continue
			}
			objs = append(objs, o)
		}
	}
	return objs
}

var dnsName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func get(o any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := o.(map[string]any)
			if !ok {
				return nil
			}
			o = m[k]
		case int:
			l, ok := o.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			o = l[k]
		}
	}
	return o
}

func str(o any, path ...any) string { s, _ := get(o, path...).(string); return s }

func byKind(objs []object) map[string][]object {
	m := map[string][]object{}
	for _, o := range objs {
		m[str(o, "kind")] = append(m[str(o, "kind")], o)
	}
	return m
}

// checkObjects asserts what every install needs: names, labels that select
// the pods, probes on /readyz and /healthz, config from a Secret that exists,
// resource requests, a non-root user.
func checkObjects(t *testing.T, objs []object, existingSecrets ...string) map[string][]object {
	t.Helper()
	kinds := byKind(objs)
	secrets := map[string]bool{}
	for _, s := range existingSecrets {
		secrets[s] = true
	}
	for _, o := range kinds["Secret"] {
		secrets[str(o, "metadata", "name")] = true
	}
	for _, o := range objs {
		name := str(o, "metadata", "name")
		if str(o, "apiVersion") == "" || str(o, "kind") == "" || !dnsName.MatchString(name) || len(name) > 63 {
			t.Errorf("object without apiVersion/kind or with a bad name: %v", o)
		}
	}
	for _, d := range kinds["Deployment"] {
		name := str(d, "metadata", "name")
		podLabels, _ := get(d, "spec", "template", "metadata", "labels").(map[string]any)
		sel, _ := get(d, "spec", "selector", "matchLabels").(map[string]any)
		if len(sel) == 0 || !subset(sel, podLabels) {
			t.Errorf("%s: selector %v does not select its pods %v", name, sel, podLabels)
		}
		c := get(d, "spec", "template", "spec", "containers", 0)
		if p := str(c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
			t.Errorf("%s: readiness probe on %q, want /readyz", name, p)
		}
		if p := str(c, "livenessProbe", "httpGet", "path"); p != "/healthz" {
			t.Errorf("%s: liveness probe on %q, want /healthz", name, p)
		}
		ref := str(c, "envFrom", 0, "secretRef", "name")
		if !secrets[ref] {
			t.Errorf("%s: config from Secret %q, which is neither rendered nor given", name, ref)
		}
		if get(c, "resources", "requests", "cpu") == nil || get(c, "resources", "requests", "memory") == nil {
			t.Errorf("%s: no cpu/memory requests", name)
		}
		if get(d, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: pods may run as root", name)
		}
		if !strings.Contains(str(c, "image"), ":") {
			t.Errorf("%s: image %q has no tag", name, str(c, "image"))
		}
		var pdb, svc bool
		for _, p := range kinds["PodDisruptionBudget"] {
			if s, _ := get(p, "spec", "selector", "matchLabels").(map[string]any); len(s) > 0 && subset(s, podLabels) {
				pdb = true
			}
		}
		for _, s := range kinds["Service"] {
			if sel, _ := get(s, "spec", "selector").(map[string]any); len(sel) > 0 && subset(sel, podLabels) {
				svc = true
			}
		}
		if !pdb || !svc {
			t.Errorf("%s: PodDisruptionBudget %v, Service %v (want both)", name, pdb, svc)
		}
	}
	return kinds
}

func subset(a, b map[string]any) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestChartDefaults(t *testing.T) {
	files, err := render(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	kinds := checkObjects(t, objects(t, files))
	if n := len(kinds["Deployment"]); n != 2 {
		t.Fatalf("Deployments: %d, want 2 (sc-cloud and lockd)", n)
	}
	if n := len(kinds["PodDisruptionBudget"]); n != 2 {
		t.Errorf("PodDisruptionBudgets: %d, want 2", n)
	}
	if n := len(kinds["ServiceMonitor"]); n != 0 {
		t.Errorf("ServiceMonitor rendered while disabled")
	}
	for _, d := range kinds["Deployment"] {
		if strings.HasSuffix(str(d, "metadata", "name"), "sc-cloud") && get(d, "spec", "replicas") != 3 {
			t.Errorf("sc-cloud replicas %v, want 3", get(d, "spec", "replicas"))
		}
	}
	if !strings.Contains(files["NOTES.txt"], "3 sc-cloud node(s)") {
		t.Errorf("NOTES.txt: %q", files["NOTES.txt"])
	}
}

func TestChartOptions(t *testing.T) {
	files, err := render(t, map[string]any{
		"image":          map[string]any{"registry": "registry.example.com/", "tag": "1.2.3"},
		"scCloud":        map[string]any{"existingSecret": "cloud-creds", "replicas": 5},
		"lockd":          map[string]any{"enabled": false},
		"serviceMonitor": map[string]any{"enabled": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := checkObjects(t, objects(t, files), "cloud-creds")
	if n := len(kinds["Deployment"]); n != 1 {
		t.Fatalf("Deployments: %d, want only sc-cloud", n)
	}
	if n := len(kinds["Secret"]); n != 0 {
		t.Errorf("a Secret was rendered although existingSecret is set")
	}
	if n := len(kinds["ServiceMonitor"]); n != 1 {
		t.Errorf("ServiceMonitors: %d, want 1", n)
	}
	d := kinds["Deployment"][0]
	if img := str(d, "spec", "template", "spec", "containers", 0, "image"); img != "registry.example.com/scsync/sc-cloud:1.2.3" {
		t.Errorf("image %q", img)
	}
	if get(d, "spec", "replicas") != 5 {
		t.Errorf("replicas %v, want 5", get(d, "spec", "replicas"))
	}
}

// A bad value is refused at render time, not at apply time.
func TestChartRefusesNoReplicas(t *testing.T) {
	_, err := render(t, map[string]any{"scCloud": map[string]any{"replicas": 0}})
	if err == nil || !strings.Contains(err.Error(), "replicas must be at least 1") {
		t.Fatalf("render with 0 replicas: %v, want a refusal", err)
	}
}

// TestChartProductionValues renders the chart with the values of a
// production install (deployments/helm/production-values.yaml): Secrets
// from outside, Redis through Sentinel for both components.
func TestChartProductionValues(t *testing.T) {
	values := map[string]any{}
	readYAML(t, "../helm/production-values.yaml", &values)
	files, err := render(t, values)
	if err != nil {
		t.Fatal(err)
	}
	kinds := checkObjects(t, objects(t, files), "scsync-cloud", "scsync-lockd")
	if n := len(kinds["Secret"]); n != 0 {
		t.Errorf("Secrets rendered: %d, want none (existingSecret)", n)
	}
	if n := len(kinds["ServiceMonitor"]); n != 1 {
		t.Errorf("ServiceMonitors: %d, want 1", n)
	}
	for _, d := range kinds["Deployment"] {
		env := map[string]string{}
		list, _ := get(d, "spec", "template", "spec", "containers", 0, "env").([]any)
		for _, e := range list {
			env[str(e, "name")] = str(e, "value")
		}
		name := str(d, "metadata", "name")
		var prefix string
		switch {
		case strings.HasSuffix(name, "sc-cloud"):
			prefix = "SC_CLOUD_"
		case strings.HasSuffix(name, "lockd"):
			prefix = "LOCKD_"
		default:
			t.Fatalf("unexpected Deployment %s", name)
		}
		if env[prefix+"REDIS_SENTINEL_MASTER"] != "scsync" || strings.Count(env[prefix+"REDIS_SENTINEL_ADDRS"], ",") != 2 {
			t.Errorf("%s: Sentinel settings %q, %q; want master scsync and three Sentinels", name,
				env[prefix+"REDIS_SENTINEL_MASTER"], env[prefix+"REDIS_SENTINEL_ADDRS"])
		}
		if _, ok := env[prefix+"REDIS_ADDR"]; ok {
			t.Errorf("%s: %sREDIS_ADDR set next to Sentinel", name, prefix)
		}
	}
}
