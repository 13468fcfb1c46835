package config

import "strings"

// Paths are where sc-local keeps its config and data by default on a platform.
type Paths struct {
	ConfigFile string
	DataDir    string
}

// DefaultPaths are the defaults on goos. On Windows they are under
// %ProgramData% (C:\ProgramData unless set): a service runs with
// C:\Windows\System32 as its working directory, so a relative data
// directory would land there. getenv reads the environment (os.Getenv).
func DefaultPaths(goos string, getenv func(string) string) Paths {
	if goos == "windows" {
		pd := strings.TrimRight(getenv("ProgramData"), `\/`)
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return Paths{ConfigFile: pd + `\scsync\sc-local.yaml`, DataDir: pd + `\scsync\data`}
	}
	// The Debian package's layout. It is not the default elsewhere: a
	// developer's sc-local without a config keeps ./scsync-data, and the
	// systemd unit names its config.
	return Paths{ConfigFile: "/etc/scsync/sc-local.yaml", DataDir: "/var/lib/scsync"}
}
