package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/config"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../../../deployments/sc-cloud.example.yaml")
	if err != nil {
		t.Fatalf("Load(example) = %v", err)
	}
	if c.S3.Bucket != "scsync-images" || c.Redis.LeaseTTL.Seconds() != 30 || c.Log.Format != "json" ||
		c.AMQP.ManagementURL == "" || c.AMQP.ClinicURL == "" || c.Lockd.ClinicURL == "" {
		t.Fatalf("Load(example) = %+v", c)
	}
}

func TestValidate(t *testing.T) {
	t.Setenv("SC_CLOUD_AUTH_ADMIN_TOKEN", "short")
	t.Setenv("SC_CLOUD_AMQP_PREFETCH", "0")
	t.Setenv("SC_CLOUD_AMQP_MANAGEMENT_URL", "http://127.0.0.1:15672")
	t.Setenv("SC_CLOUD_AUTH_TOTP_KEY", "c2hvcnQ=")
	_, err := Load("")
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Load = %v, want ErrInvalid", err)
	}
	for _, setting := range []string{"auth.admin_token", "amqp.prefetch", "amqp.management_password", "auth.totp_key"} {
		if !strings.Contains(err.Error(), setting) {
			t.Errorf("error %q does not name %s", err, setting)
		}
	}
}

func TestRetentionSettings(t *testing.T) {
	c, err := Load("../../../deployments/sc-cloud.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Retention.Interval != time.Hour || c.Retention.RestoreHold != 720*time.Hour || c.Files.UnsyncedGrace != 168*time.Hour {
		t.Fatalf("Load(example) retention = %+v, files grace %v", c.Retention, c.Files.UnsyncedGrace)
	}
	t.Setenv("SC_CLOUD_RETENTION_INTERVAL", "10m")
	t.Setenv("SC_CLOUD_FILES_COLD_BUCKET", "scsync-cold")
	t.Setenv("SC_CLOUD_FILES_UNSYNCED_GRACE", "48h")
	if c, err = Load(""); err != nil {
		t.Fatal(err)
	}
	if c.Retention.Interval != 10*time.Minute || c.Files.ColdBucket != "scsync-cold" || c.Files.UnsyncedGrace != 48*time.Hour {
		t.Fatalf("Load(env) = retention %+v, cold %q, grace %v", c.Retention, c.Files.ColdBucket, c.Files.UnsyncedGrace)
	}
	t.Setenv("SC_CLOUD_RETENTION_BATCH", "0")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "retention.batch") {
		t.Fatalf("Load(batch 0) = %v, want an error naming retention.batch", err)
	}
}

func TestValidateURLs(t *testing.T) {
	t.Setenv("SC_CLOUD_S3_ENDPOINT", "minio:9000")
	t.Setenv("SC_CLOUD_AMQP_URL", "rabbit.example.com")
	_, err := Load("")
	for _, setting := range []string{"s3.endpoint", "amqp.url"} {
		if err == nil || !strings.Contains(err.Error(), setting) {
			t.Errorf("Load = %v, want an error naming %s", err, setting)
		}
	}
}

// TestRequireTLS: with require_tls every plaintext link and the plaintext
// listener are refused, each named by its setting.
func TestRequireTLS(t *testing.T) {
	t.Setenv("SC_CLOUD_REQUIRE_TLS", "true")
	t.Setenv("SC_CLOUD_POSTGRES_URL", "postgres://u:p@db/x?sslmode=prefer")
	t.Setenv("SC_CLOUD_AMQP_URL", "amqp://u:p@mq:5672/")
	t.Setenv("SC_CLOUD_S3_ENDPOINT", "http://127.0.0.1:9000")
	t.Setenv("SC_CLOUD_LOCKD_URL", "https://lockd.internal")
	t.Setenv("SC_CLOUD_LOCKD_TOKEN", "lt_x")
	t.Setenv("SC_CLOUD_AMQP_MANAGEMENT_URL", "http://mq:15672")
	t.Setenv("SC_CLOUD_AMQP_MANAGEMENT_USER", "admin")
	t.Setenv("SC_CLOUD_AMQP_MANAGEMENT_PASSWORD", "secret")
	t.Setenv("SC_CLOUD_AMQP_CLINIC_URL", "amqp://mq.example.com:5672/")
	_, err := Load("")
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Load(require_tls, plaintext) = %v, want ErrInvalid", err)
	}
	for _, s := range []string{"tls.cert_file", "postgres.url", "amqp.url", "amqp.management_url", "amqp.clinic_url", "redis.tls", "s3.endpoint"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if strings.Contains(err.Error(), "lockd.url") {
		t.Errorf("error %q names lockd.url, which is https", err)
	}
	t.Setenv("SC_CLOUD_TLS_CERT_FILE", "/etc/scsync/cert.pem")
	t.Setenv("SC_CLOUD_TLS_KEY_FILE", "/etc/scsync/key.pem")
	t.Setenv("SC_CLOUD_POSTGRES_URL", "postgres://u:p@db/x?sslmode=verify-full")
	t.Setenv("SC_CLOUD_AMQP_URL", "amqps://u:p@mq:5671/")
	t.Setenv("SC_CLOUD_REDIS_TLS", "true")
	t.Setenv("SC_CLOUD_S3_ENDPOINT", "https://s3.eu-central-1.amazonaws.com")
	t.Setenv("SC_CLOUD_AMQP_MANAGEMENT_URL", "https://mq:15671")
	t.Setenv("SC_CLOUD_AMQP_CLINIC_URL", "amqps://mq.example.com:5671/")
	if _, err := Load(""); err != nil {
		t.Errorf("Load(require_tls, all TLS) = %v, want nil", err)
	}
}

// TestRedisSentinelSettings: the environment a Helm or compose install sets
// for Redis Sentinel loads (no redis.addr needed), and a half-set Sentinel
// is refused naming the setting.
func TestRedisSentinelSettings(t *testing.T) {
	t.Setenv("SC_CLOUD_REDIS_ADDR", "")
	t.Setenv("SC_CLOUD_REDIS_SENTINEL_ADDRS", "sentinel-0:26379,sentinel-1:26379,sentinel-2:26379")
	t.Setenv("SC_CLOUD_REDIS_SENTINEL_MASTER", "scsync")
	t.Setenv("SC_CLOUD_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
	c, err := Load("")
	if err != nil {
		t.Fatalf("Load(sentinel env) = %v", err)
	}
	s := c.Redis.Sentinel
	if len(s.Addrs) != 3 || s.Addrs[2] != "sentinel-2:26379" || s.Master != "scsync" || s.Password != "sentinel-secret" {
		t.Fatalf("Load(sentinel env) redis.sentinel = %+v", s)
	}
	t.Setenv("SC_CLOUD_REDIS_SENTINEL_MASTER", "")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "redis.sentinel.master") {
		t.Fatalf("Load(sentinel without master) = %v, want an error naming redis.sentinel.master", err)
	}
}
