#!/usr/bin/env bash
# Which load balancer runs in the lab: Herald (installed by `make lab-up`) or MetalLB
# (tests/lab/metallb.sh), never both at once. Root; the lab must be up.
#
#   tests/lab/systems.sh use herald|metallb   make it the only one running: the other one
#                                             paused, this one resumed (MetalLB installed when
#                                             it is not), waiting until a speaker runs on every
#                                             node and its controller is ready
#   tests/lab/systems.sh pause herald|metallb its controller Deployment scaled to 0 (the replica
#                                             count kept in an annotation) and its speaker
#                                             DaemonSet given a nodeSelector no node matches;
#                                             waits until none of its pods is left
#   tests/lab/systems.sh resume herald|metallb undoes pause and waits for the rollouts
#   tests/lab/systems.sh running              prints the systems that have pods
#
# Pausing keeps everything else (CRDs, RBAC, Secrets, configuration), so a resume is quick and
# the paused system's objects stay as they were.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
paused_label=herald.dev/lab-paused
replicas_annotation=herald.dev/lab-replicas

log() { printf '[systems] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# shellcheck source=tests/lab/node-lab-env.sh
. "${lab_src}/node-lab-env.sh"
load_node_lab

# namespace, controller Deployment, speaker DaemonSet of a system
objects() {
  case "$1" in
    herald) echo "herald-system herald-controller herald-speaker" ;;
    metallb) echo "metallb-system controller speaker" ;;
    *) usage ;;
  esac
}

installed() { # system
  local ns deploy ds
  read -r ns deploy ds <<<"$(objects "$1")"
  kubectl -n "${ns}" get "daemonset/${ds}" >/dev/null 2>&1
}

pods_of() { # system: how many pods it has
  local ns deploy ds
  read -r ns deploy ds <<<"$(objects "$1")"
  kubectl -n "${ns}" get pods -o name 2>/dev/null | wc -l
}

pause() {
  local system="$1" ns deploy ds
  read -r ns deploy ds <<<"$(objects "${system}")"
  installed "${system}" || return 0
  local replicas
  replicas="$(kubectl -n "${ns}" get "deployment/${deploy}" -o jsonpath='{.spec.replicas}')"
  if [[ "${replicas}" != 0 ]]; then
    kubectl -n "${ns}" annotate --overwrite "deployment/${deploy}" "${replicas_annotation}=${replicas}" >/dev/null
    kubectl -n "${ns}" scale "deployment/${deploy}" --replicas=0 >/dev/null
  fi
  kubectl -n "${ns}" patch "daemonset/${ds}" --type=merge \
    -p "{\"spec\":{\"template\":{\"spec\":{\"nodeSelector\":{\"${paused_label}\":\"true\"}}}}}" >/dev/null
  local t
  for ((t = 0; t < 240; t++)); do
    (($(pods_of "${system}") == 0)) && { log "${system} paused: no pod left"; return 0; }
    sleep 0.5
  done
  die "${system}: pods still there 120s after pausing: $(kubectl -n "${ns}" get pods -o name | tr '\n' ' ')"
}

resume() {
  local system="$1" ns deploy ds
  read -r ns deploy ds <<<"$(objects "${system}")"
  if ! installed "${system}"; then
    [[ "${system}" == metallb ]] || die "Herald is not installed (make lab-up installs it)"
    "${lab_src}/metallb.sh" install
  fi
  # The JSON patch fails when the key is absent: nothing to undo then.
  kubectl -n "${ns}" patch "daemonset/${ds}" --type=json \
    -p "[{\"op\":\"remove\",\"path\":\"/spec/template/spec/nodeSelector/${paused_label/\//~1}\"}]" >/dev/null 2>&1 || true
  local replicas
  replicas="$(kubectl -n "${ns}" get "deployment/${deploy}" -o jsonpath="{.metadata.annotations.${replicas_annotation//./\\.}}")"
  if [[ -n "${replicas}" ]]; then
    kubectl -n "${ns}" scale "deployment/${deploy}" --replicas="${replicas}" >/dev/null
    kubectl -n "${ns}" annotate "deployment/${deploy}" "${replicas_annotation}-" >/dev/null
  fi
  kubectl -n "${ns}" rollout status "daemonset/${ds}" --timeout=5m >&2
  kubectl -n "${ns}" rollout status "deployment/${deploy}" --timeout=5m >&2
  log "${system} runs"
}

other() { if [[ "$1" == herald ]]; then echo metallb; else echo herald; fi; }

case "${1:-}" in
  use)
    (($# == 2)) || usage
    objects "$2" >/dev/null
    pause "$(other "$2")"
    resume "$2"
    ;;
  pause) (($# == 2)) || usage; objects "$2" >/dev/null; pause "$2" ;;
  resume) (($# == 2)) || usage; objects "$2" >/dev/null; resume "$2" ;;
  running)
    for s in herald metallb; do
      if installed "${s}" && (($(pods_of "${s}") > 0)); then echo "${s}"; fi
    done
    ;;
  *) usage ;;
esac
