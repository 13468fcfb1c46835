package testenv

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestPrivateRabbitRestart(t *testing.T) {
	r := StartPrivateRabbit(t)
	declare := func(passive bool) error {
		conn, err := amqp.Dial(r.URL)
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		args := amqp.Table{"x-queue-type": "quorum"}
		if passive {
			_, err = ch.QueueDeclarePassive("survivor", true, false, false, false, args)
		} else {
			_, err = ch.QueueDeclare("survivor", true, false, false, false, args)
		}
		return err
	}
	if err := declare(false); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if _, err := amqp.Dial(r.URL); err == nil {
		t.Fatal("dial succeeded while the private broker was killed")
	}
	r.Start()
	// A durable quorum queue survives the crash.
	CheckFor(t, 30e9, 200e6, func() error { return declare(true) })
}
