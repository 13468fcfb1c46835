// Package check holds the tests of the deployment artifacts in deployments/:
// the Helm chart renders into well-formed Kubernetes objects (with helm's
// template engine and function library, text/template and sprig, and, under
// `make deploy-check`, with the real helm), the compose file is consistent,
// the Grafana dashboard and RabbitMQ definitions are valid JSON that name
// only what the code exports. It has no code of its own; `make deploy-check`
// runs it next to `helm lint`, `docker compose config` and `promtool check rules`.
package check
