# shellcheck shell=bash
# scripts/package-install-test.sh OVERLAY_DIR — run by scripts/package.sh
# check-deb inside `unshare --mount --pid --fork`: installs the .deb for real
# (dpkg -i) in a copy-on-write overlay of /, then checks what clinic IT
# relies on. Nothing it does reaches the host's file system: the overlay's
# upper directory is deleted afterwards, and every process started here dies
# with the pid namespace.
set -euo pipefail
ov=$1
m=$ov/merged
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=/,upperdir=$ov/upper,workdir=$ov/work" "$m"
mount -t proc proc "$m/proc"
mount --rbind /dev "$m/dev"
mount -t tmpfs tmpfs "$m/run" # no /run/systemd/system: the scripts skip systemctl
mount -t tmpfs tmpfs "$m/tmp"
cp "$ov/upper.deb" "$m/var/tmp/scsync-local.deb"

chroot "$m" /bin/bash -s <<'INNER'
set -uo pipefail
failed=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; failed=1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
mode() { stat -c '%a %U:%G' "$1" 2>/dev/null; }
free_port() {
	local p
	for p in $(shuf -i 20000-29999 -n 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}
wait_http() { # url seconds → body on stdout once it answers 200
	local i
	for ((i = 0; i < $2 * 2; i++)); do
		if out=$(curl -fsS -m 2 "$1" 2>/dev/null); then echo "$out"; return 0; fi
		sleep 0.5
	done
	return 1
}

echo "  dpkg -i scsync-local.deb"
if ! DEBIAN_FRONTEND=noninteractive dpkg -i /var/tmp/scsync-local.deb >/tmp/dpkg.log 2>&1; then
	cat /tmp/dpkg.log
	bad "dpkg -i"
	exit 1
fi
check "user scsync exists, system account, no login shell" \
	sh -c 'getent passwd scsync | grep -q ":/var/lib/scsync:/usr/sbin/nologin$" && [ "$(id -u scsync)" -lt 1000 ]'
check "/etc/scsync is root:scsync 0750 ($(mode /etc/scsync))" [ "$(mode /etc/scsync)" = "750 root:scsync" ]
check "/etc/scsync/sc-local.yaml is root:scsync 0640 ($(mode /etc/scsync/sc-local.yaml))" [ "$(mode /etc/scsync/sc-local.yaml)" = "640 root:scsync" ]
check "/var/lib/scsync is scsync:scsync 0700 ($(mode /var/lib/scsync))" [ "$(mode /var/lib/scsync)" = "700 scsync:scsync" ]
check "sc-local --version" sh -c 'sc-local --version | grep -q "^sc-local "'
check "unit enabled (multi-user.target.wants)" test -L /etc/systemd/system/multi-user.target.wants/sc-local.service

# Enrollment as root against a stand-in cloud (the answer of POST /v1/enroll).
cloud_port=$(free_port)
python3 - "$cloud_port" >/tmp/cloud.log 2>&1 <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path == "/v1/enroll":
            b = json.dumps({"id": "42", "name": "Package Test Clinic", "node_id": 7, "token": "sct_pkgtest"}).encode()
            self.send_response(201); self.send_header("Content-Type", "application/json"); self.end_headers(); self.wfile.write(b)
        else:
            self.send_response(404); self.end_headers()
    do_GET = do_POST
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
for i in $(seq 40); do (exec 3<>"/dev/tcp/127.0.0.1/$cloud_port") 2>/dev/null && break; sleep 0.25; done
if sc-local -config /etc/scsync/sc-local.yaml enroll -cloud "http://127.0.0.1:$cloud_port" -token sce_pkgtest >/tmp/enroll.log 2>&1; then
	ok "sc-local enroll as root"
else
	cat /tmp/enroll.log
	bad "sc-local enroll as root"
fi
check "after enroll the config is still root:scsync 0640 ($(mode /etc/scsync/sc-local.yaml))" [ "$(mode /etc/scsync/sc-local.yaml)" = "640 root:scsync" ]
check "the service user can read the enrolled config" runuser -u scsync -- grep -q 'sct_pkgtest' /etc/scsync/sc-local.yaml

# Start sc-local as the service user (what the unit does), offline: the
# broker and lockd are unreachable, the stand-in cloud answers 404.
port=$(free_port)
run_local() {
	runuser -u scsync -- env SC_LOCAL_LISTEN="127.0.0.1:$port" SC_LOCAL_AMQP_URL="amqp://guest:guest@127.0.0.1:9/" \
		SC_LOCAL_LOCKD_URL= SC_LOCAL_BACKUP_EVERY=0 SC_LOCAL_DATA_DIR=/var/lib/scsync \
		/usr/bin/sc-local -config /etc/scsync/sc-local.yaml serve
}
run_local >/tmp/sc-local.log 2>&1 &
pid=$!
if body=$(wait_http "http://127.0.0.1:$port/readyz" 90); then
	ok "sc-local started as scsync and /readyz answers 200 while offline"
	check "/readyz lists the cloud and the broker as degraded" sh -c "echo '$body' | grep -q '\"degraded\":\[\"cloud_api\",\"rabbitmq\"\]'"
else
	tail -n 20 /tmp/sc-local.log
	bad "sc-local started as scsync and /readyz answers 200 while offline"
fi
check "the database belongs to scsync" [ "$(stat -c %U /var/lib/scsync/scsync.db 2>/dev/null)" = scsync ]
SC_LOCAL_LISTEN=127.0.0.1:$(free_port) run_local >/tmp/second.log 2>&1
check "a second sc-local on /var/lib/scsync is refused" grep -q "data directory /var/lib/scsync is in use by another sc-local" /tmp/second.log
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null

if dpkg -r scsync-local >/tmp/dpkg-r.log 2>&1; then ok "dpkg -r"; else cat /tmp/dpkg-r.log; bad "dpkg -r"; fi
check "remove: binary gone, config and data kept" sh -c '[ ! -e /usr/bin/sc-local ] && [ -f /etc/scsync/sc-local.yaml ] && [ -f /var/lib/scsync/scsync.db ]'
if dpkg -P scsync-local >/tmp/dpkg-p.log 2>&1; then ok "dpkg -P"; else cat /tmp/dpkg-p.log; bad "dpkg -P"; fi
check "purge: config gone, the clinic's database kept" sh -c '[ ! -e /etc/scsync/sc-local.yaml ] && [ -f /var/lib/scsync/scsync.db ]'
exit "$failed"
INNER
