#!/usr/bin/env bash
# scripts/test.sh — `make test`: the tests of the named modules against the
# dev stack (the caller sets its environment: eval "$(scripts/stack.sh env)").
#
#   RACE=-race scripts/test.sh shared local-server ...
#
# RACE is -race where a C compiler is installed (the Makefile decides), empty
# otherwise. Every package and test is compiled first, once, from the
# workspace (go.work); then local-server, whose e2e package alone runs for
# minutes (real sc-cloud, sc-local and lockd processes, a 2-minute chaos
# soak), runs beside the other modules, which run one after another: their
# tests fill the time e2e spends waiting on processes, brokers and timers,
# instead of adding theirs to it. Each output line is printed as it comes,
# prefixed with its module; a module that fails has its whole output printed
# again at the end, in one piece, and is named on the last line
# ("FAILED modules: ...").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $# -gt 0 ]] || {
	echo "usage: RACE=[-race] scripts/test.sh MODULE..." >&2
	exit 2
}
RACE=${RACE:-}
if [[ -z $RACE ]]; then
	echo "note: no C compiler (gcc): the tests run without -race (apt install gcc to add it)"
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/scsync-test.XXXXXX")
trap 'rm -rf "$logs"' EXIT

# The compile, once: two `go test` runs at the same time would each compile
# the packages they share (the standard library with -race, the shared
# module, the drivers), since the build cache holds only finished work. A
# package that does not compile is reported by its module's run below.
began=$SECONDS
echo "== compile"
pkgs=()
for m in "$@"; do
	pkgs+=("./$m/...")
done
# shellcheck disable=SC2086 # RACE is one flag or nothing
go list -deps -test -export $RACE "${pkgs[@]}" >/dev/null ||
	echo "== compile: errors (reported again by the modules' tests)"
echo "== compile: $((SECONDS - began)) s"

# module runs one module's tests, its output prefixed with its name and kept
# in $logs; a module whose tests fail is added to $logs/failed.
module() {
	local m=$1 timeout=10m par=() log began=$SECONDS
	if [[ $m == local-server ]]; then
		timeout=25m
		par=(-parallel 4)
	fi
	log="$logs/${m//\//_}.log"
	echo "== $m"
	# shellcheck disable=SC2086 # RACE is one flag or nothing
	if (cd "$m" && go test $RACE -count=1 -timeout "$timeout" "${par[@]}" ./... 2>&1) |
		tee "$log" | sed -u "s|^|$m: |"; then
		echo "== $m: ok ($((SECONDS - began)) s)"
	else
		echo "== $m: FAILED ($((SECONDS - began)) s)"
		echo "$m" >>"$logs/failed"
	fi
}

lane=
rest=()
for m in "$@"; do
	if [[ $m == local-server ]]; then
		module "$m" &
		lane=$!
	else
		rest+=("$m")
	fi
done
for m in "${rest[@]}"; do
	module "$m"
done
if [[ -n $lane ]]; then
	wait "$lane"
fi
echo "== done: $((SECONDS - began)) s, the compile included"

if [[ -s $logs/failed ]]; then
	while read -r m; do
		echo
		echo "== output of $m"
		cat "$logs/${m//\//_}.log"
	done <"$logs/failed"
	echo "FAILED modules: $(paste -sd ' ' "$logs/failed")"
	exit 1
fi
