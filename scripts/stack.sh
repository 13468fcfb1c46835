#!/usr/bin/env bash
# scripts/stack.sh — local development stack for scsync.
#
#   scripts/stack.sh up       make postgres, redis, rabbitmq and minio reachable
#                             on 127.0.0.1 (install/start only what is missing)
#   scripts/stack.sh down     stop only what `up` started; leave the rest alone
#   scripts/stack.sh status   show what runs where; exit 1 if anything is down
#   scripts/stack.sh env      print `export` lines for tests and the demo
#
# up/down/status take optional service names (postgres redis rabbitmq minio)
# to act on a subset, e.g. `scripts/stack.sh up minio`.
#
# Services that are already running (they are often shared with other test
# suites on the same machine) are never restarted, reconfigured or stopped.
# What this script started is recorded in $SCSYNC_CACHE/run/<service>.started.
# See docs/dev-stack.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

# ------------------------------------------------------------------ config ---

HOST=127.0.0.1
SERVICES=(postgres redis rabbitmq minio)
declare -A PORT=([postgres]=5432 [redis]=6379 [rabbitmq]=5672 [minio]=9000)
MINIO_CONSOLE_PORT=9001
EPMD_PORT=4369

WAIT_TIMEOUT="${SCSYNC_WAIT_TIMEOUT:-90}" # seconds to wait for a service to come up
MINIO_USER="${SCSYNC_MINIO_USER:-scsync}"
MINIO_PASSWORD="${SCSYNC_MINIO_PASSWORD:-scsync-secret}"
MINIO_DATA="${SCSYNC_MINIO_DATA:-$SCSYNC_CACHE/minio-data}"
PG_ROLE=scsync
PG_PASSWORD=scsync
PG_URL="postgres://$PG_ROLE:$PG_PASSWORD@$HOST:${PORT[postgres]}/postgres"

declare -A STATE=() # per-service result of this run, for the table

# ------------------------------------------------------------ non-root user ---
# Debian gives a user who is not root no sbin directories on PATH, and that is
# where rabbitmq-server, rabbitmq-plugins and rabbitmqctl are installed.
case ":$PATH:" in
*:/usr/sbin:*) ;;
*) PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin ;;
esac

# has CMD — CMD is installed (a PATH lookup: the sudo wrappers below are
# functions and do not count).
has() { type -P "$1" >/dev/null; }

# A developer who is not root runs `make stack-up` as themselves: the commands
# that need root go through sudo (which may ask for the password once), and
# everything else (MinIO, the cache) stays theirs.
if [[ $(id -u) -ne 0 ]]; then
	as_root() {
		has sudo || {
			err "not root and sudo is not installed: run 'su -c \"apt-get install sudo\"' and add yourself to group sudo, or run as root"
			return 1
		}
		sudo "$@"
	}
	apt-get() { as_root apt-get "$@"; }
	systemctl() { as_root systemctl "$@"; }
	pg_createcluster() { as_root pg_createcluster "$@"; }
	pg_ctlcluster() { as_root pg_ctlcluster "$@"; }
	rabbitmqctl() { as_root rabbitmqctl "$@"; }
	rabbitmq-server() { as_root rabbitmq-server "$@"; }
	rabbitmq-plugins() { as_root rabbitmq-plugins "$@"; }
	redis-server() { as_root redis-server "$@"; }
	epmd() { as_root epmd "$@"; }
else
	as_root() { "$@"; }
fi

# with_timeout SECS CMD… — timeout(1) runs a program, never the sudo wrappers
# above (as the user, Debian's rabbitmqctl and rabbitmq-plugins refuse to
# work): a command that has a wrapper runs as root under the timeout.
with_timeout() {
	local secs=$1
	shift
	if [[ $(type -t "$1") == function ]]; then
		as_root timeout "$secs" "$@"
	else
		timeout "$secs" "$@"
	fi
}

# ---------------------------------------------------------------- helpers ---

systemd_running() { [[ -d /run/systemd/system ]]; }

addr_of() {
	case $1 in
	minio) echo "http://$HOST:${PORT[minio]} (console :$MINIO_CONSOLE_PORT)" ;;
	rabbitmq) echo "amqp://$HOST:${PORT[rabbitmq]}" ;;
	redis) echo "redis://$HOST:${PORT[redis]}" ;;
	postgres) echo "postgres://$HOST:${PORT[postgres]}" ;;
	esac
}

