package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/shared/audit"
)

// localTransport sends requests for the running server (host) through
// local, adding the machine's API token, and every other request (the
// cloud, S3: doctor, restore) through other.
type localTransport struct {
	host         string
	token        string
	local, other http.RoundTripper
}

func (t localTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != t.host {
		return t.other.RoundTrip(r)
	}
	if t.token != "" && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+t.token)
	}
	return t.local.RoundTrip(r)
}

// UseLocal sets the CLI's HTTP client up for the running server of cfg and
// returns the server's URL (config.LocalURL: https when the listener serves
// TLS). Requests to it carry the machine's API token (when token is set).
// Over TLS the server is trusted through the system's roots, tls.ca_file
// and the listener's own certificate (tls.cert_file, on this same
// machine), and verified under a name that certificate holds, so a
// certificate made for the server's LAN name works when the command dials
// the loopback address. Every other request (the cloud and S3, for doctor)
// trusts the system's roots and tls.ca_file.
func UseLocal(cfg config.Config, token string) (string, error) {
	base := cfg.LocalURL()
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("listen %q: %w", cfg.Listen, err)
	}
	outTLS, err := cfg.ClientTLS().Config()
	if err != nil {
		return "", fmt.Errorf("tls.ca_file: %w", err)
	}
	other := http.DefaultTransport.(*http.Transport).Clone()
	other.TLSClientConfig = outTLS.Clone()
	local := other.Clone()
	if cfg.ServerTLS().Enabled() {
		if local.TLSClientConfig, err = localTrust(cfg, u.Hostname()); err != nil {
			return "", err
		}
	}
	http.DefaultClient = &http.Client{Transport: localTransport{host: u.Host, token: token, local: local, other: other}}
	return base, nil
}

// localTrust is the TLS configuration that reaches this machine's own
// listener at host: the roots of tls.ca_file and the system's, plus the
// certificates of tls.cert_file (so the listener's own certificate is
// trusted as it is, pinned); when that certificate does not name host, the
// connection is verified under the certificate's first name instead.
func localTrust(cfg config.Config, host string) (*tls.Config, error) {
	tc, err := cfg.ClientTLS().Config()
	if err != nil {
		return nil, fmt.Errorf("tls.ca_file: %w", err)
	}
	pool := tc.RootCAs
	if pool == nil {
		if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
	}
	b, err := os.ReadFile(cfg.TLS.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file (the commands trust the server's own certificate): %w", err)
	}
	var leaf *x509.Certificate
	for len(b) > 0 {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		pool.AddCert(c)
		if leaf == nil {
			leaf = c
		}
	}
	if leaf == nil {
		return nil, fmt.Errorf("tls.cert_file %s holds no PEM certificate", cfg.TLS.CertFile)
	}
	tc.RootCAs = pool
	if leaf.VerifyHostname(host) != nil {
		switch {
		case len(leaf.DNSNames) > 0:
			tc.ServerName = leaf.DNSNames[0]
		case len(leaf.IPAddresses) > 0:
			tc.ServerName = leaf.IPAddresses[0].String()
		}
	}
	return tc, nil
}

// send does a JSON request and decodes a JSON answer; a refusal becomes an
// error with the server's message.
func send(ctx context.Context, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sc-local is not answering at %s (is it running?): %w", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &e)
		return fmt.Errorf("%s refused (%s): %s", url, resp.Status, e.Message)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Password reads a password: from the environment variable SC_LOCAL_PASSWORD
// when set (scripts), else the first line of in.
func Password(in io.Reader, w io.Writer) (string, error) {
	if p := os.Getenv("SC_LOCAL_PASSWORD"); p != "" {
		return p, nil
	}
	_, _ = fmt.Fprint(w, "password (at least 8 characters): ")
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

type account struct {
	ID          string `json:"id"`
	Username    string `json:"username"`
	DisplayName string `json:"display_name"`
	Role        string `json:"role"`
	Disabled    bool   `json:"disabled"`
}

// UsersAdd creates a person's account (the first admin, then anyone).
func UsersAdd(ctx context.Context, w io.Writer, base, username, role, name, password string) error {
	var a account
	req := map[string]any{"username": username, "role": role, "display_name": name, "password": password}
	if err := send(ctx, http.MethodPost, base+"/v1/users", req, &a); err != nil {
		return err
	}
	fmt.Fprintf(w, "account %s (%s) created with id %s\n", a.Username, a.Role, a.ID)
	return nil
}

// UsersList prints the accounts.
func UsersList(ctx context.Context, w io.Writer, base string) error {
	var out struct {
		Items []account `json:"items"`
	}
	if err := send(ctx, http.MethodGet, base+"/v1/users", nil, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSERNAME\tROLE\tDISABLED\tNAME")
	for _, a := range out.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", a.ID, a.Username, a.Role, a.Disabled, a.DisplayName)
	}
	return tw.Flush()
}

// UsersSet changes an account found by username (role, disabled, password).
func UsersSet(ctx context.Context, w io.Writer, base, username string, change map[string]any) error {
	var out struct {
		Items []account `json:"items"`
	}
	if err := send(ctx, http.MethodGet, base+"/v1/users", nil, &out); err != nil {
		return err
	}
	for _, a := range out.Items {
		if a.Username == username {
			var got account
			if err := send(ctx, http.MethodPut, base+"/v1/users/"+a.ID, change, &got); err != nil {
				return err
			}
			fmt.Fprintf(w, "account %s: role %s, disabled %v\n", got.Username, got.Role, got.Disabled)
			return nil
		}
	}
	return fmt.Errorf("no account named %q", username)
}

// Audit prints the clinic's audit log after seq (as JSON lines with asJSON),
// or verifies its chain.
func Audit(ctx context.Context, w io.Writer, base string, after int64, asJSON, verify bool) error {
	if verify {
		var v audit.Verification
		if err := send(ctx, http.MethodGet, base+"/v1/audit/verify", nil, &v); err != nil {
			return err
		}
		if !v.OK {
			return fmt.Errorf("audit chain %s is broken: %s", v.Chain, v.Problem)
		}
		fmt.Fprintf(w, "audit chain %s verified: %d entries, unbroken\n", v.Chain, v.Entries)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "SEQ\tWHEN\tWHO\tACTION\tKIND\tRECORD\tFROM\tOUTCOME")
	}
	for {
		var out struct {
			Items []audit.Entry `json:"items"`
		}
		if err := send(ctx, http.MethodGet, fmt.Sprintf("%s/v1/audit?after=%d&limit=1000", base, after), nil, &out); err != nil {
			return err
		}
		for _, e := range out.Items {
			if asJSON {
				b, _ := json.Marshal(e)
				fmt.Fprintln(w, string(b))
			} else {
				who := e.Actor
				if e.Username != "" {
					who += " (" + e.Username + ")"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", e.Seq, e.At.Local().Format(time.DateTime), who, e.Action, e.Kind, e.Target, e.Remote, e.Outcome)
			}
			after = e.Seq
		}
		if len(out.Items) < 1000 {
			break
		}
	}
	if !asJSON {
		return tw.Flush()
	}
	return nil
}
