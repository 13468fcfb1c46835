// Package api is sc-local's REST API for the clinic's viewer clients: records
// of every kind (create, read, update, delete, paged lists) and the
// replication status.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/scsync/scsync/local-server/internal/importdir"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/thumb"
	"github.com/scsync/scsync/shared/wire"
)

// Server holds the handlers' dependencies.
type Server struct {
	st    *store.Store
	edit  *editing.Manager
	files Files
	// importDirs confine POST /v1/files to the configured directories.
	importDirs *importdir.Dirs
	backfill   func() any
	backups    Backups
	verifier   Verifier
	notify     func()
	kick       func()
	log        *slog.Logger
	auth       *Auth
	people     *auth.People
	// filesDir and thumbs serve image thumbnails (WithThumbnails).
	filesDir string
	thumbs   *thumb.Cache
}

// New returns the API; notify is called after a commit wrote an outbox row.
func New(st *store.Store, edit *editing.Manager, notify func(), log *slog.Logger) *Server {
	return &Server{st: st, edit: edit, notify: notify, log: log}
}

// WithBackfillKick sets what is called after a write that may give the
// backfill work (a scope change, an import, a record's sync choice); without
// it notify is. Saves call only notify: waking the backfill on every save
// made it recount its remaining work for nothing (docs/performance.md).
func (s *Server) WithBackfillKick(kick func()) *Server {
	s.kick = kick
	return s
}

// backfillWork tells the syncer that the backfill may have new work (and
// the relay that an outbox row may be waiting).
func (s *Server) backfillWork() {
	if s.kick != nil {
		s.kick()
		return
	}
	s.notify()
}

// Register mounts the routes on mux. Records live under /v1/{collection},
// the collection being the kind's table name (patients, studies, images…).
func (s *Server) Register(mux httpapi.Router) {
	mux.HandleFunc("GET /v1/status", s.wrap(s.status))
	mux.HandleFunc("GET /v1/digest", s.wrap(s.digest))
	mux.HandleFunc("POST /v1/import", s.wrap(s.importRecords))
	mux.HandleFunc("GET /v1/{collection}", s.wrap(s.list))
	mux.HandleFunc("POST /v1/{collection}", s.wrap(s.create))
	mux.HandleFunc("GET /v1/{collection}/{id}", s.wrap(s.get))
	mux.HandleFunc("PUT /v1/{collection}/{id}", s.wrap(s.update))
	mux.HandleFunc("DELETE /v1/{collection}/{id}", s.wrap(s.remove))
	s.registerEditing(mux)
	s.registerFiles(mux)
	s.registerScope(mux)
	s.registerBackup(mux)
	s.registerVerify(mux)
	s.registerPeople(mux)
	s.registerSearch(mux)
	s.registerThumbnails(mux)
}

func (s *Server) wrap(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("collection") == "users" {
			httpapi.WriteError(w, s.log, errUsersAPI)
			return
		}
		if err := h(w, r); err != nil {
			httpapi.WriteError(w, s.log, mapErr(err))
		}
	}
}

func afterLast(msg, sep string) string {
	if i := strings.LastIndex(msg, sep); i >= 0 {
		return msg[i+len(sep):]
	}
	return msg
}

func mapErr(err error) error {
	err = editing.MapError(err)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such record")
	case errors.Is(err, store.ErrVersionConflict):
		return httpapi.Errorf(http.StatusConflict, "version_conflict", "%s", afterLast(err.Error(), "store: "))
	case errors.Is(err, store.ErrStaleFence):
		return httpapi.Errorf(http.StatusConflict, "stale_fence", "%s", afterLast(err.Error(), "store: "))
	case errors.Is(err, store.ErrMissingRef):
		return httpapi.Errorf(http.StatusUnprocessableEntity, "missing_reference", "%s", afterLast(err.Error(), "store: "))
	case errors.Is(err, records.ErrInvalid):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRecord, "%s", afterLast(err.Error(), "records: invalid: "))
	case errors.Is(err, context.Canceled):
		return httpapi.Errorf(499, "canceled", "request canceled")
	}
	return err
}

