#!/usr/bin/env bash
# Runs a command against the local lab's control plane:
#
#   tests/lab/with-control-plane.sh CMD [ARGS...]
#
# Brings the control plane up unless it is already up, exports KUBECONFIG (the
# lab's admin kubeconfig) and the settings in .lab/env (HERALD_APISERVER_URL,
# ...), runs CMD, and tears the control plane down again only if this script
# started it. Exits with CMD's exit status.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cp="${lab_src}/control-plane.sh"

log() { printf '[with-control-plane] %s\n' "$*" >&2; }

if [[ $# -eq 0 ]]; then
  log "usage: $0 CMD [ARGS...]"
  exit 2
fi

started=0
child=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
teardown() {
  local rc=$?
  if [[ -n "${child}" ]] && kill -0 "${child}" 2>/dev/null; then
    kill -TERM "${child}" 2>/dev/null || true
    wait "${child}" 2>/dev/null || true
  fi
  if ((started)); then
    "${cp}" down || log "warning: tearing the control plane down failed"
  fi
  exit "${rc}"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if "${cp}" status >/dev/null 2>&1; then
  log "using the control plane that is already up"
else
  started=1
  # A failed `up` has already stopped what it started and printed its logs'
  # tails; its logs stay in .lab/logs for a look.
  "${cp}" up || { started=0; exit 1; }
fi

set -a
# shellcheck disable=SC1090
. <("${cp}" env)
set +a
export KUBECONFIG
# The lab's own kubectl (same version as the API server) comes first.
export PATH="${HERALD_K8S_BIN}:${PATH}"

# CMD runs as a child that this shell waits for, so that a signal reaches the
# traps at once (bash defers traps while a foreground command runs). A signal
# is passed on to CMD, and its exit status is still the one returned.
# shellcheck disable=SC2317 # invoked by the traps
forward() {
  kill -s "$1" "${child}" 2>/dev/null || true
}
"$@" <&0 &
child=$!
trap 'forward INT' INT
trap 'forward TERM' TERM
trap 'forward HUP' HUP
set +e
wait "${child}"
rc=$?
while kill -0 "${child}" 2>/dev/null; do
  wait "${child}"
  rc=$?
done
set -e
child=""
exit "${rc}"
