package wire

import (
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/scsync/scsync/shared/ids"
)

// AMQP names. A clinic publishes its changes to UpExchange under its own key
// clinic.<id>; the cloud routes that key to one of a fixed number of shard
// queues (UpShardQueue), so the broker's idle cost does not grow by a queue
// per clinic in that direction. Each clinic has its own down queue; the
// routing key and the queue name carry the clinic id, so a per-clinic
// RabbitMQ user can be limited to its own keys with topic permissions.
const (
	// UpExchange takes clinics' changes (topic; key UpKey(clinic)).
	UpExchange = "scsync.up"
	// DownExchange takes the cloud's applied changes (topic; key DownKey(clinic)).
	DownExchange = "scsync.down"
	// DeadExchange receives poison messages with the reason in a header.
	DeadExchange = "scsync.dead"
	// DeadQueue holds every dead-lettered message for an operator to inspect.
	DeadQueue = "scsync.dead"
	// ContentType of every envelope.
	ContentType = "application/json"
)

// DefaultUpShards is the number of up shard queues when sc-cloud's
// amqp.up_shards is not set. Every node of a deployment must use the same
// number (docs/cloud-ops.md: changing it needs a drain).
const DefaultUpShards = 16

// MaxUpShards bounds amqp.up_shards: each shard is a quorum queue (a Raft
// group) and a consumer channel on every cloud node.
const MaxUpShards = 1024

// UpKey is the routing key of a clinic's changes.
func UpKey(clinic ids.ID) string { return "clinic." + clinic.String() }

// DownKey is the routing key of the changes the cloud sends to a clinic.
func DownKey(clinic ids.ID) string { return "clinic." + clinic.String() }

// ClinicOfKey returns the clinic an up or down routing key (clinic.<id>)
// names; anything else is not a clinic's key.
func ClinicOfKey(key string) (ids.ID, bool) {
	rest, ok := strings.CutPrefix(key, "clinic.")
	if !ok {
		return 0, false
	}
	id, err := ids.Parse(rest)
	if err != nil || id <= 0 || id.String() != rest {
		return 0, false
	}
	return id, true
}

// Shard is the up shard of clinic among n: FNV-1a (64 bit) of the clinic
// id's decimal form, modulo n. It is stable (the same on every node, in
// every version) and spreads Snowflake ids evenly, whose low bits are often
// alike. n < 1 counts as 1.
func Shard(clinic ids.ID, n int) int {
	if n < 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(clinic.String()))
	return int(h.Sum64() % uint64(n))
}

// UpShardQueue is the quorum queue of up shard k (single active consumer:
// one cloud node at a time, so every clinic of the shard keeps its order).
func UpShardQueue(k int) string { return "scsync.up.shard." + strconv.Itoa(k) }

// UpQueue is the per-clinic quorum up queue of the topology before up
// shards: a cloud node drains and deletes it when it finds one
// (docs/protocol.md, migration). Nothing publishes to it any more.
func UpQueue(clinic ids.ID) string { return "scsync.up." + clinic.String() }

// DownQueue is the classic queue a clinic consumes its applied changes from.
func DownQueue(clinic ids.ID) string { return "scsync.down." + clinic.String() }

// ClinicOfQueue returns the clinic a per-clinic queue (its down queue or a
// legacy up queue) belongs to.
func ClinicOfQueue(queue string) (ids.ID, bool) {
	for _, p := range []string{"scsync.up.", "scsync.down."} {
		if rest, ok := strings.CutPrefix(queue, p); ok {
			id, err := ids.Parse(rest)
			return id, err == nil
		}
	}
	return 0, false
}

// ChangesPage is one page of the pull API (`changes since cloud_seq`), used to
// fill a gap in the down stream and to re-sync a new or wiped clinic.
type ChangesPage struct {
	Changes []Envelope `json:"changes"`
	// Next is the cloud_seq to ask from for the following page.
	Next int64 `json:"next"`
	// More is true when further changes exist after this page.
	More bool `json:"more"`
	// Head is the clinic's latest cloud_seq when the page was read.
	Head int64 `json:"head"`
}
