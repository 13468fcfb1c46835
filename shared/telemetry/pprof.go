package telemetry

import (
	"net/http"
	"net/http/pprof"
	"os"
)

// MountPprof serves Go's profiler under /debug/pprof/ when the environment
// sets SCSYNC_PPROF=1: for finding where time goes on a live server. It is
// off by default (profiles reveal internals and cost CPU).
func MountPprof(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) bool {
	if os.Getenv("SCSYNC_PPROF") != "1" {
		return false
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return true
}
