package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/config"
)

func TestExampleConfigLoads(t *testing.T) {
	// The shipped example must parse (strict keys) and validate once the
	// enrollment values are filled in, here through the environment.
	t.Setenv("SC_LOCAL_CLINIC_ID", "382860661667921920")
	t.Setenv("SC_LOCAL_CLINIC_NODE", "17")
	t.Setenv("SC_LOCAL_CLOUD_TOKEN", "sct_x")
	c, err := Load("../../../deployments/sc-local.example.yaml")
	if err != nil {
		t.Fatalf("Load(example) = %v", err)
	}
	if c.Clinic.Node != 17 || c.DataDir != "/var/lib/scsync" || c.AMQP.Prefetch != 64 {
		t.Fatalf("Load(example) = %+v", c)
	}
}

func TestValidateNamesSettings(t *testing.T) {
	_, err := Load("")
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Load(defaults) = %v, want ErrInvalid (no enrollment yet)", err)
	}
	for _, setting := range []string{"clinic.id", "clinic.node", "cloud.url", "cloud.token"} {
		if !strings.Contains(err.Error(), setting) {
			t.Errorf("error %q does not name %s", err, setting)
		}
	}
	t.Setenv("SC_LOCAL_CLINIC_NODE", "12288") // a cloud node id
	_, err = Load("")
	if err == nil || !strings.Contains(err.Error(), "clinic.node must be 1..12287") {
		t.Errorf("cloud-range node accepted: %v", err)
	}
}
