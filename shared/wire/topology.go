package wire

import (
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
)

// deliveryLimit dead-letters a message that keeps failing transiently (for
// example one that crashes its consumer) instead of retrying it forever.
const deliveryLimit = 50

// downMaxLength bounds a clinic's down queue: a clinic offline for long
// keeps only its newest down messages, and fills the gap from the pull API
// (the cloud's change log is the source of truth) when it is back.
const downMaxLength = 10000

// BaseTopology is what every cloud node declares: the three exchanges and
// the dead-letter queue (clinics declare nothing).
func BaseTopology() amqpx.Topology {
	return amqpx.Topology{
		Exchanges: []amqpx.Exchange{
			{Name: UpExchange, Kind: "topic"},
			{Name: DownExchange, Kind: "topic"},
			{Name: DeadExchange, Kind: "topic"},
		},
		Queues:   []amqpx.Queue{{Name: DeadQueue, Quorum: true}},
		Bindings: []amqpx.Binding{{Queue: DeadQueue, Exchange: DeadExchange, Key: "#"}},
	}
}

// CloudTopology is what a cloud node's AMQP client declares on every
// connection, before the node serves: BaseTopology and the shards up shard
// queues (so an enrollment can bind a clinic's key to its shard at once).
func CloudTopology(shards int) amqpx.Topology {
	t := BaseTopology()
	t.Queues = append(t.Queues, UpShardsTopology(shards).Queues...)
	return t
}

// UpShardQueueSpec is up shard k's queue: quorum, single active consumer
// (one cloud node consumes a shard at a time, so each of its clinics keeps
// its order), dead-lettering to DeadExchange after deliveryLimit attempts.
func UpShardQueueSpec(k int) amqpx.Queue {
	return amqpx.Queue{Name: UpShardQueue(k), Quorum: true, SingleActiveConsumer: true,
		DeadLetterExchange: DeadExchange, DeliveryLimit: deliveryLimit}
}

// UpShardsTopology is the n up shard queues every cloud node declares and
// consumes. They are bound to nothing by themselves: each clinic's key is
// bound to its shard (ClinicTopology), so a key of no enrolled clinic
// routes nowhere.
func UpShardsTopology(n int) amqpx.Topology {
	t := amqpx.Topology{}
	for k := range max(n, 1) {
		t.Queues = append(t.Queues, UpShardQueueSpec(k))
	}
	return t
}

// DownQueueSpec is a clinic's down queue: a durable classic queue (version
// 2 storage: its index and small messages on disk, little memory, no Raft
// group), bounded to its newest downMaxLength messages. It has no
// dead-letter exchange: what it drops (the oldest messages of a clinic
// offline for long, a message the clinic cannot read) the clinic fetches
// again from the pull API, and dropped messages must not flood the
// operators' dead-letter queue.
func DownQueueSpec(clinic ids.ID) amqpx.Queue {
	return amqpx.Queue{Name: DownQueue(clinic), Args: map[string]any{
		"x-queue-type": "classic", "x-queue-version": int32(2), "x-max-length": int32(downMaxLength), "x-overflow": "drop-head",
	}}
}

// ClinicTopology is what the cloud declares for a clinic among shards up
// shards: its down queue and binding, and the binding of its up key to its
// up shard (the shard queues themselves are UpShardsTopology's). The cloud
// declares it at enrollment, so neither direction's messages are unroutable
// while the clinic is down; the clinic declares nothing (its broker identity
// may not).
func ClinicTopology(clinic ids.ID, shards int) amqpx.Topology {
	return amqpx.Topology{
		Queues: []amqpx.Queue{DownQueueSpec(clinic)},
		Bindings: []amqpx.Binding{
			UpBinding(clinic, shards),
			{Queue: DownQueue(clinic), Exchange: DownExchange, Key: DownKey(clinic)},
		},
	}
}

// UpBinding routes the clinic's up key to its shard.
func UpBinding(clinic ids.ID, shards int) amqpx.Binding {
	return amqpx.Binding{Queue: UpShardQueue(Shard(clinic, shards)), Exchange: UpExchange, Key: UpKey(clinic)}
}

// LegacyUpBinding is the binding of the per-clinic up queue of the topology
// before up shards, which a cloud node removes before draining that queue.
func LegacyUpBinding(clinic ids.ID) amqpx.Binding {
	return amqpx.Binding{Queue: UpQueue(clinic), Exchange: UpExchange, Key: UpKey(clinic)}
}