# --- markers: $SCSYNC_RUN/<svc>.started, lines of key=value
#   how=      how to stop it (pg_ctlcluster:<ver>:<cluster> | systemd:<unit> | kill | rabbitmqctl)
#   pid=      pid that held the listening port right after start (empty when
#             it runs as another user and we are not root: we cannot see it)
#   sockets=  inodes of its listening sockets right after start: the same
#             sockets still listening means the same process, and any user
#             can read them in /proc/net/tcp
#   installed=yes if this script also installed the package/binary
marker_file() { echo "$SCSYNC_RUN/$1.started"; }

write_marker() { # svc how pid installed [extra key=value line]
	local f
	f=$(marker_file "$1")
	mkdir -p "$SCSYNC_RUN"
	printf 'how=%s\npid=%s\nsockets=%s\ninstalled=%s\nstarted_at=%s\n' "$2" "$3" \
		"$(port_inodes "${PORT[$1]}" | paste -sd' ')" "$4" "$(date -Is)" >"$f.tmp"
	[[ -z "${5:-}" ]] || printf '%s\n' "$5" >>"$f.tmp"
	mv -f "$f.tmp" "$f"
}

marker_get() { # svc key
	local f
	f=$(marker_file "$1")
	[[ -f "$f" ]] || return 0
	sed -n "s/^$2=//p" "$f" | head -n1
}

# marker_valid svc — we have a marker and the process we started still owns
# the port: one of the sockets it listened on right after the start still
# listens (markers without sockets: the recorded pid owns the port).
marker_valid() {
	local svc=$1 pid sockets s
	[[ -f "$(marker_file "$svc")" ]] || return 1
	sockets=$(marker_get "$svc" sockets)
	if [[ -n $sockets ]]; then
		local now
		now=$(port_inodes "${PORT[$svc]}")
		for s in $sockets; do
			grep -qx -- "$s" <<<"$now" && return 0
		done
		return 1
	fi
	pid=$(marker_get "$svc" pid)
	pid_alive "$pid" || return 1
	[[ "$(port_pid "${PORT[$svc]}")" == "$pid" ]]
}

APT_UPDATED=0
apt_install() {
	has apt-get || {
		err "apt-get not found; install $* yourself"
		return 1
	}
	if ((APT_UPDATED == 0)); then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
		APT_UPDATED=1
	fi
	log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || return 1
}

# wait_port svc — bounded wait for the service port.
wait_port() {
	wait_until "$WAIT_TIMEOUT" "$1 on $HOST:${PORT[$1]}" port_open "${PORT[$1]}"
}

# ---------------------------------------------------------------- postgres ---

pg_cluster() { # prints "<version> <cluster>" of the cluster configured for our port
	local c
	c=$(pg_lsclusters -h 2>/dev/null | awk -v p="${PORT[postgres]}" '$3 == p { print $1, $2; exit }')
	if [[ -z "$c" ]]; then
		c=$(pg_lsclusters -h 2>/dev/null | awk '{ print $1, $2; exit }')
	fi
	echo "$c"
}

pg_installed() {
	has pg_ctlcluster && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

pg_start() {
	local ver cluster
	read -r ver cluster <<<"$(pg_cluster)" || true
	if [[ -z "${ver:-}" ]]; then
		ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
		cluster=main
		log "creating PostgreSQL cluster $ver/$cluster"
		pg_createcluster "$ver" "$cluster" -p "${PORT[postgres]}" >/dev/null || return 1
	fi
	if systemd_running; then
		log "starting PostgreSQL (systemctl start postgresql@$ver-$cluster)"
		systemctl start "postgresql@$ver-$cluster" || return 1
		START_HOW="systemd:postgresql@$ver-$cluster"
	else
		log "starting PostgreSQL $ver/$cluster (pg_ctlcluster)"
		pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" start || return 1
		START_HOW="pg_ctlcluster:$ver:$cluster"
	fi
}

pg_stop() { # how
	local how=$1 ver cluster
	case $how in
	systemd:*) systemctl stop "${how#systemd:}" ;;
	pg_ctlcluster:*)
		IFS=: read -r _ ver cluster <<<"$how"
		pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" stop
		;;
	*) return 1 ;;
	esac
}

