package testenv

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresAdminURL is the maintenance connection used to create and drop
// per-test databases; override with SCSYNC_TEST_PG_URL.
func PostgresAdminURL() string {
	return Env("SCSYNC_TEST_PG_URL", "postgres://scsync:scsync@127.0.0.1:5432/postgres?sslmode=disable")
}

// PostgresDB creates a fresh database for the test and returns its URL. The
// database is dropped when the test ends.
func PostgresDB(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := PostgresAdminURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		Unavailable(t, "postgres", err)
	}
	defer conn.Close(ctx)
	name := Name("scsync_test")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	u, err := DatabaseURL(admin, name)
	if err != nil {
		t.Fatalf("test database URL: %v", err)
	}
	return u
}

// DatabaseURL is admin with its database replaced by name. User, password
// and options are kept: Debian's default pg_hba.conf asks for a password on
// 127.0.0.1, so dropping it would only work on machines that trust loopback.
func DatabaseURL(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("SCSYNC_TEST_PG_URL is not a postgres:// URL")
	}
	u.Path = "/" + name
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
