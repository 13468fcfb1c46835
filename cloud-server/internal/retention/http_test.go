package retention

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/scsync/scsync/cloud-server/internal/api"
	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/wire"
)

const adminToken = "admin-token-for-retention-tests"

// serve mounts sc-cloud's record, file and retention routes behind its
// real authorization, over svc.
func serve(t *testing.T, e *env, svc *Service, fs *files.Service) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	apiSrv := api.New(e.st, nil, e.gen, adminToken, func() {}, e.log)
	apiSrv.Register(mux)
	for _, rt := range fs.Routes() {
		mux.HandleFunc(rt.Pattern, apiSrv.Clinic(rt.Handler))
	}
	svc.Register(mux, apiSrv)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// call sends a JSON request and returns the status, the error code of a
// non-2xx answer, and decodes a 2xx answer into out.
func call(t *testing.T, srv *httptest.Server, method, path, token string, in, out any) (int, string) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		var e httpapi.Error
		if err := json.Unmarshal(b, &e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("%s %s = %d %s: not a JSON {code, message} error", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, e.Code
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, ""
}

func TestHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	srv := serve(t, e, e.svc, e.fs)
	a, tokA := e.clinic(t)
	b, tokB := e.clinic(t)
	sha := e.upload(t, a, randomBytes(t, 8000))
	shaB := e.upload(t, b, randomBytes(t, 8000))
	study := e.study(t, a, oldDate)
	img := e.image(t, a, study, oldDate, sha)
	e.image(t, b, e.study(t, b, oldDate), oldDate, shaB)
	retA, retB := "/v1/admin/clinics/"+a.String()+"/retention", "/v1/admin/clinics/"+b.String()+"/retention"
	fileA := func(p string) string { return filekey.Path(p, a, sha) }

	type want struct {
		status int
		code   string
	}
	for _, tt := range []struct {
		name                string
		method, path, token string
		body                any
		want                want
	}{
		{"admin view without token", "GET", retA, "", nil, want{401, httpapi.CodeUnauthorized}},
		{"admin view with a clinic token", "GET", retA, tokA, nil, want{401, httpapi.CodeUnauthorized}},
		{"admin set with a clinic token", "PUT", retA, tokA, PolicyRequest{Mode: "delete", AfterDays: 1}, want{401, httpapi.CodeUnauthorized}},
		{"unknown mode", "PUT", retA, adminToken, PolicyRequest{Mode: "shred", AfterDays: 1}, want{400, CodeInvalidRetention}},
		{"delete without days", "PUT", retA, adminToken, PolicyRequest{Mode: "delete"}, want{400, CodeInvalidRetention}},
		{"too many days", "PUT", retA, adminToken, PolicyRequest{Mode: "backup", AfterDays: 36501}, want{400, CodeInvalidRetention}},
		{"unknown field", "PUT", retA, adminToken, map[string]any{"mode": "keep", "days": 3}, want{400, httpapi.CodeBadRequest}},
		{"unknown clinic", "PUT", "/v1/admin/clinics/77/retention", adminToken, PolicyRequest{Mode: "keep"}, want{404, httpapi.CodeNotFound}},
		{"bad clinic id", "GET", "/v1/admin/clinics/x/retention", adminToken, nil, want{400, httpapi.CodeBadRequest}},
		{"clinic view of another clinic", "GET", "/v1/clinics/" + b.String() + "/retention", tokA, nil, want{404, httpapi.CodeNotFound}},
		{"clinic B restoring clinic A's file", "POST", fileA(filekey.PathRestore), tokB, nil, want{404, httpapi.CodeNotFound}},
		{"clinic B restoring clinic A's record", "POST", "/v1/clinics/" + a.String() + "/images/" + img.String() + "/restore", tokB, nil, want{404, httpapi.CodeNotFound}},
		{"restore another clinic's file", "POST", filekey.Path(filekey.PathRestore, b, shaB), tokA, nil, want{404, httpapi.CodeNotFound}},
		{"restore a file the clinic does not have", "POST", filekey.Path(filekey.PathRestore, a, shaB), tokA, nil, want{404, httpapi.CodeNotFound}},
		{"restore a bad sha", "POST", filekey.Path(filekey.PathRestore, a, "abc"), tokA, nil, want{400, filekey.CodeInvalidSHA256}},
		{"restore a present file", "POST", fileA(filekey.PathRestore), tokA, nil, want{200, ""}},
		{"restore an unknown record", "POST", "/v1/clinics/" + a.String() + "/images/12345/restore", tokA, nil, want{404, httpapi.CodeNotFound}},
		{"restore an unknown collection", "POST", "/v1/clinics/" + a.String() + "/pets/1/restore", tokA, nil, want{404, httpapi.CodeNotFound}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if status, code := call(t, srv, tt.method, tt.path, tt.token, tt.body, nil); status != tt.want.status || code != tt.want.code {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, status, code, tt.want.status, tt.want.code)
			}
		})
	}

	// Backup retention through the admin API, applied; the clinic sees
	// the state, the record says backed-up, downloads answer file_archived.
	var v View
	if status, code := call(t, srv, "PUT", retA, adminToken, PolicyRequest{Mode: "backup", AfterDays: 90}, &v); status != 200 {
		t.Fatalf("PUT retention = %d %s", status, code)
	}
	if v.Policy.Mode != store.RetentionBackup || v.Policy.AfterDays != 90 || !v.ColdStorage {
		t.Fatalf("PUT retention = %+v", v)
	}
	if _, err := e.svc.Apply(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		RetentionState string `json:"retention_state"`
	}
	call(t, srv, "GET", "/v1/clinics/"+a.String()+"/images/"+img.String(), tokA, nil, &rec)
	if rec.RetentionState != store.RetentionBackedUp {
		t.Fatalf("GET image retention_state = %q, want backed-up", rec.RetentionState)
	}
	var page struct {
		Items []struct {
			ID             string `json:"id"`
			RetentionState string `json:"retention_state"`
		} `json:"items"`
	}
	call(t, srv, "GET", "/v1/clinics/"+a.String()+"/images?retention_state=backed-up", tokA, nil, &page)
	if len(page.Items) != 1 || page.Items[0].ID != img.String() {
		t.Fatalf("list images?retention_state=backed-up = %+v, want the image", page)
	}
	if status, code := call(t, srv, "GET", "/v1/clinics/"+a.String()+"/images?retention_state=gone", tokA, nil, nil); status != 400 || code != httpapi.CodeBadRequest {
		t.Fatalf("list with a bad retention_state = %d %s, want 400", status, code)
	}
	if status, code := call(t, srv, "GET", "/v1/clinics/"+a.String()+"/retention", tokA, nil, &v); status != 200 ||
		v.Files.ByState[filekey.StateArchived] != 1 || countOf(v, wire.KindImage).BackedUp != 1 {
		t.Fatalf("clinic view = %d %s %+v", status, code, v)
	}
	if status, code := call(t, srv, "GET", fileA(filekey.PathDownload), tokA, nil, nil); status != 409 || code != filekey.CodeArchived {
		t.Fatalf("download archived = %d %s, want 409 %s", status, code, filekey.CodeArchived)
	}
	// Clinic B (keep) saw nothing of it.
	call(t, srv, "GET", retB, adminToken, nil, &v)
	if v.Policy.Mode != store.RetentionKeep || v.Files.ByState[filekey.StatePresent] != 1 {
		t.Fatalf("clinic B view = %+v", v)
	}

	// The clinic restores the record: the file comes back, downloadable.
	var out Restored
	if status, code := call(t, srv, "POST", "/v1/clinics/"+a.String()+"/images/"+img.String()+"/restore", tokA, nil, &out); status != 200 || len(out.Files) != 1 || out.Files[0].State != filekey.StatePresent {
		t.Fatalf("restore record = %d %s %+v", status, code, out)
	}
	var dl filekey.DownloadResponse
	if status, code := call(t, srv, "GET", fileA(filekey.PathDownload), tokA, nil, &dl); status != 200 || dl.SHA256 != sha {
		t.Fatalf("download restored = %d %s", status, code)
	}
	// The admin restores the same file again: idempotent.
	if status, code := call(t, srv, "POST", fileA(filekey.PathRestore), adminToken, nil, &out); status != 200 {
		t.Fatalf("admin restore = %d %s", status, code)
	}

	// Un-synced: file_unsynced; after the grace: file_deleted (410).
	call(t, srv, "POST", "/v1/clinics/"+a.String()+"/images/"+img.String()+"/unsync", tokA, nil, nil)
	if status, code := call(t, srv, "GET", fileA(filekey.PathDownload), tokA, nil, nil); status != 409 || code != filekey.CodeUnsynced {
		t.Fatalf("download unsynced = %d %s, want 409 %s", status, code, filekey.CodeUnsynced)
	}
	if _, err := e.fileService(t, func(c *files.Config) { c.UnsyncedGrace = 0 }).ExpireUnsynced(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status, code := call(t, srv, "GET", fileA(filekey.PathDownload), tokA, nil, nil); status != 410 || code != filekey.CodeDeleted {
		t.Fatalf("download deleted = %d %s, want 410 %s", status, code, filekey.CodeDeleted)
	}
	if status, code := call(t, srv, "POST", fileA(filekey.PathRestore), tokA, nil, nil); status != 410 || code != filekey.CodeDeleted {
		t.Fatalf("restore deleted = %d %s, want 410 %s", status, code, filekey.CodeDeleted)
	}
	var f filekey.File
	call(t, srv, "GET", fileA(filekey.PathFile), tokA, nil, &f)
	if f.State != filekey.StateDeleted || f.RemovedAt == nil {
		t.Fatalf("GET file = %+v, want deleted with removed_at", f)
	}

	// Without a cold bucket, backup is refused.
	noCold := newEnv(t, false)
	c, _ := noCold.clinic(t)
	srv2 := serve(t, noCold, noCold.svc, noCold.fs)
	if status, code := call(t, srv2, "PUT", "/v1/admin/clinics/"+c.String()+"/retention", adminToken, PolicyRequest{Mode: "backup", AfterDays: 5}, nil); status != 409 || code != filekey.CodeNoColdStorage {
		t.Fatalf("backup without cold storage = %d %s, want 409 %s", status, code, filekey.CodeNoColdStorage)
	}
}

func countOf(v View, k wire.Kind) store.RetentionCount {
	for _, c := range v.Records {
		if c.Kind == k {
			return c
		}
	}
	return store.RetentionCount{}
}
