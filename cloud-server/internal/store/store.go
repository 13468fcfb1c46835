package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/cloud-server/internal/schema"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// IDs mints Snowflake ids (the node's generator).
type IDs interface {
	Next() (ids.ID, error)
}

// Store is the cloud database.
type Store struct {
	db  *gorm.DB
	ids IDs
	gc  committer // the API saves' group commits (commit.go)
	// texts are the statement texts transactions' last statements are
	// prepared as (pinned.go).
	texts preparedTexts
}

// Open connects to PostgreSQL at url and migrates the schema. gen mints the
// ids of records the cloud creates by itself (conflict copies).
func Open(ctx context.Context, url string, gen IDs) (*Store, error) {
	return openWith(ctx, postgres.Open(url), gen)
}

// openWith is Open through dialector (a test's counts its round trips).
func openWith(ctx context.Context, dialector gorm.Dialector, gen IDs) (*Store, error) {
	db, err := gorm.Open(dialector, &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	sqlDB.SetMaxOpenConns(20)
	// Keep them: database/sql keeps 2 idle by default, so after each burst
	// the others were closed and opened again (a backend, a login, every
	// statement prepared again), which put a busy node seconds behind.
	sqlDB.SetMaxIdleConns(20)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	// The schema's one owner migrates the whole database (every package's
	// tables), once across nodes starting together, before anything opens
	// a table (docs/schema.md).
	if err := schema.Migrate(ctx, sqlDB); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	return &Store{db: db, ids: gen}, nil
}

// DB is the database handle, for components keeping their own tables in
// the cloud database (edit sessions, files).
func (s *Store) DB() *gorm.DB { return s.db }

// Close closes the pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// HashToken returns the stored form of an API token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CreateClinic enrolls a clinic: it gets id, the next free clinic node id
// and a fresh API token, returned once and stored only as a hash.
func (s *Store) CreateClinic(ctx context.Context, id ids.ID, name, policy string) (Clinic, string, error) {
	if policy == "" {
		policy = PolicyLocalWins
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	token := "sct_" + hex.EncodeToString(b[:])
	c := Clinic{ID: id, Name: name, TokenSHA256: HashToken(token), ConflictPolicy: policy}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(4242002)").Error; err != nil {
			return err
		}
		var maxNode int64
		if err := tx.Model(&Clinic{}).Select("COALESCE(MAX(node_id), 0)").Scan(&maxNode).Error; err != nil {
			return err
		}
		c.NodeID = maxNode + 1
		if !ids.ValidClinicNode(c.NodeID) {
			return ErrNoNodeID
		}
		return tx.Create(&c).Error
	})
	if err != nil {
		return Clinic{}, "", fmt.Errorf("store: create clinic: %w", err)
	}
	return c, token, nil
}

// ClinicByToken finds the clinic an API token belongs to.
func (s *Store) ClinicByToken(ctx context.Context, token string) (Clinic, error) {
	var c Clinic
	// A disabled clinic's token is refused like an unknown one.
	err := s.db.WithContext(ctx).Where("token_sha256 = ? AND disabled_at IS NULL", HashToken(token)).Take(&c).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return c, ErrUnknownClinic
	}
	return c, err
}

// ClinicByID returns a clinic, with the protocol range it stated, in one
// statement (the API reads it for every operator's request).
func (s *Store) ClinicByID(ctx context.Context, id ids.ID) (Clinic, error) {
	var rows []struct {
		Clinic   `gorm:"embedded"`
		StateMin *int
		StateMax *int
	}
	err := s.db.WithContext(ctx).Raw("SELECT clinics.*, p.protocol_min AS state_min, p.protocol_max AS state_max FROM clinics "+
		"LEFT JOIN clinic_protocols p ON p.clinic_id = clinics.id WHERE clinics.id = ?", id).Scan(&rows).Error
	if err != nil {
		return Clinic{}, err
	}
	if len(rows) == 0 {
		return Clinic{}, ErrUnknownClinic
	}
	c := rows[0].Clinic
	if rows[0].StateMin != nil && rows[0].StateMax != nil {
		c.ProtocolMin, c.ProtocolMax = rows[0].StateMin, rows[0].StateMax
	}
	return c, nil
}

