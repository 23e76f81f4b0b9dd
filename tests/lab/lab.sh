#!/usr/bin/env bash
# The local lab: the control plane (control-plane.sh) plus Herald's controller.
#
#   tests/lab/lab.sh up     build what is missing, start etcd, kube-apiserver and
#                           herald-controller, install the CRDs
#   tests/lab/lab.sh down   stop all of it and remove .lab/
#
# .lab/env gets KUBECONFIG=..., the PIDs of every process started
# (HERALD_ETCD_PID, HERALD_APISERVER_PID, HERALD_CONTROLLER_PID) and
# HERALD_METRICS_URL. Environment: HERALD_METRICS_PORT (default 7472),
# HERALD_PROFILE (cargo profile, default release).
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
cp="${lab_src}/control-plane.sh"
metrics_port="${HERALD_METRICS_PORT:-7472}"
profile="${HERALD_PROFILE:-release}"
pid_file="${lab}/pids/herald-controller.pid"
log_file="${lab}/logs/herald-controller.log"

log() { printf '[lab] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

controller_running() {
  [[ -f "${pid_file}" ]] && kill -0 "$(cat "${pid_file}")" 2>/dev/null
}

up() {
  "${lab_src}/install-deps.sh"
  log "building herald-controller (${profile})"
  (cd "${repo_root}" && cargo build --quiet --profile "${profile}" -p herald-controller)
  "${cp}" up
  set -a
  # shellcheck disable=SC1090
  . <("${cp}" env)
  set +a
  export PATH="${HERALD_K8S_BIN}:${PATH}"
  kubectl apply --server-side --force-conflicts -f "${repo_root}/deploy/crds/herald.yaml" >/dev/null
  kubectl wait --for=condition=Established --timeout=30s \
    crd/ipaddresspools.herald.dev crd/l2advertisements.herald.dev >/dev/null
  kubectl get namespace herald-system >/dev/null 2>&1 || kubectl create namespace herald-system >/dev/null
  if controller_running; then
    log "herald-controller already running (pid $(cat "${pid_file}"))"
  else
    local dir=release
    [[ "${profile}" == dev ]] && dir=debug
    [[ "${profile}" != dev && "${profile}" != release ]] && dir="${profile}"
    "${repo_root}/target/${dir}/herald-controller" \
      --metrics-addr "127.0.0.1:${metrics_port}" \
      --lease-namespace herald-system \
      --identity "lab-controller" >"${log_file}" 2>&1 &
    echo $! >"${pid_file}"
    log "started herald-controller (pid $!), log ${log_file}"
  fi
  local i
  for i in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:${metrics_port}/readyz" >/dev/null 2>&1; then
      break
    fi
    controller_running || { tail -n 20 "${log_file}" >&2; die "herald-controller exited"; }
    sleep 0.1
    [[ ${i} == 100 ]] && die "herald-controller not ready after 10s (see ${log_file})"
  done
  {
    grep -v -E '^HERALD_(ETCD|APISERVER|CONTROLLER)_PID=|^HERALD_METRICS_URL=' "${lab}/env" || true
    printf 'HERALD_ETCD_PID=%s\n' "$(cat "${lab}/pids/etcd.pid")"
    printf 'HERALD_APISERVER_PID=%s\n' "$(cat "${lab}/pids/kube-apiserver.pid")"
    printf 'HERALD_CONTROLLER_PID=%s\n' "$(cat "${pid_file}")"
    printf 'HERALD_METRICS_URL=http://127.0.0.1:%s/metrics\n' "${metrics_port}"
  } >"${lab}/env.new"
  mv "${lab}/env.new" "${lab}/env"
  log "lab is up: . ${lab}/env (KUBECONFIG=${KUBECONFIG})"
}

down() {
  if [[ -f "${pid_file}" ]]; then
    local pid
    pid="$(cat "${pid_file}")"
    if kill -0 "${pid}" 2>/dev/null; then
      kill -TERM "${pid}" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "${pid}" 2>/dev/null || true
      log "stopped herald-controller (pid ${pid})"
    fi
    rm -f "${pid_file}" "${log_file}"
  fi
  "${cp}" down
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
