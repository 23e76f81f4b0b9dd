#!/usr/bin/env bash
# Builds promtool (Prometheus' rule checker and `promtool test rules`) from its Go module
# (tests/lab/promtool: github.com/prometheus/prometheus, pinned in go.mod/go.sum), for the
# alert tests of deploy/monitoring (cargo test -p herald-cli --test monitoring).
#
# The binary goes to a cache outside the repository:
#   ${HERALD_CACHE:-$HOME/.cache/herald}/promtool-<version>/bin/promtool
# A stamp next to it holds a hash of the module's files and of the build recipe; when the binary
# exists and the stamp matches, nothing is rebuilt. Progress goes to stderr; the binary's path is
# printed on stdout, so
#   promtool="$(tests/lab/build-promtool.sh)"
# works. Needs only Go and the Go module proxy. HERALD_BUILD_FORCE=1 rebuilds regardless.
set -euo pipefail

lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="${lab_dir}/promtool"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache_root="${HERALD_CACHE:-${home}/.cache/herald}"

log() { printf '[build-promtool] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= 1.24)"

version="$(awk '$1 == "github.com/prometheus/prometheus" { print $2 }
  $1 == "require" && $2 == "github.com/prometheus/prometheus" { print $3 }' "${module_dir}/go.mod" | head -n1)"
[[ -n "${version}" ]] || die "no github.com/prometheus/prometheus requirement in ${module_dir}/go.mod"
out_dir="${cache_root}/promtool-${version}"
bin="${out_dir}/bin/promtool"
stamp_file="${out_dir}/stamp"
build_flags=(-trimpath -mod=readonly -buildvcs=false)
ldflags="-s -w"

up_to_date() {
  [[ -x "${bin}" && -f "${stamp_file}" && "$(cat "${stamp_file}")" == "$1" ]]
}

mkdir -p "${out_dir}"
# shellcheck source=tests/lab/cache.sh
. "${lab_dir}/cache.sh"
want="$(cache_hash "${build_flags[*]} | ${ldflags}" "${module_dir}" go.mod go.sum tools.go)"
cache_begin "${want}" "${bin}"
log "building promtool ${version} with $(go env GOVERSION) (a cold build takes a few minutes)"
(
  cd "${module_dir}"
  go build "${build_flags[@]}" -ldflags="${ldflags}" -o "${stage}/promtool" \
    github.com/prometheus/prometheus/cmd/promtool
) || die "building promtool failed"
"${stage}/promtool" --version >&2 || die "promtool does not run"
mkdir -p "${out_dir}/bin"
rm -f "${stamp_file}"
mv -f "${stage}/promtool" "${bin}"
printf '%s\n' "${want}" >"${stamp_file}"
log "done in $((SECONDS - start))s: ${bin}"
printf '%s\n' "${bin}"
