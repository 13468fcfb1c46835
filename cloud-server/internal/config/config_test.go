package config

import (
	"errors"
	"strings"
	"testing"

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
