#!/usr/bin/env bash
# scripts/fresh-debian-trial.sh — try the README's two commands on a fresh
# Debian 12 with only Go, git and make (and sudo), as a non-root user.
#
#   sudo scripts/fresh-debian-trial.sh all        everything below, in order
#   sudo scripts/fresh-debian-trial.sh root       debootstrap Debian 12 into $FRESH_ROOT
#   sudo scripts/fresh-debian-trial.sh up         network namespace, registry proxy, the "machine"
#   sudo scripts/fresh-debian-trial.sh provision  apt install git make sudo ca-certificates; Go; user; clone
#   sudo scripts/fresh-debian-trial.sh run CMD…   run CMD as the user in ~/scsync (a tty; sudo's password typed by expect)
#   sudo scripts/fresh-debian-trial.sh shell      a root shell on the machine
#   sudo scripts/fresh-debian-trial.sh down       make stack-down, then stop the machine, the proxy, the namespace
#
# The "machine" is a chroot of $FRESH_ROOT in its own network, PID, mount
# and UTS namespaces: the services of the host on 127.0.0.1 are out of
# sight, so `make stack-up` must install and start its own. The only way out
# is a veth pair (host 10.77.0.1, machine 10.77.0.2) to a forward proxy on
# the host (scripts/registry-proxy) that allows the Go module proxy and
# checksum database and Debian's mirrors, nothing else. There is no systemd
# in the machine: stack.sh takes its no-systemd path (pg_ctlcluster,
# redis-server --daemonize, rabbitmq-server -detached).
#
# Not run by CI (it takes an hour on 2 cores). Needs root on a Debian host
# with debootstrap, expect, iproute2 and Go. See docs/dev-stack.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)

ROOT="${FRESH_ROOT:-/srv/fresh}"
STATE="${FRESH_STATE:-/run/fresh-trial}" # pids and logs of this trial (on the host)
NS="${FRESH_NETNS:-fresh}"
HOST_IP=10.77.0.1
NS_IP=10.77.0.2
PROXY="http://$HOST_IP:3128"
MIRROR="${FRESH_MIRROR:-http://deb.debian.org/debian}"
USER_NAME="${FRESH_USER:-clinicit}"
USER_PASSWORD="${FRESH_PASSWORD:-clinicit-fresh}"
REPO="${FRESH_REPO:-$repo_root}"          # what to clone (a full clone)
REF="${FRESH_REF:-$(git -C "$REPO" rev-parse HEAD)}" # and check out
GOROOT_HOST="${FRESH_GOROOT:-$(go env GOROOT)}"

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}
stamp() { date -u +%H:%M:%S; }

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, namespaces, mounts)"

# timed NAME CMD… — run CMD, append "NAME seconds load-average" to $STATE/durations.
timed() {
	local name=$1 t0 rc=0
	shift
	mkdir -p "$STATE"
	t0=$SECONDS
	"$@" || rc=$?
	printf '%-28s %5ds  rc=%d  load: %s\n' "$name" $((SECONDS - t0)) "$rc" \
		"$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$STATE/durations" >&2
	return "$rc"
}

# ------------------------------------------------------------------ root ---

cmd_root() {
	if [[ -x $ROOT/bin/bash ]]; then
		log "$ROOT already holds a Debian root (remove it for a new one)"
		return 0
	fi
	command -v debootstrap >/dev/null || apt-get install -y debootstrap
	log "debootstrap bookworm (minbase) into $ROOT"
	timed debootstrap debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR"
}

# ------------------------------------------------------------- namespaces ---

machine_pid() {
	local pid
	pid=$(cat "$STATE/machine.pid" 2>/dev/null) || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	echo "$pid"
}

# in_machine CMD… — run CMD as root inside the machine's namespaces and root.
in_machine() {
	local pid
	pid=$(machine_pid) || die "the machine is not up (run: $0 up)"
	nsenter --target "$pid" --mount --net --pid --uts --root --wd -- "$@"
}

