#!/usr/bin/env bash
# scripts/package.sh — build and check the installable packages of sc-local.
#
#   scripts/package.sh deb          dist/scsync-local_<version>_amd64.deb (nfpm)
#   scripts/package.sh msi          dist/scsync-local-<version>-x64.msi (wixl)
#   scripts/package.sh check-units  systemd-analyze security of deployments/systemd/*.service (≤ 2.5)
#   scripts/package.sh check-deb    the .deb's contents, then a real `dpkg -i` in a throw-away
#                                   overlay of / (own mount and pid namespaces; needs root),
#                                   sc-local started as the scsync user, purge
#   scripts/package.sh check-msi    the MSI's tables (msiinfo): files, service, custom actions
#   scripts/package.sh all          all of the above (make package)
#
# Tools are installed by the script when missing: nfpm (pinned, go install
# through scripts/tools.sh), wixl and msitools (apt). VERSION=1.2.3 sets the
# release version (default 0.1.0 plus the commit count and hash).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
dist="$root/dist"
cd "$root"

# ------------------------------------------------------------------ version ---

base=${VERSION:-0.1.0}
count=$(git rev-list --count HEAD 2>/dev/null || echo 0)
sha=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n "${VERSION:-}" ]]; then
	deb_version=$VERSION
else
	deb_version="$base~git$count.$sha" # sorts before the release $base
fi
# An MSI version is three numbers, the third ≤ 65535.
IFS=. read -r v1 v2 _ <<<"$base"
msi_version="$v1.$v2.$((count % 65535))"
commit=$(git rev-parse HEAD 2>/dev/null || true)
ldflags="-s -w -X github.com/scsync/scsync/shared/buildinfo.Version=$deb_version -X github.com/scsync/scsync/shared/buildinfo.Commit=$commit"

as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

