// Package brokeradmin gives every clinic its own RabbitMQ identity. At
// enrollment the cloud creates, through RabbitMQ's HTTP management API
// (github.com/michaelklishin/rabbit-hole, the maintained Go client of that
// API), a user for the clinic with a generated secret, permissions that
// reach only the clinic's own resources, and topic permissions that limit
// the routing keys it may publish under to its own; and it declares the
// clinic's queues with its own identity, so the clinic declares nothing:
// the binding of its up key to its up shard's queue, and its classic down
// queue, bound to the down exchange and, for its events, to the events
// exchange (ShardedTopology).
//
// What a clinic's user may do (vhost of the cloud's AMQP URL):
//
//	configure  nothing                        (declares and deletes nothing)
//	write      scsync.up, scsync.events.up    (publish only; topic permissions:
//	                                           keys clinic.<id> and clinic.<id>.…)
//	read       scsync.down.<id>               (consume its own queue: the cloud's
//	                                           changes and events for it)
//
// Without read on any exchange it cannot bind a queue to one; without write
// on scsync.down and scsync.events it cannot publish there; the dead-letter
// queue is not among its readable queues. The broker also checks the user-id
// property of every message it publishes (RabbitMQ refuses a user-id other
// than the connection's login).
package brokeradmin

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// ErrInvalidConfig wraps every configuration error of New.
var ErrInvalidConfig = errors.New("brokeradmin: invalid configuration")

// Config says how to reach the management API and what clinics dial.
type Config struct {
	// ManagementURL is RabbitMQ's HTTP management API (http://host:15672).
	ManagementURL string
	// User and Password are the cloud's management login (a user with the
	// administrator tag, or at least user management on the vhost).
	User, Password string
	// AMQPURL is the cloud's own AMQP URL; its vhost is the clinics' vhost.
	AMQPURL string
	// ClinicURL is the AMQP URL clinics dial, without credentials (the
	// broker's public name, amqps:// with TLS); empty: AMQPURL without its
	// credentials.
	ClinicURL string
	// UserPrefix starts every clinic user's name (clinic-<id>): set it when
	// several deployments share one broker.
	UserPrefix string
	// Timeout bounds one management call (default 15 s).
	Timeout time.Duration
	// UpShards is the deployment's number of up shards (amqp.up_shards;
	// default wire.DefaultUpShards): a clinic's up key is bound to its
	// shard's queue.
	UpShards int
	// TLS is the client TLS of an https:// management URL (tls.ca_file's
	// roots; nil: the system's).
	TLS *tls.Config
}

// Declarer declares topology with the cloud's own AMQP identity
// (*amqpx.Client). A clinic's objects are durable and declared once: the
// client does not re-declare them on every reconnect (at 10,000 clinics
// that would be 30,000 declarations per reconnect).
type Declarer interface {
	DeclareOnce(ctx context.Context, t amqpx.Topology) error
}

// Admin provisions and retires clinics' broker identities.
type Admin struct {
	rh        *rabbithole.Client
	vhost     string
	clinicURL *url.URL
	prefix    string
	decl      Declarer
	shards    int
	log       *slog.Logger
	// For the one request rabbit-hole has no call for (CloseConnections).
	hc                              *http.Client
	mgmtURL, mgmtUser, mgmtPassword string
	timeout                         time.Duration
}

// Credentials is what a clinic dials the broker with.
type Credentials struct {
	// URL is the clinic's full AMQP URL, credentials included (what
	// sc-local's amqp.url holds).
	URL string `json:"url"`
	// Host is URL without the credentials (for display).
	Host string `json:"host"`
	// User is the clinic's broker login; every message it publishes names
	// it as user-id.
	User string `json:"user"`
	// Secret is its generated password, handed out once.
	Secret string `json:"secret"`
	// Current: Provision declared the whole of this version's topology for
	// the clinic (no queue of an earlier version was in the way), so the
	// cloud nodes have nothing to set up or migrate for it.
	Current bool `json:"-"`
}