# pg_admin ARGS... — psql as a superuser: the postgres OS user over the unix
# socket if that works, else TCP as role postgres (trust auth).
pg_admin() {
	if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1 &&
		runuser -u postgres -- psql -X -p "${PORT[postgres]}" -Atqc 'select 1' >/dev/null 2>&1; then
		runuser -u postgres -- psql -X -p "${PORT[postgres]}" -v ON_ERROR_STOP=1 -Atq "$@"
	elif [[ $(id -u) -ne 0 ]] && has sudo && id postgres >/dev/null 2>&1 &&
		sudo -u postgres psql -X -p "${PORT[postgres]}" -Atqc 'select 1' >/dev/null 2>&1; then
		sudo -u postgres psql -X -p "${PORT[postgres]}" -v ON_ERROR_STOP=1 -Atq "$@"
	else
		PGCONNECT_TIMEOUT=5 psql -X -w -h "$HOST" -p "${PORT[postgres]}" -U postgres -d postgres \
			-v ON_ERROR_STOP=1 -Atq "$@"
	fi
}

pg_login_ok() {
	PGCONNECT_TIMEOUT=5 psql -X -w "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1
}

pg_ready() { pg_admin -c 'select 1' >/dev/null 2>&1; }

pg_ensure_role() {
	local have
	has psql || {
		warn "psql not found; cannot check role $PG_ROLE"
		return 0
	}
	wait_until 30 "PostgreSQL to accept queries" pg_ready || return 1
	have=$(pg_admin -c "select rolcanlogin and rolcreatedb from pg_roles where rolname = '$PG_ROLE'") || {
		err "cannot connect to PostgreSQL as a superuser (tried runuser -u postgres and -h $HOST -U postgres)"
		return 1
	}
	case $have in
	'')
		pg_admin -c "create role $PG_ROLE login createdb password '$PG_PASSWORD'" || return 1
		info "postgres: created role $PG_ROLE (LOGIN CREATEDB)"
		;;
	f)
		pg_admin -c "alter role $PG_ROLE login createdb" || return 1
		info "postgres: role $PG_ROLE fixed (LOGIN CREATEDB)"
		;;
	*) info "postgres: role $PG_ROLE exists" ;;
	esac
	if ! pg_login_ok; then
		pg_admin -c "alter role $PG_ROLE password '$PG_PASSWORD'" || return 1
		info "postgres: reset password of role $PG_ROLE"
		pg_login_ok || {
			err "cannot log in as $PG_URL (check pg_hba.conf)"
			return 1
		}
	fi
}

# ------------------------------------------------------------------- redis ---

redis_installed() { has redis-server; }

redis_start() {
	if systemd_running; then
		log "starting Redis (systemctl start redis-server)"
		systemctl start redis-server || return 1
		START_HOW="systemd:redis-server"
	else
		log "starting Redis"
		as_root mkdir -p /var/lib/redis /var/log/redis
		redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "${PORT[redis]}" --save "" \
			--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
			--pidfile "$SCSYNC_RUN/redis.pid" || return 1
		START_HOW="kill"
	fi
}

redis_ready() {
	if has redis-cli; then
		[[ "$(timeout 3 redis-cli -h "$HOST" -p "${PORT[redis]}" ping 2>/dev/null)" == PONG ]]
	else
		port_open "${PORT[redis]}"
	fi
}

# ---------------------------------------------------------------- rabbitmq ---

rabbit_installed() { has rabbitmq-server; }

rabbit_start() {
	if systemd_running; then
		log "starting RabbitMQ (systemctl start rabbitmq-server)"
		systemctl start rabbitmq-server || return 1
		START_HOW="systemd:rabbitmq-server"
	else
		log "starting RabbitMQ (rabbitmq-server -detached)"
		rabbitmq-server -detached || return 1
		START_HOW=rabbitmqctl
	fi
}

# The plugins scsync needs: the HTTP management API (sc-cloud creates each
# clinic's broker user, permissions and queues through it at enrollment) and
# the consistent-hash exchange. Enabling is idempotent and changes nothing
# else of the broker.
RABBIT_PLUGINS=(rabbitmq_management rabbitmq_consistent_hash_exchange)

