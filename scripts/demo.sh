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

# Not root: rabbitmqctl needs the broker's Erlang cookie, which root owns.
if [[ $(id -u) -ne 0 ]]; then
  rabbitmqctl() { sudo rabbitmqctl "$@"; }
fi

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
# Broker users of the clinics of earlier demo runs (sc-cloud makes one per
# clinic at enrollment, named scsync-demo.clinic-<id>).
rabbitmqctl -q list_users 2>/dev/null | awk '$1 ~ /^scsync-demo\./ { print $1 }' | while read -r u; do
  rabbitmqctl -q delete_user "$u" >/dev/null 2>&1 || true
done
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

# lockd runs first: enrolling a clinic registers the clinic's lockd token
# with it (no clinic tokens in its config).
say "starting lockd on :$LOCKD_PORT (a service token for the cloud nodes; clinic tokens come from enrollment)"
cat >"$demo/lockd.yaml" <<YAML
listen: 127.0.0.1:$LOCKD_PORT
redis:
  prefix: "scsync-demo:lock:"
auth:
  service_tokens: ["$lockd_service_token"]
nodes:
  prefix: "scsync-demo:"
YAML
chmod 600 "$demo/lockd.yaml"
"$root/bin/lockd" -config "$demo/lockd.yaml" >"$demo/lockd.log" 2>&1 &
pids+=($!)
wait_ready lockd "$lockd_url"

for n in 1 2; do
  port_var=CLOUD${n}_PORT
  port=${!port_var}
  say "starting sc-cloud node $n on :$port"
  SC_CLOUD_LISTEN=127.0.0.1:$port \
  SC_CLOUD_NODE_NAME=sc-cloud-demo-$n \
  SC_CLOUD_POSTGRES_URL="postgres://scsync:scsync@127.0.0.1:5432/$db?sslmode=disable" \
  SC_CLOUD_AMQP_URL="$amqp" \
  SC_CLOUD_AMQP_MANAGEMENT_URL=http://127.0.0.1:15672 \
  SC_CLOUD_AMQP_MANAGEMENT_USER=guest SC_CLOUD_AMQP_MANAGEMENT_PASSWORD=guest \
  SC_CLOUD_AMQP_USER_PREFIX=scsync-demo. \
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

