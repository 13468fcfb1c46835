#!/usr/bin/env bash
# The whole scsync appliance on this machine: lockd, two sc-cloud nodes and one
# sc-local on its own SQLite, with demo data replicated both ways.
#   bash scripts/demo.sh            run until Ctrl-C
#   DEMO_EXIT=1 bash scripts/demo.sh  show replication, then stop (used by CI)
# Ports: sc-local 8080, sc-cloud 8081/8082, lockd 8090 (override with DEMO_*_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
eval "$(bash scripts/stack.sh env)"

LOCAL_PORT=${DEMO_LOCAL_PORT:-8080}
CLOUD1_PORT=${DEMO_CLOUD1_PORT:-8081}
CLOUD2_PORT=${DEMO_CLOUD2_PORT:-8082}
LOCKD_PORT=${DEMO_LOCKD_PORT:-8090}
cache=${SCSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scsync}
demo=$cache/demo
vhost=scsync-demo
db=scsync_demo
admin_token="demo-admin-token-change-me"
pids=()

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 && return
  say "installing $1"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
need jq
need curl

stop_all() {
  if ((${#pids[@]})); then
    say "stopping the demo processes"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for p in "$LOCAL_PORT" "$CLOUD1_PORT" "$CLOUD2_PORT" "$LOCKD_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p is in use (another demo running?); set DEMO_*_PORT to move it"
  fi
done

say "building"
make -s build >/dev/null

say "fresh demo state: database $db, RabbitMQ vhost $vhost, data in $demo"
rm -rf "$demo" && mkdir -p "$demo"
PGOPTIONS=--client-min-messages=warning psql "postgres://scsync:scsync@127.0.0.1:5432/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$vhost" >/dev/null
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"

wait_ready() { # name url
  for _ in $(seq 1 120); do
    if curl -fsS "$2/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  curl -sS "$2/readyz" || true
  die "$1 did not become ready; its log: $demo/$1.log"
}

lockd_url=http://127.0.0.1:$LOCKD_PORT
lockd_service_token=svc-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
lockd_clinic_token=clinic-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

for n in 1 2; do
  port_var=CLOUD${n}_PORT
  port=${!port_var}
  say "starting sc-cloud node $n on :$port"
  SC_CLOUD_LISTEN=127.0.0.1:$port \
  SC_CLOUD_NODE_NAME=sc-cloud-demo-$n \
  SC_CLOUD_POSTGRES_URL="postgres://scsync:scsync@127.0.0.1:5432/$db?sslmode=disable" \
  SC_CLOUD_AMQP_URL="$amqp" \
  SC_CLOUD_REDIS_PREFIX="scsync-demo:" \
  SC_CLOUD_S3_ENDPOINT="$SCSYNC_TEST_S3_ENDPOINT" \
  SC_CLOUD_S3_ACCESS_KEY="$SCSYNC_TEST_S3_ACCESS_KEY" \
  SC_CLOUD_S3_SECRET_KEY="$SCSYNC_TEST_S3_SECRET_KEY" \
  SC_CLOUD_S3_BUCKET=scsync-demo \
  SC_CLOUD_AUTH_ADMIN_TOKEN=$admin_token \
  SC_CLOUD_LOCKD_URL=$lockd_url SC_CLOUD_LOCKD_TOKEN=$lockd_service_token \
    "$root/bin/sc-cloud" >"$demo/sc-cloud-$n.log" 2>&1 &
  pids+=($!)
  wait_ready "sc-cloud-$n" "http://127.0.0.1:$port"
done
cloud1=http://127.0.0.1:$CLOUD1_PORT
cloud2=http://127.0.0.1:$CLOUD2_PORT

say "enrolling the demo clinic with the cloud"
enrolled=$(curl -fsS -X POST -H "Authorization: Bearer $admin_token" -d '{"name":"Demo Dental Clinic"}' "$cloud1/v1/admin/clinics")
clinic=$(jq -r .id <<<"$enrolled")
node=$(jq -r .node_id <<<"$enrolled")
token=$(jq -r .token <<<"$enrolled")
cat >"$demo/sc-local.yaml" <<YAML
# sc-local configuration written by the demo (see deployments/sc-local.example.yaml)
listen: 127.0.0.1:$LOCAL_PORT
data_dir: $demo/clinic
clinic:
  id: $clinic
  node: $node
cloud:
  url: $cloud2
  token: $token
  pull_every: 10s
amqp:
  url: $amqp
lockd:
  url: $lockd_url
  token: $lockd_clinic_token
YAML
chmod 600 "$demo/sc-local.yaml"
echo "    clinic $clinic, Snowflake node $node, config $demo/sc-local.yaml"

say "starting lockd on :$LOCKD_PORT (service token for the cloud nodes, a clinic token for the clinic)"
cat >"$demo/lockd.yaml" <<YAML
listen: 127.0.0.1:$LOCKD_PORT
redis:
  prefix: "scsync-demo:lock:"
auth:
  service_tokens: ["$lockd_service_token"]
  clinic_tokens:
    "$lockd_clinic_token": "$clinic"
nodes:
  prefix: "scsync-demo:"
YAML
chmod 600 "$demo/lockd.yaml"
"$root/bin/lockd" -config "$demo/lockd.yaml" >"$demo/lockd.log" 2>&1 &
pids+=($!)
wait_ready lockd "$lockd_url"

say "starting sc-local on :$LOCAL_PORT (SQLite in $demo/clinic)"
"$root/bin/sc-local" -config "$demo/sc-local.yaml" >"$demo/sc-local.log" 2>&1 &
pids+=($!)
local=http://127.0.0.1:$LOCAL_PORT
wait_ready sc-local "$local"

poll() { # description, command that succeeds when done
  local what=$1; shift
  for _ in $(seq 1 120); do
    if "$@"; then return 0; fi
    sleep 0.25
  done
  die "timed out waiting for: $what"
}

say "creating demo patients in the clinic"
first=""
for name in "Kim Minji" "Lee Junho" "Park Soyeon"; do
  id=$(curl -fsS -X POST -d "{\"data\":{\"name\":\"$name\",\"chart_no\":\"DEMO-$RANDOM\"}}" "$local/v1/patients" | jq -r .id)
  [ -n "$first" ] || first=$id
  echo "    created $name ($id) in the clinic"
done

in_cloud() { curl -fsS -H "Authorization: Bearer $token" "$cloud1/v1/clinics/$clinic/patients/$first" >/dev/null 2>&1; }
poll "patient in the cloud" in_cloud
echo "    in the cloud (node 1):  $(curl -fsS -H "Authorization: Bearer $token" "$cloud1/v1/clinics/$clinic/patients/$first" | jq -c '{id,name:.data.name,version,origin}')"
synced() { [ "$(curl -fsS "$local/v1/patients/$first" | jq -r .sync_state)" = synced ]; }
poll "clinic record synced" synced
echo "    in the clinic:          $(curl -fsS "$local/v1/patients/$first" | jq -c '{id,name:.data.name,version,sync_state,synced_at}')"

say "editing the patient in the cloud (node 2)"
curl -fsS -X PUT -H "Authorization: Bearer $token" \
  -d '{"data":{"name":"Kim Minji","phone":"010-1234-5678"},"base_version":"1.0"}' \
  "$cloud2/v1/clinics/$clinic/patients/$first" | jq -c '{id,phone:.data.phone,version,origin}' | sed 's/^/    cloud: /'
came_back() { [ "$(curl -fsS "$local/v1/patients/$first" | jq -r .version)" = "2.0" ]; }
poll "cloud edit in the clinic" came_back
echo "    back in the clinic:     $(curl -fsS "$local/v1/patients/$first" | jq -c '{id,phone:.data.phone,version,origin,sync_state}')"

say "an edit session in the cloud, seen by the clinic (lockd lock, fencing token, A.B versions)"
"$root/bin/sc-local" -config "$demo/sc-local.yaml" watch >"$demo/watch.log" 2>&1 &
pids+=($!)
sleep 1
session=$(curl -fsS -X POST -H "Authorization: Bearer $token" -d '{"client":"demo-script","user":"dr.demo"}' \
  "$cloud1/v1/clinics/$clinic/patients/$first/edit")
sid=$(jq -r .session <<<"$session")
echo "    lock taken: $(jq -c '{session,fence,version,unfenced}' <<<"$session")"
for n in 1 2; do
  curl -fsS -X POST -H "Authorization: Bearer $token" \
    -d "{\"session\":\"$sid\",\"data\":{\"name\":\"Kim Minji\",\"phone\":\"010-1234-567$n\"}}" \
    "$cloud1/v1/clinics/$clinic/patients/$first/save" | jq -r '"    saved version \(.version)"'
done
curl -fsS -X POST -H "Authorization: Bearer $token" -d "{\"session\":\"$sid\"}" "$cloud1/v1/clinics/$clinic/patients/$first/close" >/dev/null
edited() { [ "$(curl -fsS "$local/v1/patients/$first" | jq -r .version)" = "3.1" ]; }
poll "the session's saves in the clinic" edited
echo "    back in the clinic:     $(curl -fsS "$local/v1/patients/$first" | jq -c '{id,phone:.data.phone,version,sync_state}')"
seen() { grep -q "Closed" "$demo/watch.log"; }
poll "the clinic's live events" seen
echo "    what the clinic's viewers were told live (sc-local watch):"
grep -v '^watching' "$demo/watch.log" | sed 's/^/      /'

say "replication status of the clinic"
"$root/bin/sc-local" -config "$demo/sc-local.yaml" status | sed 's/^/    /'

cat <<TXT

  scsync demo is running.
    clinic viewer page         $local/viewer/
    cloud viewer page          $cloud1/viewer/?clinic=$clinic#token=$token
    live events in a terminal  $root/bin/sc-local -config $demo/sc-local.yaml watch
    clinic server (sc-local)   $local/v1/patients   $local/v1/status
    cloud node 1 (sc-cloud)    $cloud1/readyz   $cloud1/metrics
    cloud node 2 (sc-cloud)    $cloud2/readyz
    cloud API for the clinic   curl -H 'Authorization: Bearer $token' $cloud1/v1/clinics/$clinic/patients
    lockd                      http://127.0.0.1:$LOCKD_PORT/readyz
    logs                       $demo/*.log
TXT

if [ "${DEMO_EXIT:-0}" = 1 ]; then
  say "demo check passed: clinic → cloud, cloud → clinic, and a locked cloud edit session"
  exit 0
fi
echo "  Press Ctrl-C to stop."
wait
