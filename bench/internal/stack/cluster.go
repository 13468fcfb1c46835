package stack

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// PrivateBroker boots a RabbitMQ node of the benchmark's own (shared/testenv's
// private node, with the management API and the plugins sc-cloud needs), its
// data in a temporary directory. Cleanup kills it and removes the directory:
// nothing of it is left on the machine. A benchmark that creates thousands of
// queues or users uses one, never the shared development broker.
func PrivateBroker(cl *Cleanup) (*testenv.PrivateRabbit, error) {
	dir, err := os.MkdirTemp("", "scsync-bench-rabbit")
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	// As deployments/rabbitmq/rabbitmq.conf runs it in production: without
	// the management plugin's per-queue statistics, whose collection costs
	// the broker more CPU at rest than the queues themselves at 10,000
	// clinics (docs/architecture.md). The management API still serves
	// users, permissions and queue declarations.
	r, err := testenv.LaunchPrivateRabbit(dir, true, "management_agent.disable_metrics_collector = true")
	if r != nil {
		cl.Add(r.Kill)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Cluster is several sc-cloud nodes sharing one PostgreSQL database, Redis
// key prefix and S3 bucket (the benchmark's own, removed at cleanup) on a
// broker whose management API they provision clinics through: enrollment
// gives every clinic its broker user, permissions and queues, as in
// production.
type Cluster struct {
	Env        Env
	Bin        Binaries
	AMQPURL    string
	PGURL      string
	Bucket     string
	AdminToken string
	Nodes      []*Node
	cl         *Cleanup
}

// Node is one sc-cloud of a Cluster.
type Node struct {
	Name string
	Base string
	Proc *Proc
	env  []string
}

// NewCluster makes the resources and starts n nodes on the broker at
// amqpURL with its management API at mgmtURL (login mgmtUser, mgmtPassword),
// one after the other: node 0 is ready before node 1 starts.
func NewCluster(ctx context.Context, cl *Cleanup, env Env, bin Binaries, name string, n int,
	amqpURL, mgmtURL, mgmtUser, mgmtPassword string, extraEnv ...string) (*Cluster, error) {
	c := &Cluster{Env: env, Bin: bin, AMQPURL: amqpURL, AdminToken: Name("admin"), cl: cl}
	var err error
	if c.PGURL, err = env.PostgresDB(ctx, cl, "bench_"+name); err != nil {
		return nil, err
	}
	_, redisPrefix, err := env.RedisPrefix(ctx, cl, "bench_"+name)
	if err != nil {
		return nil, err
	}
	c.Bucket = BucketName("bench-" + name)
	env.DeleteBucketAtClose(cl, c.Bucket)
	for i := range n {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		nenv := append(cloudEnv(env, addr, c.PGURL, amqpURL, redisPrefix, c.AdminToken, c.Bucket),
			"SC_CLOUD_AMQP_MANAGEMENT_URL="+mgmtURL,
			"SC_CLOUD_AMQP_MANAGEMENT_USER="+mgmtUser,
			"SC_CLOUD_AMQP_MANAGEMENT_PASSWORD="+mgmtPassword,
			fmt.Sprintf("SC_CLOUD_NODE_NAME=bench-%s-%d", name, i+1))
		c.Nodes = append(c.Nodes, &Node{Name: fmt.Sprintf("sc-cloud-%d", i+1), Base: "http://" + addr, env: append(nenv, extraEnv...)})
		if _, err := c.Start(ctx, i); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Start starts node i (again, after it stopped) on its address and waits
// until it is ready; it returns the time from the process start to ready.
func (c *Cluster) Start(ctx context.Context, i int) (time.Duration, error) {
	nd := c.Nodes[i]
	if nd.Proc != nil && !nd.Proc.Exited() {
		return 0, fmt.Errorf("%s is running", nd.Name)
	}
	p, err := Start(c.cl, nd.Name, c.Bin.Cloud, nd.env)
	if err != nil {
		return 0, err
	}
	nd.Proc = p
	if err := p.WaitReady(ctx, nd.Base, 5*time.Minute); err != nil {
		return 0, err
	}
	return p.Ready.Sub(p.Started), nil
}

// Enroll creates a clinic through node i's admin enrollment API (what an
// operator's `POST /v1/admin/clinics` does: the clinic's row, API token,
// broker identity and queues).
func (c *Cluster) Enroll(ctx context.Context, i int, name string) (*Clinic, error) {
	cr, err := enroll(ctx, c.Nodes[i].Base, c.AdminToken, name)
	if err != nil {
		return nil, err
	}
	if cr.AMQP == nil || cr.AMQP.URL == "" || cr.AMQP.User == "" {
		return nil, fmt.Errorf("enroll %s: the answer holds no broker identity", name)
	}
	if _, err := url.Parse(cr.AMQP.URL); err != nil {
		return nil, fmt.Errorf("enroll %s: amqp url: %w", name, err)
	}
	return cr, nil
}

// StartLocal runs sc-local for clinic cr with the broker identity its
// enrollment gave it, reaching the cloud through node i.
func (c *Cluster) StartLocal(ctx context.Context, cr *Clinic, i int) error {
	return startLocal(ctx, c.cl, c.Bin, c.Nodes[i].Base, cr.AMQP.URL, cr)
}
