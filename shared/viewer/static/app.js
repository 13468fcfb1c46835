// scsync viewer: find a patient, browse patient → studies → images and
// reports, edit a record with a form generated from its kind's fields
// through the server's lock, see who edits what live, each record's sync
// state, its version history with diff and rollback, and resolve keep-both
// conflicts (see package viewer for the API it talks to). Plain JavaScript,
// no dependencies.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const cfg = document.body.dataset;

  // Record kinds as the server describes them (package viewer, Kinds).
  const KIND_LIST = JSON.parse(cfg.kinds || '[]');
  const BY_COLLECTION = new Map(KIND_LIST.map((k) => [k.collection, k]));
  const BY_KIND = new Map(KIND_LIST.map((k) => [k.kind, k]));
  // Children of each kind (patient → studies; study → images, reports…).
  const CHILDREN = new Map();
  for (const k of KIND_LIST) {
    if (!k.parent) continue;
    if (!CHILDREN.has(k.parent)) CHILDREN.set(k.parent, []);
    CHILDREN.get(k.parent).push(k);
  }
  const LABELS = {
    patients: 'Patients', studies: 'Studies', images: 'Images', reports: 'Reports', captures: 'Captures',
    project_files: 'Project files', doctors: 'Doctors', report_templates: 'Report templates', settings: 'Settings',
  };
  // Heartbeat period when the server does not say (it sends heartbeat_ms,
  // a quarter of the lock TTL); extra beats on activity at most this often.
  const HEARTBEAT_DEFAULT_MS = 15000;
  const ACTIVITY_BEAT_MIN_MS = 10000;
  const RECONNECT_MAX_MS = 15000;
  // How long "Saved" stays on a record after a save.
  const SAVED_SHOWN_MS = 60000;
  const PAGE = 50;

  const params = new URLSearchParams(location.search);
  const clinic = params.get('clinic') || '';
  const fill = (p) => p.split('{clinic}').join(encodeURIComponent(clinic));
  const apiPrefix = fill(cfg.apiPrefix);
  const eventsPath = fill(cfg.eventsPath);
  const clientId = randomHex(16); // this page load, for the lock holder

  const state = {
    collection: 'patients',
    list: { mode: 'search', next: '', load: 0 }, // mode: search | list | conflicts
    recs: new Map(), // "kind/id" -> record, of everything shown
    modes: new Map(), // "kind/id" -> {text, cls, session, timer}, from events
    detail: null, // {kind, id}
    trail: [], // breadcrumb: [{kind, id, title}]
    editing: null, // {collection, kind, id, session, unfenced, active, lastBeat, timer, gone, shown}
    pendingAnyway: null, // {kind, id} waiting for the lock dialog's answer
    lastSeq: 0,
    ws: null,
    wsAttempt: 0,
    me: null,
  };

  let token = '';

  // ---- helpers -----------------------------------------------------------

  function randomHex(n) {
    const b = new Uint8Array(n);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function setStatus(text) {
    $('status').textContent = text;
  }

  // showError shows err (an ApiError carries the server's {code, message}).
  function showError(what, err) {
    let text = what;
    if (err) {
      const detail = err.code ? err.message + ' (' + err.code + ')' : String(err.message || err);
      text += ': ' + detail;
    }
    $('error').textContent = text;
    $('error').hidden = false;
  }

  function clearError() {
    $('error').hidden = true;
    $('error').textContent = '';
  }

  function setConn(text, live) {
    $('conn').textContent = text;
    $('conn').classList.toggle('live', live);
  }

  const keyOf = (kind, id) => kind + '/' + id;
  const kindOfCollection = (c) => (BY_COLLECTION.get(c) || {}).kind || c;
  const collectionOf = (kind) => (BY_KIND.get(kind) || {}).collection || kind;

  function titleOf(rec) {
    const d = (rec && rec.data) || {};
    return String(d.name || d.title || d.description || d.file_name || d.key || (rec && rec.id) || '');
  }

  // syncOf is a record's sync state as the page shows it: the clinic's
  // sync_state; in the cloud a record is there by definition (synced)
  // unless a keep-both resolution flagged it.
  function syncOf(rec) {
    if (!rec) return '';
    if (rec.sync_state === 'conflict' || rec.conflict) return 'conflict';
    if (rec.sync_state) return rec.sync_state;
    if (rec.retention_state) return rec.retention_state;
    return cfg.side === 'cloud' ? 'synced' : '';
  }

  // label mirrors events.Label in Go.
  function label(e) {
    switch (e.type) {
      case 'editing':
        if (!e.side) return 'Editing';
        return 'Editing by ' + e.side + (e.user ? ' (' + e.user + ')' : '');
      case 'saved':
        return 'Saved';
      case 'closed':
        return e.reason === 'idle' || e.reason === 'expired' ? 'Closed (' + e.reason + ')' : 'Closed';
      case 'idle_warning':
        return 'Idle — closing soon';
      case 'conflict':
        return 'Conflict';
      case 'transfer':
        return transferLabel(e.transfer || {});
      default:
        return '';
    }
  }

  function transferLabel(t) {
    switch (t.state) {
      case 'queued':
        return 'Transfer queued';
      case 'uploading':
      case 'downloading': {
        const verb = t.state === 'uploading' ? 'Uploading' : 'Downloading';
        if (!(t.bytes_total > 0)) return verb;
        const pct = Math.min(100, Math.max(0, Math.floor((t.bytes_done * 100) / t.bytes_total)));
        return verb + ' ' + pct + '% (' + bytes(t.bytes_done) + ' of ' + bytes(t.bytes_total) + ')';
      }
      case 'failed':
        return 'Transfer failed';
      default:
        return '';
    }
  }

  function bytes(n) {
    if (!(n >= 0)) return '';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(0) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }

  // ---- REST --------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || 'HTTP ' + status);
      this.status = status;
      this.code = (body && body.code) || '';
      this.body = body || {};
    }
  }

  async function api(method, path, body, extra) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = Object.assign({ method, headers, cache: 'no-store' }, extra || {});
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch((path.startsWith('/') ? '' : apiPrefix) + path, init);
    if (res.status === 401 && !path.startsWith('/v1/login')) showLogin();
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (err) {
        data = { code: 'bad_response', message: text.slice(0, 200) };
      }
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  const recordPath = (collection, id) => collection + '/' + encodeURIComponent(id);

  // ---- rows ----------------------------------------------------------------
  // A row is <tr data-kind data-id> with cells title, (patients: chart,
  // birth), version, sync, mode and a button of class edit. The same record
  // may be shown in the list and under its parent: every copy is updated.

  function columnsOf(kind) {
    if (kind === 'patient') return ['Name', 'Chart no.', 'Birth date'];
    if (kind === 'study') return ['Study', 'Date'];
    if (kind === 'image') return ['Image', 'Modality'];
    return ['Title'];
  }

  function headRow(kind) {
    const tr = el('tr');
    for (const c of columnsOf(kind)) tr.append(el('th', { scope: 'col', text: c }));
    for (const c of ['Version', 'Sync', 'Mode']) tr.append(el('th', { scope: 'col', text: c }));
    tr.append(el('th', { scope: 'col' }, el('span', { class: 'visually-hidden', text: 'Actions' })));
    return tr;
  }

  function renderRow(rec) {
    const tr = document.createElement('tr');
    tr.dataset.id = rec.id;
    tr.dataset.kind = rec.kind;
    const title = el('td', { class: 'title' });
    tr.append(title);
    const extra = columnsOf(rec.kind).length - 1;
    for (let i = 0; i < extra; i++) tr.append(el('td', { class: 'extra extra' + i }));
    for (const cls of ['version', 'sync', 'mode']) tr.append(el('td', { class: cls }));
    const actions = el('td', { class: 'actions' });
    const open = el('button', { type: 'button', class: 'open', text: 'Open' });
    open.addEventListener('click', () => openDetail(rec.kind, rec.id));
    const edit = document.createElement('button');
    edit.type = 'button';
    edit.className = 'edit';
    edit.textContent = 'Edit';
    edit.disabled = !!state.editing;
    edit.addEventListener('click', () => startEdit(rec.kind, rec.id, false));
    actions.append(open, edit);
    tr.append(actions);
    fillRow(tr, rec);
    return tr;
  }

  // thumbnail is an image record's picture, made by the server from the
  // file it holds (the clinic's disk, the cloud's S3); hidden when there is
  // none (not a PNG, JPEG or GIF, or the file is not there yet).
  function thumbnail(rec, cls) {
    const d = rec.data || {};
    if (rec.kind !== 'image' || !d.sha256) return null;
    const img = el('img', { class: cls, alt: 'Thumbnail of ' + titleOf(rec), loading: 'lazy', decoding: 'async' });
    img.addEventListener('error', () => img.remove());
    img.src = apiPrefix + 'images/' + encodeURIComponent(rec.id) + '/thumbnail';
    return img;
  }

  function fillRow(tr, rec) {
    const title = titleOf(rec);
    const d = rec.data || {};
    const link = el('a', { href: '#', class: 'open-link', text: title });
    link.addEventListener('click', (ev) => {
      ev.preventDefault();
      openDetail(rec.kind, rec.id);
    });
    const old = tr.querySelector('.title img.thumb');
    const pic = old && old.dataset.sha === d.sha256 ? old : thumbnail(rec, 'thumb');
    if (pic) pic.dataset.sha = d.sha256;
    tr.querySelector('.title').replaceChildren(...(pic ? [pic, link] : [link]));
    const extras = tr.querySelectorAll('.extra');
    const vals =
      rec.kind === 'patient' ? [d.chart_no, d.birth_date] : rec.kind === 'study' ? [d.study_date] : rec.kind === 'image' ? [d.modality] : [];
    extras.forEach((td, i) => (td.textContent = vals[i] || ''));
    tr.querySelector('.version').textContent = rec.version || '';
    paintSync(tr.querySelector('.sync'), rec);
    tr.querySelector('.edit').setAttribute('aria-label', 'Edit ' + title);
    tr.querySelector('.open').setAttribute('aria-label', 'Open ' + title);
    tr.classList.toggle('deleted', !!rec.deleted);
    paintMode(tr.querySelector('.mode'), rec.kind, rec.id);
  }

  function paintSync(cell, rec) {
    const s = syncOf(rec);
    cell.replaceChildren(s ? el('span', { class: 'sync sync-' + s, text: s }) : '');
  }

  function rowsOf(kind, id) {
    return document.querySelectorAll('tr[data-kind="' + CSS.escape(kind) + '"][data-id="' + CSS.escape(String(id)) + '"]');
  }

  // paintMode shows the mode of a record: the last event's, else a
  // conflict its sync state reports.
  function paintMode(cell, kind, id) {
    const rec = state.recs.get(keyOf(kind, id));
    let mode = state.modes.get(keyOf(kind, id));
    if ((!mode || !mode.text) && rec && (rec.sync_state === 'conflict' || rec.conflict)) mode = { text: 'Conflict', cls: 'conflict' };
    if (!mode || !mode.text) {
      cell.replaceChildren();
      return;
    }
    cell.replaceChildren(el('span', { class: 'badge badge-' + mode.cls, text: mode.text }));
  }

  function repaint(kind, id) {
    const rec = state.recs.get(keyOf(kind, id));
    for (const tr of rowsOf(kind, id)) {
      if (rec) fillRow(tr, rec);
      else paintMode(tr.querySelector('.mode'), kind, id);
    }
    if (state.detail && state.detail.kind === kind && state.detail.id === id) {
      paintMode($('detail-mode'), kind, id);
      if (rec) {
        fillDetail(rec);
        recheckConflict(kind);
      }
    }
  }

  function setMode(kind, id, text, cls, session) {
    const key = keyOf(kind, id);
    const old = state.modes.get(key);
    if (old && old.timer) clearTimeout(old.timer);
    if (text) {
      const m = { text, cls, session: session || '' };
      // "Saved" shows for a while after a save, then the badge goes.
      if (cls === 'saved') m.timer = setTimeout(() => setMode(kind, id, '', ''), SAVED_SHOWN_MS);
      state.modes.set(key, m);
    } else state.modes.delete(key);
    repaint(kind, id);
  }

  // putRecord remembers a record fetched or saved and updates what shows it.
  function putRecord(rec) {
    if (!rec || !rec.kind) return;
    state.recs.set(keyOf(rec.kind, rec.id), rec);
    if (rec.deleted) {
      for (const tr of rowsOf(rec.kind, rec.id)) tr.remove();
      return;
    }
    repaint(rec.kind, rec.id);
  }

  // refetch re-reads one record if the page shows it.
  async function refetch(kind, id) {
    if (!state.recs.has(keyOf(kind, id))) return;
    try {
      putRecord(await api('GET', recordPath(collectionOf(kind), id)));
    } catch (err) {
      if (err.status === 404) {
        putRecord({ kind, id, deleted: true });
        return;
      }
      showError('Could not refresh a record', err);
    }
  }

  // ---- the list: search, a collection, conflicts ---------------------------

  function showList() {
    state.detail = null;
    $('detail').hidden = true;
    $('history-panel').hidden = true;
    $('list-view').hidden = false;
  }

  // loadList shows the first page (more: the next one, appended).
  async function loadList(more) {
    const collection = state.collection;
    const kind = kindOfCollection(collection);
    const load = more ? state.list.load : ++state.list.load;
    let path;
    if (state.list.mode === 'search') {
      const q = new URLSearchParams({ q: $('search-q').value.trim(), limit: String(PAGE) });
      if ($('search-by').value) q.set('by', $('search-by').value);
      if (more && state.list.next) q.set('after', state.list.next);
      path = 'patients/search?' + q;
    } else {
      const q = new URLSearchParams({ limit: String(state.list.mode === 'conflicts' ? 100 : PAGE) });
      if (state.list.mode === 'conflicts') q.set(cfg.side === 'cloud' ? 'conflict' : 'sync_state', cfg.side === 'cloud' ? 'true' : 'conflict');
      if (more && state.list.next) q.set('after', state.list.next);
      path = collection + '?' + q;
    }
    try {
      const page = await api('GET', path);
      if (load !== state.list.load) return; // a newer load is under way
      const items = (page && page.items) || [];
      if (!more) {
        $('head').replaceChildren(headRow(kind));
        $('rows').replaceChildren();
      }
      for (const rec of items) {
        rec.kind = rec.kind || kind;
        state.recs.set(keyOf(rec.kind, rec.id), rec);
        $('rows').append(renderRow(rec));
      }
      state.list.next = (page && page.next) || '';
      $('more').hidden = !state.list.next;
      $('empty').hidden = $('rows').children.length > 0;
      const shown = $('rows').children.length;
      if (state.list.mode === 'search') {
        const q = $('search-q').value.trim();
        $('caption').textContent = q ? 'Patients matching "' + q + '" (' + (page.by || '').replace('_', ' ') + ')' : 'Patients by name';
        setStatus(shown + (state.list.next ? '+' : '') + ' patient' + (shown === 1 ? '' : 's') + ' shown.');
      } else if (state.list.mode === 'conflicts') {
        $('caption').textContent = 'Conflicts: ' + (LABELS[collection] || collection);
      } else {
        $('caption').textContent = LABELS[collection] || collection;
      }
      clearError();
    } catch (err) {
      if (load === state.list.load) showError('Could not load ' + collection, err);
    }
  }

  function search(ev) {
    if (ev) ev.preventDefault();
    state.collection = 'patients';
    $('collection').value = 'patients';
    state.list.mode = 'search';
    showList();
    loadList(false);
  }

  // ---- detail: a record, its children, its conflict --------------------------

  async function openDetail(kind, id, fromTrail) {
    clearError();
    const collection = collectionOf(kind);
    let rec;
    try {
      rec = await api('GET', recordPath(collection, id));
    } catch (err) {
      showError('Could not open the record', err);
      return;
    }
    rec.kind = rec.kind || kind;
    state.recs.set(keyOf(kind, id), rec);
    // The breadcrumb: the record's ancestors as browsed, or its parent chain.
    if (!fromTrail) {
      const at = state.trail.findIndex((t) => t.kind === kind && t.id === id);
      if (at >= 0) state.trail = state.trail.slice(0, at);
      else {
        const parent = BY_KIND.get(kind) && BY_KIND.get(kind).parent;
        const last = state.trail[state.trail.length - 1];
        if (!parent || !last || last.kind !== parent || String(last.id) !== String((rec.data || {})[BY_KIND.get(kind).parent_field])) state.trail = [];
      }
      state.trail.push({ kind, id, title: titleOf(rec) });
    }
    state.detail = { kind, id };
    $('list-view').hidden = true;
    $('history-panel').hidden = true;
    $('detail').hidden = false;
    fillDetail(rec);
    paintMode($('detail-mode'), kind, id);
    renderCrumbs();
    loadChildren(rec);
    loadConflict(rec);
  }

  function renderCrumbs() {
    const nav = $('crumbs');
    const home = el('a', { href: '#', text: 'Patients' });
    home.addEventListener('click', (ev) => {
      ev.preventDefault();
      showList();
    });
    nav.replaceChildren(home);
    state.trail.forEach((t, i) => {
      nav.append(' › ');
      if (i === state.trail.length - 1) {
        nav.append(el('span', { 'aria-current': 'page', text: t.title }));
        return;
      }
      const a = el('a', { href: '#', text: t.title });
      a.addEventListener('click', (ev) => {
        ev.preventDefault();
        state.trail = state.trail.slice(0, i + 1);
        openDetail(t.kind, t.id, true);
      });
      nav.append(a);
    });
  }

  function fieldValue(v) {
    if (v == null || v === '') return '—';
    if (Array.isArray(v)) return v.join(', ');
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  function fillFields(dl, kind, data) {
    const k = BY_KIND.get(kind);
    const names = k ? k.fields.map((f) => f.name) : Object.keys(data || {});
    dl.replaceChildren();
    for (const n of names) {
      dl.append(el('dt', { text: n.replace(/_/g, ' ') }), el('dd', { 'data-field': n, text: fieldValue((data || {})[n]) }));
    }
  }

  function fillDetail(rec) {
    if (!state.detail || state.detail.kind !== rec.kind || state.detail.id !== rec.id) return;
    const kindLabel = String(rec.kind).charAt(0).toUpperCase() + String(rec.kind).slice(1).replace(/_/g, ' ');
    $('detail-title').textContent = kindLabel + ': ' + titleOf(rec);
    $('detail-version').textContent = 'Version ' + (rec.version || '?');
    paintSync($('detail-sync'), rec);
    fillFields($('detail-fields'), rec.kind, rec.data);
    $('detail-edit').disabled = !!state.editing;
    const d = rec.data || {};
    const file = $('detail-file');
    if (d.sha256) {
      file.hidden = false;
      const pic = thumbnail(rec, 'thumb-large');
      // The full file: the clinic streams it from its disk; the cloud
      // redirects to a presigned GET in S3.
      const full = rec.kind === 'image'
        ? [el('a', { class: 'original', href: apiPrefix + 'images/' + encodeURIComponent(rec.id) + '/original', target: '_blank', rel: 'noopener', text: 'Open the full file' })]
        : [];
      file.replaceChildren(
        ...(pic ? [pic] : []),
        el('span', { text: 'File ' + (d.file_name || d.name || d.title || '') + ' · ' + bytes(d.size) + ' · sha256 ' + d.sha256.slice(0, 12) + '…' }),
        ...full,
      );
    } else file.hidden = true;
  }

  let childrenLoads = 0; // loadChildren calls: only the latest one fills the box

  async function loadChildren(rec) {
    const n = ++childrenLoads;
    const box = $('children');
    box.replaceChildren();
    for (const ck of CHILDREN.get(rec.kind) || []) {
      if (n !== childrenLoads) return;
      const section = el('section', { class: 'children', 'data-collection': ck.collection });
      const caption = el('caption', { text: LABELS[ck.collection] || ck.collection });
      const tbody = el('tbody');
      const table = el('table', { class: 'records' }, caption, el('thead', {}, headRow(ck.kind)), tbody);
      section.append(table);
      box.append(section);
      try {
        const page = await api('GET', ck.collection + '?limit=100&parent=' + encodeURIComponent(rec.id));
        if (n !== childrenLoads) return; // another record, or a newer look
        const items = (page && page.items) || [];
        for (const c of items) {
          c.kind = c.kind || ck.kind;
          state.recs.set(keyOf(c.kind, c.id), c);
          tbody.append(renderRow(c));
        }
        if (!items.length) section.append(el('p', { class: 'note', text: 'No ' + (LABELS[ck.collection] || ck.collection).toLowerCase() + '.' }));
        if (page && page.next) section.append(el('p', { class: 'note', text: 'The first 100 are shown.' }));
      } catch (err) {
        section.append(el('p', { class: 'error', text: 'Could not load: ' + err.message }));
      }
    }
  }

  // ---- conflicts (keep-both) -------------------------------------------------
  // Under keep-both the original keeps one content, flagged, and a conflict
  // copy (conflict_of = the original) holds the other. A person compares them
  // side by side and keeps one, the other or both; each choice saves through
  // an edit session (which clears the flag) and deletes a copy not kept.

  let conflict = null; // {kind, original, copy}
  let conflictLoads = 0; // loadConflict calls: only the latest one paints
  let conflictRetry = null; // the timer of the next look for a missing copy

  async function loadConflict(rec, retries) {
    const load = ++conflictLoads;
    clearTimeout(conflictRetry);
    // A look again at the conflict shown keeps it in view until the new
    // answer replaces it; any other record's is taken down at once.
    const shown = conflict && conflict.kind === rec.kind &&
      [conflict.original, conflict.copy].some((r) => r && String(r.id) === String(rec.id));
    if (!shown || syncOf(rec) !== 'conflict') {
      $('conflict-panel').hidden = true;
      conflict = null;
    }
    if (syncOf(rec) !== 'conflict') return;
    const collection = collectionOf(rec.kind);
    let original = rec;
    let copy = null;
    try {
      if (rec.conflict_of && rec.conflict_of !== '0') {
        copy = rec;
        original = await api('GET', recordPath(collection, rec.conflict_of));
      } else {
        const q = cfg.side === 'cloud' ? 'conflict=true' : 'sync_state=conflict';
        const page = await api('GET', collection + '?limit=500&' + q);
        copy = ((page && page.items) || []).find((c) => String(c.conflict_of) === String(rec.id)) || null;
      }
    } catch (err) {
      if (load === conflictLoads) showError('Could not load the conflict', err);
      return;
    }
    if (load !== conflictLoads) return; // a newer look is under way
    original.kind = original.kind || rec.kind;
    conflict = { kind: rec.kind, original, copy };
    fillFields($('conflict-mine'), rec.kind, original.data);
    $('conflict-mine-title').textContent = 'The record (version ' + original.version + ')';
    if (copy) {
      copy.kind = copy.kind || rec.kind;
      fillFields($('conflict-other'), rec.kind, copy.data);
      $('conflict-other-title').textContent = 'The conflict copy (version ' + copy.version + ')';
      for (const dd of $('conflict-other').querySelectorAll('dd')) {
        const mine = $('conflict-mine').querySelector('dd[data-field="' + dd.dataset.field + '"]');
        if (mine && mine.textContent !== dd.textContent) {
          dd.classList.add('changed');
          mine.classList.add('changed');
        }
      }
      $('conflict-text').textContent =
        'Two edits of this record were made at the same time. Both were kept: compare them and choose what to keep.';
    } else {
      $('conflict-other').replaceChildren();
      $('conflict-other-title').textContent = 'No conflict copy';
      $('conflict-text').textContent = 'This record was flagged by a conflict resolution. Keep its content to clear the flag.';
    }
    $('resolve-use-copy').disabled = !copy;
    $('resolve-keep-both').disabled = !copy;
    $('conflict-panel').hidden = false;
    // The copy travels as a change of its own and can reach this side
    // after the record's flag: its event makes the page look again
    // (recheckConflict), and so, in case that event was missed, does a
    // timer for a little while.
    const left = retries === undefined ? 5 : retries;
    if (!copy && left > 0) {
      conflictRetry = setTimeout(() => {
        const d = state.detail;
        if (load === conflictLoads && d && d.kind === rec.kind && String(d.id) === String(rec.id)) {
          loadConflict(state.recs.get(keyOf(d.kind, d.id)) || rec, left - 1);
        }
      }, 2000);
    }
  }

  // recheckConflict looks at the open record's conflict again when the
  // panel no longer matches it: the record came into conflict or left it
  // (a change from the other side), or its copy is still missing.
  function recheckConflict(kind) {
    const d = state.detail;
    if (!d || $('detail').hidden || (kind && kind !== d.kind)) return;
    const rec = state.recs.get(keyOf(d.kind, d.id));
    if (!rec) return;
    const inConflict = syncOf(rec) === 'conflict';
    if (inConflict !== !$('conflict-panel').hidden || (inConflict && !(conflict && conflict.copy))) loadConflict(rec);
  }

  // reloadDetail reads the open record again, repaints its mode and looks at
  // its conflict anew: after a reset, events about it may have been missed.
  async function reloadDetail() {
    const d = state.detail;
    if (!d || $('detail').hidden) return;
    paintMode($('detail-mode'), d.kind, d.id);
    await refetch(d.kind, d.id);
    const now = state.detail;
    if (!now || now.kind !== d.kind || now.id !== d.id || $('detail').hidden) return;
    const rec = state.recs.get(keyOf(d.kind, d.id));
    if (!rec || rec.deleted) return;
    loadChildren(rec); // children made or removed meanwhile
    loadConflict(rec);
  }

  // saveAs writes data to a record in a one-save edit session.
  async function saveAs(kind, id, data) {
    const collection = collectionOf(kind);
    const s = await api('POST', recordPath(collection, id) + '/edit', { client: clientId });
    try {
      const answer = await api('POST', recordPath(collection, id) + '/save', { session: s.session, data });
      putRecord(answer.record || answer);
    } finally {
      await api('POST', recordPath(collection, id) + '/close', { session: s.session }).catch(() => {});
    }
  }

  async function resolve(choice) {
    if (!conflict || state.editing) return;
    const { kind, original, copy } = conflict;
    const collection = collectionOf(kind);
    clearError();
    try {
      if (choice === 'this') await saveAs(kind, original.id, original.data);
      if (choice === 'copy') await saveAs(kind, original.id, copy.data);
      if (choice === 'both') {
        await saveAs(kind, original.id, original.data);
        await saveAs(kind, copy.id, copy.data);
      }
      if (copy && choice !== 'both') {
        const cur = await api('GET', recordPath(collection, copy.id));
        await api('DELETE', recordPath(collection, copy.id) + '?base_version=' + encodeURIComponent(cur.version));
        putRecord({ kind, id: copy.id, deleted: true });
      }
      setStatus(choice === 'both' ? 'Kept both records.' : choice === 'copy' ? "Kept the copy's content; the copy is deleted." : 'Kept this version; the copy is deleted.');
      openDetail(kind, original.id, true);
    } catch (err) {
      showError('Could not resolve the conflict', err);
    }
  }

  // ---- history, diff, rollback -------------------------------------------

  async function showHistory() {
    const d = state.detail;
    if (!d) return;
    const collection = collectionOf(d.kind);
    $('diff').replaceChildren();
    try {
      const page = await api('GET', recordPath(collection, d.id) + '/versions');
      const items = ((page && page.items) || []).slice().reverse(); // newest first
      const rec = state.recs.get(keyOf(d.kind, d.id));
      const rows = items.map((v) => {
        const tr = el('tr', { 'data-version': v.version });
        const current = rec && v.version === rec.version;
        tr.append(
          el('td', { class: 'version', text: v.version + (v.deleted ? ' (deleted)' : '') + (current ? ' (current)' : '') }),
          el('td', { text: v.at ? new Date(v.at).toLocaleString() : '' }),
          el('td', { text: v.saved_by_name || '' }),
          el('td', { text: v.origin || '' }),
        );
        const actions = el('td', { class: 'actions' });
        if (!v.deleted) {
          const cmp = el('button', { type: 'button', class: 'diff', text: 'Compare' });
          cmp.addEventListener('click', () => showDiff(d.kind, d.id, v.version));
          actions.append(cmp);
          if (!current) {
            const rb = el('button', { type: 'button', class: 'rollback', text: 'Roll back' });
            rb.setAttribute('aria-label', 'Roll back to version ' + v.version);
            rb.addEventListener('click', () => rollback(d.kind, d.id, v.version));
            actions.append(rb);
          }
        }
        tr.append(actions);
        return tr;
      });
      $('history-rows').replaceChildren(...rows);
      $('history-panel').hidden = false;
      $('history-panel').scrollIntoView({ block: 'nearest' });
    } catch (err) {
      showError('Could not load the history', err);
    }
  }

  async function showDiff(kind, id, v) {
    const collection = collectionOf(kind);
    try {
      const old = await api('GET', recordPath(collection, id) + '/versions/' + encodeURIComponent(v));
      const rec = state.recs.get(keyOf(kind, id)) || { data: {} };
      const k = BY_KIND.get(kind);
      const names = k ? k.fields.map((f) => f.name) : Object.keys(Object.assign({}, old.data, rec.data));
      const tbody = el('tbody');
      for (const n of names) {
        const a = fieldValue((old.data || {})[n]);
        const b = fieldValue((rec.data || {})[n]);
        tbody.append(el('tr', { class: a === b ? '' : 'changed' }, el('th', { scope: 'row', text: n.replace(/_/g, ' ') }), el('td', { text: a }), el('td', { text: b })));
      }
      const head = el('tr', {}, el('th', { scope: 'col', text: 'Field' }), el('th', { scope: 'col', text: 'Version ' + v }), el('th', { scope: 'col', text: 'Now (' + rec.version + ')' }));
      $('diff').replaceChildren(el('table', { class: 'records diff' }, el('thead', {}, head), tbody));
    } catch (err) {
      showError('Could not load version ' + v, err);
    }
  }

  // rollback writes an old version's content as a new version (M18), in
  // the open edit session or a one-save session of its own.
  async function rollback(kind, id, v) {
    const collection = collectionOf(kind);
    clearError();
    const ed = state.editing;
    const own = ed && ed.kind === kind && ed.id === id && !ed.gone;
    let session = own ? ed.session : '';
    try {
      if (!own) {
        if (ed) {
          showError('Close the record you are editing first');
          return;
        }
        session = (await api('POST', recordPath(collection, id) + '/edit', { client: clientId })).session;
      }
      try {
        const answer = await api('POST', recordPath(collection, id) + '/rollback', { session, version: v });
        const rec = answer.record || answer;
        putRecord(rec);
        setStatus('Rolled back to version ' + v + ': saved as version ' + (answer.version || rec.version) + '.');
        if (own) openEditor(rec);
      } finally {
        if (!own) await api('POST', recordPath(collection, id) + '/close', { session }).catch(() => {});
      }
      showHistory();
    } catch (err) {
      if (err.status === 409 && err.code === 'locked') {
        const h = err.body.holder || {};
        showError(label({ type: 'editing', side: h.side, user: h.user }) + ' — roll back when it is closed', err);
      } else showError('Could not roll back', err);
    }
  }

  // ---- live events -------------------------------------------------------

  function mine(e) {
    const ed = state.editing;
    return !!ed && !!e.session && e.session === ed.session;
  }

  function onEvent(e) {
    // After a reset come the open sessions' editing events, numbered before
    // it: resume from the reset's position, not theirs.
    if (typeof e.seq === 'number' && (e.seq > state.lastSeq || e.type === 'reset')) state.lastSeq = e.seq;
    const kind = e.kind;
    const id = e.record;
    switch (e.type) {
      case 'reset': {
        // Events were missed (a new connection, or events lost between the
        // servers). The server's state is sent next (who edits now): the
        // modes of sessions go, other people's and idle ones, and so do
        // conflict badges (the records' sync state shows them again); the
        // list reloads, and the open record is read again with its
        // conflict.
        const own = state.editing ? keyOf(state.editing.kind, state.editing.id) : null;
        for (const [key, m] of state.modes) {
          if (key === own || !(m.cls === 'editing' || m.cls === 'idle' || m.cls === 'conflict')) continue;
          if (m.timer) clearTimeout(m.timer);
          state.modes.delete(key);
        }
        if (!$('list-view').hidden) loadList(false);
        reloadDetail();
        return;
      }
      case 'editing':
        setMode(kind, id, mine(e) ? 'Editing by me' : label(e), 'editing', e.session);
        break;
      case 'saved':
        setMode(kind, id, label(e), 'saved');
        refetch(kind, id);
        break;
      case 'closed': {
        // Events of two sides can arrive out of order: the close of an
        // earlier session must not clear the badge of the one editing now.
        const cur = state.modes.get(keyOf(kind, id));
        const stale = !!cur && cur.cls === 'editing' && !!cur.session && !!e.session && cur.session !== e.session;
        if (stale) {
          // keep showing who edits now
        } else if (e.reason === 'idle' || e.reason === 'expired') setMode(kind, id, label(e), 'closed');
        else if (cur && cur.cls === 'saved') {
          // keep "Saved" for its while
        } else setMode(kind, id, '', '');
        if (mine(e)) {
          endEditing(e.reason === 'idle' ? 'Closed (idle): the record was closed after a period without activity.' : 'The edit session was closed (' + (e.reason || 'released') + ').');
        }
        break;
      }
      case 'idle_warning':
        setMode(kind, id, label(e), 'idle');
        if (mine(e)) $('idle-warning').hidden = false;
        break;
      case 'changed':
        refetch(kind, id);
        break;
      case 'conflict':
        setMode(kind, id, label(e), 'conflict');
        refetch(kind, id);
        // Perhaps the copy of the record open here (not on the page).
        if (conflict && !conflict.copy) recheckConflict(kind);
        break;
      case 'transfer': {
        const text = label(e);
        setMode(kind, id, text, e.transfer && e.transfer.state === 'failed' ? 'failed' : 'transfer');
        break;
      }
      default:
      // A type this page does not know yet: nothing to show.
    }
  }

  function eventsURL() {
    const q = new URLSearchParams();
    if (state.lastSeq > 0) q.set('since', String(state.lastSeq));
    if (token) q.set('access_token', token); // browsers cannot send headers here
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const query = q.toString();
    return scheme + location.host + eventsPath + (query ? '?' + query : '');
  }

  function connect() {
    let ws;
    try {
      ws = new WebSocket(eventsURL());
    } catch (err) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.addEventListener('open', () => setConn('Live', true));
    ws.addEventListener('message', (m) => {
      state.wsAttempt = 0; // a server that sends is a healthy one
      let e;
      try {
        e = JSON.parse(m.data);
      } catch (err) {
        return;
      }
      onEvent(e);
    });
    ws.addEventListener('close', () => {
      if (state.ws !== ws) return; // replaced on purpose
      state.ws = null;
      setConn('Reconnecting…', false);
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    // Full jitter, so the viewers of a restarted server spread out.
    const ceil = Math.min(RECONNECT_MAX_MS, 500 * 2 ** Math.min(state.wsAttempt, 10));
    state.wsAttempt++;
    setTimeout(connect, 100 + Math.random() * ceil);
  }

  function reconnectNow() {
    const old = state.ws;
    state.ws = null;
    if (old) old.close();
    connect();
  }

  // ---- editing -----------------------------------------------------------

  function setEditButtons() {
    for (const b of document.querySelectorAll('button.edit')) b.disabled = !!state.editing;
    $('detail-edit').disabled = !!state.editing;
    for (const id of ['resolve-keep-this', 'resolve-use-copy', 'resolve-keep-both']) {
      if (state.editing) $(id).disabled = true;
      else if (id === 'resolve-keep-this') $(id).disabled = false;
      else $(id).disabled = !(conflict && conflict.copy);
    }
  }

  async function startEdit(kind, id, anyway) {
    if (state.editing) {
      showError('Close the record you are editing first');
      return;
    }
    const collection = collectionOf(kind);
    const body = { client: clientId };
    if (anyway) body.anyway = true;
    clearError();
    let s;
    try {
      s = await api('POST', recordPath(collection, id) + '/edit', body);
    } catch (err) {
      if (err.status === 409 && err.code === 'locked') {
        const h = err.body.holder || {};
        const text = label({ type: 'editing', side: h.side, user: h.user });
        setMode(kind, id, text, 'editing');
        showError(text + ' — try again when it is closed', err);
      } else if (err.status === 503 && err.code === 'lock_unavailable') {
        askEditAnyway(kind, id, err);
      } else {
        showError('Could not open the record for editing', err);
      }
      return;
    }
    const every = s.heartbeat_ms > 0 ? Math.max(1000, s.heartbeat_ms) : HEARTBEAT_DEFAULT_MS;
    const ed = { collection, kind, id, session: s.session, unfenced: !!s.unfenced, active: false, lastBeat: Date.now(), gone: false };
    ed.timer = setInterval(() => heartbeat(ed), every);
    state.editing = ed;
    setMode(kind, id, 'Editing by me', 'editing', s.session);
    setEditButtons();
    let rec = state.recs.get(keyOf(kind, id)) || { kind, id, data: {} };
    try {
      rec = await api('GET', recordPath(collection, id)); // the content as of the lock
      rec.kind = rec.kind || kind;
      putRecord(rec);
    } catch (err) {
      showError('Could not re-read the record; editing the listed copy', err);
    }
    openEditor(rec, s);
  }

  function askEditAnyway(kind, id, err) {
    state.pendingAnyway = { kind, id };
    $('lock-dialog-detail').textContent = err && err.message ? 'Server: ' + err.message : '';
    const dlg = $('lock-dialog');
    if (typeof dlg.showModal === 'function') dlg.showModal();
    else dlg.setAttribute('open', '');
  }

  function closeDialog() {
    const dlg = $('lock-dialog');
    if (typeof dlg.close === 'function') dlg.close();
    else dlg.removeAttribute('open');
  }

  // buildForm makes the form of a kind's fields, filled with data.
  function buildForm(kind, data) {
    const k = BY_KIND.get(kind) || { fields: Object.keys(data || {}).map((n) => ({ name: n, type: 'text' })) };
    const form = $('edit-form');
    form.replaceChildren();
    for (const f of k.fields) {
      const id = 'field-' + f.name;
      const v = (data || {})[f.name];
      let input;
      if (f.options && f.options.length) {
        input = el('select', { id, name: f.name });
        const opts = f.options.includes(v || '') ? f.options : f.options.concat([v]);
        for (const o of opts) input.append(el('option', { value: o, text: o || '—' }));
        input.value = v || '';
      } else if (f.type === 'bool') {
        input = el('input', { id, name: f.name, type: 'checkbox', checked: !!v });
      } else if (f.type === 'longtext' || f.type === 'json') {
        input = el('textarea', { id, name: f.name, rows: 3, value: f.type === 'json' ? JSON.stringify(v === undefined ? null : v) : v || '' });
      } else {
        // A date input shows only YYYY-MM-DD: anything else stays text, so
        // opening and saving never erases it.
        const date = f.type === 'date' && (v == null || v === '' || /^\d{4}-\d{2}-\d{2}$/.test(v));
        input = el('input', { id, name: f.name, type: f.type === 'number' ? 'number' : date ? 'date' : 'text' });
        input.value = f.type === 'list' ? (v || []).join(', ') : v == null ? '' : String(v);
      }
      input.dataset.type = f.type;
      input.addEventListener('input', syncJSON);
      input.addEventListener('change', syncJSON);
      form.append(el('label', { htmlFor: id, text: f.name.replace(/_/g, ' ') }), input);
    }
  }

  // formData reads the form back into the record's data (fields the form
  // does not know are kept from the record).
  function formData(base) {
    const out = Object.assign({}, base || {});
    for (const input of $('edit-form').elements) {
      const n = input.name;
      if (!n) continue;
      switch (input.dataset.type) {
        case 'bool':
          out[n] = input.checked;
          break;
        case 'number':
          out[n] = input.value === '' ? 0 : Number(input.value);
          break;
        case 'list':
          out[n] = input.value.split(',').map((s) => s.trim()).filter(Boolean);
          break;
        case 'json':
          out[n] = JSON.parse(input.value || 'null');
          break;
        case 'id':
          out[n] = input.value.trim() === '' ? '0' : input.value.trim();
          break;
        default:
          out[n] = input.value;
      }
      if (out[n] === '' && !(base && n in base)) delete out[n];
    }
    return out;
  }

  // syncJSON shows the form's data in the JSON box (an expert edits it there).
  function syncJSON() {
    const ed = state.editing;
    if (!ed) return;
    try {
      ed.shown = JSON.stringify(formData(ed.base), null, 2);
      $('editor').value = ed.shown;
    } catch (err) {
      // a JSON field is mid-edit
    }
  }

  function openEditor(rec, s) {
    const ed = state.editing;
    if (!ed) return;
    ed.base = rec.data || {};
    $('edit-heading').textContent = 'Editing ' + titleOf(rec) + ' (version ' + (rec.version || (s && s.version) || '?') + ')';
    buildForm(ed.kind, ed.base);
    ed.shown = JSON.stringify(ed.base, null, 2);
    $('editor').value = ed.shown;
    $('unfenced-warning').hidden = !ed.unfenced;
    $('idle-warning').hidden = true;
    $('edit-panel').hidden = false;
    $('save').disabled = false;
    setStatus(ed.unfenced ? 'Editing without a lock (unfenced — conflict risk).' : 'Editing. Others see "Editing by ' + cfg.side + '".');
    const first = $('edit-form').querySelector('input, select, textarea');
    if (first) first.focus();
    $('edit-panel').scrollIntoView({ block: 'nearest' });
  }

  function endEditing(message) {
    const ed = state.editing;
    if (ed) {
      clearInterval(ed.timer);
      const cur = state.modes.get(keyOf(ed.kind, ed.id));
      if (cur && cur.cls === 'editing' && cur.session === ed.session) setMode(ed.kind, ed.id, '', '');
    }
    state.editing = null;
    $('edit-panel').hidden = true;
    $('unfenced-warning').hidden = true;
    $('idle-warning').hidden = true;
    $('save').disabled = false;
    setEditButtons();
    if (message) setStatus(message);
  }

  // sessionGone: the server no longer holds the session (closed, expired,
  // lock lost or taken over).
  const sessionGone = (err) => err.status === 404 || err.status === 409 || err.status === 410;

  // lostSession keeps the editor's content on screen (to copy) but stops
  // saving: the record must be opened again.
  function lostSession(ed, err) {
    clearInterval(ed.timer);
    ed.gone = true;
    $('save').disabled = true;
    showError('The edit session has ended; copy your changes and open the record again', err);
  }

  async function save() {
    const ed = state.editing;
    if (!ed || ed.gone) return;
    let data;
    try {
      // The JSON box wins when someone edited it there.
      data = $('editor').value !== ed.shown ? JSON.parse($('editor').value) : formData(ed.base);
    } catch (err) {
      showError('The data is not valid JSON', err);
      return;
    }
    try {
      const answer = await api('POST', recordPath(ed.collection, ed.id) + '/save', { session: ed.session, data });
      // {"session","version","record"}; a bare record is accepted too.
      const rec = (answer && answer.record) || answer;
      rec.kind = rec.kind || ed.kind;
      const version = (answer && answer.version) || rec.version;
      ed.active = true; // a save is activity
      clearError();
      putRecord(rec);
      ed.base = rec.data || {};
      ed.shown = JSON.stringify(ed.base, null, 2);
      $('editor').value = ed.shown;
      $('edit-heading').textContent = 'Editing ' + titleOf(rec) + ' (version ' + version + ')';
      setStatus('Saved version ' + version + '.');
    } catch (err) {
      if (err.code === 'lock_lost' || err.code === 'no_session') lostSession(ed, err);
      else showError('Could not save', err); // the form keeps the text
    }
  }

  async function closeEdit() {
    const ed = state.editing;
    if (!ed) return;
    if (!ed.gone) {
      try {
        await api('POST', recordPath(ed.collection, ed.id) + '/close', { session: ed.session });
        clearError();
      } catch (err) {
        if (!sessionGone(err)) showError('Could not close the record (its lock will expire)', err);
      }
    }
    endEditing('Closed.');
  }

  // heartbeat keeps the lock alive while the record is open; activity tells
  // the server the user did something since the last beat (it resets the
  // idle clock, M15).
  function heartbeat(ed) {
    if (state.editing !== ed || ed.gone) return;
    const activity = ed.active;
    ed.active = false;
    ed.lastBeat = Date.now();
    api('POST', recordPath(ed.collection, ed.id) + '/heartbeat', { session: ed.session, activity })
      .then(() => {
        if (state.editing === ed && activity) $('idle-warning').hidden = true;
      })
      .catch((err) => {
        if (state.editing !== ed) return;
        if (sessionGone(err)) lostSession(ed, err);
        else showError('Could not keep the record open', err);
      });
  }

  // activity notes that the user works. After an idle warning it beats at
  // once (at most every 10 s) so the record is not closed under them.
  function activity() {
    const ed = state.editing;
    if (!ed || ed.gone) return;
    ed.active = true;
    if (!$('idle-warning').hidden && Date.now() - ed.lastBeat >= ACTIVITY_BEAT_MIN_MS) heartbeat(ed);
  }

  // ---- login ---------------------------------------------------------------
  // A person logs in with a username and password; the server answers with
  // an HttpOnly, SameSite=Strict session cookie that every request and the
  // WebSocket carry (the page never sees it). An idle session ends on the
  // server; the next request answers 401 and the form comes back.

  function showLogin() {
    $('login').hidden = false;
    $('totp-enrol').hidden = true;
    $('app').hidden = true;
    $('login-username').focus();
  }

  // A person with a second factor (cloud) is asked for its code when the
  // server answers totp_required; under require_totp a person without one
  // enrols it first (the session may do nothing else until then).
  function askCode(message) {
    $('login-code-row').hidden = false;
    $('login-code').value = '';
    $('login-code').focus();
    $('login-error').textContent = message;
    $('login-error').hidden = false;
  }

  async function showEnrol() {
    $('login').hidden = true;
    $('app').hidden = true;
    $('totp-enrol').hidden = false;
    try {
      const e = await api('POST', '/v1/me/totp', {});
      $('totp-secret').value = e.secret || '';
      $('totp-url').href = e.url || '#';
      $('totp-enrol-code').focus();
    } catch (err) {
      $('totp-enrol-error').textContent = err.message || 'Enrolment failed';
      $('totp-enrol-error').hidden = false;
    }
  }

  async function confirmEnrol(ev) {
    ev.preventDefault();
    $('totp-enrol-error').hidden = true;
    try {
      await api('POST', '/v1/me/totp/confirm', { code: $('totp-enrol-code').value.trim() });
      $('totp-secret').value = '';
      $('totp-enrol-code').value = '';
      $('totp-enrol').hidden = true;
      loggedIn(await whoAmI(), true);
    } catch (err) {
      $('totp-enrol-error').textContent = err.message || 'Wrong code';
      $('totp-enrol-error').hidden = false;
    }
  }

  // loggedIn shows the app for me; the title names the clinic.
  function loggedIn(me, reconnect) {
    if (me && me.totp_enrolment_required) {
      setConn('Not connected', false);
      showEnrol();
      return;
    }
    state.me = me;
    $('login').hidden = true;
    $('totp-enrol').hidden = true;
    $('app').hidden = false;
    $('user').value = (me && (me.username || me.kind)) || '';
    const name = me && me.clinic_name;
    const title = name ? name + ' — ' + (cfg.side === 'cloud' ? 'scsync cloud' : 'scsync clinic') : cfg.title;
    document.title = title;
    $('title').textContent = title;
    search();
    if (reconnect) reconnectNow();
    else connect();
  }

  async function whoAmI() {
    try {
      return await api('GET', '/v1/me');
    } catch (err) {
      return null;
    }
  }

  async function login(ev) {
    ev.preventDefault();
    $('login-error').hidden = true;
    const body = { username: $('login-username').value.trim(), password: $('login-password').value };
    if (/^\d+$/.test(clinic)) body.clinic = clinic;
    const code = $('login-code').value.trim();
    if (!$('login-code-row').hidden && code) body.code = code;
    try {
      await api('POST', '/v1/login', body);
      $('login-password').value = '';
      $('login-code').value = '';
      $('login-code-row').hidden = true;
      loggedIn(await whoAmI(), true);
    } catch (err) {
      if (err.code === 'totp_required') {
        askCode('Enter the 6-digit code from your authenticator app.');
        return;
      }
      if (err.code === 'totp_invalid') {
        askCode('Wrong or expired code: enter the code the app shows now.');
        return;
      }
      $('login-error').textContent = err.message || 'Login failed';
      $('login-error').hidden = false;
    }
  }

  async function logout() {
    if (state.editing) await closeEdit();
    await api('POST', '/v1/logout', {}).catch(() => {});
    token = '';
    try {
      sessionStorage.removeItem('scsync.token');
    } catch (err) {
      // nothing stored
    }
    showLogin();
  }

  // readToken takes an operator's API token from the URL fragment
  // (#token=…, never sent to a server) into sessionStorage.
  function readToken() {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.has('token')) {
      token = hash.get('token');
      try {
        sessionStorage.setItem('scsync.token', token);
      } catch (err) {
        // storage may be disabled; the token still works for this page
      }
      // Keep the token out of the address bar and history.
      history.replaceState(null, '', location.pathname + location.search);
    } else {
      try {
        token = sessionStorage.getItem('scsync.token') || '';
      } catch (err) {
        token = '';
      }
    }
  }

  // ---- wiring ------------------------------------------------------------

  function init() {
    readToken();
    $('controls').addEventListener('submit', (ev) => ev.preventDefault());
    $('search').addEventListener('submit', search);
    $('login').addEventListener('submit', login);
    $('totp-enrol').addEventListener('submit', confirmEnrol);
    $('logout').addEventListener('click', logout);
    $('collection').addEventListener('change', () => {
      state.collection = $('collection').value;
      state.list.mode = state.collection === 'patients' ? 'search' : 'list';
      if (state.list.mode === 'search') $('search-q').value = '';
      showList();
      loadList(false);
    });
    $('conflicts').addEventListener('click', () => {
      state.collection = $('collection').value;
      state.list.mode = 'conflicts';
      showList();
      loadList(false);
    });
    $('reload').addEventListener('click', () => {
      if (state.detail) openDetail(state.detail.kind, state.detail.id, true);
      else loadList(false);
    });
    $('more').addEventListener('click', () => loadList(true));
    $('detail-back').addEventListener('click', showList);
    $('detail-edit').addEventListener('click', () => state.detail && startEdit(state.detail.kind, state.detail.id, false));
    $('detail-history').addEventListener('click', showHistory);
    $('history-close').addEventListener('click', () => ($('history-panel').hidden = true));
    $('resolve-keep-this').addEventListener('click', () => resolve('this'));
    $('resolve-use-copy').addEventListener('click', () => resolve('copy'));
    $('resolve-keep-both').addEventListener('click', () => resolve('both'));
    $('save').addEventListener('click', save);
    $('close').addEventListener('click', closeEdit);
    $('edit-anyway').addEventListener('click', () => {
      const p = state.pendingAnyway;
      state.pendingAnyway = null;
      closeDialog();
      if (p) startEdit(p.kind, p.id, true);
    });
    $('view-only').addEventListener('click', () => {
      const p = state.pendingAnyway;
      state.pendingAnyway = null;
      closeDialog();
      setStatus('Viewing only: the record was not opened for editing.');
      if (p) openDetail(p.kind, p.id);
    });
    $('lock-dialog').addEventListener('cancel', () => {
      state.pendingAnyway = null;
    });
    for (const type of ['input', 'keydown', 'pointerdown', 'pointermove', 'wheel']) {
      document.addEventListener(type, activity, { passive: true });
    }
    // Leaving the page releases the lock (if the request gets out; else it expires).
    window.addEventListener('pagehide', () => {
      const ed = state.editing;
      if (!ed || ed.gone) return;
      api('POST', recordPath(ed.collection, ed.id) + '/close', { session: ed.session }, { keepalive: true }).catch(() => {});
    });

    const needsClinic = (cfg.apiPrefix + cfg.eventsPath).includes('{clinic}');
    if (needsClinic && !/^\d+$/.test(clinic)) {
      showError('Open this page with the clinic in the URL: ?clinic=<clinic id>, then log in');
      setConn('Not connected', false);
      return;
    }
    whoAmI().then((me) => {
      if (!me) {
        showLogin();
        setConn('Not connected', false);
        return;
      }
      loggedIn(me, false);
    });
  }

  init();
})();
