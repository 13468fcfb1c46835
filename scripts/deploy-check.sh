#!/usr/bin/env bash
# scripts/deploy-check.sh — check the deployment artifacts in deployments/
# with what runs offline on a developer machine and in CI:
#   - the compose file: `docker compose config` where the Docker Compose plugin
#     is installed, else Debian's docker-compose (installed with apt-get as
#     root; both validate without a Docker daemon), with the example
#     environment; where neither can be had it says so, and the Go check of
#     the file (deployments/check, TestComposeFile) is what ran;
#   - the Helm chart: `helm lint --strict` and `helm template` with the
#     chart's defaults and with deployments/helm/production-values.yaml, the
#     rendered objects parsed and checked (TestHelmTemplate). helm is not
#     packaged for Debian 12: scripts/tools.sh builds it once from the Go
#     module proxy into the tools cache (many minutes the first time, reused
#     after); the Go rendering of the chart (text/template and sprig) is
#     checked too;
#   - the RabbitMQ definitions and the Grafana dashboard: the Go tests in
#     deployments/check;
#   - the Prometheus alert rules: `promtool check rules` and `promtool test
#     rules` (Debian's prometheus package).
# Missing Debian packages are installed with apt-get (as root).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
cd "$here/.."

apt_updated=0
need() { # need COMMAND PACKAGE
	command -v "$1" >/dev/null && return 0
	[[ $(id -u) -eq 0 ]] || die "$1 is missing: apt-get install $2 (as root)"
	if ((apt_updated == 0)); then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		apt_updated=1
	fi
	log "apt-get install $2 (for $1)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
	command -v "$1" >/dev/null || die "$2 did not provide $1"
}

log "compose file"
compose=(--env-file deployments/compose/example.env -f deployments/compose/compose.yaml config -q)
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
	docker compose "${compose[@]}"
	info "deployments/compose/compose.yaml: valid (docker compose $(docker compose version --short))"
elif command -v docker-compose >/dev/null || [[ $(id -u) -eq 0 ]]; then
	need docker-compose docker-compose
	docker-compose "${compose[@]}"
	info "deployments/compose/compose.yaml: valid (docker-compose $(docker-compose version --short); no Docker Compose plugin here)"
else
	warn "no compose tool here (neither the Docker Compose plugin nor docker-compose, and not root to install it):"
	warn "deployments/compose/compose.yaml is checked only by the Go test TestComposeFile below"
fi

log "Helm chart: helm lint and helm template (helm from scripts/tools.sh)"
helm=$(bash "$here/tools.sh" helm)
chart=deployments/helm/scsync-cloud
prod=deployments/helm/production-values.yaml
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" -f "$prod"
"$helm" template scsync "$chart" -f "$prod" >/dev/null
info "helm lint --strict and helm template (helm $SCSYNC_HELM_VERSION): ok"

log "compose file, Helm chart (helm's output and the Go rendering), RabbitMQ definitions, Grafana dashboard (go test ./deployments/check)"
(cd deployments/check && SCSYNC_HELM="$helm" go test -count=1 ./...)

if [[ -f deployments/prometheus/alerts.yml ]]; then
	log "Prometheus alert rules"
	need promtool prometheus
	promtool check rules deployments/prometheus/alerts.yml
	promtool check config deployments/prometheus/prometheus.example.yml >/dev/null
	if [[ -f deployments/prometheus/alerts_test.yml ]]; then
		(cd deployments/prometheus && promtool test rules alerts_test.yml)
	fi
fi
log "deploy-check: ok"
