// Package stack runs the real scsync binaries for a benchmark against the
// development services, each benchmark in its own RabbitMQ vhost,
// PostgreSQL database, Redis key prefix and S3 bucket, removed afterwards.
package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
)

// Env is where the development services listen; the defaults come from
// the SCSYNC_TEST_* variables that `scripts/stack.sh env` exports.
type Env struct {
	AMQPHost    string
	AMQPPort    string
	PGAdminURL  string
	RedisAddr   string
	S3Endpoint  string
	S3AccessKey string
	S3SecretKey string
	Log         *slog.Logger
}

// FromEnvironment reads the SCSYNC_TEST_* variables, with the dev stack's
// defaults.
func FromEnvironment(log *slog.Logger) Env {
	return Env{
		AMQPHost:    getenv("SCSYNC_TEST_AMQP_HOST", "127.0.0.1"),
		AMQPPort:    getenv("SCSYNC_TEST_AMQP_PORT", "5672"),
		PGAdminURL:  getenv("SCSYNC_TEST_PG_URL", "postgres://scsync:scsync@127.0.0.1:5432/postgres?sslmode=disable"),
		RedisAddr:   getenv("SCSYNC_TEST_REDIS_ADDR", "127.0.0.1:6379"),
		S3Endpoint:  getenv("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
		S3AccessKey: getenv("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		S3SecretKey: getenv("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"),
		Log:         log,
	}
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Name returns a short unique name for a vhost, database, bucket or
// prefix: lowercase letters, digits and '_'.
func Name(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// Cleanup collects the undo steps of a benchmark's resources and runs them
// in reverse order.
type Cleanup struct {
	fns []func()
}

// Add registers fn to run at Close.
func (c *Cleanup) Add(fn func()) { c.fns = append(c.fns, fn) }

// Close runs the registered steps, last first.
func (c *Cleanup) Close() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// Vhost creates a RabbitMQ vhost that guest may use and returns its AMQP
// URL; cleanup deletes it with everything in it.
func (e Env) Vhost(ctx context.Context, cl *Cleanup, prefix string) (string, error) {
	addr := net.JoinHostPort(e.AMQPHost, e.AMQPPort)
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("rabbitmq at %s: %w", addr, err)
	}
	_ = conn.Close()
	vhost := Name(prefix)
	// Through the management API, not rabbitmqctl, which Debian lets only
	// root and the rabbitmq user run: the benchmarks run as any user.
	rh, err := rabbithole.NewClient(getenv("SCSYNC_TEST_RABBIT_MGMT", "http://127.0.0.1:15672"),
		getenv("SCSYNC_TEST_RABBIT_MGMT_USER", "guest"), getenv("SCSYNC_TEST_RABBIT_MGMT_PASSWORD", "guest"))
	if err != nil {
		return "", fmt.Errorf("rabbitmq management API: %w", err)
	}
	if err := closeBody(rh.PutVhost(vhost, rabbithole.VhostSettings{})); err != nil {
		return "", fmt.Errorf("create vhost %s (is the management plugin enabled? make stack-up enables it): %w", vhost, err)
	}
	cl.Add(func() {
		if err := closeBody(rh.DeleteVhost(vhost)); err != nil {
			e.Log.Warn("vhost not deleted", "vhost", vhost, "err", err)
		}
	})
	if err := closeBody(rh.UpdatePermissionsIn(vhost, "guest", rabbithole.Permissions{Configure: ".*", Write: ".*", Read: ".*"})); err != nil {
		return "", fmt.Errorf("permissions on vhost %s: %w", vhost, err)
	}
	return fmt.Sprintf("amqp://guest:guest@%s/%s", addr, vhost), nil
}

// closeBody closes a management API answer's body and returns err.
func closeBody(res *http.Response, err error) error {
	if res != nil && res.Body != nil {
		_ = res.Body.Close()
	}
	return err
}

// PostgresDB creates a database and returns its URL; cleanup drops it.
func (e Env) PostgresDB(ctx context.Context, cl *Cleanup, prefix string) (string, error) {
	conn, err := pgx.Connect(ctx, e.PGAdminURL)
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	name := Name(prefix)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	cl.Add(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, e.PGAdminURL)
		if err != nil {
			e.Log.Warn("database not dropped", "db", name, "err", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			e.Log.Warn("database not dropped", "db", name, "err", err)
		}
	})
	cfg, err := pgx.ParseConfig(e.PGAdminURL)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", e.PGAdminURL, err)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name), nil
}

// ErrNotReady is returned when a process does not become ready in time.
var ErrNotReady = errors.New("stack: not ready")