need_apt() { # command package
	command -v "$1" >/dev/null && return 0
	log "installing $2 (for $1)"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null ||
		{ as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}

build() { # goos out
	log "building sc-local $deb_version for $1/amd64"
	(cd local-server && CGO_ENABLED=0 GOOS=$1 GOARCH=amd64 go build -trimpath -ldflags "$ldflags" -o "$2" ./cmd/sc-local)
}

# ---------------------------------------------------------------------- deb ---

deb_path() { echo "$dist/scsync-local_${deb_version}_amd64.deb"; }

cmd_deb() {
	local nfpm stage
	nfpm=$(ensure_nfpm)
	stage="$dist/stage/linux"
	rm -rf "$stage" && mkdir -p "$stage"
	build linux "$stage/sc-local"
	rm -f "$dist"/scsync-local_*.deb
	# nfpm expands variables in a few fields only: fill them in here.
	sed -e "s|\${SCSYNC_STAGE}|$stage|g" -e "s|\${SCSYNC_DEB_VERSION}|$deb_version|g" \
		deployments/debian/nfpm.yaml >"$stage/nfpm.yaml"
	"$nfpm" package --config "$stage/nfpm.yaml" --packager deb --target "$(deb_path)" >/dev/null
	info "built $(deb_path)"
}

# ---------------------------------------------------------------------- msi ---

msi_path() { echo "$dist/scsync-local-$deb_version-x64.msi"; }

cmd_msi() {
	local stage
	need_apt wixl wixl
	stage="$dist/stage/windows"
	rm -rf "$stage" && mkdir -p "$stage"
	build windows "$stage/sc-local.exe"
	cp deployments/sc-local.example.yaml deployments/windows/sc-local.wxs "$stage/"
	rm -f "$dist"/scsync-local-*.msi
	# wixl wants sources relative to where it runs.
	(cd "$stage" && wixl -a x64 -D Version="$msi_version" -D Exe=sc-local.exe -D Config=sc-local.example.yaml \
		-o "$(msi_path)" sc-local.wxs 2> >(grep -v -e '^$' -e 'GLib-GObject-WARNING' >&2))
	info "built $(msi_path) (ProductVersion $msi_version)"
}

# ------------------------------------------------------------------- checks ---

cmd_check_units() {
	local u out score failed=0
	if ! command -v systemd-analyze >/dev/null; then
		need_apt systemd-analyze systemd
	fi
	for u in deployments/systemd/*.service; do
		out=$(systemd-analyze security --offline=true "$u" 2>&1) || true
		score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
		if [[ -z "$score" ]]; then
			err "$u: systemd-analyze gave no score:"
			printf '%s\n' "$out" | tail -n 5 >&2
			failed=1
		elif awk -v s="$score" 'BEGIN { exit !(s > 2.5) }'; then
			err "$u: exposure $score > 2.5; what is open:"
			grep -E '^✗' <<<"$out" >&2 || true
			failed=1
		else
			printf '  %-40s exposure %s (≤ 2.5)\n' "$u" "$score"
		fi
	done
	return "$failed"
}

check() { # description command...
	local what=$1
	shift
	if "$@"; then
		printf '  ok    %s\n' "$what"
	else
		printf '  FAIL  %s\n' "$what"
		CHECK_FAILED=1
	fi
}

cmd_check_deb() {
	local deb tmp
	deb=$(deb_path)
	[[ -f "$deb" ]] || die "$deb not found: run scripts/package.sh deb first"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	CHECK_FAILED=0
	log "checking $deb"
	dpkg-deb --contents "$deb" >"$tmp/contents"
	dpkg-deb --info "$deb" >"$tmp/info"
	check "binary /usr/bin/sc-local 0755" grep -qE '^-rwxr-xr-x .* \./usr/bin/sc-local$' "$tmp/contents"
	check "unit /lib/systemd/system/sc-local.service" grep -q '\./lib/systemd/system/sc-local.service$' "$tmp/contents"
	check "config /etc/scsync/sc-local.yaml is a conffile" sh -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx /etc/scsync/sc-local.yaml"
	check "maintainer scripts preinst postinst prerm postrm" sh -c "for s in preinst postinst prerm postrm; do grep -q \" \$s\" '$tmp/info' || exit 1; done"
	check "packaged binary answers --version with $deb_version" sh -c \
		"dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/bin/sc-local >'$tmp/sc-local' && chmod +x '$tmp/sc-local' && '$tmp/sc-local' --version | grep -qF '$deb_version'"
	if [[ $(id -u) -ne 0 ]]; then
		# CI runs as root; a developer without root still gets the checks above.
		[[ "${CI:-}" == true ]] && die "the install test needs root (CI=true)"
		warn "not root: skipping the install test (dpkg -i in a throw-away overlay needs root)"
	else
		need_apt python3 python3-minimal # the stand-in cloud of the install test
		need_apt curl curl
		install_test "$deb"
	fi
	((CHECK_FAILED == 0)) || die "the .deb failed its checks"
}

# install_test runs `dpkg -i` for real, in a copy-on-write overlay of / inside
# private mount and pid namespaces: users, /etc, /usr and dpkg's database
# change only in the overlay, which is thrown away; every process started in
# there dies with the namespace. The network is the host's: sc-local listens
# on a free loopback port and its links point at closed ports (offline).
install_test() {
	local deb=$1 ov rc=0
	ov=$(mktemp -d /tmp/scsync-debtest.XXXXXX)
	mkdir -p "$ov/upper" "$ov/work" "$ov/merged"
	cp "$deb" "$ov/upper.deb"
	log "install test: dpkg -i in a throw-away overlay of / ($ov)"
	unshare --mount --pid --fork --kill-child -- bash -s "$ov" <"$here/package-install-test.sh" || rc=$?
	rm -rf "$ov"
	if ((rc != 0)); then
		printf '  FAIL  install test (exit %s)\n' "$rc"
		CHECK_FAILED=1
	fi
}

cmd_check_msi() {
	local msi tmp
	msi=$(msi_path)
	[[ -f "$msi" ]] || die "$msi not found: run scripts/package.sh msi first"
	need_apt msiinfo msitools
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	CHECK_FAILED=0
	log "checking $msi"
	msiinfo export "$msi" File >"$tmp/file"
	msiinfo export "$msi" ServiceInstall >"$tmp/svc"
	msiinfo export "$msi" ServiceControl >"$tmp/svcctl"
	msiinfo export "$msi" CustomAction >"$tmp/ca"
	msiinfo export "$msi" InstallExecuteSequence >"$tmp/seq"
	msiinfo export "$msi" Property | tr -d "\r" >"$tmp/prop"
	msiinfo export "$msi" Directory >"$tmp/dir"
	check "file sc-local.exe" grep -qP '^ScLocalExe\tScLocalExe\tsc-local.exe\t' "$tmp/file"
	check "file sc-local.example.yaml" grep -qP '\tsc-local.example.yaml\t' "$tmp/file"
	check "installs under Program Files (64-bit)" grep -qP '^INSTALLDIR\tProgramFiles64Folder\tscsync' "$tmp/dir"
	check "service scsync-local, automatic, LocalSystem, runs 'service run' with the ProgramData config" \
		grep -qP '^ScLocalService\tscsync-local\t[^\t]*\t16\t2\t1\t\t\tLocalSystem\t\t-config "\[CommonAppDataFolder\]scsync\\sc-local.yaml" service run\t' "$tmp/svc"
	check "service stopped on upgrade and removed on uninstall" grep -qP '^ScLocalServiceControl\tscsync-local\t' "$tmp/svcctl"
	check "custom action 'service setup' (config, access list, firewall rule)" grep -qP '^ScLocalSetup\t\d+\tScLocalExe\tservice setup' "$tmp/ca"
	check "custom action 'service cleanup' (firewall rule) on uninstall" grep -qP '^ScLocalCleanup\t\d+\tScLocalExe\tservice cleanup' "$tmp/ca"
	check "setup runs after InstallServices, before InstallFinalize" awk -F'\t' '
		{ s[$1] = $3 } END { exit !(s["ScLocalSetup"] > s["InstallServices"] && s["ScLocalSetup"] < s["InstallFinalize"]) }' "$tmp/seq"
	check "cleanup only on uninstall, not when an upgrade removes the old version" \
		grep -qP '^ScLocalCleanup\tREMOVE="ALL" AND NOT UPGRADINGPRODUCTCODE\t' "$tmp/seq"
	check "cleanup runs after StopServices, before RemoveFiles" awk -F'\t' '
		{ s[$1] = $3 } END { exit !(s["ScLocalCleanup"] > s["StopServices"] && s["ScLocalCleanup"] < s["RemoveFiles"]) }' "$tmp/seq"
	check "ProductVersion $msi_version" grep -qP "^ProductVersion\t$msi_version\$" "$tmp/prop"
	check "per-machine install (ALLUSERS=1)" grep -qP '^ALLUSERS\t1$' "$tmp/prop"
	((CHECK_FAILED == 0)) || die "the MSI failed its checks"
}

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

case ${1:-} in
deb) cmd_deb ;;
msi) cmd_msi ;;
check-units) cmd_check_units ;;
check-deb) cmd_check_deb ;;
check-msi) cmd_check_msi ;;
all)
	mkdir -p "$dist"
	cmd_check_units
	cmd_deb
	cmd_check_deb
	cmd_msi
	cmd_check_msi
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
