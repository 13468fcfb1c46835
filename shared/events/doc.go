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
// the request that caused them.
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
// # Clients
//
// Watch is the Go client (sc-local watch, tests): it reconnects with backoff
// and resumes from the last seq it saw. Format renders an event as a terminal
// line, Label as the mode text a viewer shows next to a record.
package events
