package app

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/shared/httpapi"
)

func TestReadyzOfflineFirst(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("connection refused") }
	for _, tt := range []struct {
		name                  string
		db, broker, cloud, lk httpapi.Check
		wantCode              int
		wantDown, wantDegr    []string
	}{
		{"all up", ok, ok, ok, ok, 200, nil, nil},
		{"clinic offline", ok, down, down, down, 200, nil, []string{"cloud_api", "lockd", "rabbitmq"}},
		{"no lockd configured, cloud away", ok, ok, down, nil, 200, nil, []string{"cloud_api"}},
		{"database broken", down, ok, ok, ok, 503, []string{"sqlite"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := readiness(tt.db, tt.broker, tt.cloud, tt.lk)
			mux := http.NewServeMux()
			h.Register(mux)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			var r httpapi.Readiness
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.wantCode || !slices.Equal(r.Down, tt.wantDown) || !slices.Equal(r.Degraded, tt.wantDegr) {
				t.Errorf("/readyz = %d down=%v degraded=%v, want %d down=%v degraded=%v",
					rec.Code, r.Down, r.Degraded, tt.wantCode, tt.wantDown, tt.wantDegr)
			}

			reg := prometheus.NewRegistry()
			registerReadinessMetrics(reg, h)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				if mf.GetName() != "scsync_local_component_up" {
					continue
				}
				for _, m := range mf.GetMetric() {
					var comp, req string
					for _, l := range m.GetLabel() {
						switch l.GetName() {
						case "component":
							comp = l.GetValue()
						case "required":
							req = l.GetValue()
						}
					}
					if (comp == "sqlite") != (req == "true") {
						t.Errorf("component %s required=%s", comp, req)
					}
					got[comp] = m.GetGauge().GetValue()
				}
			}
			for _, c := range tt.wantDegr {
				if v, ok := got[c]; !ok || v != 0 {
					t.Errorf("scsync_local_component_up{component=%q} = %v (present %v), want 0", c, v, ok)
				}
			}
			if want := map[bool]float64{true: 0, false: 1}[len(tt.wantDown) > 0]; got["sqlite"] != want {
				t.Errorf("scsync_local_component_up{component=sqlite} = %v, want %v", got["sqlite"], want)
			}
		})
	}
}
