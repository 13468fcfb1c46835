#!/usr/bin/env bash
# scripts/tools.sh — install pinned developer tools into the scsync cache.
#
#   scripts/tools.sh minio           build/reuse MinIO, print its path
#   scripts/tools.sh golangci-lint   build/reuse golangci-lint, print its path
#   scripts/tools.sh nfpm            build/reuse nfpm (Debian packages), print its path
#   scripts/tools.sh helm            build/reuse helm (chart checks), print its path
#   scripts/tools.sh govulncheck     build/reuse govulncheck, print its path
#   scripts/tools.sh vulndb          build/reuse the offline vulnerability DB, print its dir
#   scripts/tools.sh all             all of them (one path per line)
#   scripts/tools.sh path            print the cache bin directory
#
# Binaries go to ${SCSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scsync}/bin
# (outside the repository). An existing binary of the pinned version is reused;
# nothing is downloaded or built in that case. Only stdout carries the paths,
# progress goes to stderr, so `$(scripts/tools.sh minio)` is safe.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit "${1:-2}"
}

main() {
	[[ $# -eq 1 ]] || usage
	case $1 in
	minio) ensure_minio ;;
	golangci-lint | lint) ensure_golangci_lint ;;
	nfpm) ensure_nfpm ;;
	helm) ensure_helm ;;
	govulncheck) ensure_govulncheck ;;
	vulndb) ensure_vulndb ;;
	all)
		ensure_minio
		ensure_golangci_lint
		ensure_govulncheck
		ensure_vulndb
		;;
	path) echo "$SCSYNC_BIN" ;;
	-h | --help | help) usage 0 ;;
	*)
		err "unknown tool: $1"
		usage
		;;
	esac
}

main "$@"