cmd_up() {
	mkdir -p "$STATE"
	if ! ip netns list | grep -qw "$NS"; then
		log "network namespace $NS, veth $HOST_IP <-> $NS_IP"
		ip netns add "$NS"
		ip link add vfresh0 type veth peer name vfresh1
		ip link set vfresh1 netns "$NS"
		ip addr add "$HOST_IP/24" dev vfresh0
		ip link set vfresh0 up
		ip -n "$NS" addr add "$NS_IP/24" dev vfresh1
		ip -n "$NS" link set vfresh1 up
		ip -n "$NS" link set lo up
	fi

	if ! kill -0 "$(cat "$STATE/proxy.pid" 2>/dev/null)" 2>/dev/null; then
		log "registry proxy on $PROXY (log $STATE/proxy.log)"
		(cd "$here/registry-proxy" && GOWORK=off go build -o "$STATE/registry-proxy" ./main.go)
		setsid "$STATE/registry-proxy" -listen "$HOST_IP:3128" >>"$STATE/proxy.log" 2>&1 </dev/null &
		echo $! >"$STATE/proxy.pid"
	fi

	if machine_pid >/dev/null; then
		log "the machine is already up (pid $(machine_pid))"
		return 0
	fi
	log "starting the machine: chroot $ROOT in its own net/pid/mount/uts namespaces"
	# The first process is the machine's init: it mounts what a Debian system
	# has (/proc, /sys, /dev with /dev/pts and /dev/shm, a tmpfs /run) and
	# then waits forever, reaping the daemons that stack.sh detaches.
	# shellcheck disable=SC2016 # expanded by the inner bash
	ip netns exec "$NS" unshare --pid --fork --mount --uts --propagation private \
		bash -c '
			set -e
			r=$1
			hostname fresh-debian
			mount -t proc proc "$r/proc"
			mount -t sysfs sysfs "$r/sys"
			mount --rbind /dev "$r/dev"
			mount -t tmpfs -o mode=1777 shm "$r/dev/shm"
			mount -t tmpfs -o mode=0755 run "$r/run"
			mkdir -p "$r/run/lock" && chmod 1777 "$r/run/lock"
			exec chroot "$r" /bin/bash -c "trap : CHLD; while :; do sleep 3600 & wait \$! || true; done"
		' _ "$ROOT" </dev/null >>"$STATE/machine.log" 2>&1 &
	local unshare_pid=$! i pid=
	for ((i = 0; i < 50; i++)); do
		pid=$(pgrep -P "$unshare_pid" || true)
		[[ -n $pid ]] && [[ $(readlink "/proc/$pid/root") == "$ROOT" ]] && break
		pid=
		sleep 0.2
	done
	[[ -n $pid ]] || die "the machine did not start (see $STATE/machine.log)"
	echo "$pid" >"$STATE/machine.pid"
	echo "$unshare_pid" >"$STATE/unshare.pid"
	log "machine up: init pid $pid (host view)"
}

# ------------------------------------------------------------- provision ---

cmd_provision() {
	local home=$ROOT/home/$USER_NAME
	log "hostname, hosts, apt sources (bookworm, -updates, -security) and apt's proxy"
	echo fresh-debian >"$ROOT/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tfresh-debian\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
	cat >"$ROOT/etc/apt/sources.list" <<-EOF
		deb $MIRROR bookworm main
		deb $MIRROR bookworm-updates main
		deb http://security.debian.org/debian-security bookworm-security main
	EOF
	printf 'Acquire::http::Proxy "%s";\nAcquire::https::Proxy "%s";\n' "$PROXY" "$PROXY" \
		>"$ROOT/etc/apt/apt.conf.d/01fresh-trial-proxy"
	# The registry proxy stands in for the internet: Go and curl find it
	# here (pam_env reads it for su and sudo). Loopback is never proxied.
	cat >"$ROOT/etc/environment" <<-EOF
		http_proxy=$PROXY
		https_proxy=$PROXY
		HTTP_PROXY=$PROXY
		HTTPS_PROXY=$PROXY
		no_proxy=127.0.0.1,localhost,::1
		NO_PROXY=127.0.0.1,localhost,::1
	EOF

	# This sandbox's egress intercepts TLS with its own CA: give the machine
	# the host's extra CAs (none on an ordinary host), as its network would.
	if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
		log "the host's extra CA certificates (TLS-intercepting egress): $(ls /usr/local/share/ca-certificates)"
		mkdir -p "$ROOT/usr/local/share/ca-certificates"
		cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
	fi

	log "apt-get install git make sudo ca-certificates (and nothing else)"
	timed apt-git-make-sudo in_machine /bin/bash -c \
		'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git make sudo ca-certificates >/dev/null'

	log "Go: $GOROOT_HOST ($("$GOROOT_HOST/bin/go" version)) -> /usr/local/go"
	rm -rf "$ROOT/usr/local/go"
	cp -a "$GOROOT_HOST" "$ROOT/usr/local/go"

	if ! in_machine id "$USER_NAME" >/dev/null 2>&1; then
		log "user $USER_NAME (bash, group sudo, password-protected sudo)"
		in_machine useradd -m -s /bin/bash -G sudo "$USER_NAME"
		printf '%s:%s\n' "$USER_NAME" "$USER_PASSWORD" | in_machine chpasswd
		# Go's install instructions: put /usr/local/go/bin on PATH.
		# shellcheck disable=SC2016 # written literally
		echo 'export PATH=$PATH:/usr/local/go/bin' >>"$home/.profile"
	fi

	log "clone $REPO at $REF into ~$USER_NAME/scsync (full history)"
	rm -rf "$home/scsync"
	git clone -q --no-local "$REPO" "$home/scsync"
	git -C "$home/scsync" checkout -q --detach "$REF"
	in_machine chown -R "$USER_NAME:$USER_NAME" "/home/$USER_NAME"
	in_machine su - "$USER_NAME" -c 'go version; git --version; make --version | head -1; command -v gcc curl jq psql || true'
}