// withProtocols fills in the protocol ranges the clinics stated.
func (s *Store) withProtocols(ctx context.Context, cs []Clinic) error {
	if len(cs) == 0 {
		return nil
	}
	var ps []ClinicProtocols
	q := s.db.WithContext(ctx)
	if len(cs) == 1 {
		q = q.Where("clinic_id = ?", cs[0].ID)
	}
	if err := q.Find(&ps).Error; err != nil {
		return fmt.Errorf("store: clinic protocols: %w", err)
	}
	byID := make(map[ids.ID]ClinicProtocols, len(ps))
	for _, p := range ps {
		byID[p.ClinicID] = p
	}
	for i := range cs {
		if p, ok := byID[cs[i].ID]; ok {
			cs[i].ProtocolMin, cs[i].ProtocolMax = &p.ProtocolMin, &p.ProtocolMax
		}
	}
	return nil
}

// Clinics lists every enrolled clinic.
func (s *Store) Clinics(ctx context.Context) ([]Clinic, error) {
	var cs []Clinic
	if err := s.db.WithContext(ctx).Order("id").Find(&cs).Error; err != nil {
		return nil, err
	}
	return cs, s.withProtocols(ctx, cs)
}

// ChangesSince returns the clinic's accepted changes with cloud_seq > since,
// in order, at most limit.
func (s *Store) ChangesSince(ctx context.Context, clinic ids.ID, since int64, limit int) (wire.ChangesPage, error) {
	page := wire.ChangesPage{Next: since, Changes: []wire.Envelope{}}
	c, err := s.ClinicByID(ctx, clinic)
	if err != nil {
		return page, err
	}
	page.Head = c.LastSeq
	var chs []Change
	if err := s.db.WithContext(ctx).Where("clinic_id = ? AND cloud_seq > ?", clinic, since).
		Order("cloud_seq").Limit(limit + 1).Find(&chs).Error; err != nil {
		return page, err
	}
	if len(chs) > limit {
		page.More = true
		chs = chs[:limit]
	}
	for _, ch := range chs {
		page.Changes = append(page.Changes, ch.Envelope())
		page.Next = ch.CloudSeq
	}
	return page, nil
}

// Envelope is the down message for an accepted change.
func (ch Change) Envelope() wire.Envelope {
	e := wire.Envelope{
		Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: ch.ClinicID, Origin: wire.Origin(ch.Origin),
		ChangeID: ch.ChangeID, Kind: wire.Kind(ch.Kind), RecordID: ch.RecordID, BaseVersion: ch.BaseVersion,
		NewVersion: ch.NewVersion, Deleted: ch.Deleted, CloudSeq: ch.CloudSeq, At: ch.At,
		Conflict: ch.Conflict, ConflictOf: ch.ConflictOf, Fence: ch.Fence, Unfenced: ch.Unfenced, Unsync: ch.Unsync,
		SavedBy: ch.SavedBy, SavedByName: ch.SavedByName,
	}
	if ch.Payload != "" {
		e.Payload = json.RawMessage(ch.Payload)
	}
	return e
}