rabbit_plugins() {
	has rabbitmq-plugins || return 0
	local enabled
	enabled=$(with_timeout 60 rabbitmq-plugins list -e -m 2>/dev/null) || true
	local p missing=()
	for p in "${RABBIT_PLUGINS[@]}"; do
		grep -qx "$p" <<<"$enabled" || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		info "rabbitmq: plugins ${RABBIT_PLUGINS[*]} enabled"
		return 0
	fi
	log "enabling RabbitMQ plugins ${missing[*]}"
	if ! with_timeout 120 rabbitmq-plugins enable "${missing[@]}" >/dev/null 2>&1; then
		warn "rabbitmq: could not enable ${missing[*]} (rabbitmq-plugins enable failed); sc-cloud cannot create clinics' broker identities without the management API"
	fi
}

# Checks; besides the plugins above we never change the (shared) broker's
# configuration.
rabbit_check() {
	local ff
	has rabbitmqctl || return 0
	rabbit_plugins
	if with_timeout 30 rabbitmqctl -q authenticate_user guest guest >/dev/null 2>&1; then
		info "rabbitmq: guest/guest accepted (loopback only, the default)"
	else
		warn "rabbitmq: could not verify guest/guest (rabbitmqctl authenticate_user failed); tests log in as guest from $HOST"
	fi
	ff=$(with_timeout 30 rabbitmqctl -q list_feature_flags name state 2>/dev/null | awk '$1 == "quorum_queue" { print $2 }') || true
	case $ff in
	enabled) info "rabbitmq: quorum queues available" ;;
	'') info "rabbitmq: could not read feature flags (quorum_queue)" ;;
	*) warn "rabbitmq: feature flag quorum_queue is '$ff'; quorum queues will not work (not changing a shared broker)" ;;
	esac
}

# ------------------------------------------------------------------- minio ---

# minio_healthy needs no curl (a fresh Debian has none): bash's /dev/tcp.
minio_healthy() {
	http_ok "$HOST" "${PORT[minio]}" /minio/health/live
}

MINIO_BUILT=0
minio_installed() { [[ -x "$SCSYNC_BIN/minio" ]]; }

minio_install() {
	# Not via $(...): ensure_minio sets SCSYNC_TOOL_BUILT.
	ensure_minio >/dev/null || return 1
	MINIO_BUILT=$SCSYNC_TOOL_BUILT
}

# minio_kms_key prints MinIO's KMS key (name:base64 of 32 bytes), made on
# first use and kept in $SCSYNC_CACHE/minio-kms.key (mode 0600): objects
# encrypted under it cannot be read without it.
minio_kms_key() {
	local f="${SCSYNC_MINIO_KMS_KEY_FILE:-$SCSYNC_CACHE/minio-kms.key}"
	if [[ ! -s $f ]]; then
		mkdir -p "$(dirname "$f")"
		(umask 077 && printf 'scsync-dev-key:%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" >"$f") || return 1
	fi
	head -n 1 "$f"
}

minio_start() {
	local bin="$SCSYNC_BIN/minio" logf="$SCSYNC_RUN/minio.log" pid deadline
	if ((${#MINIO_USER} < 3 || ${#MINIO_PASSWORD} < 8)); then
		err "MinIO needs a user of >= 3 and a password of >= 8 characters (SCSYNC_MINIO_USER/SCSYNC_MINIO_PASSWORD)"
		return 1
	fi
	if port_open "$MINIO_CONSOLE_PORT"; then
		err "port $MINIO_CONSOLE_PORT (MinIO console) is taken by another process"
		return 1
	fi
	mkdir -p "$MINIO_DATA" "$SCSYNC_RUN"
	# SSE-S3 (the cloud's default server-side encryption) needs a KMS: MinIO's
	# built-in single key, made once and kept beside the data it protects.
	local kms
	kms=$(minio_kms_key) || return 1
	printf '\n---- %s scsync stack.sh up\n' "$(date -Is)" >>"$logf"
	log "starting MinIO ($bin server $MINIO_DATA)"
	info "log: $logf"
	MINIO_ROOT_USER="$MINIO_USER" MINIO_ROOT_PASSWORD="$MINIO_PASSWORD" MINIO_KMS_SECRET_KEY="$kms" \
		setsid "$bin" server "$MINIO_DATA" \
		--address "$HOST:${PORT[minio]}" --console-address "$HOST:$MINIO_CONSOLE_PORT" \
		>>"$logf" 2>&1 </dev/null &
	pid=$!
	deadline=$((SECONDS + WAIT_TIMEOUT))
	until minio_healthy; do
		if ! pid_alive "$pid"; then
			err "MinIO exited during startup; last lines of $logf:"
			tail -n 15 "$logf" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			err "MinIO not healthy after ${WAIT_TIMEOUT}s (see $logf); stopping it"
			kill "$pid" 2>/dev/null || true
			return 1
		fi
		sleep 1
	done
	START_HOW="kill"
}

# ------------------------------------------------------------ generic flow ---

svc_installed() {
	case $1 in
	postgres) pg_installed ;;
	redis) redis_installed ;;
	rabbitmq) rabbit_installed ;;
	minio) minio_installed ;;
	esac
}

