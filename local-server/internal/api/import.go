package api

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// importChunk is how many records one import transaction writes: large
// enough to be fast, small enough that live saves never wait long.
const importChunk = 1000

// maxImportLine bounds one NDJSON line (a record's content).
const maxImportLine = 1 << 20

// ImportResult is the answer of POST /v1/import.
type ImportResult struct {
	Imported int      `json:"imported"`
	IDs      []ids.ID `json:"ids"`
}

// importError is an import failure: what was committed before the failing
// line stays, and the answer says how far the import got.
type importError struct {
	*httpapi.Error
	Line     int `json:"line"`
	Imported int `json:"imported"`
}

// importRecords is POST /v1/import: an NDJSON body, one record per line
// ({"kind":"patient","data":{...}}), written in order so a line may refer to
// a record of an earlier line by the id the answer gives — or, within one
// request, by the ids earlier lines received. Records are committed a chunk
// at a time; on a bad line the answer (4xx) tells the 1-based line and how
// many records before it were imported, so the import can resume there.
// Imported records are existing history: the backfill sends those the scope
// covers, newest first, after live changes.
func (s *Server) importRecords(w http.ResponseWriter, r *http.Request) error {
	// A large import streams for longer than the server's read timeout,
	// which is for ordinary requests.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	end := s.st.BeginImport() // the backfill starts once the whole history is in
	res, failed, err := s.runImport(r)
	end()
	if res.Imported > 0 {
		s.backfillWork() // the backfill has new history to send
	}
	if err == nil {
		httpapi.WriteJSON(w, http.StatusOK, res)
		return nil
	}
	var e *httpapi.Error
	if !errors.As(mapErr(err), &e) {
		return err // the database: the usual internal error
	}
	httpapi.WriteJSON(w, e.Status, importError{Error: e, Line: failed, Imported: res.Imported})
	return nil
}

// runImport imports the body's records a chunk at a time; on an error it
// returns the 1-based line that failed.
func (s *Server) runImport(r *http.Request) (ImportResult, int, error) {
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxImportLine)
	res := ImportResult{IDs: []ids.ID{}}
	var chunk []store.Import
	first, line := 1, 0 // first: line number of chunk[0]
	flush := func() (int, error) {
		if len(chunk) == 0 {
			return 0, nil
		}
		got, err := s.st.Import(r.Context(), chunk)
		if err != nil {
			var ie *store.ImportError
			if errors.As(err, &ie) {
				return first + ie.Index, err
			}
			return first, err
		}
		res.IDs = append(res.IDs, got...)
		res.Imported += len(got)
		chunk = chunk[:0]
		return 0, nil
	}
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		kind, c, err := httpapi.DecodeImportLine(b)
		if err != nil {
			if at, ferr := flush(); ferr != nil {
				return res, at, ferr
			}
			return res, line, err
		}
		if len(chunk) == 0 {
			first = line
		}
		chunk = append(chunk, store.Import{Kind: kind, Content: c})
		if len(chunk) == importChunk {
			if at, err := flush(); err != nil {
				return res, at, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if at, ferr := flush(); ferr != nil {
			return res, at, ferr
		}
		msg := "reading the body: " + err.Error()
		if errors.Is(err, bufio.ErrTooLong) {
			msg = "a line is longer than 1 MiB"
		}
		return res, line + 1, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%s", msg)
	}
	at, err := flush()
	return res, at, err
}
