#!/usr/bin/env bash
# herald-speaker in the node lab's namespaces (root; the node lab must be up).
#
#   tests/lab/speakers.sh start [I...]   start the speaker of node I (default: every node)
#   tests/lab/speakers.sh stop  [I...]   SIGTERM (graceful handover)
#   tests/lab/speakers.sh kill  [I...]   SIGKILL (a crash)
#   tests/lab/speakers.sh pid   I        print the speaker PID of node I
#
# Speakers log to .lab/logs/speaker-hl-node<I>.log; their PIDs are in .lab/pids/ and .lab/env
# (HERALD_SPEAKER<I>_PID). Environment: HERALD_PROFILE (cargo profile, default release),
# HERALD_HOLD_DOWN_MS (default 3000), HERALD_SPEAKER_ARGS (extra flags).
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
profile="${HERALD_PROFILE:-release}"
dir=release
[[ "${profile}" == dev ]] && dir=debug
bin="${repo_root}/target/${dir}/herald-speaker"

log() { printf '[speakers] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f "${lab}/env" ]] || die "the lab is not up (no ${lab}/env)"
set -a
# shellcheck disable=SC1091
. "${lab}/env"
set +a
[[ -n "${HERALD_CLIENT_NS:-}" ]] || die "the node lab is not up (run tests/lab/lab.sh up as root)"

pid_file() { printf '%s/pids/speaker-hl-node%s.pid' "${lab}" "$1"; }
alive() { [[ -r "/proc/$1/stat" ]] && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }
running() { [[ -f "$(pid_file "$1")" ]] && alive "$(cat "$(pid_file "$1")")"; }

write_env() {
  local i
  {
    grep -v -E '^HERALD_SPEAKER[0-9]+_PID=' "${lab}/env" || true
    for i in $(seq 1 "${HERALD_NODES}"); do
      running "${i}" && printf 'HERALD_SPEAKER%s_PID=%s\n' "${i}" "$(cat "$(pid_file "${i}")")"
    done
  } >"${lab}/env.new"
  mv "${lab}/env.new" "${lab}/env"
}

start() {
  local i="$1" ns_var kc_var
  if running "${i}"; then return 0; fi
  [[ -x "${bin}" ]] || die "${bin} is not built (cargo build --profile ${profile} -p herald-speaker)"
  ns_var="HERALD_NODE${i}_NS"
  kc_var="HERALD_NODE${i}_KUBECONFIG"
  # The ServiceAccount's kubeconfig (lab.sh writes it), else the node's.
  local kc="${lab}/nodes/hl-node${i}/speaker.kubeconfig"
  [[ -f "${kc}" ]] || kc="${!kc_var}"
  # shellcheck disable=SC2086 # HERALD_SPEAKER_ARGS is a list of flags
  KUBECONFIG="${kc}" RUST_LOG="${RUST_LOG:-info}" setsid ip netns exec "${!ns_var}" \
    "${bin}" --node-name "hl-node${i}" --metrics-addr 127.0.0.1:7473 \
    --hold-down-ms "${HERALD_HOLD_DOWN_MS:-3000}" ${HERALD_SPEAKER_ARGS:-} \
    >>"${lab}/logs/speaker-hl-node${i}.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "${i}")"
  log "started the speaker of hl-node${i} (pid $!)"
}

signal() {
  local sig="$1" i="$2" pid
  running "${i}" || return 0
  pid="$(cat "$(pid_file "${i}")")"
  kill "-${sig}" "${pid}"
  # Until it is gone or a zombie (the reaper may take its time).
  for _ in $(seq 1 100); do
    alive "${pid}" || break
    sleep 0.02
  done
  rm -f "$(pid_file "${i}")"
}

cmd="${1:-}"
shift || true
nodes=("$@")
((${#nodes[@]})) || mapfile -t nodes < <(seq 1 "${HERALD_NODES}")
case "${cmd}" in
  start) for i in "${nodes[@]}"; do start "${i}"; done ;;
  stop) for i in "${nodes[@]}"; do signal TERM "${i}"; done ;;
  kill) for i in "${nodes[@]}"; do signal KILL "${i}"; done ;;
  pid) cat "$(pid_file "${nodes[0]}")"; exit 0 ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
write_env