svc_install() {
	case $1 in
	postgres) apt_install postgresql ;;
	redis) apt_install redis-server ;;
	rabbitmq) apt_install rabbitmq-server ;;
	minio) minio_install ;;
	esac
}

svc_start() {
	case $1 in
	postgres) pg_start ;;
	redis) redis_start ;;
	rabbitmq) rabbit_start ;;
	minio) minio_start ;;
	esac
}

svc_ready() {
	case $1 in
	postgres) wait_port postgres ;;
	redis) wait_until "$WAIT_TIMEOUT" "Redis to answer PING" redis_ready ;;
	rabbitmq) wait_port rabbitmq ;;
	minio) wait_until "$WAIT_TIMEOUT" "MinIO health" minio_healthy ;;
	esac
}

svc_postcheck() {
	case $1 in
	postgres) pg_ensure_role ;;
	rabbitmq) rabbit_check ;;
	minio)
		minio_healthy || warn "something listens on $HOST:${PORT[minio]} but /minio/health/live does not answer; is it MinIO?"
		;;
	*) : ;;
	esac
}

# up_one svc — never relies on errexit (it runs in an `if`).
up_one() {
	local svc=$1 installed=no pid
	START_HOW=
	if port_open "${PORT[$svc]}"; then
		if marker_valid "$svc"; then
			STATE[$svc]="already running (started by scsync earlier)"
		else
			rm -f "$(marker_file "$svc")"
			STATE[$svc]="already running"
		fi
		info "$svc: already listening on $HOST:${PORT[$svc]}"
		svc_postcheck "$svc" || return 1
		return 0
	fi

	rm -f "$(marker_file "$svc")" # stale: whatever we started is gone
	if ! svc_installed "$svc"; then
		log "$svc is not installed; installing"
		svc_install "$svc" || {
			err "installing $svc failed"
			return 1
		}
		installed=yes
	elif [[ $svc == minio ]]; then
		minio_install || return 1 # reuse, or rebuild if not the pinned version
		[[ $MINIO_BUILT == 1 ]] && installed=yes
	fi

	# RabbitMQ brings up epmd (Erlang's port mapper, :4369) and leaves it
	# running when it stops: remember whether it ran before, so `down` stops
	# it too when we started it.
	local extra=
	if [[ $svc == rabbitmq ]] && ! port_open "$EPMD_PORT"; then
		extra=epmd=started
	fi

	# A package's postinst may already have started the service.
	if ! port_open "${PORT[$svc]}"; then
		# 8>&-: daemons must not inherit the stack.lock descriptor.
		svc_start "$svc" 8>&- || {
			err "starting $svc failed"
			return 1
		}
	else
		case $svc in
		postgres) START_HOW=$(systemd_running && echo "systemd:postgresql" ||
			echo "pg_ctlcluster:$(pg_cluster | tr ' ' ':')") ;;
		redis) START_HOW=$(systemd_running && echo "systemd:redis-server" || echo kill) ;;
		rabbitmq) START_HOW=$(systemd_running && echo "systemd:rabbitmq-server" || echo rabbitmqctl) ;;
		esac
	fi
	svc_ready "$svc" || return 1

	pid=$(port_pid_any "${PORT[$svc]}")
	write_marker "$svc" "$START_HOW" "$pid" "$installed" "$extra"
	if [[ $installed == yes ]]; then
		STATE[$svc]="installed+started"
	else
		STATE[$svc]="started by scsync"
	fi
	info "$svc: up on $HOST:${PORT[$svc]} (pid ${pid:-?})"
	svc_postcheck "$svc" || return 1
}

