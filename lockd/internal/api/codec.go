package api

import (
	"bytes"
	"io"
	"net/http"

	"github.com/scsync/scsync/lockd/internal/lockjson"
	"github.com/scsync/scsync/shared/httpapi"
)

// decodeLock reads the body of a lock call (acquire, renew, release, batch)
// into the zero value v. A body lockjson reads strictly (what the Go client
// sends, and most others) is read by it. Anything else goes to
// httpapi.Decode over the same bytes (and the same read error, if reading
// stopped at one), which accepts or refuses it as for every other endpoint:
// same limits, same error codes.
func decodeLock[T any](w http.ResponseWriter, r *http.Request, v *T) error {
	buf := lockjson.Buffer()
	defer lockjson.PutBuffer(buf)
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, httpapi.MaxBody))
	if err == nil && lockjson.Decode(buf.Bytes(), v) {
		return nil
	}
	var zero T
	*v = zero
	rest := io.Reader(eofReader{})
	if err != nil {
		rest = errReader{err}
	}
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(buf.Bytes()), rest))
	return httpapi.Decode(w, r, v)
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// errReader ends a body read again with the error the first read met.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// writeOK answers 200 with body, which lockjson writes when it can (the
// lock calls' answers), as httpapi.WriteJSON would: the same bytes and
// headers, in one write.
func writeOK(w http.ResponseWriter, body any) {
	buf := lockjson.Buffer()
	defer lockjson.PutBuffer(buf)
	b, ok := lockjson.Append(buf.AvailableBuffer(), body)
	if !ok {
		httpapi.WriteJSON(w, http.StatusOK, body)
		return
	}
	b = append(b, '\n') // as json.Encoder writes
	httpapi.WriteJSONBody(w, http.StatusOK, b)
	buf.Write(b) // keep the grown array for the next answer
}
