package openapi

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

const good = `{"openapi":"3.1.0","info":{"title":"t","version":"1"},
 "paths":{"/v1/{collection}/{id}":{"get":{"operationId":"read","summary":"Read.",
   "parameters":[{"$ref":"#/components/parameters/collection"},{"name":"id","in":"path","required":true,"schema":{"type":"string"}}],
   "security":[{"bearer":[]}],
   "responses":{"200":{"description":"ok"},"default":{"$ref":"#/components/responses/Error"}}}},
  "/viewer/":{"get":{"operationId":"viewer","summary":"Viewer.","security":[{}],"responses":{"200":{"description":"ok"}}}}},
 "components":{"schemas":{"Error":{"type":"object","required":["code","message"]}},
  "parameters":{"collection":{"name":"collection","in":"path","required":true,"schema":{"type":"string"}}},
  "responses":{"Error":{"description":"e","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}}},
  "securitySchemes":{"bearer":{"type":"http","scheme":"bearer"}}}}`

func TestCheckAcceptsAValidDocument(t *testing.T) {
	if err := Check([]byte(good)); err != nil {
		t.Fatal(err)
	}
	ops, err := Operations([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"GET /v1/{collection}/{id}", "GET /viewer/"}; !slices.Equal(ops, want) {
		t.Fatalf("operations = %v, want %v", ops, want)
	}
}

func TestCheckFindsEachProblem(t *testing.T) {
	cases := map[string]struct{ old, new, want string }{
		"version":        {`"3.1.0"`, `"3.0.3"`, "want 3.1.x"},
		"undeclared":     {`{"$ref":"#/components/parameters/collection"},`, ``, "path parameters"},
		"dangling ref":   {`#/components/schemas/Error"}}}}`, `#/components/schemas/Nope"}}}}`, "does not resolve"},
		"scheme":         {`[{"bearer":[]}]`, `[{"cookie":[]}]`, "security scheme"},
		"summary":        {`"summary":"Viewer.",`, ``, "no summary"},
		"not required":   {`"in":"path","required":true,"schema":{"type":"string"}}],`, `"in":"path","schema":{"type":"string"}}],`, "must be required"},
		"error schema":   {`"required":["code","message"]`, `"required":["code"]`, "Error must require"},
		"duplicate id":   {`"operationId":"viewer"`, `"operationId":"read"`, "also used"},
		"bad status key": {`"200":{"description":"ok"},"default"`, `"2000":{"description":"ok"},"default"`, "response key"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			doc := strings.Replace(good, c.old, c.new, 1)
			if doc == good {
				t.Fatalf("case %q did not change the document", name)
			}
			err := Check([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, c.want)
			}
		})
	}
	if err := Check([]byte(`{"openapi":`)); err == nil {
		t.Fatal("Check accepted broken JSON")
	}
}

func TestHandlerServesJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler([]byte(good)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != good {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
}