# port_pid_any PORT — port_pid, also for a process of another user: as root
# (through sudo, which has just been used to start it) when we are not.
port_pid_any() {
	local pid
	pid=$(port_pid "$1")
	if [[ -z $pid && $(id -u) -ne 0 ]] && port_open "$1"; then
		pid=$(as_root bash -c "$(declare -f port_inodes port_pid); port_pid $1" 2>/dev/null) || pid=
	fi
	echo "$pid"
}

# stop_one svc — stops svc only if the process recorded in its marker still
# owns the port. Prints one line about what it did.
stop_one() {
	local svc=$1 how pid i
	if [[ ! -f "$(marker_file "$svc")" ]]; then
		if port_open "${PORT[$svc]}"; then
			printf '  %-9s left alone (not started by scsync)\n' "$svc"
		else
			printf '  %-9s not running\n' "$svc"
		fi
		return 0
	fi
	how=$(marker_get "$svc" how)
	pid=$(marker_get "$svc" pid)
	if ! marker_valid "$svc"; then
		rm -f "$(marker_file "$svc")"
		if port_open "${PORT[$svc]}"; then
			printf '  %-9s left alone (the process scsync started is gone; pid %s now listens)\n' \
				"$svc" "$(port_pid "${PORT[$svc]}")"
		else
			printf '  %-9s not running (stale marker removed)\n' "$svc"
		fi
		return 0
	fi
	case $how in
	systemd:*) systemctl stop "${how#systemd:}" || true ;;
	pg_ctlcluster:*) pg_stop "$how" >/dev/null || true ;;
	rabbitmqctl) with_timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || kill_any "$pid" ;;
	*) kill_any "$pid" ;;
	esac
	for ((i = 0; i < 30; i++)); do
		pid_alive "$pid" || marker_valid "$svc" || break
		sleep 1
	done
	if pid_alive "$pid" || marker_valid "$svc"; then
		err "$svc (pid $pid) did not stop within 30s"
		return 1
	fi
	if [[ $svc == rabbitmq && "$(marker_get "$svc" epmd)" == started ]]; then
		epmd_stop
	fi
	rm -f "$(marker_file "$svc")"
	printf '  %-9s stopped (pid %s, started by scsync)\n' "$svc" "$pid"
}

# kill_any PID — SIGTERM to PID, through sudo if it is another user's.
kill_any() {
	[[ -n ${1:-} ]] || return 0
	kill "$1" 2>/dev/null || as_root kill "$1" 2>/dev/null || true
}

# epmd_stop stops the epmd that came up with the RabbitMQ we started, unless
# another Erlang node (a test's private broker) still uses it.
epmd_stop() {
	local names
	port_open "$EPMD_PORT" || return 0
	names=$(epmd -names 2>/dev/null | grep -c '^name ' || true)
	if ((names > 0)); then
		printf '  %-9s left alone (%s Erlang node(s) still registered)\n' epmd "$names"
		return 0
	fi
	if systemd_running && systemctl is-active --quiet epmd.socket epmd.service 2>/dev/null; then
		systemctl stop epmd.socket epmd.service || true
	else
		epmd -kill >/dev/null 2>&1 || true
	fi
	printf '  %-9s stopped (it came up with RabbitMQ)\n' epmd
}

print_table() { # column 3 comes from the STATE array
	local svc
	printf '\n%-9s  %-38s  %-44s  %s\n' SERVICE ADDRESS STATE "ON 'down'"
	for svc in "${SERVICES[@]}"; do
		printf '%-9s  %-38s  %-44s  %s\n' "$svc" "$(addr_of "$svc")" "${STATE[$svc]:-?}" \
			"$(marker_valid "$svc" && echo stop || echo leave)"
	done
	echo
}

take_lock() {
	mkdir -p "$SCSYNC_RUN"
	exec 8>"$SCSYNC_RUN/stack.lock"
	flock -w 900 8 || die "another scripts/stack.sh is busy (lock $SCSYNC_RUN/stack.lock)"
}

# ------------------------------------------------------------- subcommands ---

