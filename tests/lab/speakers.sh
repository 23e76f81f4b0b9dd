#!/usr/bin/env bash
# The speakers of the lab: the pods of the herald-speaker DaemonSet that the README's install
# made, one per node (or, with HERALD_LAB_SYSTEM=metallb, those of MetalLB's speaker DaemonSet
# that tests/lab/metallb.sh installed). Faults as a node would see them (root; the lab must be up).
#
#   tests/lab/speakers.sh kill    [I...]   SIGKILL the speaker process of node I (a crash; the
#                                          kubelet restarts the container, with its back-off)
#   tests/lab/speakers.sh stop    [I...]   SIGTERM it (graceful handover; the kubelet restarts it)
#   tests/lab/speakers.sh delete  [I...]   delete node I's speaker pod (graceful; the DaemonSet
#                                          makes a new one)
#   tests/lab/speakers.sh start   [I...]   make sure node I's speaker is running and ready: a pod
#                                          whose container is not running (stopped, or waiting
#                                          out a crash back-off) is replaced
#   tests/lab/speakers.sh pid     I        print the PID of node I's speaker process
#   tests/lab/speakers.sh pod     I        print the name of node I's speaker pod
#
# I defaults to every node.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
case "${HERALD_LAB_SYSTEM:-herald}" in
  herald)
    namespace=herald-system
    selector=app.kubernetes.io/name=herald,app.kubernetes.io/component=speaker
    comm=herald-speaker
    ;;
  metallb)
    namespace=metallb-system
    selector=app=metallb,component=speaker
    comm=metallb-speaker
    ;;
  *) printf '[speakers] error: HERALD_LAB_SYSTEM must be herald or metallb\n' >&2; exit 2 ;;
esac

log() { printf '[speakers] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=tests/lab/node-lab-env.sh
. "${lab_src}/node-lab-env.sh"
load_node_lab

node_name() { printf 'hl-node%s' "$1"; }

# The speaker process in node I's network namespace (hostNetwork), if any.
speaker_pid() {
  local p
  for p in $(ip netns pids "$(node_name "$1")" 2>/dev/null); do
    [[ "$(cat "/proc/${p}/comm" 2>/dev/null)" == "${comm}" ]] && { printf '%s\n' "${p}"; return 0; }
  done
  return 1
}

pod_of() { # the speaker pod on node I that is not being deleted
  kubectl -n "${namespace}" get pods -l "${selector}" \
    --field-selector "spec.nodeName=$(node_name "$1")" \
    -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}' |
    awk 'NF == 1 {print $1; exit}'
}

signal() { # SIG I
  local pid
  pid="$(speaker_pid "$2")" || { log "no speaker process on $(node_name "$2")"; return 0; }
  kill "-$1" "${pid}"
  # Until it is gone (the shim reaps it).
  local t
  for ((t = 0; t < 250; t++)); do
    [[ -e "/proc/${pid}" ]] || return 0
    grep -q ') Z ' "/proc/${pid}/stat" 2>/dev/null && return 0
    sleep 0.02
  done
  die "the speaker of $(node_name "$2") (pid ${pid}) outlived SIG$1 by 5s"
}

ready() { # I: the speaker pod on node I is Ready
  local pod="$1"
  [[ -n "${pod}" ]] &&
    [[ "$(kubectl -n "${namespace}" get pod "${pod}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

start() { # I
  local i="$1" pod t
  for ((t = 0; t < 600; t++)); do
    pod="$(pod_of "${i}")"
    if [[ -n "${pod}" ]] && speaker_pid "${i}" >/dev/null && ready "${pod}"; then return 0; fi
    if [[ -n "${pod}" ]] && ((t % 20 == 10)) && ! speaker_pid "${i}" >/dev/null; then
      # Not running for a second: a crash back-off; a new pod starts at once.
      kubectl -n "${namespace}" delete pod "${pod}" --wait=false >/dev/null 2>&1 || true
    fi
    sleep 0.1
  done
  die "the speaker of $(node_name "${i}") is not ready after 60s"
}

delete() { # I
  local pod
  pod="$(pod_of "$1")"
  [[ -n "${pod}" ]] || { log "no speaker pod on $(node_name "$1")"; return 0; }
  kubectl -n "${namespace}" delete pod "${pod}" --wait=true --timeout=60s >/dev/null
}

cmd="${1:-}"
shift || true
nodes=("$@")
((${#nodes[@]})) || mapfile -t nodes < <(seq 1 "${HERALD_NODES}")
case "${cmd}" in
  kill) for i in "${nodes[@]}"; do signal KILL "${i}"; done ;;
  stop) for i in "${nodes[@]}"; do signal TERM "${i}"; done ;;
  delete) for i in "${nodes[@]}"; do delete "${i}"; done ;;
  start) for i in "${nodes[@]}"; do start "${i}"; done ;;
  pid) speaker_pid "${nodes[0]}" || die "no speaker process on $(node_name "${nodes[0]}")" ;;
  pod) pod_of "${nodes[0]}" ;;
  *) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
