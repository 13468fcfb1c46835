// Command registry-proxy is the throw-away forward proxy of
// scripts/fresh-debian-trial.sh: a root in its own network namespace reaches
// the package registries through it, and nothing else. It answers CONNECT
// (HTTPS) and plain-HTTP requests whose host is on the allow list, refuses
// the rest with 403, and logs one line per request.
//
// It is run with `go run` from the trial script; it is not part of any
// module and is not built by make.
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// allowed lists the hosts (and, with a leading dot, their subdomains) the
// proxy forwards to: the Go module proxy and checksum database, the Go
// toolchain downloads, and Debian's mirrors.
var allowed = []string{
	"proxy.golang.org", "sum.golang.org", "storage.googleapis.com",
	"golang.org", "go.dev", "dl.google.com",
	"deb.debian.org", "security.debian.org",
}

func allow(host string) bool {
	h := strings.ToLower(host)
	if name, _, err := net.SplitHostPort(h); err == nil {
		h = name
	}
	for _, a := range allowed {
		if h == a || strings.HasSuffix(h, "."+a) {
			return true
		}
	}
	return false
}

func main() {
	addr := flag.String("listen", "10.77.0.1:3128", "address to listen on")
	flag.Parse()

	dialer := &net.Dialer{Timeout: 30 * time.Second}
	transport := &http.Transport{DialContext: dialer.DialContext, Proxy: nil}
	srv := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 30 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host := r.Host
			if r.Method != http.MethodConnect && r.URL.Host != "" {
				host = r.URL.Host
			}
			if !allow(host) {
				log.Printf("DENY  %s %s", r.Method, host)
				http.Error(w, "registry-proxy: host not allowed", http.StatusForbidden)
				return
			}
			log.Printf("ALLOW %s %s", r.Method, host)
			if r.Method == http.MethodConnect {
				tunnel(w, r, dialer)
				return
			}
			forward(w, r, transport)
		}),
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Printf("registry-proxy listening on %s, allowing %s", *addr, strings.Join(allowed, " "))
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// tunnel answers CONNECT: dial the host, then copy bytes both ways.
func tunnel(w http.ResponseWriter, r *http.Request, d *net.Dialer) {
	up, err := d.DialContext(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = up.Close()
		http.Error(w, "no hijack", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		_ = up.Close()
		return
	}
	if _, err := down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = up.Close()
		_ = down.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		// Bytes the client sent after its CONNECT header are already buffered.
		_, _ = io.Copy(up, buf)
		if c, ok := up.(*net.TCPConn); ok {
			_ = c.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(down, up)
		if c, ok := down.(*net.TCPConn); ok {
			_ = c.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
	_ = up.Close()
	_ = down.Close()
}

// forward relays a plain-HTTP proxy request (apt uses these for deb.debian.org).
func forward(w http.ResponseWriter, r *http.Request, t *http.Transport) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Connection")
	out.Header.Del("Proxy-Authorization")
	resp, err := t.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
