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
	if c.S3.Bucket != "scsync-images" || c.Redis.LeaseTTL.Seconds() != 30 || c.Log.Format != "json" {
		t.Fatalf("Load(example) = %+v", c)
	}
}

func TestValidate(t *testing.T) {
	t.Setenv("SC_CLOUD_AUTH_ADMIN_TOKEN", "short")
	t.Setenv("SC_CLOUD_AMQP_PREFETCH", "0")
	_, err := Load("")
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Load = %v, want ErrInvalid", err)
	}
	for _, setting := range []string{"auth.admin_token", "amqp.prefetch"} {
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
