// Package events carries scsync's live notifications (M11, M14–M16) from the
// server where something happened to every viewer on both sides: "Editing by
// cloud (dr.kim)", "Saved v2.1", "Closed (idle)", "Uploading 45%", "Conflict".
//
// The flow is the one M14 prescribes:
//
//	client → its server (edit, save, close…) → Bus.Publish
//	  → RabbitMQ topic exchange scsync.events, key clinic.<clinic>.<kind>.<record>
//	  → every server's own queue → Bus → Hub.Publish
//	  → WebSocket → every connected viewer of that clinic
//
// # Events
//
// An Event is a small JSON object (see Event for the fields). Types:
//
//	editing       a client opened an edit session (side, user, version at lock, unfenced)
//	saved         a save inside a session (the new version)
//	closed        a session ended; reason released | idle | expired | saved
//	idle_warning  the session's user has been idle; it closes soon (M15)
//	changed       the record's data changed otherwise (sync: re-fetch it)
//	conflict      a conflict policy was applied to the record; reason names it
//	transfer      file transfer progress; transfer.state queued | uploading |
//	              present | downloading | failed
//	reset         only from a Hub to one client: re-fetch your state
//
// Events are notifications, not data: a viewer that missed some re-fetches.
// Losing events while RabbitMQ is unreachable is acceptable and never fails
// the request that caused them; the viewers of the receiving side are told
// (see Lost events).
//
// # Bus (RabbitMQ)
//
// A Bus uses the server's existing amqpx client (through the small Broker
// interface). Publish hands the event at once to this server's own Hub and
// queues it for the broker; a background publisher sends it, so a request is
// never slowed by a broker outage (when the outbox is full, events are
// dropped and logged). A cloud node publishes to Exchange and consumes its
// own queue scsync.events.<name>, bound to every clinic's events (clinic.#)
// on Exchange and on UpExchange. A clinic (BusConfig.Provisioned) declares
// nothing: it publishes to UpExchange, which its broker login may write only
// under its own keys, and consumes no queue of its own: the cloud binds the
// clinic's down queue to Exchange with clinic.<id>.# (ClinicTopology), and
// the clinic's down consumer hands the event messages (MessageType) to
// Bus.Handle. Own publications are
// skipped, since they were delivered locally already. A consumer trusts the clinic in
// the routing key, not the one in the body: the broker's topic permissions
// decide who may publish under which key, so an event whose body names
// another clinic than its key is dropped.
//
// # Hub (WebSocket)
//
// A Hub numbers the events it receives (seq, per hub; it starts at the hub's
// start time in microseconds, so positions of different hubs and restarts do
// not look resumable to one another), keeps the last Buffer of them, and
// streams them to WebSocket clients, each seeing only its clinic's events:
//
//	GET <events path>?since=<seq>   (Upgrade: websocket)
//
// With since inside the buffer the hub first replays every event of the
// clinic after since, then continues live, with no gap and no duplicate.
// Without since, or with a since the hub cannot resume from (too old, or from
// another hub), the first message is {"type":"reset","seq":N}: re-fetch the
// state and continue from N. A client that falls more than ClientQueue
// events behind is disconnected (close status 1013, try again later) so it
// cannot slow anybody else; it reconnects and resumes. The hub pings every
// PingInterval. Same-origin WebSocket requests are accepted, plus any origin
// matching HubConfig.OriginPatterns.
//
// The hub does not authenticate: the server does that, decides the clinic,
// then calls ServeWS. Browsers cannot set headers on a WebSocket, so servers
// accept the bearer token either as "Authorization: Bearer <token>" or as the
// access_token query parameter (RequestToken reads both); such URLs must be
// redacted before they are logged.
//
// # Lost events
//
// Events can also be lost between servers: the publishing Bus drops them
// when its outbox is full, a publish fails (broker unreachable, timeout), a
// receiving queue drops its oldest at 10,000 messages, an event waits
// longer than EventTTL. Each is found by the receiving Bus, all the same
// way. The publishing Bus numbers the events it accepts, dropped ones too,
// per clinic and publisher (one of its 4 publishing goroutines; a record's
// events always take the same one, and one publisher's messages stay in
// order), and stamps each message with its publisher and first number
// (header x-scsync-events-seq, "<publisher>:<first>"; a batch holds events
// numbered one after the other). The receiving Bus keeps, per clinic, origin
// (x-scsync-events-origin, random at each start) and publisher, the last
// number it saw; a message whose first number is beyond the next one is a
// gap. A redelivered or duplicate message (numbers already seen) is not; a
// stream seen for the first time is not either (this server or the
// publisher just started), unless the clinic's streams were forgotten
// since: a stream silent for a day is forgotten (origins change at every
// restart; at most 64 streams are kept per clinic, the least recent goes),
// and a first number past 1 is then taken for a gap. A message without the
// header (a server before this version, during an upgrade) is delivered as
// before, unchecked. Memory: 80 bytes a stream, 13 MB for a cloud node
// that hears 10,000 clinics, each from the clinic and 3 other nodes.
//
// A gap is found when the next message of the same stream arrives: the
// next event of the clinic that the same server sends through the same
// publisher (its next event about the same record at the latest). Until
// then nothing shows the loss.
//
// On a gap for clinic C, before delivering the message, the Bus hands its
// Hub a reset for C (Hub.Publish of a reset event; Bus.Gaps counts them,
// on /metrics as scsync_local_events_lost_total and
// scsync_cloud_events_lost_total,
// and a warning is logged at most every 10 s). The Hub then sends every
// client of C a reset, followed by the clinic's open sessions (as to a
// client connecting anew), and a client resuming from before that point
// is reset too. Of the open sessions, the hub first forgets those it
// learnt from the origin whose events were lost: a lost close would
// otherwise show "Editing by …" for good. That is the least wrong it can
// do without asking anybody: another origin's sessions are still known
// right, and a session of the lossy origin that is still open loses its
// "Editing by" badge (its lock still keeps others out, and its later
// events — a save, an idle warning, its close — show as usual), which
// misleads less than a badge that never goes. Hub.Resync(C) does the same
// for every session of C. A viewer, on any reset, drops the badges of sessions
// and conflicts, gets the open sessions, reloads its list and reads the
// open record again (data, mode, children, conflict panel).
//
// # Clients
//
// Watch is the Go client (sc-local watch, tests): it reconnects with backoff
// and resumes from the last seq it saw. Format renders an event as a terminal
// line, Label as the mode text a viewer shows next to a record.
package events
