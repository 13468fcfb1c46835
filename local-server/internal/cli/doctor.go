package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// minFree is the free disk space below which doctor warns.
const minFree = 5 << 30

// Doctor checks every dependency of the clinic server and prints, in plain
// words, what works and what is wrong. It returns an error when something
// must be fixed.
func Doctor(ctx context.Context, w io.Writer, cfg config.Config) error {
	var failed []string
	check := func(name string, fn func(context.Context) (string, error)) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		msg, err := fn(cctx)
		if err != nil {
			fmt.Fprintf(w, "  PROBLEM  %-12s %v\n", name, err)
			failed = append(failed, name)
			return
		}
		fmt.Fprintf(w, "  ok       %-12s %s\n", name, msg)
	}
	self := buildinfo.Read()
	fmt.Fprintf(w, "sc-local doctor: clinic %d, node %d\n", cfg.Clinic.ID, cfg.Clinic.Node)
	fmt.Fprintf(w, "  release  %s\n", self.String("sc-local"))
	check("data dir", func(context.Context) (string, error) { return checkDataDir(cfg.DataDir) })
	check("sc-local", func(ctx context.Context) (string, error) {
		if _, err := get(ctx, cfg.LocalURL()+"/healthz", ""); err != nil {
			return "", fmt.Errorf("not answering at %s (not started, or another address): %w", cfg.LocalURL(), err)
		}
		// /readyz names the running server's release (503 while a
		// required dependency is down still carries it).
		var rd struct {
			Build buildinfo.Release `json:"build"`
		}
		_ = getAnyJSON(ctx, cfg.LocalURL()+"/readyz", &rd)
		msg := "running at " + cfg.LocalURL() + ", release " + release(rd.Build)
		if rd.Build.Version != "" && rd.Build != self.Release() {
			msg += " — not this command's release: restart the service to run the installed one"
		}
		return msg, nil
	})
	check("cloud API", func(ctx context.Context) (string, error) { return checkCloud(ctx, cfg) })
	check("S3", func(ctx context.Context) (string, error) { return checkS3(ctx, cfg) })
	check("RabbitMQ", func(ctx context.Context) (string, error) {
		tc, err := cfg.ClientTLS().Config()
		if err != nil {
			return "", fmt.Errorf("tls.ca_file: %w", err)
		}
		conn, err := amqp.DialConfig(cfg.AMQP.URL, amqp.Config{Dial: amqp.DefaultDial(8 * time.Second), TLSClientConfig: tc})
		if err != nil {
			return "", fmt.Errorf("cannot connect (check amqp.url, the user and password, and the firewall): %w", err)
		}
		_ = conn.Close()
		return "connected", nil
	})
	check("lockd", func(ctx context.Context) (string, error) {
		if cfg.Lockd.URL == "" {
			return "not configured: every edit will be an 'edit anyway' without a lock", nil
		}
		if _, err := get(ctx, strings.TrimRight(cfg.Lockd.URL, "/")+"/readyz", ""); err != nil {
			return "", fmt.Errorf("not reachable (edits will be offered as 'edit anyway' until it is): %w", err)
		}
		return "reachable", nil
	})
	if len(failed) > 0 {
		return fmt.Errorf("%d problem(s): %s", len(failed), strings.Join(failed, ", "))
	}
	fmt.Fprintln(w, "everything answers")
	return nil
}

func checkDataDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("%s cannot be created: %w", dir, err)
	}
	probe := filepath.Join(dir, ".doctor-probe")
	if err := os.WriteFile(probe, []byte("ok"), 0o600); err != nil {
		return "", fmt.Errorf("%s is not writable: %w", dir, err)
	}
	_ = os.Remove(probe)
	free, err := freeBytes(dir)
	switch {
	case err != nil:
		return fmt.Sprintf("%s writable (free space unknown: %v)", dir, err), nil
	case free < minFree:
		return "", fmt.Errorf("%s has only %.1f GB free; image files need room (at least %d GB)", dir, float64(free)/1e9, minFree>>30)
	}
	return fmt.Sprintf("%s writable, %.1f GB free", dir, float64(free)/1e9), nil
}

// checkCloud checks the cloud answers, accepts the clinic's token, and that
// the clocks agree (ids and lock expiry rely on it).
func checkCloud(ctx context.Context, cfg config.Config) (string, error) {
	base := strings.TrimRight(cfg.Cloud.URL, "/")
	header, err := get(ctx, fmt.Sprintf("%s/v1/clinics/%d/changes?limit=1", base, cfg.Clinic.ID), cfg.Cloud.Token)
	var status *statusError
	switch {
	case errors.As(err, &status) && (status.code == http.StatusUnauthorized || status.code == http.StatusNotFound):
		return "", fmt.Errorf("the cloud refuses this clinic's token (%d): check clinic.id and cloud.token, or enroll again", status.code)
	case err != nil:
		return "", fmt.Errorf("not reachable at %s: %w", base, err)
	}
	msg := "reachable, token accepted"
	if date, err := http.ParseTime(header.Get("Date")); err == nil {
		skew := time.Since(date)
		if math.Abs(skew.Seconds()) > 120 {
			return "", fmt.Errorf("this machine's clock is %s off the cloud's: set up time synchronisation (NTP)", skew.Round(time.Second))
		}
		msg += fmt.Sprintf(", clock within %s of the cloud's", skew.Abs().Round(time.Second)+time.Second)
	}
	return msg, nil
}

// checkS3 asks the cloud for a presigned GET of an object that does not
// exist and sends it: image files and backups go straight between this
// machine and S3, so S3 must be reachable from here, not only the cloud.
// S3 answering 404 proves the way and the signature are good.
func checkS3(ctx context.Context, cfg config.Config) (string, error) {
	var p filekey.S3Probe
	tc, err := cfg.ClientTLS().Config()
	if err != nil {
		return "", fmt.Errorf("tls.ca_file: %w", err)
	}
	if err := cloudapi.New(cfg.Cloud.URL, cfg.Cloud.Token, ids.ID(cfg.Clinic.ID)).WithTLS(tc).S3Probe(ctx, &p); err != nil {
		return "", fmt.Errorf("the cloud did not give a test URL: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, p.Get.Method, p.Get.URL, nil)
	if err != nil {
		return "", err
	}
	p.Get.Request(req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("cannot reach the object store at %s (image files and backups go there directly; check the firewall and proxy): %w", req.URL.Host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "reachable at " + req.URL.Host + ", signed requests accepted", nil
	case strings.Contains(string(body), "RequestTimeTooSkewed"):
		return "", fmt.Errorf("the object store refuses this machine's clock: set up time synchronisation (NTP)")
	default:
		return "", fmt.Errorf("the object store at %s answered %s to a signed request", req.URL.Host, resp.Status)
	}
}

// getAnyJSON decodes url's JSON answer whatever its status.
func getAnyJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

type statusError struct{ code int }

func (e *statusError) Error() string {
	return fmt.Sprintf("answered %d %s", e.code, http.StatusText(e.code))
}

// get fetches url and returns the answer's headers; a status other than
// 200 is a *statusError.
func get(ctx context.Context, url, token string) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return resp.Header, &statusError{code: resp.StatusCode}
	}
	return resp.Header, nil
}
