package service

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// winAbs makes a Windows path absolute as filepath.Abs does on Windows, so
// the Windows code paths of Parse run on Linux.
func winAbs(p string) (string, error) {
	if len(p) > 2 && p[1] == ':' {
		return p, nil
	}
	return `C:\Windows\System32\` + p, nil
}

func TestParse(t *testing.T) {
	const def = `C:\ProgramData\scsync\sc-local.yaml`
	for _, tt := range []struct {
		args    []string
		config  string
		want    Options
		wantErr string
	}{
		{[]string{"install"}, "", Options{Action: Install, Config: def, Name: Name}, ""},
		{[]string{"install", "-name", "scsync-local-2"}, `D:\scsync\b.yaml`, Options{Action: Install, Config: `D:\scsync\b.yaml`, Name: "scsync-local-2"}, ""},
		{[]string{"INSTALL"}, "c.yaml", Options{Action: Install, Config: `C:\Windows\System32\c.yaml`, Name: Name}, ""},
		{[]string{"run"}, "", Options{Action: Run, Config: def, Name: Name}, ""},
		{[]string{"start"}, "", Options{Action: Start, Name: Name}, ""},
		{[]string{"stop", "-name", "x_1"}, "", Options{Action: Stop, Name: "x_1"}, ""},
		{[]string{"uninstall"}, "", Options{Action: Uninstall, Name: Name}, ""},
		{nil, "", Options{}, "say what to do"},
		{[]string{"restart"}, "", Options{}, `unknown action "restart"`},
		{[]string{"install", "extra"}, "", Options{}, `unexpected "extra"`},
		{[]string{"install", "-name", "bad name"}, "", Options{}, "letters, digits"},
		{[]string{"install", "-bogus"}, "", Options{}, "bogus"},
	} {
		got, err := Parse(tt.args, tt.config, def, winAbs)
		switch {
		case tt.wantErr != "":
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) = %v, want ErrUsage with %q", tt.args, err, tt.wantErr)
			}
		case err != nil || got != tt.want:
			t.Errorf("Parse(%q, %q) = %+v, %v, want %+v", tt.args, tt.config, got, err, tt.want)
		}
	}
	// Without any config file the service cannot run.
	if _, err := Parse([]string{"install"}, "", "", winAbs); !errors.Is(err, ErrUsage) {
		t.Errorf("Parse(install) without a config = %v, want ErrUsage", err)
	}
}

func TestRunArgs(t *testing.T) {
	o := Options{Action: Install, Config: `C:\ProgramData\scsync\sc-local.yaml`, Name: Name}
	if got, want := RunArgs(o), []string{"-config", o.Config, "service", "run"}; !slices.Equal(got, want) {
		t.Errorf("RunArgs = %q, want %q", got, want)
	}
	o.Name = "scsync-local-2"
	if got := RunArgs(o); !slices.Equal(got[len(got)-2:], []string{"-name", "scsync-local-2"}) {
		t.Errorf("RunArgs with a name = %q, want -name last", got)
	}
	// What install registers parses back to the same service.
	back, err := Parse(RunArgs(o)[2+1:], o.Config, "", winAbs)
	if err != nil || back.Name != o.Name || back.Config != o.Config || back.Action != Run {
		t.Errorf("Parse(RunArgs) = %+v, %v", back, err)
	}
}

func TestDoOffWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows has a service manager")
	}
	err := Do(context.Background(), Options{Action: Install, Name: Name}, nil)
	if !errors.Is(err, ErrNotWindows) || !strings.Contains(err.Error(), "systemd") {
		t.Errorf("Do(install) on %s = %v, want ErrNotWindows pointing at systemd", runtime.GOOS, err)
	}
	if IsWindowsService() {
		t.Errorf("IsWindowsService() = true on %s", runtime.GOOS)
	}
}

func TestSetupCommands(t *testing.T) {
	exe := `C:\Program Files\scsync\sc-local.exe`
	add := strings.Join(firewallAdd(exe), " ")
	for _, want := range []string{"name=" + FirewallRule, "dir=in", "action=allow", "program=" + exe, "profile=domain,private"} {
		if !strings.Contains(add, want) {
			t.Errorf("firewallAdd = %q, want %q in it", add, want)
		}
	}
	if strings.Contains(add, "public") {
		t.Errorf("firewallAdd = %q opens the public profile", add)
	}
	if del := firewallDelete(); del[len(del)-1] != "name="+FirewallRule {
		t.Errorf("firewallDelete = %q", del)
	}
	acl := lockDown(`C:\ProgramData\scsync`)
	if acl[0] != `C:\ProgramData\scsync` || !slices.Contains(acl, "/inheritance:r") ||
		!slices.Contains(acl, "*S-1-5-18:(OI)(CI)F") || !slices.Contains(acl, "*S-1-5-32-544:(OI)(CI)F") {
		t.Errorf("lockDown = %q, want SYSTEM and Administrators only, inheritance removed", acl)
	}
	o, err := Parse([]string{"setup"}, "", `C:\ProgramData\scsync\sc-local.yaml`, winAbs)
	if err != nil || o.Action != Setup || o.Config != `C:\ProgramData\scsync\sc-local.yaml` {
		t.Errorf("Parse(setup) = %+v, %v", o, err)
	}
}
