// Package buildinfo says which build of a binary is running, for --version
// and the logs: the release version (set by the packaging with -ldflags -X,
// else the module version Go recorded) and the VCS commit Go embeds.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release version. `make package` sets it:
//
//	-ldflags "-X github.com/scsync/scsync/shared/buildinfo.Version=1.4.0"
//
// Empty means: use the module version from the build info ("(devel)" for a
// build from a checkout).
var Version string

// Info is what a binary knows about its own build.
type Info struct {
	Version  string // "1.4.0", or "(devel)"
	Commit   string // VCS revision, "" when not built from a checkout
	Time     string // commit time (RFC 3339), ""
	Modified bool   // the checkout had uncommitted changes
	Go       string // go1.26.8
	Platform string // linux/amd64
}

// Read returns this binary's build info.
func Read() Info {
	return fromBuildInfo(debug.ReadBuildInfo())
}

func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	in := Info{Version: Version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	goos, goarch := runtime.GOOS, runtime.GOARCH
	if !ok || bi == nil {
		if in.Version == "" {
			in.Version = "(unknown)"
		}
		return in
	}
	if in.Version == "" {
		in.Version = bi.Main.Version
	}
	if in.Version == "" {
		in.Version = "(devel)"
	}
	if bi.GoVersion != "" {
		in.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Commit = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	in.Platform = goos + "/" + goarch
	return in
}

// String is the one line --version prints, e.g.
// "sc-local 1.4.0 (commit 62b918d1a2b3, 2026-12-05T05:54:09Z) go1.26.8 linux/amd64".
func (in Info) String(binary string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", binary, in.Version)
	if in.Commit != "" {
		c := in.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		if in.Modified {
			c += "+modified"
		}
		fmt.Fprintf(&b, " (commit %s", c)
		if in.Time != "" {
			fmt.Fprintf(&b, ", %s", in.Time)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " %s %s", in.Go, in.Platform)
	return b.String()
}
