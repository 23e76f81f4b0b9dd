#!/usr/bin/env bash
# Builds helm from the published Go module (tests/lab/helm, helm.sh/helm/v3) for the chart
# test (tests/tests/packaging.rs): `helm template` and `helm lint` of deploy/helm/herald.
#
# The binary goes to a cache outside the repository:
#   ${HERALD_CACHE:-$HOME/.cache/herald}/helm-<version>/bin/helm
# A stamp next to it holds a hash of the module's go.mod/go.sum and of the build recipe; when
# the binary exists and the stamp matches, nothing is rebuilt. Progress goes to stderr; the
# bin directory is printed on stdout, so
#   bin="$(tests/lab/build-helm.sh)"
# works. Needs only Go and the Go module proxy. Set HERALD_BUILD_FORCE=1 to rebuild
# regardless of the stamp.
set -euo pipefail

lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="${lab_dir}/helm"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache_root="${HERALD_CACHE:-${home}/.cache/herald}"

log() { printf '[build-helm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= 1.26, helm's go.mod asks for it)"

# The version is the one go.mod pins (read without the network: the module's go.mod says it).
helm_version="$(sed -n 's/^[[:space:]]*helm\.sh\/helm\/v3 \(v[^ ]*\).*/\1/p' "${module_dir}/go.mod")"
[[ -n "${helm_version}" ]] || die "no helm.sh/helm/v3 requirement in ${module_dir}/go.mod"
client_go="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "${module_dir}/go.mod")"
[[ -n "${client_go}" ]] || die "no k8s.io/client-go requirement in ${module_dir}/go.mod"

out_dir="${cache_root}/helm-${helm_version}"
bin_dir="${out_dir}/bin"
stamp_file="${out_dir}/stamp"

# Stamped the way helm's Makefile does it: `helm version` reports the release, and `helm
# template`/`helm lint` assume the Kubernetes version of the client-go helm was built with
# (unstamped, they would assume 1.20 and refuse the chart's kubeVersion).
pkg=helm.sh/helm/v3
ldflags="-s -w -X ${pkg}/internal/version.version=${helm_version}"
ldflags+=" -X ${pkg}/internal/version.gitTreeState=clean"
for p in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X ${pkg}/${p}.k8sVersionMajor=1 -X ${pkg}/${p}.k8sVersionMinor=${client_go}"
done
# Static, reproducible; go.mod/go.sum are committed and tidy, so the build must not rewrite
# them (-mod=readonly catches drift).
build_flags=(-trimpath -mod=readonly -buildvcs=false)

up_to_date() {
  [[ -f "${stamp_file}" && "$(cat "${stamp_file}")" == "$1" && -x "${bin_dir}/helm" ]]
}

mkdir -p "${out_dir}"
# shellcheck source=tests/lab/cache.sh
. "${lab_dir}/cache.sh"
want_hash="$(cache_hash "${build_flags[*]} | ${ldflags}" "${module_dir}" go.mod go.sum)"

cache_begin "${want_hash}" "${bin_dir}"
log "building helm ${helm_version} with $(go env GOVERSION) (cold: about 3 CPU minutes; 9 minutes measured on 2 busy cores)"
(
  cd "${module_dir}"
  go build "${build_flags[@]}" -ldflags="${ldflags}" -o "${stage}/helm" helm.sh/helm/v3/cmd/helm
) || die "building helm failed"

# Smoke check before publishing.
version="$("${stage}/helm" version --template '{{.Version}}')" || die "helm does not run"
[[ "${version}" == "${helm_version}" ]] || die "helm reports ${version}, expected ${helm_version}"

mkdir -p "${bin_dir}"
rm -f "${stamp_file}"
mv -f "${stage}/helm" "${bin_dir}/helm"
printf '%s\n' "${want_hash}" >"${stamp_file}"
log "done in $((SECONDS - start))s: ${bin_dir}/helm ($(du -h "${bin_dir}/helm" | cut -f1))"
printf '%s\n' "${bin_dir}"