// New checks cfg and returns an Admin; decl declares the clinics' queues.
func New(cfg Config, decl Declarer, log *slog.Logger) (*Admin, error) {
	if cfg.ManagementURL == "" || cfg.User == "" || cfg.Password == "" {
		return nil, fmt.Errorf("management url, user and password are required: %w", ErrInvalidConfig)
	}
	if decl == nil {
		return nil, fmt.Errorf("declarer is nil: %w", ErrInvalidConfig)
	}
	own, err := url.Parse(cfg.AMQPURL)
	if err != nil || (own.Scheme != "amqp" && own.Scheme != "amqps") {
		return nil, fmt.Errorf("amqp url is not an amqp:// or amqps:// URL: %w", ErrInvalidConfig)
	}
	vhost := "/"
	if p := strings.TrimPrefix(own.Path, "/"); p != "" {
		if vhost, err = url.PathUnescape(p); err != nil {
			return nil, fmt.Errorf("amqp url vhost: %w", ErrInvalidConfig)
		}
	}
	cu := *own
	if cfg.ClinicURL != "" {
		u, err := url.Parse(cfg.ClinicURL)
		if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") {
			return nil, fmt.Errorf("clinic url is not an amqp:// or amqps:// URL: %w", ErrInvalidConfig)
		}
		cu = *u
	}
	cu.User = nil
	if !regexp.MustCompile(`^[A-Za-z0-9._-]{0,64}$`).MatchString(cfg.UserPrefix) {
		return nil, fmt.Errorf("user prefix: letters, digits, '.', '_', '-': %w", ErrInvalidConfig)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.TLS.Clone()
	rh, err := rabbithole.NewTLSClient(strings.TrimRight(cfg.ManagementURL, "/"), cfg.User, cfg.Password, tr)
	if err != nil {
		return nil, fmt.Errorf("management url: %w: %w", ErrInvalidConfig, err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	rh.SetTimeout(cfg.Timeout)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.UpShards == 0 {
		cfg.UpShards = wire.DefaultUpShards
	}
	if cfg.UpShards < 1 || cfg.UpShards > wire.MaxUpShards {
		return nil, fmt.Errorf("up shards must be 1..%d: %w", wire.MaxUpShards, ErrInvalidConfig)
	}
	return &Admin{rh: rh, vhost: vhost, clinicURL: &cu, prefix: cfg.UserPrefix, decl: decl, shards: cfg.UpShards, log: log,
		hc: &http.Client{Transport: tr}, mgmtURL: strings.TrimRight(cfg.ManagementURL, "/"), mgmtUser: cfg.User, mgmtPassword: cfg.Password,
		timeout: cfg.Timeout}, nil
}

// User is the broker login of clinic.
func (a *Admin) User(clinic ids.ID) string { return a.prefix + "clinic-" + clinic.String() }

// Vhost is the clinics' vhost.
func (a *Admin) Vhost() string { return a.vhost }

// Topology is everything the cloud declares for a clinic at enrollment, in
// a deployment of wire.DefaultUpShards up shards: the binding of its up key
// to its up shard, and its down queue with its bindings (the cloud's
// changes and its events for the clinic).
// The up shard queues themselves are every node's (wire.UpShardsTopology).
func Topology(clinic ids.ID) []amqpx.Topology {
	return ShardedTopology(clinic, wire.DefaultUpShards)
}

// ShardedTopology is Topology for a deployment of shards up shards.
func ShardedTopology(clinic ids.ID, shards int) []amqpx.Topology {
	return []amqpx.Topology{wire.ClinicTopology(clinic, shards), events.ClinicTopology(clinic)}
}

// Permissions are the clinic's vhost permissions (see the package comment).
func Permissions(clinic ids.ID) rabbithole.Permissions {
	return rabbithole.Permissions{
		Configure: "^$",
		Write:     "^(" + regexp.QuoteMeta(wire.UpExchange) + "|" + regexp.QuoteMeta(events.UpExchange) + ")$",
		Read:      "^" + regexp.QuoteMeta(wire.DownQueue(clinic)) + "$",
	}
}

// TopicPermissions limit the routing keys the clinic may publish under: its
// changes go as clinic.<id>, its events as clinic.<id>.<kind>.<record> or
// clinic.<id>.batch.
func TopicPermissions(clinic ids.ID) []rabbithole.TopicPermissions {
	key := regexp.QuoteMeta(wire.UpKey(clinic))
	return []rabbithole.TopicPermissions{
		{Exchange: wire.UpExchange, Write: "^" + key + "$", Read: "^$"},
		{Exchange: events.UpExchange, Write: "^" + regexp.QuoteMeta("clinic."+clinic.String()+".") + "[^#*]+$", Read: "^$"},
	}
}

// Provision creates (or re-creates) the clinic's queues and its broker user
// with a new secret, and returns the credentials. Calling it again rotates
// the secret; connections still using the old one are closed. A clinic
// whose queues an earlier version created (the broker refuses the new
// declarations with PRECONDITION_FAILED) keeps them: the cloud nodes
// migrate them (replicate: Route, then Finish), and its identity is made
// all the same.
func (a *Admin) Provision(ctx context.Context, clinic ids.ID) (Credentials, error) {
	current := true
	for _, t := range ShardedTopology(clinic, a.shards) {
		err := a.decl.DeclareOnce(ctx, t)
		if amqpx.IsPreconditionFailed(err) {
			a.log.Info("clinic queues of an earlier version left for the cloud nodes to migrate", "clinic", clinic, "err", err)
			current = false
			continue
		}
		if err != nil {
			return Credentials{}, fmt.Errorf("declare clinic queues: %w", err)
		}
	}
	cr, err := a.Rotate(ctx, clinic)
	cr.Current = current && err == nil
	return cr, err
}

// Rotate gives the clinic's user a new secret (creating the user and its
// permissions if missing) and closes its connections, so the old secret
// stops working at once.
func (a *Admin) Rotate(ctx context.Context, clinic ids.ID) (Credentials, error) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	secret := hex.EncodeToString(b[:])
	user := a.User(clinic)
	if err := a.call(ctx, "put user", func() (*http.Response, error) {
		return a.rh.PutUser(user, rabbithole.UserSettings{Password: secret, Tags: rabbithole.UserTags{}})
	}); err != nil {
		return Credentials{}, err
	}
	if err := a.grant(ctx, clinic); err != nil {
		return Credentials{}, err
	}
	if err := a.CloseConnections(ctx, clinic); err != nil {
		return Credentials{}, err
	}
	u := *a.clinicURL
	host := u.String()
	u.User = url.UserPassword(user, secret)
	return Credentials{URL: u.String(), Host: host, User: user, Secret: secret}, nil
}

func (a *Admin) grant(ctx context.Context, clinic ids.ID) error {
	user := a.User(clinic)
	if err := a.call(ctx, "set permissions", func() (*http.Response, error) {
		return a.rh.UpdatePermissionsIn(a.vhost, user, Permissions(clinic))
	}); err != nil {
		return err
	}
	for _, tp := range TopicPermissions(clinic) {
		if err := a.call(ctx, "set topic permissions", func() (*http.Response, error) {
			return a.rh.UpdateTopicPermissionsIn(a.vhost, user, tp)
		}); err != nil {
			return err
		}
	}
	return nil
}

// Revoke deletes the clinic's user and closes its connections: the clinic
// can no longer reach the broker until an operator provisions it again. Its
// queues stay (its changes are kept for it).
func (a *Admin) Revoke(ctx context.Context, clinic ids.ID) error {
	err := a.call(ctx, "delete user", func() (*http.Response, error) { return a.rh.DeleteUser(a.User(clinic)) })
	if err != nil && !notFound(err) {
		return err
	}
	return a.CloseConnections(ctx, clinic)
}

// CloseConnections closes every connection the clinic's user holds.
//
// RabbitMQ's DELETE /api/connections/username/{user} works from the broker's
// connection tracking, which knows a connection the moment it is opened;
// rabbit-hole has no call for it (its ListConnections reads the statistics
// database, which learns of a connection up to a collection interval
// later), so this one request is made here, with the same login.
func (a *Admin) CloseConnections(ctx context.Context, clinic ids.ID) error {
	var last error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		last = a.closeUserConnections(ctx, a.User(clinic))
		if last == nil {
			return nil
		}
	}
	return last
}

