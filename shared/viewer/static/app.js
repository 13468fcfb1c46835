// scsync viewer: lists a clinic's records with a live mode badge each, and
// edits one at a time through the server's lock (see package viewer for the
// API it talks to). Plain JavaScript, no dependencies.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const cfg = document.body.dataset;

  // Record kind of each collection, to match events (which name kinds).
  const KINDS = { patients: 'patient', studies: 'study', images: 'image', reports: 'report' };
  // Heartbeat period when the server does not say (it sends heartbeat_ms,
  // a quarter of the lock TTL); extra beats on activity at most this often.
  const HEARTBEAT_DEFAULT_MS = 15000;
  const ACTIVITY_BEAT_MIN_MS = 10000;
  const RECONNECT_MAX_MS = 15000;

  const params = new URLSearchParams(location.search);
  const clinic = params.get('clinic') || '';
  const fill = (p) => p.split('{clinic}').join(encodeURIComponent(clinic));
  const apiPrefix = fill(cfg.apiPrefix);
  const eventsPath = fill(cfg.eventsPath);
  const clientId = randomHex(16); // this page load, for the lock holder

  const state = {
    collection: 'patients',
    records: new Map(), // id -> record of the shown collection
    modes: new Map(), // "kind/id" -> {text, cls}, from events
    editing: null, // {collection, kind, id, session, unfenced, active, lastBeat, timer, gone}
    pendingAnyway: null, // record id waiting for the lock dialog's answer
    lastSeq: 0,
    ws: null,
    wsAttempt: 0,
    listLoad: 0,
  };

  let token = '';

  // ---- helpers -----------------------------------------------------------

  function randomHex(n) {
    const b = new Uint8Array(n);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
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

  function titleOf(rec) {
    const d = (rec && rec.data) || {};
    return String(d.name || d.title || d.description || d.file_name || rec.id);
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
        return verb + ' ' + pct + '%';
      }
      case 'failed':
        return 'Transfer failed';
      default:
        return '';
    }
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

  // ---- the list ------------------------------------------------------------

  async function loadList() {
    const collection = state.collection;
    const load = ++state.listLoad;
    try {
      const page = await api('GET', collection + '?limit=100');
      if (load !== state.listLoad) return; // a newer load is under way
      const items = (page && page.items) || [];
      state.records = new Map();
      const rows = items.map((rec) => {
        state.records.set(rec.id, rec);
        return renderRow(rec);
      });
      $('rows').replaceChildren(...rows);
      $('empty').hidden = items.length > 0;
      $('more').hidden = !(page && page.next);
      clearError();
    } catch (err) {
      if (load === state.listLoad) showError('Could not load ' + collection, err);
    }
  }

  function renderRow(rec) {
    const tr = document.createElement('tr');
    tr.dataset.id = rec.id;
    for (const cls of ['title', 'version', 'mode']) {
      const td = document.createElement('td');
      td.className = cls;
      tr.append(td);
    }
    const actions = document.createElement('td');
    actions.className = 'actions';
    const edit = document.createElement('button');
    edit.type = 'button';
    edit.className = 'edit';
    edit.textContent = 'Edit';
    edit.disabled = !!state.editing;
    edit.addEventListener('click', () => startEdit(rec.id, false));
    actions.append(edit);
    tr.append(actions);
    fillRow(tr, rec);
    return tr;
  }

  function fillRow(tr, rec) {
    const title = titleOf(rec);
    tr.querySelector('.title').textContent = title;
    tr.querySelector('.version').textContent = rec.version || '';
    tr.querySelector('.edit').setAttribute('aria-label', 'Edit ' + title);
    tr.classList.toggle('deleted', !!rec.deleted);
    paintMode(tr);
  }

  function rowOf(id) {
    for (const tr of $('rows').children) {
      if (tr.dataset.id === id) return tr;
    }
    return null;
  }

  // paintMode shows the mode of a row: the last event's, else a conflict
  // the record's sync state reports.
  function paintMode(tr) {
    const kind = KINDS[state.collection];
    const id = tr.dataset.id;
    const rec = state.records.get(id);
    let mode = state.modes.get(kind + '/' + id);
    if (!mode && rec && rec.sync_state === 'conflict') mode = { text: 'Conflict', cls: 'conflict' };
    const cell = tr.querySelector('.mode');
    if (!mode || !mode.text) {
      cell.replaceChildren();
      return;
    }
    const badge = document.createElement('span');
    badge.className = 'badge badge-' + mode.cls;
    badge.textContent = mode.text;
    cell.replaceChildren(badge);
  }

  function setMode(kind, id, text, cls, session) {
    const key = kind + '/' + id;
    if (text) state.modes.set(key, { text, cls, session: session || '' });
    else state.modes.delete(key);
    if (kind === KINDS[state.collection]) {
      const tr = rowOf(id);
      if (tr) paintMode(tr);
    }
  }

  // putRecord shows a record fetched or saved (adding or removing its row).
  function putRecord(collection, rec) {
    if (collection !== state.collection) return;
    let tr = rowOf(rec.id);
    if (rec.deleted) {
      state.records.delete(rec.id);
      if (tr) tr.remove();
      return;
    }
    state.records.set(rec.id, rec);
    if (tr) {
      fillRow(tr, rec);
    } else {
      tr = renderRow(rec);
      $('rows').append(tr);
      $('empty').hidden = true;
    }
  }

  // refetch re-reads one record of the shown collection.
  async function refetch(kind, id) {
    const collection = state.collection;
    if (KINDS[collection] !== kind) return;
    try {
      putRecord(collection, await api('GET', recordPath(collection, id)));
    } catch (err) {
      if (err.status === 404) {
        putRecord(collection, { id, deleted: true });
        return;
      }
      showError('Could not refresh a record', err);
    }
  }

  // ---- live events -------------------------------------------------------

  function mine(e) {
    const ed = state.editing;
    return !!ed && !!e.session && e.session === ed.session;
  }

  function onEvent(e) {
    if (typeof e.seq === 'number' && e.seq > 0) state.lastSeq = e.seq;
    const kind = e.kind;
    const id = e.record;
    switch (e.type) {
      case 'reset':
        loadList();
        return;
      case 'editing':
        setMode(kind, id, label(e), 'editing', e.session);
        break;
      case 'saved':
        setMode(kind, id, label(e), 'saved');
        refetch(kind, id);
        break;
      case 'closed': {
        // Events of two sides can arrive out of order: the close of an
        // earlier session must not clear the badge of the one editing now.
        const cur = state.modes.get(kind + '/' + id);
        const stale = !!cur && cur.cls === 'editing' && !!cur.session && !!e.session && cur.session !== e.session;
        if (stale) {
          // keep showing who edits now
        } else if (e.reason === 'idle' || e.reason === 'expired') setMode(kind, id, label(e), 'closed');
        else setMode(kind, id, '', '');
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

  function userName() {
    return $('user').value.trim() || 'viewer';
  }

  function setEditButtons() {
    for (const b of document.querySelectorAll('button.edit')) b.disabled = !!state.editing;
  }

  async function startEdit(id, anyway) {
    if (state.editing) {
      showError('Close the record you are editing first');
      return;
    }
    const collection = state.collection;
    const kind = KINDS[collection];
    const body = { client: clientId, user: userName() };
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
        askEditAnyway(id, err);
      } else {
        showError('Could not open the record for editing', err);
      }
      return;
    }
    const every = s.heartbeat_ms > 0 ? Math.max(1000, s.heartbeat_ms) : HEARTBEAT_DEFAULT_MS;
    const ed = { collection, kind, id, session: s.session, unfenced: !!s.unfenced, active: false, lastBeat: Date.now(), gone: false };
    ed.timer = setInterval(() => heartbeat(ed), every);
    state.editing = ed;
    setEditButtons();
    let rec = state.records.get(id) || { id, data: {} };
    try {
      rec = await api('GET', recordPath(collection, id)); // the content as of the lock
      putRecord(collection, rec);
    } catch (err) {
      showError('Could not re-read the record; editing the listed copy', err);
    }
    openEditor(rec, s);
  }

  function askEditAnyway(id, err) {
    state.pendingAnyway = id;
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

  function openEditor(rec, s) {
    const ed = state.editing;
    if (!ed) return;
    $('edit-heading').textContent = 'Editing ' + titleOf(rec) + ' (version ' + (rec.version || s.version || '?') + ')';
    $('editor').value = JSON.stringify(rec.data || {}, null, 2);
    $('unfenced-warning').hidden = !ed.unfenced;
    $('idle-warning').hidden = true;
    $('edit-panel').hidden = false;
    setStatus(ed.unfenced ? 'Editing without a lock (unfenced — conflict risk).' : 'Editing. Other viewers see "Editing by ' + cfg.side + '".');
    $('editor').focus();
  }

  function endEditing(message) {
    if (state.editing) clearInterval(state.editing.timer);
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

  // lostSession keeps the editor's text on screen (to copy) but stops
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
      data = JSON.parse($('editor').value);
    } catch (err) {
      showError('The data is not valid JSON', err);
      return;
    }
    try {
      const answer = await api('POST', recordPath(ed.collection, ed.id) + '/save', { session: ed.session, data });
      // {"session","version","record"}; a bare record is accepted too.
      const rec = (answer && answer.record) || answer;
      const version = (answer && answer.version) || rec.version;
      ed.active = true; // a save is activity
      clearError();
      putRecord(ed.collection, rec);
      $('edit-heading').textContent = 'Editing ' + titleOf(rec) + ' (version ' + version + ')';
      setStatus('Saved version ' + version + '.');
    } catch (err) {
      if (err.code === 'lock_lost' || err.code === 'no_session') lostSession(ed, err);
      else showError('Could not save', err); // the editor keeps the text
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

  // ---- wiring ------------------------------------------------------------

  // ---- login ---------------------------------------------------------------
  // A person logs in with a username and password; the server answers with
  // an HttpOnly, SameSite=Strict session cookie that every request and the
  // WebSocket carry (the page never sees it). An idle session ends on the
  // server; the next request answers 401 and the form comes back.

  function showLogin() {
    $('login').hidden = false;
    $('totp-enrol').hidden = true;
    $('controls').hidden = true;
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
    $('controls').hidden = true;
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
      loggedIn(await whoAmI());
    } catch (err) {
      $('totp-enrol-error').textContent = err.message || 'Wrong code';
      $('totp-enrol-error').hidden = false;
    }
  }

  async function loggedIn(me) {
    if (me && me.totp_enrolment_required) {
      showEnrol();
      return;
    }
    $('login').hidden = true;
    $('totp-enrol').hidden = true;
    $('controls').hidden = false;
    $('user').value = (me && (me.username || me.kind)) || '';
    loadList();
    reconnectNow();
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
      loggedIn(await whoAmI());
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
    await api('POST', '/v1/logout', {}).catch(() => {});
    token = '';
    try {
      sessionStorage.removeItem('scsync.token');
    } catch (err) {
      // nothing stored
    }
    showLogin();
  }

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
    $('token').value = token;
  }

  function init() {
    readToken();
    $('controls').addEventListener('submit', (ev) => ev.preventDefault());
    $('login').addEventListener('submit', login);
    $('totp-enrol').addEventListener('submit', confirmEnrol);
    $('logout').addEventListener('click', logout);
    $('token').addEventListener('change', () => {
      token = $('token').value.trim();
      try {
        sessionStorage.setItem('scsync.token', token);
      } catch (err) {
        // not remembered
      }
      loadList();
      reconnectNow();
    });
    $('collection').addEventListener('change', () => {
      state.collection = $('collection').value;
      const option = $('collection').selectedOptions[0];
      $('caption').textContent = option ? option.textContent : state.collection;
      $('rows').replaceChildren();
      loadList();
    });
    $('reload').addEventListener('click', loadList);
    $('save').addEventListener('click', save);
    $('close').addEventListener('click', closeEdit);
    $('edit-anyway').addEventListener('click', () => {
      const id = state.pendingAnyway;
      state.pendingAnyway = null;
      closeDialog();
      if (id) startEdit(id, true);
    });
    $('view-only').addEventListener('click', () => {
      state.pendingAnyway = null;
      closeDialog();
      setStatus('Viewing only: the record was not opened for editing.');
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
      if (!ed) return;
      if (ed.gone) return;
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
      if (me.totp_enrolment_required) {
        setConn('Not connected', false);
        showEnrol();
        return;
      }
      $('user').value = me.username || me.kind || '';
      loadList();
      connect();
    });
  }

  init();
})();
