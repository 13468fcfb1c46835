package wire

import (
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
)

// deliveryLimit dead-letters a message that keeps failing transiently (for
// example one that crashes its consumer) instead of retrying it forever.
const deliveryLimit = 50

// BaseTopology is what every scsync server declares: the three exchanges and
// the dead-letter queue.
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

// ClinicTopology is a clinic's pair of quorum queues. Both sides declare it
// (declaring is idempotent), so neither direction's messages are unroutable
// while the other side has not started yet.
func ClinicTopology(clinic ids.ID) amqpx.Topology {
	return amqpx.Topology{
		Queues: []amqpx.Queue{
			{Name: UpQueue(clinic), Quorum: true, SingleActiveConsumer: true, DeadLetterExchange: DeadExchange, DeliveryLimit: deliveryLimit},
			{Name: DownQueue(clinic), Quorum: true, SingleActiveConsumer: true, DeadLetterExchange: DeadExchange, DeliveryLimit: deliveryLimit},
		},
		Bindings: []amqpx.Binding{
			{Queue: UpQueue(clinic), Exchange: UpExchange, Key: UpKey(clinic)},
			{Queue: DownQueue(clinic), Exchange: DownExchange, Key: DownKey(clinic)},
		},
	}
}
