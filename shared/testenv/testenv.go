// Package testenv gives integration tests their own isolated slice of the real
// development services: a RabbitMQ vhost, a PostgreSQL database, a Redis key
// prefix, an S3 bucket. A test that cannot reach a service fails when CI=true
// and skips (loudly) otherwise; it never passes silently.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Unavailable reports that a service a test needs cannot be reached. Under
// CI=true it fails the test; elsewhere it skips with the reason, so a
// developer without the stack sees exactly what is missing.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s unavailable: %v (start it with `make stack-up`)", service, err)
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// InCI reports whether the tests run under CI (CI=true), where a missing
// service is a failure rather than a skip.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// Name returns a short unique name built from prefix, safe for vhosts,
// database names, bucket names and key prefixes (lowercase, [a-z0-9_]).
func Name(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s_%s", prefix, hex.EncodeToString(b[:]))
}

// Env returns the value of the environment variable key, or def when unset.
func Env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// CheckFor polls fn every interval until it returns nil or timeout passes;
// on timeout the test fails with fn's last error. Tests poll instead of sleeping.
func CheckFor(t testing.TB, timeout, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}
