package files

import (
	"errors"
	"net/http"
	"testing"

	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/scsync/scsync/shared/httpapi"
)

// An object store that cannot be reached is a passing condition: 503 with
// a code, which clients retry, not an internal error.
func TestS3UnreachableIs503(t *testing.T) {
	down := &smithyhttp.RequestSendError{Err: errors.New("dial tcp 127.0.0.1:9000: connect: connection refused")}
	var e *httpapi.Error
	if !errors.As(apiError(down), &e) || e.Status != http.StatusServiceUnavailable || e.Code != httpapi.CodeUnavailable {
		t.Fatalf("apiError(unreachable) = %v, want 503 unavailable", apiError(down))
	}
	if other := errors.New("some bug"); !errors.Is(apiError(other), other) || errors.As(apiError(other), &e) {
		t.Fatal("an unknown error must stay an internal error")
	}
}