// RelayBatch hands up to limit unpublished changes to publish, in outbox
// order, grouped into batches of one clinic's changes (at most
// wire.MaxBatch each), holding their outbox rows locked so other nodes skip
// them. Different clinics' batches are published concurrently (publish must
// be safe for that; up to relayParallel at a time), so that a round over
// many clinics with a change each costs about one confirm round trip, not
// one per clinic; a clinic's own batches go one after another, in order,
// and its first failure holds back the rest of its batches. The rows of the
// batches published confirmed are deleted. It returns how many changes were
// published (an error only when none was).
//
// A round is two round trips to PostgreSQL (relayTx): the transaction's
// begin travels with the read of the rows, and its commit with their
// delete. Through database/sql it was four (begin, read, delete, commit),
// each a wake-up of PostgreSQL and of the node, and a relay round follows
// nearly every accept transaction.
func (s *Store) RelayBatch(ctx context.Context, limit int, publish func(context.Context, wire.Batch) error) (int, error) {
	done := 0
	err := s.relayTx(ctx, limit, func(found []relayRow) ([]int64, error) {
		if len(found) == 0 {
			return nil, nil
		}
		type key struct {
			clinic ids.ID
			seq    int64
		}
		rows := make([]Outbox, len(found))
		byKey := make(map[key]*Change, len(found))
		for i := range found {
			f := &found[i]
			rows[i] = Outbox{ID: f.OutboxID, ClinicID: f.OutboxClinicID, CloudSeq: f.OutboxCloudSeq}
			if f.HasChange {
				byKey[key{f.ClinicID, f.CloudSeq}] = &f.Change
			}
		}
		// Each clinic's rows, in outbox order, cut into batches.
		type group struct {
			rows  []Outbox
			batch wire.Batch
		}
		var order []ids.ID
		perClinic := map[ids.ID][]*group{}
		for _, o := range rows {
			gs := perClinic[o.ClinicID]
			if len(gs) == 0 {
				order = append(order, o.ClinicID)
			}
			if len(gs) == 0 || len(gs[len(gs)-1].rows) >= wire.MaxBatch {
				gs = append(gs, &group{batch: wire.NewBatch(o.ClinicID)})
				perClinic[o.ClinicID] = gs
			}
			g := gs[len(gs)-1]
			g.rows = append(g.rows, o)
			if ch := byKey[key{o.ClinicID, o.CloudSeq}]; ch != nil {
				g.batch.Changes = append(g.batch.Changes, ch.Envelope())
			}
		}
		for _, gs := range perClinic {
			for _, g := range gs {
				slices.SortFunc(g.batch.Changes, func(a, b wire.Envelope) int { return cmp.Compare(a.CloudSeq, b.CloudSeq) })
			}
		}
		var (
			mu   sync.Mutex
			sent []int64
			perr error
			wg   sync.WaitGroup
			sem  = make(chan struct{}, relayParallel)
		)
		for _, c := range order {
			wg.Add(1)
			sem <- struct{}{}
			go func(gs []*group) {
				defer func() { <-sem; wg.Done() }()
				for _, g := range gs {
					if len(g.batch.Changes) > 0 {
						if err := publish(ctx, g.batch); err != nil {
							mu.Lock()
							perr = cmp.Or(perr, err)
							mu.Unlock()
							return
						}
					}
					mu.Lock()
					for _, o := range g.rows {
						sent = append(sent, o.ID)
					}
					mu.Unlock()
				}
			}(perClinic[c])
		}
		wg.Wait()
		done = len(sent)
		if perr != nil && done == 0 {
			return nil, perr
		}
		return sent, nil
	})
	return done, err
}

// relayTx runs a relay round in a pinned transaction, through pgx itself:
// begin and the rows (relayRows, up to limit) in one round trip; fn
// publishes them and returns the ids of the outbox rows to delete; then
// their delete and the commit in one more. When fn fails, or deletes
// nothing, the transaction is rolled back.
func (s *Store) relayTx(ctx context.Context, limit int, fn func([]relayRow) ([]int64, error)) error {
	p, err := s.pin(ctx)
	if err != nil {
		return err
	}
	defer p.release()
	var found []relayRow
	if err := p.raw(func(pc *pgx.Conn) error {
		found, err = relayBegin(ctx, pc, limit)
		return err
	}); err != nil {
		return err
	}
	sent, err := fn(found)
	if err != nil || len(sent) == 0 {
		return err
	}
	return p.raw(func(pc *pgx.Conn) error { return relayCommit(ctx, pc, sent) })
}

