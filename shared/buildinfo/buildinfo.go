// Package buildinfo says which build of a binary is running, for --version,
// /readyz, the scsync_build_info metric and the logs: the release version
// (set by the packaging with -ldflags -X, else the module version Go
// recorded) and the VCS commit (set with -ldflags -X, else the one Go
// embeds).
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

// Commit is the VCS commit, set with -ldflags -X where Go cannot record it
// (a container build without .git, a machine with GOFLAGS=-buildvcs=false):
//
//	-ldflags "-X github.com/scsync/scsync/shared/buildinfo.Commit=$(git rev-parse HEAD)"
//
// Empty means: the vcs.revision Go embedded, if any.
var Commit string

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
	in := Info{Version: Version, Commit: Commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
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
			if Commit == "" {
				in.Commit = s.Value
			}
		case "vcs.time":
			if Commit == "" {
				in.Time = s.Value
			}
		case "vcs.modified":
			in.Modified = Commit == "" && s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	in.Platform = goos + "/" + goarch
	return in
}

// ShortCommit is the commit's first 12 hex digits, "+modified" when the
// checkout had uncommitted changes ("" when not built from a checkout).
func (in Info) ShortCommit() string {
	c := in.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if c != "" && in.Modified {
		c += "+modified"
	}
	return c
}

// Release is the identity servers show in /readyz and status pages.
type Release struct {
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	Go      string `json:"go"`
}

// Release returns in's release identity.
func (in Info) Release() Release {
	return Release{Version: in.Version, Commit: in.ShortCommit(), Go: in.Go}
}

// String is the one line --version prints, e.g.
// "sc-local 1.4.0 (commit 62b918d1a2b3, 2026-12-05T05:54:09Z) go1.26.8 linux/amd64".
func (in Info) String(binary string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", binary, in.Version)
	if c := in.ShortCommit(); c != "" {
		fmt.Fprintf(&b, " (commit %s", c)
		if in.Time != "" {
			fmt.Fprintf(&b, ", %s", in.Time)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " %s %s", in.Go, in.Platform)
	return b.String()
}
