package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
)

// writeJSON writes v with status, as httpapi.WriteJSON does (the same
// bytes), but encoded first into a pooled buffer and sent with its
// Content-Length in one write: no encoder allocated per answer, and no
// chunked encoding for the answers over net/http's 2 KB buffer (batches).
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := answers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			answers.Put(buf)
		}
	}()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		buf.WriteString(`{"code":"internal","message":"internal error; see the server log"}` + "\n")
	}
	h := w.Header()
	h["Content-Type"] = jsonType
	h["Content-Length"] = []string{strconv.Itoa(buf.Len())}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// jsonType is the Content-Type of every answer; net/http only reads it.
var jsonType = []string{"application/json"}

var answers = sync.Pool{New: func() any { return new(bytes.Buffer) }}
