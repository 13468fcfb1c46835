package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/datadir"
	"github.com/scsync/scsync/shared/tlsx"
	"github.com/scsync/scsync/shared/wire"
)

// Enrolled is what the cloud hands a clinic server at enrollment: its
// identity, its API token and, when the cloud issues them, its own broker
// login and its lockd token.
type Enrolled struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	NodeID int64  `json:"node_id"`
	Token  string `json:"token"`
	AMQP   *struct {
		URL  string `json:"url"`
		User string `json:"user"`
	} `json:"amqp"`
	Lockd *struct {
		URL   string `json:"url"`
		Token string `json:"token"`
	} `json:"lockd"`
}

// Enroll registers this clinic server with the cloud at cloudURL using a
// one-time token from the cloud operator, and writes the clinic's id,
// Snowflake node id and API token into the config file at path (created,
// mode 0600, if missing; other settings and comments are kept).
func Enroll(ctx context.Context, w io.Writer, path, cloudURL, token string) error {
	if path == "" {
		return errors.New("enroll needs the config file to write: -config /etc/scsync/sc-local.yaml")
	}
	if cloudURL == "" || token == "" {
		return errors.New("enroll needs -cloud URL and -token TOKEN (the one-time enrollment token from the cloud operator)")
	}
	doc, err := readYAML(path)
	if err != nil {
		return err
	}
	if id := lookup(doc, "clinic", "id"); id != "" && id != "0" {
		return fmt.Errorf("%s already names clinic %s: this server is enrolled (remove clinic.id to enroll again)", path, id)
	}
	cloudURL = strings.TrimRight(cloudURL, "/")
	body, _ := json.Marshal(map[string]string{"token": token})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, cloudURL+"/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// The protocol range this build speaks, for the cloud to record (a
	// cloud before ranges ignores the headers; a body field it would refuse).
	wire.Local().SetHTTP(req.Header)
	// A cloud with a private CA: tls.ca_file of the config (or its
	// environment override) is trusted besides the system's roots.
	caFile := lookup(doc, "tls", "ca_file")
	if v := os.Getenv(config.EnvPrefix + "_TLS_CA_FILE"); v != "" {
		caFile = v
	}
	hc, err := tlsx.Client{CAFile: caFile}.HTTPClient(0)
	if err != nil {
		return fmt.Errorf("tls.ca_file: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("the cloud at %s cannot be reached: %w", cloudURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		var e struct{ Message string }
		_ = json.Unmarshal(b, &e)
		return fmt.Errorf("the cloud refused the enrollment (%s): %s", resp.Status, e.Message)
	}
	var got Enrolled
	if err := json.Unmarshal(b, &got); err != nil || got.ID == "" || got.NodeID <= 0 || got.Token == "" {
		return fmt.Errorf("the cloud's answer is not an enrollment: %q", b)
	}
	set(doc, []string{"clinic", "id"}, got.ID)
	set(doc, []string{"clinic", "node"}, strconv.FormatInt(got.NodeID, 10))
	if got.Name != "" {
		set(doc, []string{"clinic", "name"}, got.Name)
	}
	set(doc, []string{"cloud", "url"}, cloudURL)
	set(doc, []string{"cloud", "token"}, got.Token)
	wrote := []string{"clinic.id", "clinic.node", "cloud.url", "cloud.token"}
	var missing []string
	if got.AMQP != nil && got.AMQP.URL != "" {
		set(doc, []string{"amqp", "url"}, got.AMQP.URL)
		wrote = append(wrote, "amqp.url")
	} else {
		missing = append(missing, "amqp.url")
	}
	if got.Lockd != nil && got.Lockd.URL != "" && got.Lockd.Token != "" {
		set(doc, []string{"lockd", "url"}, got.Lockd.URL)
		set(doc, []string{"lockd", "token"}, got.Lockd.Token)
		wrote = append(wrote, "lockd.url", "lockd.token")
	}
	if err := writeYAML(path, doc); err != nil {
		return fmt.Errorf("enrolled as clinic %s (node %d) but writing %s failed: %w; write these into it by hand", got.ID, got.NodeID, path, err)
	}
	fmt.Fprintf(w, "enrolled %q as clinic %s, Snowflake node %d\n", got.Name, got.ID, got.NodeID)
	if got.AMQP != nil {
		fmt.Fprintf(w, "broker login %s (its own; it reaches only this clinic's queues)\n", got.AMQP.User)
	}
	fmt.Fprintf(w, "wrote %s into %s\n", strings.Join(wrote, ", "), path)
	if len(missing) > 0 {
		fmt.Fprintf(w, "this cloud issues no %s: set it by hand, then run: sc-local -config %s doctor\n", strings.Join(missing, ", "), path)
	} else {
		fmt.Fprintf(w, "next: sc-local -config %s doctor\n", path)
	}
	return nil
}

func readYAML(path string) (*yaml.Node, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(bytes.TrimSpace(b)) == 0) {
		return &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}, nil
	}
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s is not a YAML mapping", path)
	}
	return &doc, nil
}

func writeYAML(path string, doc *yaml.Node) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return err
	}
	// An existing config keeps its mode and owner: the Debian package ships
	// /etc/scsync/sc-local.yaml as root:scsync 0640, and an enroll run as
	// root must not take it away from the service.
	if fi, err := os.Stat(path); err == nil {
		if err := os.Chmod(tmp, fi.Mode().Perm()&0o660); err != nil {
			return err
		}
		if err := datadir.MatchOwner(tmp, path); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}

// lookup returns the scalar at keys, or "".
func lookup(doc *yaml.Node, keys ...string) string {
	n := doc.Content[0]
	for _, k := range keys {
		n = child(n, k)
		if n == nil {
			return ""
		}
	}
	return n.Value
}

func child(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// set puts value at keys, creating mappings on the way.
func set(doc *yaml.Node, keys []string, value string) {
	n := doc.Content[0]
	for i, k := range keys {
		c := child(n, k)
		if c == nil {
			c = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if i == len(keys)-1 {
				c = &yaml.Node{Kind: yaml.ScalarNode}
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, c)
		}
		n = c
	}
	n.Kind, n.Tag, n.Value, n.Style = yaml.ScalarNode, "", value, 0
	if _, err := strconv.ParseInt(value, 10, 64); err != nil {
		n.Style = yaml.DoubleQuotedStyle
	}
}
