# shellcheck shell=bash
# scripts/lib.sh — helpers shared by scripts/stack.sh and scripts/tools.sh.
# Source it; do not execute it.
#
# Everything the scripts create lives OUTSIDE the repository, under
#   SCSYNC_CACHE (default: ${XDG_CACHE_HOME:-$HOME/.cache}/scsync)
#     bin/   pinned tool binaries (minio, golangci-lint, helm, govulncheck, indexdb)
#     vulndb/<version>/  the offline Go vulnerability database
#     run/   state of services started by stack.sh (markers, pid, logs)

if [[ -n "${SCSYNC_LIB_LOADED:-}" ]]; then
	return 0
fi
SCSYNC_LIB_LOADED=1

# ---------------------------------------------------------------- settings ---

SCSYNC_CACHE="${SCSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scsync}"
SCSYNC_BIN="$SCSYNC_CACHE/bin"
SCSYNC_RUN="$SCSYNC_CACHE/run"

# Pinned tool versions (override only if you know what you are doing).
SCSYNC_MINIO_MODULE="github.com/minio/minio"
SCSYNC_MINIO_VERSION="${SCSYNC_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
SCSYNC_GOLANGCI_PKG="github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
SCSYNC_GOLANGCI_VERSION="${SCSYNC_GOLANGCI_VERSION:-v2.15.0}"
# nfpm builds the Debian package (make package); kept because it is a plain
# Go program with no system dependencies (dpkg-deb is not needed to build).
SCSYNC_NFPM_PKG="github.com/goreleaser/nfpm/v2/cmd/nfpm"
SCSYNC_NFPM_VERSION="${SCSYNC_NFPM_VERSION:-v2.48.0}"

# helm checks the chart (make deploy-check: helm lint, helm template). It is
# not packaged for Debian 12 and no download site is reachable, so it is built
# from the Go module proxy like the other tools; the first build takes minutes
# (see docs/cloud-ops.md), later runs reuse the cached binary.
SCSYNC_HELM_PKG="helm.sh/helm/v4/cmd/helm"
SCSYNC_HELM_VERSION="${SCSYNC_HELM_VERSION:-v4.3.2}"

SCSYNC_GOVULNCHECK_PKG="golang.org/x/vuln/cmd/govulncheck"
SCSYNC_GOVULNCHECK_VERSION="${SCSYNC_GOVULNCHECK_VERSION:-v1.10.0}"
# The offline vulnerability database: the OSV files of the Go module
# golang.org/x/vulndb (fetched through the module proxy like any module),
# indexed by its own cmd/indexdb. Bump the pin to take newer reports.
SCSYNC_VULNDB_MODULE="golang.org/x/vulndb"
SCSYNC_VULNDB_VERSION="${SCSYNC_VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}"

# How long to wait for a concurrent build of the same tool (seconds).
SCSYNC_BUILD_WAIT="${SCSYNC_BUILD_WAIT:-1200}"

# ----------------------------------------------------------------- logging ---

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
	_c_dim=$'\e[2m' _c_red=$'\e[31m' _c_grn=$'\e[32m' _c_yel=$'\e[33m' _c_off=$'\e[0m'
else
	_c_dim='' _c_red='' _c_grn='' _c_yel='' _c_off=''
fi

log() { printf '%s==>%s %s\n' "$_c_grn" "$_c_off" "$*" >&2; }
info() { printf '%s    %s%s\n' "$_c_dim" "$*" "$_c_off" >&2; }
warn() { printf '%swarning:%s %s\n' "$_c_yel" "$_c_off" "$*" >&2; }
err() { printf '%serror:%s %s\n' "$_c_red" "$_c_off" "$*" >&2; }
die() {
	err "$*"
	exit 1
}

# ------------------------------------------------------------- networking ---

# port_open PORT [HOST] — true if something accepts TCP connections there.
port_open() {
	local port=$1 host=${2:-127.0.0.1}
	# shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# http_ok HOST PORT PATH — true if GET PATH answers 2xx within 3 s. Plain
# bash (/dev/tcp), so it works before curl is installed.
http_ok() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$3" "$1" "$2" >&3
		read -r _ code _ <&3
		[[ $code == 2?? ]]' _ "$1" "$2" "$3" 2>/dev/null
}