# select_services [NAME...] — restrict SERVICES to the names given.
select_services() {
	local s ok
	(($# == 0)) && return 0
	for s in "$@"; do
		ok=0
		[[ -n "${PORT[$s]:-}" ]] && ok=1
		((ok)) || die "unknown service '$s' (known: ${SERVICES[*]})"
	done
	SERVICES=("$@")
}

# ensure_browser installs Debian's Chromium for the viewer page's browser
# tests (a test tool, not a service: nothing runs).
ensure_browser() {
	if has chromium; then
		return 0
	fi
	log "chromium (headless browser for the viewer tests) is not installed; installing"
	apt_install chromium
}

# ensure_dev_tools installs what a fresh Debian lacks for the README's two
# commands: gcc (go test -race needs cgo), curl and jq (the demo), and node
# (shared/viewer's TestScriptSyntax runs node --check on app.js).
ensure_dev_tools() {
	local pkgs=()
	has gcc || pkgs+=(gcc libc6-dev)
	has curl || pkgs+=(curl)
	has jq || pkgs+=(jq)
	has node || pkgs+=(nodejs)
	((${#pkgs[@]} == 0)) && return 0
	log "installing ${pkgs[*]} (go test -race needs gcc; the demo uses curl and jq; the viewer's script is checked with node)"
	apt_install "${pkgs[@]}"
}

cmd_up() {
	local svc failed=0 all=$(($# == 0))
	select_services "$@"
	take_lock
	# What needs root comes first and MinIO's build (minutes) last: a user
	# who is not root types the sudo password once, not again when sudo's
	# 15 minutes have run out during the build.
	if ((all)) && ! ensure_dev_tools; then
		err "gcc, curl, jq or nodejs could not be installed; go test -race, the demo and the viewer's script check need them"
		failed=1
	fi
	if ((all)) && ! ensure_browser; then
		err "chromium could not be installed; the viewer browser test will fail"
		failed=1
	fi
	for svc in "${SERVICES[@]}"; do
		log "$svc"
		if ! up_one "$svc"; then
			STATE[$svc]="FAILED"
			failed=1
		fi
	done
	print_table
	if ((failed)); then
		err "some services are not available (see above)"
		return 1
	fi
	info "state: $SCSYNC_RUN   env: eval \"\$(scripts/stack.sh env)\"   stop: scripts/stack.sh down"
}

cmd_down() {
	local svc i rc=0
	select_services "$@"
	take_lock
	log "stopping what scripts/stack.sh started (shared services are left alone)"
	# reverse order: minio, rabbitmq, redis, postgres
	for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
		svc=${SERVICES[i]}
		stop_one "$svc" || rc=1
	done
	return "$rc"
}

cmd_status() {
	local svc down=0
	select_services "$@"
	for svc in "${SERVICES[@]}"; do
		if port_open "${PORT[$svc]}"; then
			if marker_valid "$svc"; then
				STATE[$svc]="running (started by scsync)"
			else
				STATE[$svc]="running"
			fi
			if [[ $svc == minio ]] && ! minio_healthy; then
				STATE[$svc]+=", health check FAILS"
				down=1
			fi
		else
			STATE[$svc]="DOWN"
			down=1
		fi
	done
	print_table
	return "$down"
}

sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # shell single-quote

cmd_env() {
	cat <<EOF
export SCSYNC_TEST_PG_URL=$(sq "$PG_URL")
export SCSYNC_TEST_AMQP_HOST=$(sq "$HOST")
export SCSYNC_TEST_AMQP_PORT=$(sq "${PORT[rabbitmq]}")
export SCSYNC_TEST_REDIS_ADDR=$(sq "$HOST:${PORT[redis]}")
export SCSYNC_TEST_S3_ENDPOINT=$(sq "http://$HOST:${PORT[minio]}")
export SCSYNC_TEST_S3_ACCESS_KEY=$(sq "$MINIO_USER")
export SCSYNC_TEST_S3_SECRET_KEY=$(sq "$MINIO_PASSWORD")
export PATH=$(sq "$SCSYNC_BIN"):"\$PATH"
EOF
}

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

main() {
	case ${1:-} in
	up | down | status)
		local cmd=$1
		shift
		"cmd_$cmd" "$@"
		;;
	env) cmd_env ;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
