#!/usr/bin/env bash
# The local lab: the control plane (control-plane.sh) plus Herald's controller,
# and as root the node lab (nodes.sh: node namespaces with kube-proxy).
#
#   tests/lab/lab.sh up     build what is missing, start etcd, kube-apiserver and
#                           herald-controller, install the CRDs; as root (unless
#                           HERALD_NODES=0) first the node lab's network, the API
#                           server on its address (203.0.113.254), then the nodes
#   tests/lab/lab.sh down   stop all of it and remove .lab/
#
# .lab/env gets KUBECONFIG=..., the PIDs of every process started
# (HERALD_ETCD_PID, HERALD_APISERVER_PID, HERALD_CONTROLLER_PID) and
# HERALD_METRICS_URL, and with the node lab what nodes.sh lists. Environment:
# HERALD_METRICS_PORT (default 7472), HERALD_PROFILE (cargo profile, default
# release), HERALD_NODES (node count, default 3; 0: no node lab).
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
cp="${lab_src}/control-plane.sh"
nodes="${lab_src}/nodes.sh"
metrics_port="${HERALD_METRICS_PORT:-7472}"
profile="${HERALD_PROFILE:-release}"
pid_file="${lab}/pids/herald-controller.pid"
log_file="${lab}/logs/herald-controller.log"

log() { printf '[lab] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The node lab runs as root unless HERALD_NODES=0.
node_lab() { [[ "$(id -u)" == 0 && "${HERALD_NODES:-3}" != 0 ]]; }

controller_running() {
  [[ -f "${pid_file}" ]] && kill -0 "$(cat "${pid_file}")" 2>/dev/null
}

up() {
  if node_lab; then
    "${lab_src}/install-deps.sh" --node-lab
  else
    "${lab_src}/install-deps.sh"
  fi
  log "building herald-controller and herald-speaker (${profile})"
  (cd "${repo_root}" && cargo build --quiet --profile "${profile}" -p herald-controller -p herald-speaker)
  if node_lab; then
    # The nodes reach the API server on an address of the root namespace.
    "${nodes}" net
    HERALD_APISERVER_ADDRESS="$("${nodes}" api-address)" "${cp}" up
  else
    "${cp}" up
  fi
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
  if node_lab; then
    "${nodes}" up
    # The speakers' membership key.
    kubectl -n herald-system get secret herald-memberlist >/dev/null 2>&1 ||
      kubectl -n herald-system create secret generic herald-memberlist \
        --from-literal=secretkey="$(openssl rand -hex 32)" >/dev/null
    # The speakers run with the deploy/ RBAC only: a token of its ServiceAccount.
    kubectl apply -f "${repo_root}/deploy/kustomize/speaker-rbac.yaml" >/dev/null
    local token i node_kc speaker_kc
    token="$(kubectl -n herald-system create token herald-speaker --duration 24h)"
    for i in $(seq 1 "${HERALD_NODES:-3}"); do
      node_kc="${lab}/nodes/hl-node${i}/kubeconfig"
      speaker_kc="${lab}/nodes/hl-node${i}/speaker.kubeconfig"
      cp "${node_kc}" "${speaker_kc}"
      KUBECONFIG="${speaker_kc}" kubectl config set-credentials herald-speaker --token="${token}" >/dev/null
      KUBECONFIG="${speaker_kc}" kubectl config set-context "$(KUBECONFIG="${speaker_kc}" kubectl config current-context)" \
        --user=herald-speaker >/dev/null
    done
    "${lab_src}/speakers.sh" start
  fi
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
  # As root the node lab goes too, whatever HERALD_NODES says (a no-op when
  # absent). Its processes first: the API server's graceful shutdown waits for
  # its clients (kube-proxy) to hang up. Its address (hl-api0) last, once the
  # API server is gone: without it, the API server's connections never close.
  if [[ "$(id -u)" == 0 ]]; then
    if [[ -f "${lab}/env" ]] && grep -q HERALD_CLIENT_NS "${lab}/env"; then
      "${lab_src}/speakers.sh" stop || true
    fi
    rm -f "${lab}"/pids/speaker-*.pid "${lab}"/logs/speaker-*.log
    "${nodes}" down
  fi
  "${cp}" down
  if [[ "$(id -u)" == 0 ]]; then "${nodes}" down; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