// Status is sc-local's /v1/status: replication and file transfers.
type Status struct {
	store.Status
	Files *transfer.Counts `json:"files,omitempty"`
	// Build is the release and commit of the running server; Protocols
	// the wire protocol versions it speaks.
	Build     buildinfo.Release `json:"build"`
	Protocols wire.Range        `json:"protocols"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	st, err := s.st.Status(r.Context())
	if err != nil {
		return err
	}
	out := Status{Status: st, Build: buildinfo.Read().Release(), Protocols: wire.Local()}
	if s.files != nil {
		c, err := s.files.Counts(r.Context())
		if err != nil {
			return err
		}
		out.Files = &c
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// Digest is the per-record hash of the replicated state; the cloud serves
// the same for the clinic, so comparing them proves both sides converged.
type Digest struct {
	Count   int               `json:"count"`
	Records map[string]string `json:"records"`
}

func (s *Server) digest(w http.ResponseWriter, r *http.Request) error {
	d, err := s.st.Digest(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, Digest{Count: len(d), Records: d})
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	p, err := httpapi.ParseList(r, spec)
	if err != nil {
		return err
	}
	q := store.ListQuery{Limit: p.Limit, After: p.After, UpdatedSince: p.UpdatedSince, WithDeleted: p.WithDeleted, Parent: p.Parent}
	switch st := r.URL.Query().Get("sync_state"); st {
	case "", store.StatePending, store.StateSynced, store.StateConflict, store.StateExcluded:
		q.SyncState = st
	default:
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "sync_state must be pending, synced, conflict or excluded")
	}
	rs, err := s.st.List(r.Context(), spec.Kind, q)
	if err != nil {
		return err
	}
	page := httpapi.Page[store.Record]{Items: rs}
	if len(rs) == q.Limit {
		page.Next = store.RecordMeta(rs[len(rs)-1]).ID.String()
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	rec, err := s.st.Get(r.Context(), spec.Kind, id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	_, c, err := httpapi.DecodeSave(w, r, spec)
	if err != nil {
		return err
	}
	ctx := s.auditInWrite(r.Context(), r.PathValue("collection"), http.StatusCreated)
	rec, err := s.st.Save(ctx, store.Edit{Kind: spec.Kind, Content: c})
	if err != nil {
		return err
	}
	auth.Audited(ctx)
	s.notify()
	if store.FileOf(rec) != "" {
		s.reconsiderFiles(r.Context()) // a held upload may be named now
	}
	writeRecord(w, http.StatusCreated, rec)
	return nil
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	req, c, err := httpapi.DecodeSave(w, r, spec)
	if err != nil {
		return err
	}
	ctx := s.auditInWrite(r.Context(), r.PathValue("collection"), http.StatusOK)
	rec, err := s.st.Save(ctx, store.Edit{Kind: spec.Kind, ID: id, Base: req.BaseVersion, Content: c})
	if err != nil {
		return err
	}
	auth.Audited(ctx)
	s.notify()
	writeRecord(w, http.StatusOK, rec)
	return nil
}

// writeRecord answers a record just saved as httpapi.WriteJSON would,
// with the content's JSON its save encoded already (store.AppendRecordJSON).
func writeRecord(w http.ResponseWriter, status int, rec store.Record) {
	bp := answers.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 { // let an unusually large one go
			answers.Put(bp)
		}
	}()
	b, err := store.AppendRecordJSON((*bp)[:0], rec)
	*bp = b
	if err != nil {
		httpapi.WriteJSON(w, status, rec) // which answers the error as it always did
		return
	}
	httpapi.WriteJSONBody(w, status, b)
}

// answers are writeRecord's buffers (httpapi.WriteJSON keeps its own so).
var answers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	base, err := httpapi.BaseVersionParam(r)
	if err != nil {
		return err
	}
	ctx := s.auditInWrite(r.Context(), r.PathValue("collection"), http.StatusOK)
	rec, err := s.st.Save(ctx, store.Edit{Kind: spec.Kind, ID: id, Base: base, Delete: true})
	if err != nil {
		return err
	}
	auth.Audited(ctx)
	s.notify()
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}
