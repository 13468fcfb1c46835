package suite

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/records"
)

// The bare baselines: the least a program must do to move the same bytes
// the same way — publish with confirms, consume with manual acks from a
// quorum queue, insert into PostgreSQL — without anything scsync adds.

// barePatient is a patient's content padded to about size bytes of JSON,
// the record the replication benchmarks send.
func barePatient(n, size int) records.Patient {
	p := records.Patient{ChartNo: fmt.Sprintf("C-%07d", n), Name: fmt.Sprintf("Patient %d", n), BirthDate: "1980-05-17",
		Sex: []string{"F", "M", "O"}[n%3], Phone: "010-1234-5678"}
	b, _ := json.Marshal(p)
	if pad := size - len(b) - len(`,"notes":""`); pad > 0 {
		p.Notes = strings.Repeat("x", pad)
	}
	return p
}

// bareRow is the message the bare programs send: what a replication
// envelope minimally carries.
type bareRow struct {
	ID   int64           `json:"id"`
	Sent time.Time       `json:"sent"`
	Data json.RawMessage `json:"data"`
}

// bareTable creates the bare consumer's table.
func bareTable(ctx context.Context, db *pgxpool.Pool) error {
	_, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS bare_records (
		id bigint PRIMARY KEY, kind text NOT NULL, data jsonb NOT NULL, version text NOT NULL, updated_at timestamptz NOT NULL)`)
	return err
}

// bareInsert inserts rows in one transaction, ignoring ones already there
// (a redelivery), as an idempotent consumer must.
func bareInsert(ctx context.Context, db *pgxpool.Pool, rows []bareRow) error {
	b := &pgx.Batch{}
	now := time.Now()
	for _, r := range rows {
		b.Queue(`INSERT INTO bare_records (id, kind, data, version, updated_at) VALUES ($1, 'patient', $2, '1.0', $3) ON CONFLICT (id) DO NOTHING`,
			r.ID, []byte(r.Data), now)
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// bareBroker is a connection with a confirming publish channel and a
// quorum queue.
type bareBroker struct {
	conn  *amqp.Connection
	pub   *amqp.Channel
	queue string
}

func dialBare(url, queue string) (*bareBroker, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, fmt.Errorf("bare: dial: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("bare: declare: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &bareBroker{conn: conn, pub: ch, queue: queue}, nil
}

func (b *bareBroker) Close() { _ = b.conn.Close() }

// publish sends body persistently and returns the confirmation to wait on.
func (b *bareBroker) publish(ctx context.Context, body []byte) (*amqp.DeferredConfirmation, error) {
	return b.pub.PublishWithDeferredConfirmWithContext(ctx, "", b.queue, false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: body})
}

// consume delivers batches of up to max rows (whatever is there, waiting
// at most linger for more) to fn, and acks a batch after fn returns.
func (b *bareBroker) consume(ctx context.Context, prefetch, max int, linger time.Duration, fn func([]bareRow) error) error {
	ch, err := b.conn.Channel()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return err
	}
	ds, err := ch.ConsumeWithContext(ctx, b.queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	// Closing the channel waits for the library's reader, which may be
	// blocked handing us a prefetched delivery: keep reading until it ends.
	defer func() {
		go func() {
			for range ds { //nolint:revive // draining
			}
		}()
	}()
	var batch []bareRow
	var last amqp.Delivery
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := fn(batch); err != nil {
			return err
		}
		batch = batch[:0]
		return last.Ack(true)
	}
	for {
		var timeout <-chan time.Time
		if len(batch) > 0 {
			timeout = time.After(linger)
		}
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-ds:
			if !ok {
				return nil
			}
			var r bareRow
			if err := json.Unmarshal(d.Body, &r); err != nil {
				return err
			}
			batch, last = append(batch, r), d
			if len(batch) >= max {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-timeout:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}
