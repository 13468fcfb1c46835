package amqpx

import (
	"fmt"
	"maps"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Topology is a set of exchanges, queues and bindings the Client declares on
// every connection. Everything is durable, so declaring is idempotent.
type Topology struct {
	Exchanges []Exchange
	Queues    []Queue
	Bindings  []Binding
}

// Exchange is a durable, non-auto-delete exchange.
type Exchange struct {
	Name string
	Kind string // direct, fanout, topic, headers (or a plugin's x-… type)
}

// Queue is a durable, non-exclusive, non-auto-delete queue.
type Queue struct {
	Name                 string
	Quorum               bool   // x-queue-type=quorum
	SingleActiveConsumer bool   // x-single-active-consumer
	DeadLetterExchange   string // x-dead-letter-exchange; also where Poison messages go
	DeliveryLimit        int    // quorum x-delivery-limit; 0 = unset
	// Args are further x-arguments (x-expires, x-max-length, x-overflow…).
	Args map[string]any
}

// Binding binds Queue to Exchange with routing (or pattern) Key.
type Binding struct {
	Queue    string
	Exchange string
	Key      string
}

func (t Topology) validate() error {
	for _, e := range t.Exchanges {
		if e.Name == "" {
			return fmt.Errorf("exchange with empty name (the default exchange cannot be declared): %w", ErrInvalidConfig)
		}
		if e.Kind == "" {
			return fmt.Errorf("exchange %q has no Kind: %w", e.Name, ErrInvalidConfig)
		}
	}
	for _, q := range t.Queues {
		if q.Name == "" {
			return fmt.Errorf("queue with empty name (server-named queues cannot be re-declared): %w", ErrInvalidConfig)
		}
		if q.DeliveryLimit < 0 {
			return fmt.Errorf("queue %q DeliveryLimit = %d, want >= 0: %w", q.Name, q.DeliveryLimit, ErrInvalidConfig)
		}
		if q.DeliveryLimit > 0 && !q.Quorum {
			return fmt.Errorf("queue %q DeliveryLimit needs Quorum: %w", q.Name, ErrInvalidConfig)
		}
	}
	for _, b := range t.Bindings {
		if b.Queue == "" || b.Exchange == "" {
			return fmt.Errorf("binding %q -> %q (key %q) needs both names: %w", b.Exchange, b.Queue, b.Key, ErrInvalidConfig)
		}
	}
	return nil
}

func (q Queue) args() amqp.Table {
	args := amqp.Table{}
	if q.Quorum {
		args[amqp.QueueTypeArg] = amqp.QueueTypeQuorum
	}
	if q.SingleActiveConsumer {
		args[amqp.SingleActiveConsumerArg] = true
	}
	if q.DeadLetterExchange != "" {
		args["x-dead-letter-exchange"] = q.DeadLetterExchange
	}
	if q.DeliveryLimit > 0 {
		args["x-delivery-limit"] = q.DeliveryLimit
	}
	maps.Copy(args, q.Args)
	return args
}

// declare declares t on ch, which the broker closes on the first failure.
func declare(ch *amqp.Channel, t Topology) error {
	for _, e := range t.Exchanges {
		if err := ch.ExchangeDeclare(e.Name, e.Kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q: %w", e.Name, err)
		}
	}
	for _, q := range t.Queues {
		if _, err := ch.QueueDeclare(q.Name, true, false, false, false, q.args()); err != nil {
			return fmt.Errorf("declare queue %q: %w", q.Name, err)
		}
	}
	for _, b := range t.Bindings {
		if err := ch.QueueBind(b.Queue, b.Key, b.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", b.Queue, b.Exchange, b.Key, err)
		}
	}
	return nil
}