say "enrolling the demo clinic with a one-time token (sc-local enroll writes every credential)"
enrollment=$(curl -fsS -X POST -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' -d '{"name":"Demo Dental Clinic"}' "$cloud1/v1/admin/enrollments")
cat >"$demo/sc-local.yaml" <<YAML
# sc-local configuration written by the demo (see deployments/sc-local.example.yaml)
listen: 127.0.0.1:$LOCAL_PORT
data_dir: $demo/clinic
cloud:
  pull_every: 10s
YAML
chmod 600 "$demo/sc-local.yaml"
"$root/bin/sc-local" -config "$demo/sc-local.yaml" enroll -cloud "$cloud2" -token "$(jq -r .token <<<"$enrollment")" | sed 's/^/    /'
clinic=$(awk '/^clinic:/ { c = 1; next } c && $1 == "id:" { gsub(/"/, "", $2); print $2; exit }' "$demo/sc-local.yaml")
node=$(awk '/^clinic:/ { c = 1; next } c && $1 == "node:" { print $2; exit }' "$demo/sc-local.yaml")
token=$(awk '/^cloud:/ { c = 1; next } c && $1 == "token:" { gsub(/"/, "", $2); print $2; exit }' "$demo/sc-local.yaml")
[[ -n $clinic && -n $token ]] || die "enrollment wrote no clinic id or token into $demo/sc-local.yaml"
echo "    clinic $clinic, Snowflake node $node, config $demo/sc-local.yaml"

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

say "making the clinic's people (sc-local users add; the accounts replicate to the cloud)"
demo_pw=demo-password
SC_LOCAL_PASSWORD=$demo_pw "$root/bin/sc-local" -config "$demo/sc-local.yaml" users add -username admin -role admin -name "Clinic admin" | sed 's/^/    /'
SC_LOCAL_PASSWORD=$demo_pw "$root/bin/sc-local" -config "$demo/sc-local.yaml" users add -username dr.demo -role editor -name "Dr. Demo" | sed 's/^/    /'
login_json() { printf '{"username":"dr.demo","password":"%s"%s}' "$demo_pw" "$1"; }
ltok=$(curl -fsS -X POST -H 'Content-Type: application/json' -d "$(login_json '')" "$local/v1/login" | jq -r .token)
lcurl() { curl -fsS -H "Authorization: Bearer $ltok" -H 'Content-Type: application/json' "$@"; }
cloud_login() { ctok=$(curl -fsS -X POST -H 'Content-Type: application/json' -d "$(login_json ",\"clinic\":$clinic")" "$cloud1/v1/login" 2>/dev/null | jq -r .token) && [ -n "$ctok" ] && [ "$ctok" != null ]; }
poll "dr.demo's account in the cloud" cloud_login
echo "    dr.demo logged in to the clinic and to the cloud (one account, sessions end after 15 idle minutes)"
ccurl() { curl -fsS -H "Authorization: Bearer $ctok" -H 'Content-Type: application/json' "$@"; }

say "creating demo patients in the clinic"
first=""
for name in "Kim Minji" "Lee Junho" "Park Soyeon"; do
  id=$(lcurl -X POST -d "{\"data\":{\"name\":\"$name\",\"chart_no\":\"DEMO-$RANDOM\"}}" "$local/v1/patients" | jq -r .id)
  [ -n "$first" ] || first=$id
  echo "    created $name ($id) in the clinic"
done

in_cloud() { ccurl "$cloud1/v1/clinics/$clinic/patients/$first" >/dev/null 2>&1; }
poll "patient in the cloud" in_cloud
echo "    in the cloud (node 1):  $(ccurl "$cloud1/v1/clinics/$clinic/patients/$first" | jq -c '{id,name:.data.name,version,origin}')"
synced() { [ "$(lcurl "$local/v1/patients/$first" | jq -r .sync_state)" = synced ]; }
poll "clinic record synced" synced
echo "    in the clinic:          $(lcurl "$local/v1/patients/$first" | jq -c '{id,name:.data.name,version,sync_state,synced_at}')"

say "editing the patient in the cloud (node 2)"
ccurl -X PUT \
  -d '{"data":{"name":"Kim Minji","phone":"010-1234-5678"},"base_version":"1.0"}' \
  "$cloud2/v1/clinics/$clinic/patients/$first" | jq -c '{id,phone:.data.phone,version,origin}' | sed 's/^/    cloud: /'
came_back() { [ "$(lcurl "$local/v1/patients/$first" | jq -r .version)" = "2.0" ]; }
poll "cloud edit in the clinic" came_back
echo "    back in the clinic:     $(lcurl "$local/v1/patients/$first" | jq -c '{id,phone:.data.phone,version,origin,sync_state}')"

say "an edit session in the cloud, seen by the clinic (lockd lock, fencing token, A.B versions)"
"$root/bin/sc-local" -config "$demo/sc-local.yaml" watch >"$demo/watch.log" 2>&1 &
pids+=($!)
sleep 1
session=$(ccurl -X POST -d '{"client":"demo-script"}' "$cloud1/v1/clinics/$clinic/patients/$first/edit")
sid=$(jq -r .session <<<"$session")
echo "    lock taken: $(jq -c '{session,user,fence,version,unfenced}' <<<"$session")"
for n in 1 2; do
  ccurl -X POST \
    -d "{\"session\":\"$sid\",\"data\":{\"name\":\"Kim Minji\",\"phone\":\"010-1234-567$n\"}}" \
    "$cloud1/v1/clinics/$clinic/patients/$first/save" | jq -r '"    saved version \(.version)"'
done
ccurl -X POST -d "{\"session\":\"$sid\"}" "$cloud1/v1/clinics/$clinic/patients/$first/close" >/dev/null
edited() { [ "$(lcurl "$local/v1/patients/$first" | jq -r .version)" = "3.1" ]; }
poll "the session's saves in the clinic" edited
echo "    back in the clinic:     $(lcurl "$local/v1/patients/$first" | jq -c '{id,phone:.data.phone,version,sync_state}')"
seen() { grep -q "Closed" "$demo/watch.log"; }
poll "the clinic's live events" seen
echo "    what the clinic's viewers were told live (sc-local watch):"
grep -v '^watching' "$demo/watch.log" | sed 's/^/      /'

say "the clinic's audit log (sc-local audit; hash-chained, also kept in the cloud)"
"$root/bin/sc-local" -config "$demo/sc-local.yaml" audit | tail -n 6 | sed 's/^/    /'
"$root/bin/sc-local" -config "$demo/sc-local.yaml" audit -verify | sed 's/^/    /'

say "replication status of the clinic"
"$root/bin/sc-local" -config "$demo/sc-local.yaml" status | sed 's/^/    /'

cat <<TXT

  scsync demo is running.
    clinic viewer page         $local/viewer/
    cloud viewer page          $cloud1/viewer/?clinic=$clinic
    log in on either page as   dr.demo / $demo_pw   (clinic admin: admin / $demo_pw)
    live events in a terminal  $root/bin/sc-local -config $demo/sc-local.yaml watch
    clinic server (sc-local)   $local/v1/patients   $local/v1/status
    cloud node 1 (sc-cloud)    $cloud1/readyz   $cloud1/metrics
    cloud node 2 (sc-cloud)    $cloud2/readyz
    cloud API for the clinic   curl -H 'Authorization: Bearer $ctok' $cloud1/v1/clinics/$clinic/patients
    audit log                  $root/bin/sc-local -config $demo/sc-local.yaml audit
    lockd                      http://127.0.0.1:$LOCKD_PORT/readyz
    logs                       $demo/*.log
TXT

if [ "${DEMO_EXIT:-0}" = 1 ]; then
  say "demo check passed: clinic → cloud, cloud → clinic, and a locked cloud edit session"
  exit 0
fi
echo "  Press Ctrl-C to stop."
wait