# wait_until SECONDS DESCRIPTION CMD... — retry CMD every second.
wait_until() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			err "timed out after ${secs}s waiting for $what"
			return 1
		fi
		sleep 1
	done
}

# port_inodes PORT — inodes of the LISTEN sockets on PORT (any local address,
# IPv4 or IPv6), one a line. /proc/net/tcp is readable by every user, also
# for sockets of processes that run as another user.
port_inodes() {
	local hex
	hex=$(printf '%04X' "$1")
	# column 2 = local addr:port, column 4 = state (0A = LISTEN), column 10 = inode
	awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u
}

# port_pid PORT — pid of the process holding the LISTEN socket on PORT.
# Prints nothing if not found, which is the case for another user's process
# when we are not root (its /proc/<pid>/fd is not ours to read).
port_pid() {
	local inodes fd link pid
	inodes=$(port_inodes "$1")
	[[ -n "$inodes" ]] || return 0
	for fd in /proc/[0-9]*/fd/*; do
		link=$(readlink "$fd" 2>/dev/null) || continue
		[[ $link == socket:\[*\] ]] || continue
		link=${link#socket:[}
		link=${link%]}
		if grep -qx -- "$link" <<<"$inodes"; then
			pid=${fd#/proc/}
			echo "${pid%%/*}"
			return 0
		fi
	done
}

# pid_alive PID — the process exists (also one of another user, where kill -0
# fails with EPERM).
pid_alive() { [[ -n "${1:-}" ]] && { kill -0 "$1" 2>/dev/null || [[ -d /proc/$1 ]]; }; }

# ------------------------------------------------------------------ go tools ---

# go_tool_version BINARY — prints the main module version embedded by the Go
# linker ("v2.15.0", "v0.0.0-2026…"), or nothing.
go_tool_version() {
	go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
}

# ensure_go_tool NAME PACKAGE VERSION — make sure $SCSYNC_BIN/NAME is the
# pinned version; build it with `go install PACKAGE@VERSION` (CGO_ENABLED=0)
# if missing. Prints the binary path on stdout. Sets SCSYNC_TOOL_BUILT=1 when
# it had to build.
# shellcheck disable=SC2034 # read by scripts/stack.sh
SCSYNC_TOOL_BUILT=0
ensure_go_tool() {
	local name=$1 pkg=$2 version=$3
	local bin="$SCSYNC_BIN/$name" have lockfd
	SCSYNC_TOOL_BUILT=0
	mkdir -p "$SCSYNC_BIN" "$SCSYNC_RUN"

	if [[ -x "$bin" ]] && _tool_ok "$bin" "$version"; then
		echo "$bin"
		return 0
	fi

	command -v go >/dev/null || die "go is not on PATH; needed to build $name"

	# Another process (e.g. a CI pre-warm step or a concurrent make target) may
	# be running exactly this `go install` right now: wait for it instead of
	# building twice on a 2-core machine.
	if pgrep -f -- "install ${pkg}@${version}" >/dev/null 2>&1; then
		log "a build of $name@$version is already running (pid $(pgrep -f -- "install ${pkg}@${version}" | tr '\n' ' ')); waiting for it (max ${SCSYNC_BUILD_WAIT}s)"
		local deadline=$((SECONDS + SCSYNC_BUILD_WAIT))
		while pgrep -f -- "install ${pkg}@${version}" >/dev/null 2>&1; do
			((SECONDS < deadline)) || die "concurrent build of $name still running after ${SCSYNC_BUILD_WAIT}s"
			sleep 5
		done
		if [[ -x "$bin" ]] && _tool_ok "$bin" "$version"; then
			echo "$bin"
			return 0
		fi
		warn "the concurrent build did not leave a usable $bin; building it myself"
	fi

	# Serialise our own builds of the same tool.
	exec {lockfd}>"$SCSYNC_RUN/build-$name.lock"
	flock -w "$SCSYNC_BUILD_WAIT" "$lockfd" || die "could not lock $SCSYNC_RUN/build-$name.lock"
	if [[ -x "$bin" ]] && _tool_ok "$bin" "$version"; then
		exec {lockfd}>&-
		echo "$bin"
		return 0
	fi

	local tmp log="$SCSYNC_RUN/build-$name.log"
	tmp=$(mktemp -d "$SCSYNC_BIN/.build-$name.XXXXXX")
	log "building $name $version (go install $pkg@$version; this can take several minutes)"
	info "log: $log"
	if ! (cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp" go install "$pkg@$version") >"$log" 2>&1; then
		err "building $name failed; last lines of $log:"
		tail -n 20 "$log" >&2
		rm -rf "$tmp"
		exec {lockfd}>&-
		return 1
	fi
	mv -f "$tmp/$name" "$bin"
	rm -rf "$tmp"
	exec {lockfd}>&-
	have=$(go_tool_version "$bin")
	info "built $bin ($have)"
	# shellcheck disable=SC2034 # read by scripts/stack.sh
	SCSYNC_TOOL_BUILT=1
	echo "$bin"
}

# _tool_ok BIN VERSION — existing binary matches the pin (or its version
# cannot be read, in which case we trust it but say so).
_tool_ok() {
	local have
	have=$(go_tool_version "$1")
	if [[ -z "$have" ]]; then
		warn "cannot read the version of $1; using it as is"
		return 0
	fi
	if [[ "$have" != "$2" ]]; then
		warn "$1 is $have, pinned is $2; rebuilding"
		return 1
	fi
}

ensure_minio() {
	ensure_go_tool minio "$SCSYNC_MINIO_MODULE" "$SCSYNC_MINIO_VERSION"
}

ensure_golangci_lint() {
	ensure_go_tool golangci-lint "$SCSYNC_GOLANGCI_PKG" "$SCSYNC_GOLANGCI_VERSION"
}

ensure_nfpm() {
	ensure_go_tool nfpm "$SCSYNC_NFPM_PKG" "$SCSYNC_NFPM_VERSION"
}

ensure_helm() {
	ensure_go_tool helm "$SCSYNC_HELM_PKG" "$SCSYNC_HELM_VERSION"
}

ensure_govulncheck() {
	ensure_go_tool govulncheck "$SCSYNC_GOVULNCHECK_PKG" "$SCSYNC_GOVULNCHECK_VERSION"
}

# ensure_vulndb — build (once per pinned version) a govulncheck database from
# the OSV files in the golang.org/x/vulndb module: no access to vuln.go.dev
# is needed, only the module proxy (or a warm module cache). Prints its
# directory, for `govulncheck -db file://DIR`.
ensure_vulndb() {
	local out="$SCSYNC_CACHE/vulndb/$SCSYNC_VULNDB_VERSION" src indexdb tmp
	if [[ -s "$out/index/db.json" && -s "$out/index/modules.json" ]]; then
		echo "$out"
		return 0
	fi
	src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$SCSYNC_VULNDB_MODULE@$SCSYNC_VULNDB_VERSION" | awk -F'"' '$2 == "Dir" { print $4 }') ||
		die "cannot fetch $SCSYNC_VULNDB_MODULE@$SCSYNC_VULNDB_VERSION"
	[[ -d "$src/data/osv" ]] || die "$src/data/osv is missing: the vulndb module has no OSV files"
	indexdb=$(ensure_go_tool indexdb "$SCSYNC_VULNDB_MODULE/cmd/indexdb" "$SCSYNC_VULNDB_VERSION") || return 1
	mkdir -p "$SCSYNC_CACHE/vulndb"
	tmp=$(mktemp -d "$SCSYNC_CACHE/vulndb/.build.XXXXXX")
	log "indexing the Go vulnerability database $SCSYNC_VULNDB_VERSION ($(find "$src/data/osv" -name '*.json' | wc -l) reports)"
	if ! "$indexdb" -vulns "$src/data/osv" -out "$tmp/db" >&2; then
		rm -rf "$tmp"
		die "indexdb failed"
	fi
	rm -rf "$out"
	mv "$tmp/db" "$out"
	rm -rf "$tmp"
	echo "$out"
}
