package app

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/scsync/scsync/cloud-server/internal/api"
	"github.com/scsync/scsync/cloud-server/internal/brokeradmin"
	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/cloud-server/internal/replicate"
	"github.com/scsync/scsync/cloud-server/internal/store"
	lockclient "github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/shared/amqpx"
	sevents "github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// identity wires the per-clinic credentials: broker identities through the
// management API (when amqp.management_url is set), and closing a disabled
// clinic's WebSockets on this node (rep tells every node within its refresh).
//
// It returns what must run beside the server: the loop that puts the lockd
// token set back when lockd's Redis lost it (nil without lockd).
func identity(cfg config.Config, st *store.Store, broker *amqpx.Client, apiSrv *api.Server, rep *replicate.Replicator,
	hub *sevents.Hub, health *httpapi.Health, log *slog.Logger) (func(context.Context) error, error) {
	// The management API and lockd may sit behind a private CA
	// (tls.ca_file), like every other link.
	clientTLS, err := cfg.ClientTLS().Config()
	if err != nil {
		return nil, fmt.Errorf("tls.ca_file: %w", err)
	}
	var b api.Broker
	if cfg.AMQP.ManagementURL != "" {
		adm, err := brokeradmin.New(brokeradmin.Config{
			ManagementURL: cfg.AMQP.ManagementURL, User: cfg.AMQP.ManagementUser, Password: cfg.AMQP.ManagementPassword,
			AMQPURL: cfg.AMQP.URL, ClinicURL: cfg.AMQP.ClinicURL, UserPrefix: cfg.AMQP.UserPrefix, TLS: clientTLS,
			UpShards: cfg.AMQP.UpShards,
		}, broker, log)
		if err != nil {
			return nil, err
		}
		b = adm
		rep.SetIdentities(true)
		health.AddOptional("rabbitmq_management", adm.Ping)
	} else {
		log.Warn("amqp.management_url is not set: clinics get no broker identity of their own at enrollment (development only)")
	}
	var l api.LockdTokens
	var run func(context.Context) error
	if cfg.Lockd.URL != "" {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = clientTLS.Clone()
		hc := &http.Client{Transport: tr, Timeout: lockclient.DefaultTimeout}
		lt := lockdTokens{c: lockclient.New(cfg.Lockd.URL, cfg.Lockd.Token, hc), st: st, log: log, behind: new(atomic.Bool)}
		l, run = lt, lt.Run
	}
	apiSrv.Identity(b, l, cmp.Or(cfg.Lockd.ClinicURL, cfg.Lockd.URL), func(clinic ids.ID) { hub.Disconnect(clinic) })
	rep.OnDisabled(func(clinic ids.ID) { hub.Disconnect(clinic) })
	return run, nil
}
