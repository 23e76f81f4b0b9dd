#!/usr/bin/env bash
# The local lab: a whole Kubernetes cluster on one machine with Herald installed in it the way
# the README tells operators to install it.
#
#   tests/lab/lab.sh up     as root: builds what is missing (the Kubernetes binaries, Herald's
#                           image, the lab's images), starts the node lab's network, the control
#                           plane on the nodes' API address (control-plane.sh), the nodes
#                           (nodes.sh: kubelet, containerd, kube-proxy each), imports Herald's
#                           image into every node and installs Herald with the README's
#                           quickstart (install.sh). Without root: the control plane and the
#                           CRDs only (no node can run a pod), saying so.
#   tests/lab/lab.sh down   stop all of it and remove .lab/
#
# .lab/env gets KUBECONFIG=..., the control plane's settings and PIDs, what nodes.sh lists and
# HERALD_IMAGE (the installed image). Environment: HERALD_NODES (node count, default 3, 1..8),
# HERALD_KUBE_PROXY_MODE (iptables or nftables), HERALD_LAB_DIR.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
cp="${lab_src}/control-plane.sh"
nodes="${lab_src}/nodes.sh"
# The repository the lab's image is imported as: not the one the manifests name, so the install
# shows the override working.
image_name="herald.lab/herald"

log() { printf '[lab] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [[ "$(id -u)" == 0 ]]; }

step() { # a long step: its name and, when it ends, how long it took
  local what="$1" began=${SECONDS}
  shift
  log "${what}..."
  "$@"
  log "${what}: done in $((SECONDS - began))s"
}

set_env() { # KEY VALUE: replace KEY in .lab/env
  { grep -v -E "^$1=" "${lab}/env" || true; printf '%s=%q\n' "$1" "$2"; } >"${lab}/env.new"
  mv "${lab}/env.new" "${lab}/env"
}

up() {
  local began=${SECONDS}
  if is_root; then
    "${lab_src}/install-deps.sh" --node-lab
  else
    "${lab_src}/install-deps.sh"
  fi
  step "building the Kubernetes binaries (cached in ~/.cache/herald)" "${lab_src}/build-k8s.sh" >/dev/null
  if ! is_root; then
    "${cp}" up
    load_cp_env
    install_crds
    log "not root: no nodes (they are network namespaces), so Herald is not installed; the control plane is up: . ${lab}/env"
    return 0
  fi
  local built archive tag
  built="$(step "building Herald's image (make image)" env HERALD_IMAGE_TAG=content "${repo_root}/deploy/build-image.sh")"
  read -r archive tag <<<"${built}"
  # The nodes reach the API server on an address of the root namespace.
  "${nodes}" net
  HERALD_APISERVER_ADDRESS="$("${nodes}" api-address)" "${cp}" up
  load_cp_env
  step "starting the nodes (kubelet, containerd, kube-proxy)" "${nodes}" up
  "${nodes}" import "${archive}" "${image_name}:${tag}"
  set_env HERALD_IMAGE "${image_name}:${tag}"
  set_env HERALD_IMAGE_ARCHIVE "${archive}"
  # The cargo profile of its binaries, which the benchmarks record (a debug build is slower).
  set_env HERALD_IMAGE_PROFILE "${HERALD_IMAGE_PROFILE:-release}"
  step "installing Herald as the README says" "${lab_src}/install.sh" "${image_name}" "${tag}"
  log "lab is up in $((SECONDS - began))s: . ${lab}/env (KUBECONFIG=${KUBECONFIG})"
}

load_cp_env() {
  set -a
  # shellcheck disable=SC1090
  . <("${cp}" env)
  set +a
  export PATH="${HERALD_K8S_BIN}:${PATH}"
}

install_crds() {
  kubectl apply --server-side --force-conflicts -f "${repo_root}/deploy/crds/herald.yaml" >/dev/null
  kubectl wait --for=condition=Established --timeout=30s \
    crd/ipaddresspools.herald.dev crd/l2advertisements.herald.dev >/dev/null
}

down() {
  # As root the node lab goes first, whatever HERALD_NODES says (a no-op when absent): the
  # API server's graceful shutdown waits for its clients (kubelets, kube-proxy) to hang up.
  # Its address (hl-api0) last, once the API server is gone: without it, the API server's
  # connections never close.
  if is_root; then "${nodes}" down; fi
  "${cp}" down
  if is_root; then "${nodes}" down; fi
  rm -rf "${lab}/install"
  if [[ -d "${lab}" ]]; then rmdir --ignore-fail-on-non-empty "${lab}"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
