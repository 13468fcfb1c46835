package check

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

type definitions struct {
	Vhosts []struct {
		Name string `json:"name"`
	} `json:"vhosts"`
	Policies []struct {
		Vhost      string         `json:"vhost"`
		Name       string         `json:"name"`
		Pattern    string         `json:"pattern"`
		ApplyTo    string         `json:"apply-to"`
		Priority   int            `json:"priority"`
		Definition map[string]any `json:"definition"`
	} `json:"policies"`
	Exchanges []struct {
		Name    string `json:"name"`
		Vhost   string `json:"vhost"`
		Type    string `json:"type"`
		Durable bool   `json:"durable"`
	} `json:"exchanges"`
	Queues []struct {
		Name      string         `json:"name"`
		Vhost     string         `json:"vhost"`
		Arguments map[string]any `json:"arguments"`
	} `json:"queues"`
}

// The RabbitMQ definitions parse, every policy's pattern reaches the queues
// the code names (and only those), and the exchanges match the code's.
func TestRabbitMQDefinitions(t *testing.T) {
	raw, err := os.ReadFile("../rabbitmq/definitions.json")
	if err != nil {
		t.Fatal(err)
	}
	var d definitions
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("definitions.json: %v", err)
	}
	if len(d.Vhosts) != 1 || d.Vhosts[0].Name == "" {
		t.Fatalf("want one vhost, got %+v", d.Vhosts)
	}
	vhost := d.Vhosts[0].Name
	clinic := ids.ID(1234567890123)
	want := map[string]string{ // queue → the policy that must apply (highest priority match)
		wire.UpShardQueue(0):              "scsync-up-shards",
		wire.UpShardQueue(15):             "scsync-up-shards",
		wire.UpQueue(clinic):              "scsync-up-shards", // a legacy queue until migrated
		wire.DownQueue(clinic):            "scsync-down",
		wire.DeadQueue:                    "scsync-dead-letters",
		events.Exchange + ".cloud.1":      "scsync-events",
		"unrelated.queue.of.someone.else": "",
	}
	for q, policy := range want {
		got, best := "", -1
		for _, p := range d.Policies {
			if p.Vhost != vhost || p.ApplyTo != "queues" {
				continue
			}
			re, err := regexp.Compile(p.Pattern)
			if err != nil {
				t.Fatalf("policy %s: pattern %q: %v", p.Name, p.Pattern, err)
			}
			if re.MatchString(q) && p.Priority > best {
				got, best = p.Name, p.Priority
			}
		}
		if got != policy {
			t.Errorf("queue %s: policy %q applies, want %q", q, got, policy)
		}
	}
	for _, p := range d.Policies {
		if dl, ok := p.Definition["dead-letter-exchange"]; ok && dl != wire.DeadExchange {
			t.Errorf("policy %s dead-letters to %v, the code uses %s", p.Name, dl, wire.DeadExchange)
		}
		// A down queue that refused the relay's publishes when full would
		// hold up every clinic's down traffic: it drops its oldest (the
		// clinic pulls them), and dead-letters nothing.
		if p.Name == "scsync-down" {
			if p.Definition["overflow"] != "drop-head" || p.Definition["dead-letter-exchange"] != nil {
				t.Errorf("policy %s: overflow %v, dead-letter exchange %v; want drop-head and none", p.Name, p.Definition["overflow"], p.Definition["dead-letter-exchange"])
			}
		}
	}
	exchanges := map[string]bool{}
	for _, e := range d.Exchanges {
		if e.Vhost != vhost || e.Type != "topic" || !e.Durable {
			t.Errorf("exchange %+v: want a durable topic exchange in %s", e, vhost)
		}
		exchanges[e.Name] = true
	}
	for _, e := range []string{wire.UpExchange, wire.DownExchange, wire.DeadExchange} {
		if !exchanges[e] {
			t.Errorf("exchange %s missing from the definitions", e)
		}
	}
	var dead bool
	for _, q := range d.Queues {
		if q.Name == wire.DeadQueue && q.Arguments["x-queue-type"] == "quorum" {
			dead = true
		}
	}
	if !dead {
		t.Errorf("the dead-letter queue %s is not declared as a quorum queue", wire.DeadQueue)
	}
}