// relayBegin begins a transaction and locks up to limit outbox rows with
// their changes, in one round trip. The rows' statement is an unnamed one,
// planned each time it runs (see relayRows).
func relayBegin(ctx context.Context, pc *pgx.Conn, limit int) ([]relayRow, error) {
	b := &pgconn.Batch{}
	b.ExecParams("BEGIN", nil, nil, nil, nil)
	b.ExecParams("SET LOCAL synchronous_commit TO off", nil, nil, nil, nil)
	b.ExecParams(relayRows, [][]byte{strconv.AppendInt(nil, int64(limit), 10)}, []uint32{pgtype.Int8OID}, nil, []int16{pgtype.BinaryFormatCode})
	mrr := pc.PgConn().ExecBatch(ctx, b)
	var found []relayRow
	var err error
	for i := 0; mrr.NextResult(); i++ {
		if i < 2 {
			if _, cerr := mrr.ResultReader().Close(); err == nil {
				err = cerr
			}
			continue
		}
		if err == nil {
			found, err = scanRelayRows(pgx.RowsFromResultReader(pc.TypeMap(), mrr.ResultReader()))
		}
	}
	if cerr := mrr.Close(); err == nil {
		err = cerr
	}
	return found, err
}

// relayCommit deletes the outbox rows ids and commits, in one round trip.
// The ids go as one binary array: one statement text whatever the count.
// The delete is planned each time too (an unnamed statement): prepared
// while the outbox was small, its plan could have been a scan of it.
func relayCommit(ctx context.Context, pc *pgx.Conn, ids []int64) error {
	arr, err := pc.TypeMap().Encode(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, ids, nil)
	if err != nil {
		return err
	}
	b := &pgconn.Batch{}
	b.ExecParams("DELETE FROM outbox WHERE id = ANY($1)", [][]byte{arr}, []uint32{pgtype.Int8ArrayOID}, []int16{pgtype.BinaryFormatCode}, nil)
	return execCommit(ctx, pc, b, 2)
}

// relayRow is an outbox row and its change, if found.
type relayRow struct {
	OutboxID       int64
	OutboxClinicID ids.ID
	OutboxCloudSeq int64
	HasChange      bool
	Change
}

// scanRelayRows reads relayRows' rows, by position: through gorm's
// ScanRows (its reflection over the embedded Change) the scan was 11% of
// sc-cloud's CPU during a backfill, every accepted change being relayed
// down.
func scanRelayRows(rows pgx.Rows) ([]relayRow, error) {
	defer rows.Close()
	var found []relayRow
	for rows.Next() {
		found = append(found, relayRow{})
		r := &found[len(found)-1]
		c := &r.Change
		if err := rows.Scan(&r.OutboxID, &r.OutboxClinicID, &r.OutboxCloudSeq, &r.HasChange,
			&c.ClinicID, &c.CloudSeq, &c.ChangeID, &c.Kind, &c.RecordID, &c.Origin, &c.BaseVersion, &c.NewVersion, &c.Deleted,
			&c.Conflict, &c.ConflictOf, &c.Fence, &c.Unfenced, &c.Session, &c.Unsync, &c.SavedBy, &c.SavedByName,
			&c.Payload, &c.At, &c.AcceptedAt); err != nil {
			return nil, err
		}
	}
	return found, rows.Err()
}

