#!/usr/bin/env bash
# Builds the local lab's Kubernetes components from the published Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
# and kubectl (tests/lab/k8s, k8s.io/kubernetes v1.34.4) and etcd
# (tests/lab/etcd, go.etcd.io/etcd/server/v3).
#
# The binaries go to a cache outside the repository:
#   ${HERALD_CACHE:-$HOME/.cache/herald}/k8s-v1.34.4/bin/
# A stamp next to them holds a hash of the modules' go.mod/go.sum/main files and
# of the build recipe; when the binaries exist and the stamp matches, nothing is
# rebuilt. Progress goes to stderr; the bin directory is printed on stdout, so
#   bin="$(tests/lab/build-k8s.sh)"
# works. Needs only Go and the Go module proxy. Set HERALD_BUILD_FORCE=1 to
# rebuild regardless of the stamp.
set -euo pipefail

K8S_VERSION="v1.34.4"

lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache_root="${HERALD_CACHE:-${home}/.cache/herald}"
out_dir="${cache_root}/k8s-${K8S_VERSION}"
bin_dir="${out_dir}/bin"
stamp_file="${out_dir}/stamp"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd)
k8s_commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

log() { printf '[build-k8s] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= 1.24)"

# Version stamping the way kubernetes' hack/lib/version.sh does it, so that
# /version and the User-Agent report the real release instead of v0.0.0-master.
k8s_minor="${K8S_VERSION#v1.}"
k8s_minor="${k8s_minor%%.*}"
k8s_x=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_x+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
  k8s_x+=" -X ${pkg}.gitMajor=1"
  k8s_x+=" -X ${pkg}.gitMinor=${k8s_minor}"
  k8s_x+=" -X ${pkg}.gitTreeState=clean"
  k8s_x+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done
k8s_ldflags="-s -w${k8s_x}"
etcd_ldflags="-s -w"
# Static, reproducible binaries; go.mod/go.sum are committed and tidy, so the
# build must not rewrite them (-mod=readonly catches drift).
build_flags=(-trimpath -mod=readonly -buildvcs=false)

# Everything that decides what gets built goes into the stamp.
inputs=(
  k8s/go.mod k8s/go.sum
  etcd/go.mod etcd/go.sum etcd/main.go
)
for c in "${k8s_commands[@]}"; do inputs+=("k8s/cmd/${c}/main.go"); done

up_to_date() {
  local want="$1" b
  [[ -f "${stamp_file}" ]] || return 1
  [[ "$(cat "${stamp_file}")" == "${want}" ]] || return 1
  for b in "${binaries[@]}"; do
    [[ -x "${bin_dir}/${b}" ]] || return 1
  done
}

mkdir -p "${out_dir}"
# shellcheck source=tests/lab/cache.sh
. "${lab_dir}/cache.sh"
want_hash="$(cache_hash "${build_flags[*]} | ${k8s_ldflags} | ${etcd_ldflags}" "${lab_dir}" "${inputs[@]}")"

cache_begin "${want_hash}" "${bin_dir}"
# One command at a time, so the log shows which step runs and how long each took
# (the Go build cache shares the common packages between them).
for c in "${k8s_commands[@]}"; do
  cache_go_build "${c} ${K8S_VERSION}" "cold, all six: about 8 minutes on 2 cores" \
    "${lab_dir}/k8s" "${stage}/${c}" "./cmd/${c}" "${k8s_ldflags}"
done

log "building etcd ($(cd "${lab_dir}/etcd" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3))"
(
  cd "${lab_dir}/etcd"
  go build "${build_flags[@]}" -ldflags="${etcd_ldflags}" -o "${stage}/etcd" .
) || die "building etcd failed"
log "etcd built after $((SECONDS - start))s"

# Smoke check before publishing.
for c in "${k8s_commands[@]}"; do
  [[ "${c}" == kubectl ]] && continue
  "${stage}/${c}" --version >&2 || die "${c} does not run"
done
"${stage}/kubectl" version --client >&2 || die "kubectl does not run"
"${stage}/etcd" --version >&2 || die "etcd does not run"

mkdir -p "${bin_dir}"
rm -f "${stamp_file}"
for b in "${binaries[@]}"; do
  mv -f "${stage}/${b}" "${bin_dir}/${b}"
done
printf '%s\n' "${want_hash}" >"${stamp_file}"
log "done in $((SECONDS - start))s: ${bin_dir} ($(du -sh "${bin_dir}" | cut -f1))"
printf '%s\n' "${bin_dir}"
