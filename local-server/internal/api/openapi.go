package api

import _ "embed" // the OpenAPI description

// openAPI is the OpenAPI 3.1 description of every sc-local route, served at
// GET /openapi.json. TestOpenAPIDescribesEveryRoute (internal/app) fails
// when a route and the description disagree.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI 3.1 description of sc-local's HTTP API.
func OpenAPI() []byte { return openAPI }