# ------------------------------------------------------------------ run ---

# cmd_run CMD… — the user's login shell, in ~/scsync, on a tty (expect
# answers sudo's password prompt and counts how often it came). su needs
# --pty: `su -c` alone starts a new session without a terminal, where sudo
# cannot ask for a password at all.
cmd_run() {
	local pid cmd="$*" logf
	pid=$(machine_pid) || die "the machine is not up"
	mkdir -p "$STATE/logs"
	logf="$STATE/logs/$(date -u +%H%M%S)-${cmd//[^a-zA-Z0-9]/_}.log"
	log "as $USER_NAME: $cmd   (log $logf)"
	cat >"$STATE/sudo.exp" <<-'EOF'
		set timeout -1
		log_user 1
		log_file -noappend $env(FRESH_LOG)
		set prompts 0
		spawn -noecho {*}$argv
		expect {
			-re {\[sudo\] password for [^:]*: } { incr prompts; send -- "$env(FRESH_PW)\r"; exp_continue }
			eof
		}
		set st [wait]
		send_user "\n==> sudo asked for the password $prompts time(s); exit status [lindex $st 3]\n"
		exit [lindex $st 3]
	EOF
	# expect writes the log itself (log_file), not through a pipe to tee: a
	# daemon the command starts (MinIO from make stack-up) inherits expect's
	# descriptors, and a pipe it holds would keep tee, and the trial, waiting
	# after the command has ended.
	FRESH_PW=$USER_PASSWORD FRESH_LOG=$logf expect -f "$STATE/sudo.exp" -- nsenter --target "$pid" --mount --net --pid --uts --root --wd -- \
		su --pty - "$USER_NAME" -c "cd ~/scsync && $cmd" 2>&1
}

cmd_shell() { in_machine /bin/bash -l; }

# ----------------------------------------------------------------- down ---

cmd_down() {
	local pid
	if pid=$(machine_pid); then
		log "make stack-down in the machine"
		cmd_run make stack-down || true
		log "processes left in the machine (its init and this listing are expected):"
		# shellcheck disable=SC2016 # expanded in the machine
		in_machine /bin/bash -c 'for d in /proc/[0-9]*; do printf "  %s %s\n" "${d#/proc/}" "$(tr "\0" " " <"$d/cmdline")"; done' || true
		log "listening TCP ports left in the machine (epmd is 4369):"
		# shellcheck disable=SC2016 # expanded in the machine
		in_machine /bin/bash -c 'while read -r _ local _ st _; do [[ $st == 0A ]] && echo "  $((16#${local##*:}))"; done < <(cat /proc/net/tcp /proc/net/tcp6) | sort -un' || true
		log "stopping the machine (init pid $pid: the whole PID namespace goes with it)"
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$STATE/machine.pid" "$STATE/unshare.pid"
	if kill -0 "$(cat "$STATE/proxy.pid" 2>/dev/null)" 2>/dev/null; then
		log "stopping the registry proxy"
		kill "$(cat "$STATE/proxy.pid")"
	fi
	rm -f "$STATE/proxy.pid"
	if ip netns list | grep -qw "$NS"; then
		log "removing network namespace $NS (and the veth pair)"
		ip netns del "$NS"
	fi
	ip link del vfresh0 2>/dev/null || true
	log "kept: $ROOT (the machine's disk), $STATE (logs)"
}

cmd_all() {
	: >"$STATE/durations" 2>/dev/null || { mkdir -p "$STATE" && : >"$STATE/durations"; }
	cmd_root
	cmd_up
	cmd_provision
	timed "make demo-check" cmd_run make demo-check
	timed "make test (CI=true)" cmd_run CI=true make test
	timed "make stack-down" cmd_run make stack-down
	log "durations:"
	cat "$STATE/durations" >&2
}

case ${1:-} in
all | root | up | provision | shell | down) "cmd_$1" ;;
run)
	shift
	(($# > 0)) || die "run what?"
	cmd_run "$@"
	;;
*)
	sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
	;;
esac