// relayRows locks up to $1 outbox rows and reads each one's change (zero
// values where it has none): the columns scanRelayRows scans, in its order.
//
// The lookup has a LIMIT so that it stays a subquery, probed per row
// through the primary key: without it PostgreSQL pulls it up into a join
// and, when the outbox's statistics saw a backlog, plans a hash join over
// every change of every clinic.
//
// And the statement is planned each time it runs, with the tables as they
// are then (relayBegin sends it as an unnamed statement, in the round trip
// of the transaction's begin), never prepared once for the connection: the
// relay runs it every second from the start, and after five runs
// PostgreSQL keeps a generic plan, made while changes was still empty, for
// as long as the connection lives. On an empty table the planner finds the
// index (clinic_id, change_id) as cheap as the primary key, and that plan
// probes each row by clinic_id alone, reading all of the clinic's changes
// per outbox row: in a backfill of 100,000 records relay rounds took 1-4
// s, and the clinic's backfill, which waits for the cloud's acceptances to
// come down, went from about 3,000 to 1,400 records/s (one core loaded).
const relayRows = "WITH o AS (SELECT id, clinic_id, cloud_seq FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) " +
	"SELECT o.id, o.clinic_id, o.cloud_seq, c.clinic_id IS NOT NULL, " +
	"COALESCE(c.clinic_id, 0), COALESCE(c.cloud_seq, 0), COALESCE(c.change_id, 0), COALESCE(c.kind, ''), COALESCE(c.record_id, 0), " +
	"COALESCE(c.origin, ''), COALESCE(c.base_version, ''), COALESCE(c.new_version, ''), COALESCE(c.deleted, false), " +
	"COALESCE(c.conflict, ''), COALESCE(c.conflict_of, 0), COALESCE(c.fence, 0), COALESCE(c.unfenced, false), COALESCE(c.session, ''), " +
	"COALESCE(c.unsync, false), COALESCE(c.saved_by, 0), COALESCE(c.saved_by_name, ''), COALESCE(c.payload, ''), " +
	"COALESCE(c.at, 'epoch'), COALESCE(c.accepted_at, 'epoch') " +
	"FROM o LEFT JOIN LATERAL (SELECT * FROM changes WHERE clinic_id = o.clinic_id AND cloud_seq = o.cloud_seq LIMIT 1) AS c ON true ORDER BY o.id"

// relayParallel is how many clinics' down batches RelayBatch publishes at
// once.
const relayParallel = 64

// OutboxLen counts unpublished changes (a metric and a test hook).
func (s *Store) OutboxLen(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&Outbox{}).Count(&n).Error
	return n, err
}

// SetConflictPolicy changes a clinic's conflict policy.
func (s *Store) SetConflictPolicy(ctx context.Context, clinic ids.ID, policy string) (Clinic, error) {
	res := s.db.WithContext(ctx).Model(&Clinic{}).Where("id = ?", clinic).Update("conflict_policy", policy)
	if res.Error != nil {
		return Clinic{}, res.Error
	}
	if res.RowsAffected == 0 {
		return Clinic{}, ErrUnknownClinic
	}
	return s.ClinicByID(ctx, clinic)
}

// Rewind is a clinic found older than what it had acknowledged.
type Rewind struct {
	From, To int64 // acknowledged cloud_seq, and the one it asks from now
}

// NoteCheckpoint records that clinic has applied every change up to since
// (the since of its pull). When since is below what it acknowledged
// before, the clinic came back older — restored from a backup or wiped —
// and the returned Rewind says from where the cloud re-sends; several
// nodes noting the same pull count it once.
func (s *Store) NoteCheckpoint(ctx context.Context, clinic ids.ID, since int64) (*Rewind, error) {
	db := s.db.WithContext(ctx)
	res := db.Model(&Clinic{}).Where("id = ? AND acked_seq < ?", clinic, since).Update("acked_seq", since)
	if res.Error != nil || res.RowsAffected > 0 {
		return nil, res.Error
	}
	var c Clinic
	if err := db.Select("acked_seq").Take(&c, "id = ?", clinic).Error; err != nil {
		return nil, err
	}
	if since >= c.AckedSeq {
		return nil, nil
	}
	res = db.Model(&Clinic{}).Where("id = ? AND acked_seq = ?", clinic, c.AckedSeq).Updates(map[string]any{
		"acked_seq": since, "rewinds": gorm.Expr("rewinds + 1"), "last_rewind_at": time.Now().UTC(), "last_rewind_from": c.AckedSeq,
	})
	if res.Error != nil || res.RowsAffected == 0 {
		return nil, res.Error
	}
	return &Rewind{From: c.AckedSeq, To: since}, nil
}
