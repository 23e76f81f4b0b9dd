#!/usr/bin/env bash
# Builds MetalLB's controller and speaker from its published Go module (tests/lab/metallb:
# go.universe.tf/metallb, pinned in go.mod/go.sum), for the side-by-side benchmark
# (`make bench-versus`, tests/bench/versus.sh). Nothing of MetalLB is in this repository: the
# module only requires it. Its `main` packages (controller/, speaker/) cannot be imported by
# another module, so they are declared tools of it and built by package path.
#
# The binaries, static (CGO_ENABLED=0), go to a cache outside the repository:
#   ${HERALD_CACHE:-$HOME/.cache/herald}/metallb-<version>/bin/metallb-{controller,speaker}
# named so that their processes (comm, 15 bytes) are told apart from Herald's. A stamp next to
# them holds a hash of the module's files and of the build recipe; when the binaries exist and
# the stamp matches, nothing is rebuilt. Progress goes to stderr; the bin directory is printed on
# stdout, so
#   bin="$(tests/lab/build-metallb.sh)"
# works. `tests/lab/build-metallb.sh --version` prints the pinned version; `--module-dir` the
# module's directory in the Go module cache (its config/manifests/ are what the lab installs).
# Needs only Go and the Go module proxy. HERALD_BUILD_FORCE=1 rebuilds regardless.
#
# Why this version: v0.16.2 (the newest published) requires github.com/metallb/frr-k8s v0.0.27,
# which the module proxy does not serve ("This module version is not available"), and does not
# compile against v0.0.26 (internal/bgp/frrk8s/frrk8s.go: undefined
# frrv1beta1.AsPathPrependPrefixes). v0.16.1 builds with what it requires (frr-k8s v0.0.25).
set -euo pipefail

lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="${lab_dir}/metallb"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache_root="${HERALD_CACHE:-${home}/.cache/herald}"

log() { printf '[build-metallb] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= 1.26)"

# The version go.mod pins (read without the network).
version="$(awk '$1 == "go.universe.tf/metallb" { print $2 }
  $1 == "require" && $2 == "go.universe.tf/metallb" { print $3 }' "${module_dir}/go.mod" | head -n1)"
[[ -n "${version}" ]] || die "no go.universe.tf/metallb requirement in ${module_dir}/go.mod"

case "${1:-}" in
  --version) printf '%s\n' "${version}"; exit 0 ;;
  --module-dir)
    (cd "${module_dir}" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go mod download go.universe.tf/metallb >&2)
    (cd "${module_dir}" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' go.universe.tf/metallb)
    exit 0
    ;;
  "") ;;
  *) die "usage: $0 [--version|--module-dir]" ;;
esac

out_dir="${cache_root}/metallb-${version}"
bin_dir="${out_dir}/bin"
stamp_file="${out_dir}/stamp"
commands=(controller speaker)
# The module's internal/version already says its release.
ldflags="-s -w"
build_flags=(-trimpath -mod=readonly -buildvcs=false)

up_to_date() {
  local c
  [[ -f "${stamp_file}" && "$(cat "${stamp_file}")" == "$1" ]] || return 1
  for c in "${commands[@]}"; do [[ -x "${bin_dir}/metallb-${c}" ]] || return 1; done
}

mkdir -p "${out_dir}"
# shellcheck source=tests/lab/cache.sh
. "${lab_dir}/cache.sh"
want_hash="$(cache_hash "${build_flags[*]} | ${ldflags}" "${module_dir}" go.mod go.sum)"

cache_begin "${want_hash}" "${bin_dir}"
for c in "${commands[@]}"; do
  cache_go_build "MetalLB's ${c} ${version}" "cold, both: about 3 minutes on 2 cores" \
    "${module_dir}" "${stage}/metallb-${c}" "go.universe.tf/metallb/${c}" "${ldflags}"
done

# Smoke check before publishing: both parse their flags and exit (`-h` exits 0 with Go's flag
# package only for an explicit -help; any exit without a crash is enough here).
for c in "${commands[@]}"; do
  out="$("${stage}/metallb-${c}" -help 2>&1 || true)"
  grep -q -- '-log-level' <<<"${out}" || die "metallb-${c} does not run: ${out:0:300}"
  if ldd "${stage}/metallb-${c}" >/dev/null 2>&1; then die "metallb-${c} is not static"; fi
done

mkdir -p "${bin_dir}"
rm -f "${stamp_file}"
for c in "${commands[@]}"; do mv -f "${stage}/metallb-${c}" "${bin_dir}/metallb-${c}"; done
printf '%s\n' "${want_hash}" >"${stamp_file}"
log "done in $((SECONDS - start))s: ${bin_dir} ($(du -sh "${bin_dir}" | cut -f1))"
printf '%s\n' "${bin_dir}"