func (a *Admin) closeUserConnections(ctx context.Context, user string) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, a.mgmtURL+"/api/connections/username/"+url.PathEscape(user), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(a.mgmtUser, a.mgmtPassword)
	req.Header.Set("X-Reason", "scsync: clinic credentials rotated or revoked")
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("rabbitmq management close connections: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("rabbitmq management close connections: %s", resp.Status)
	}
	return nil
}

// Ping checks the management API answers with the configured login.
func (a *Admin) Ping(ctx context.Context) error {
	return a.call(ctx, "whoami", func() (*http.Response, error) {
		_, err := a.rh.Whoami()
		return nil, err
	})
}

// call runs one management request, giving up when ctx ends (the library
// takes no context; its own timeout bounds the request itself).
func (a *Admin) call(ctx context.Context, what string, f func() (*http.Response, error)) error {
	ch := make(chan error, 1)
	go func() {
		res, err := f()
		if res != nil && res.Body != nil {
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}
		ch <- err
	}()
	select {
	case <-ctx.Done():
		return fmt.Errorf("rabbitmq management %s: %w", what, ctx.Err())
	case err := <-ch:
		if err != nil {
			return fmt.Errorf("rabbitmq management %s: %w", what, err)
		}
		return nil
	}
}

func notFound(err error) bool {
	var e rabbithole.ErrorResponse
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}
