package e2e

import (
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// TestDownLostInBrokerRestartPulledAtOnce: the cloud's down messages are
// transient (a clinic's down queue holding one keeps no file open on the
// broker), so a broker restart loses those still queued. The clinic pulls
// whenever its down consumer subscribes again, so the change arrives as soon
// as it is back, not at its next periodic pull (set to 10 minutes here).
func TestDownLostInBrokerRestartPulledAtOnce(t *testing.T) {
	parallel(t)
	rabbit := testenv.StartPrivateRabbitManaged(t)
	s := newStackWith(t, stackOpts{cloudNodes: 1, amqpURL: rabbit.URL, mgmtURL: rabbit.MgmtURL})
	s.localEnv = append(s.localEnv, "SC_LOCAL_CLOUD_PULL_EVERY=10m")
	c := s.enroll(t, "Daegu Smile Dental")
	amqpURL, link := viaProxy(t, rabbit.URL)
	s.startLocalVia(t, c, t.TempDir(), amqpURL, s.cloud[0])
	cloud := cloudSide(s.cloud[0], c)

	// The down path works: a cloud change reaches the clinic by message.
	var first patient
	if code := call(t, "POST", cloud.prefix+"patients", c.person, save("", map[string]string{"name": "Before"}), &first); code != 201 {
		t.Fatalf("cloud create: %d", code)
	}
	waitLocalPatient(t, c, first.ID, 30*time.Second)

	// The clinic's link to the broker is down; the cloud's next change waits
	// in the clinic's down queue, and the broker restarts. Once the broker
	// has seen the clinic go (no consumer left), the queue holds what the
	// clinic had not acknowledged yet (the first message again, when its
	// ack was still on its way at the cut): the lost change comes on top.
	link.Cut()
	clinicID, err := ids.Parse(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var before int
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var consumers int
		var err error
		if before, consumers, err = queueState(rabbit.URL, wire.DownQueue(clinicID)); err == nil && consumers > 0 {
			err = fmt.Errorf("the down queue still has %d consumers", consumers)
		}
		return err
	})
	var lost patient
	if code := call(t, "POST", cloud.prefix+"patients", c.person, save("", map[string]string{"name": "Lost in the restart"}), &lost); code != 201 {
		t.Fatalf("cloud create: %d", code)
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		return queued(rabbit.URL, wire.DownQueue(clinicID), before+1)
	})
	rabbit.Kill()
	rabbit.Start()
	// The restarted node accepts connections a moment before it serves
	// them; a persistent message would still be there, a transient one not.
	testenv.CheckFor(t, time.Minute, 200*time.Millisecond, func() error {
		return queued(rabbit.URL, wire.DownQueue(clinicID), 0)
	})
	link.Restore()
	waitLocalPatient(t, c, lost.ID, 60*time.Second)
}

// queued checks that queue holds want ready messages.
func queued(url, queue string, want int) error {
	n, _, err := queueState(url, queue)
	if err == nil && n != want {
		err = fmt.Errorf("%s holds %d messages, want %d", queue, n, want)
	}
	return err
}

// queueState is how many ready messages queue holds and how many consumers
// it has.
func queueState(url, queue string) (messages, consumers int, err error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, 0, err
	}
	return q.Messages, q.Consumers, nil
}

// waitLocalPatient waits until the clinic serves patient id.
func waitLocalPatient(t *testing.T, c *clinic, id string, within time.Duration) {
	t.Helper()
	testenv.CheckFor(t, within, 200*time.Millisecond, func() error {
		if code := call(t, "GET", c.base+"/v1/patients/"+id, "", nil, nil); code != 200 {
			return fmt.Errorf("clinic GET patient %s: %d", id, code)
		}
		return nil
	})
}
