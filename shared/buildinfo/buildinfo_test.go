package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "GOOS", Value: "windows"}, {Key: "GOARCH", Value: "amd64"},
		{Key: "vcs.revision", Value: "62b918d1a2b3c4d5e6f7"}, {Key: "vcs.time", Value: "2026-12-05T05:54:09Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	got := fromBuildInfo(bi, true).String("sc-local")
	want := "sc-local (devel) (commit 62b918d1a2b3+modified, 2026-12-05T05:54:09Z) go1.26.8 windows/amd64"
	if got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	Version = "1.4.0"
	defer func() { Version = "" }()
	if got := fromBuildInfo(bi, true).String("lockd"); !strings.HasPrefix(got, "lockd 1.4.0 (commit") {
		t.Errorf("String with Version set = %q", got)
	}
	if got := fromBuildInfo(nil, false).String("x"); !strings.HasPrefix(got, "x 1.4.0 go") {
		t.Errorf("String without build info = %q", got)
	}
	if got := Read(); got.Go == "" || got.Version == "" {
		t.Errorf("Read() = %+v, want a Go and a version", got)
	}
}

func TestRelease(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "62b918d1a2b3c4d5e6f7"}, {Key: "vcs.modified", Value: "false"},
	}}
	got := fromBuildInfo(bi, true).Release()
	want := Release{Version: "(devel)", Commit: "62b918d1a2b3", Go: "go1.26.8"}
	if got != want {
		t.Errorf("Release() = %+v, want %+v", got, want)
	}
}

func TestCommitOverride(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "62b918d1a2b3c4d5e6f7"}, {Key: "vcs.modified", Value: "true"},
	}}
	Commit = "edfbac7aaaabbbbccccdddd"
	defer func() { Commit = "" }()
	if got := fromBuildInfo(bi, true).ShortCommit(); got != "edfbac7aaaab" {
		t.Errorf("ShortCommit with Commit set = %q, want edfbac7aaaab", got)
	}
	if got := fromBuildInfo(nil, false).String("lockd"); !strings.Contains(got, "(commit edfbac7aaaab)") {
		t.Errorf("String without build info, Commit set = %q", got)
	}
}
