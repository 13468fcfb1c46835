package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// chaosHTTP bounds every request of the soak: a delayed link is slow, not
// dead, and a request stuck on a dead peer ends as an unknown outcome.
var chaosHTTP = &http.Client{Timeout: 20 * time.Second}

// try is call without failing the test: a transport error is returned
// (the outcome of a write is then unknown, unless the peer refused the
// connection, when nothing was sent).
func try(method, url, token string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		return 0, err
	}
	if token == "" {
		token = localAPIToken
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := chaosHTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if out != nil && len(b) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %q: %w", b, err)
		}
	}
	if out != nil && resp.StatusCode >= 300 {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// refused reports whether err means the request never reached a server.
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// anyRecord is a record of any kind as both APIs return it.
type anyRecord struct {
	ID        string         `json:"id"`
	Version   string         `json:"version"`
	Deleted   bool           `json:"deleted"`
	SyncState string         `json:"sync_state"`
	Data      map[string]any `json:"data"`
}

// markerField and tagField name, per kind the soak makes, the content
// field holding the record's marker and the tag of its last write.
var (
	markerField = map[wire.Kind]string{wire.KindPatient: "chart_no", wire.KindStudy: "description", wire.KindImage: "file_name"}
	tagField    = map[wire.Kind]string{wire.KindPatient: "name", wire.KindStudy: "description", wire.KindImage: "file_name"}
)

// actor is one client of one clinic: a workstation in the clinic (several
// per clinic, racing for the same records under lock) or a cloud client.
type actor struct {
	t     *testing.T
	env   *chaosEnv
	lg    *ledger
	name  string
	ci    int // clinic index
	cloud bool
	rnd   *rand.Rand
	own   []*entry // records this actor made and may still change
	hot   []*entry // records every actor of the clinic's side edits
	study *entry   // a study of this side, parent of new images
	dir   string   // where the clinic's files to import are written
}

func (a *actor) sideName() string {
	if a.cloud {
		return "cloud"
	}
	return "clinic"
}

// prefix is the collections' URL prefix: the clinic's server, or any cloud node.
func (a *actor) prefix() (string, string) {
	c := a.env.clinics[a.ci]
	if !a.cloud {
		return c.base + "/v1/", ""
	}
	return a.env.s.cloud[a.rnd.IntN(len(a.env.s.cloud))] + "/v1/clinics/" + c.ID + "/", c.person
}

// unexpected records an answer the soak has no reason to get.
func (a *actor) unexpected(op string, code int, err error) {
	a.lg.count(fmt.Sprintf("%s UNEXPECTED %d", op, code))
	a.t.Errorf("%s: %s answered %d (%v)", a.name, op, code, err)
}

// pause is the back-off after a refused or failed request: a person
// retrying, not a loop.
func (a *actor) pause() {
	time.Sleep(time.Duration(100+a.rnd.IntN(300)) * time.Millisecond)
}

// create makes a record of kind k with content c (its marker already in
// place) and returns its ledger entry, or nil when nothing was created.
func (a *actor) create(k wire.Kind, marker, tag string, content any) *entry {
	spec, _ := records.SpecOf(k)
	prefix, tok := a.prefix()
	var r anyRecord
	code, err := try("POST", prefix+spec.Table, tok, map[string]any{"data": content}, &r)
	op := "create " + string(k) + " (" + a.sideName() + ")"
	if err != nil && refused(err) {
		a.lg.count(op + " refused")
		a.pause()
		return nil
	}
	e := &entry{kind: k, clinic: a.ci, origin: a.sideName(), marker: marker}
	a.lg.add(e)
	switch {
	case err != nil || code >= 500:
		a.lg.doubtful(e, tag)
		a.lg.count(op + " unanswered")
		a.pause()
		return nil
	case code == 201:
		a.lg.setID(e, r.ID)
		if _, err := a.lg.ack(e, r.Version, tag); err != nil {
			a.t.Error(err)
		}
		a.lg.count(op + " ok")
		return e
	default:
		a.lg.doubtful(e, tag)
		a.unexpected(op, code, err)
		return nil
	}
}

func (a *actor) newPatient() *entry {
	marker, tag := a.lg.unique(a.name+"-p"), a.lg.unique("t")
	return a.create(wire.KindPatient, marker, tag, map[string]string{"chart_no": marker, "name": tag})
}

// stalePause is how long a stalled client waits between opening a session
// and saving: beyond the 3 s lock TTL, so its save must be refused.
const stalePause = 4 * time.Second

// editLocked opens an edit session on e, saves up to saves times, closes.
// A stalled client (stall) waits past its lock's TTL before its first save.
func (a *actor) editLocked(e *entry, saves int, stall bool) {
	prefix, tok := a.prefix()
	base := prefix + "patients/" + e.id
	op := "edit (" + a.sideName() + ")"
	var si sessionInfo
	code, err := try("POST", base+"/edit", tok, map[string]string{"client": a.name, "user": a.name}, &si)
	switch {
	case err != nil:
		a.lg.count(op + " open unanswered")
		a.pause()
		return
	case code == 409 || code == 503:
		a.lg.count(fmt.Sprintf("%s open %d", op, code))
		a.pause()
		return
	case code != 200:
		a.unexpected(op+" open", code, err)
		return
	}
	opened := time.Now()
	if stall {
		time.Sleep(stalePause) // the client stalls (a paused process), not a wait for a condition
	}
	var last time.Time
	for n := range saves {
		tag := a.lg.unique("t")
		sent := time.Now()
		var sv struct {
			Version string `json:"version"`
		}
		code, err = try("POST", base+"/save", tok, map[string]any{"session": si.Session,
			"data": map[string]string{"chart_no": e.marker, "name": tag}}, &sv)
		if err != nil && !refused(err) || code >= 500 && code != 503 {
			a.lg.doubtful(e, tag)
			a.lg.count(op + " save unanswered")
			break
		}
		if err != nil {
			a.lg.count(op + " save refused")
			break
		}
		if code != 200 {
			// 409 lock_lost or stale_fence, 503 lock_unavailable, 404
			// no_session (the watchdog closed it: its lock expired).
			if code != 409 && code != 503 && code != 404 {
				a.unexpected(op+" save", code, err)
			}
			a.lg.count(fmt.Sprintf("%s save %d", op, code))
			if stall && n == 0 {
				a.lg.count(op + " stalled past the lock TTL: save refused")
			}
			break
		}
		if stall && n == 0 {
			a.lg.count(op + " stalled past the lock TTL: save ACCEPTED")
			a.t.Errorf("%s: a save %s after its session opened, past the lock TTL, was accepted (fence %d)", a.name, stalePause, si.Fence)
		}
		v, err := a.lg.ack(e, sv.Version, tag)
		if err != nil {
			a.t.Error(err)
		}
		a.lg.fenced(e, fencedSave{holder: a.name, fence: si.Fence, version: v})
		a.lg.count(op + " save ok")
		last = sent
	}
	_, _ = try("POST", base+"/close", tok, map[string]string{"session": si.Session}, nil)
	if !last.IsZero() {
		a.lg.held(e, heldSession{holder: a.name, fence: si.Fence, opened: opened, lastSave: last})
	}
}

// peek holds the lock of one of the clinic's hot records from the cloud
// for a moment without saving: the clinic's clients meet a cloud holder.
func (a *actor) peek(e *entry) {
	prefix, tok := a.prefix()
	base := prefix + "patients/" + e.id
	var si sessionInfo
	code, err := try("POST", base+"/edit", tok, map[string]string{"client": a.name, "user": a.name}, &si)
	if err != nil || code != 200 {
		a.lg.count(fmt.Sprintf("peek (cloud) open %d", code))
		a.pause()
		return
	}
	time.Sleep(time.Duration(100+a.rnd.IntN(400)) * time.Millisecond) // a person reading the record
	_, _ = try("POST", base+"/close", tok, map[string]string{"session": si.Session}, nil)
	a.lg.count("peek (cloud) ok")
}

// change makes a one-shot write of e: PUT, DELETE or un-sync.
func (a *actor) change(e *entry, how string) {
	prefix, tok := a.prefix()
	base := prefix + "patients/" + e.id
	op := how + " (" + a.sideName() + ")"
	tag := a.lg.unique("t")
	var r anyRecord
	var code int
	var err error
	switch how {
	case "put":
		code, err = try("PUT", base, tok, map[string]any{"data": map[string]string{"chart_no": e.marker, "name": tag}}, &r)
	case "delete":
		tag = tagDeleted
		code, err = try("DELETE", base, tok, nil, &r)
	case "unsync":
		code, err = try("POST", base+"/unsync", tok, nil, &r)
	}
	if err != nil && refused(err) {
		a.lg.count(op + " refused")
		a.pause()
		return
	}
	if how != "put" {
		a.forget(e) // deleted or un-synced, or perhaps: either way, left alone
	}
	switch {
	case err != nil || code >= 500:
		if how == "unsync" {
			a.lg.setUnsync(e, "doubt")
		} else {
			a.lg.doubtful(e, tag)
		}
		a.lg.count(op + " unanswered")
		a.pause()
	case code == 200:
		if how == "unsync" {
			a.lg.setUnsync(e, "acked")
			tag, _ = r.Data["name"].(string)
		}
		if _, err := a.lg.ack(e, r.Version, tag); err != nil {
			a.t.Error(err)
		}
		a.lg.count(op + " ok")
	default:
		a.unexpected(op, code, err)
	}
}

func (a *actor) forget(e *entry) {
	for i, x := range a.own {
		if x == e {
			a.own = append(a.own[:i], a.own[i+1:]...)
			return
		}
	}
}

// newImage makes an image under the actor's study; the content names the
// file when sha is set.
func (a *actor) newImage(sha string, size int) *entry {
	marker := a.lg.unique(a.name+"-i") + ".dcm"
	sid, err := ids.Parse(a.study.id)
	if err != nil {
		a.t.Error(err)
		return nil
	}
	img := records.Sample(wire.KindImage, a.rnd.IntN(1000), map[wire.Kind]ids.ID{wire.KindStudy: sid}).(records.Image)
	img.FileName, img.Modality = marker, "CBCT"
	if sha != "" {
		img.SHA256, img.Size, img.ContentType, img.Modality = sha, int64(size), "image/jpeg", "PHOTO"
	}
	e := a.create(wire.KindImage, marker, marker, img)
	if e != nil {
		e.sha = sha
	}
	return e
}

// randomBytes is a file's content, from the soak's seed.
func (a *actor) randomBytes() []byte {
	size := 4<<10 + a.rnd.IntN(512<<10)
	b := make([]byte, size)
	for i := 0; i < len(b); i += 8 {
		v := a.rnd.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// importFile makes an image in the clinic and imports a file for it, which
// sc-local uploads to S3 by itself.
func (a *actor) importFile() {
	img := a.newImage("", 0)
	if img == nil {
		return
	}
	data := a.randomBytes()
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	path := filepath.Join(a.dir, sha+".dcm")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		a.t.Error(err)
		return
	}
	// The import is idempotent for the same file: retry until answered.
	for attempt := 0; ; attempt++ {
		var imp struct {
			Transfer transferRow `json:"transfer"`
		}
		code, err := try("POST", a.env.clinics[a.ci].base+"/v1/files", "", map[string]any{"path": path, "image_id": img.id, "content_type": "image/jpeg"}, &imp)
		switch {
		case err == nil && code == 202 && imp.Transfer.SHA256 == sha,
			err == nil && code == 409 && attempt > 0:
			a.lg.mu.Lock()
			img.sha = sha
			a.lg.mu.Unlock()
			a.lg.file(fileEntry{clinic: a.ci, sha: sha, size: len(data), up: true, image: img})
			a.lg.count("file import (clinic) ok")
			return
		case err == nil && code < 500:
			a.unexpected("file import", code, fmt.Errorf("transfer %+v", imp.Transfer))
			return
		case attempt > 100:
			a.t.Errorf("%s: file import never answered: %v", a.name, err)
			return
		}
		a.lg.count("file import (clinic) retried")
		a.pause()
	}
}

// uploadFile uploads a file from the cloud side (presigned PUT to S3) and
// makes a cloud image naming it; sc-local downloads it by itself.
func (a *actor) uploadFile() {
	data := a.randomBytes()
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	prefix, tok := a.prefix()
	var begin filekey.BeginResponse
	code, err := try("POST", prefix+"files/"+sha+"/upload", tok, filekey.BeginRequest{Size: int64(len(data)), ContentType: "image/jpeg"}, &begin)
	if err != nil || code != 200 || begin.Put == nil {
		a.lg.count(fmt.Sprintf("file upload (cloud) begin %d", code))
		a.pause()
		return
	}
	req, err := http.NewRequestWithContext(context.Background(), begin.Put.Method, begin.Put.URL, bytes.NewReader(data))
	if err != nil {
		a.t.Error(err)
		return
	}
	begin.Put.Request(req.Header)
	req.ContentLength = int64(len(data))
	resp, err := chaosHTTP.Do(req)
	if err != nil {
		a.lg.count("file upload (cloud) put failed")
		a.pause()
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		a.lg.count(fmt.Sprintf("file upload (cloud) put %d", resp.StatusCode))
		a.pause()
		return
	}
	prefix, tok = a.prefix()
	if code, err := try("POST", prefix+"files/"+sha+"/upload/complete", tok, nil, nil); err != nil || code != 200 {
		a.lg.count(fmt.Sprintf("file upload (cloud) complete %d", code))
		a.pause()
		return
	}
	if img := a.newImage(sha, len(data)); img != nil {
		a.lg.file(fileEntry{clinic: a.ci, sha: sha, size: len(data), up: false, image: img})
		a.lg.count("file upload (cloud) ok")
	}
}

// step makes one random operation.
func (a *actor) step() {
	roll := a.rnd.IntN(100)
	pickOwn := func() *entry {
		if len(a.own) == 0 {
			return nil
		}
		return a.own[a.rnd.IntN(len(a.own))]
	}
	own := pickOwn()
	if !a.cloud {
		switch {
		case roll < 20 || own == nil && roll < 90:
			if e := a.newPatient(); e != nil {
				a.own = append(a.own, e)
			}
		case roll < 55:
			a.editLocked(a.hot[a.rnd.IntN(len(a.hot))], 1+a.rnd.IntN(2), a.rnd.IntN(15) == 0)
		case roll < 70:
			a.editLocked(own, 1+a.rnd.IntN(2), false)
		case roll < 80:
			a.change(own, "put")
		case roll < 87:
			a.change(own, "delete")
		case roll < 90:
			a.change(own, "unsync")
		default:
			a.importFile()
		}
		return
	}
	switch {
	case roll < 30 || own == nil && roll < 75:
		if e := a.newPatient(); e != nil {
			a.own = append(a.own, e)
		}
	case roll < 65:
		a.editLocked(own, 1+a.rnd.IntN(2), false)
	case roll < 75:
		a.change(own, "delete")
	case roll < 90:
		a.peek(a.env.hot[a.ci][a.rnd.IntN(len(a.env.hot[a.ci]))])
	default:
		a.uploadFile()
	}
}
