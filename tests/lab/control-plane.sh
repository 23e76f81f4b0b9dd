#!/usr/bin/env bash
# The local lab's Kubernetes control plane: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, built from source by
# tests/lab/build-k8s.sh, on loopback (or on HERALD_APISERVER_ADDRESS, where the
# node lab's kubelets reach it). Deployments, DaemonSets, EndpointSlices and
# namespace deletion work as in any cluster; pods run once kubelets register
# (tests/lab/nodes.sh).
#
#   tests/lab/control-plane.sh up      start (a no-op success when already up)
#   tests/lab/control-plane.sh down    stop everything it started, remove .lab/
#   tests/lab/control-plane.sh status  exit 0 when up and ready, 3 when down,
#                                      1 when broken (some part not running)
#   tests/lab/control-plane.sh env     print the lab's settings (sourceable)
#   tests/lab/control-plane.sh restart COMPONENT
#                                      stop one component (SIGTERM) and start it again with
#                                      the command line it was started with; for
#                                      kube-apiserver, wait until it is ready (a fault the
#                                      chaos run applies)
#
# State lives in .lab/ at the repository root (HERALD_LAB_DIR overrides):
#   .lab/kubeconfig      admin (system:masters) client-cert kubeconfig
#   .lab/env             sourceable settings: URLs, ports, paths
#   .lab/pki/            CA, serving cert, service-account key, admin cert,
#                        the API server's client cert for kubelets
#   .lab/etcd/           etcd data
#   .lab/logs/*.log      component logs; audit.log: the API requests of the load
#                        balancers' service accounts (herald-system, metallb-system)
#   .lab/pids/*.pid      component PIDs (and *.argv: their command lines)
#
# Environment:
#   HERALD_APISERVER_PORT    secure port (default 6443)
#   HERALD_APISERVER_ADDRESS bind/advertise address (default 127.0.0.1)
#   HERALD_ETCD_CLIENT_PORT  etcd client port (default 2379, else a free one)
#   HERALD_ETCD_PEER_PORT    etcd peer port (default 2380, else a free one)
#   HERALD_SERVICE_CIDR_V6   IPv6 Service range (default 2001:db8:5::/108,
#                            empty for an IPv4-only cluster)
#   HERALD_READY_TIMEOUT     seconds to wait for /readyz (default 60)
#   HERALD_CACHE             binary cache root (see build-k8s.sh)
#   HERALD_K8S_BIN           use binaries from this directory, skip the build
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
pki="${lab}/pki"
logs="${lab}/logs"
pids="${lab}/pids"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)

# Service ClusterIPs: IPv4 from a documentation range, plus (dual-stack) an
# IPv6 range inside 2001:db8::/32 that stays clear of the lab's node and pool
# prefix 2001:db8::/64. Services stay IPv4 single-stack unless they ask for
# IPv6; HERALD_SERVICE_CIDR_V6= (empty) makes the cluster IPv4-only.
service_cidr="198.51.100.0/24"
service_cidr_v6="${HERALD_SERVICE_CIDR_V6-2001:db8:5::/108}"
service_cidrs="${service_cidr}${service_cidr_v6:+,${service_cidr_v6}}"
service_first_ip="198.51.100.1"

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# --- process bookkeeping -----------------------------------------------------

pid_of() { # prints the recorded PID of $1 if that process is alive and ours
  local f="${pids}/$1.pid" pid
  [[ -f "${f}" ]] || return 1
  pid="$(cat "${f}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  # Guard against a recycled PID: the process must be the component and must
  # have been started for this lab directory.
  [[ -r "/proc/${pid}/cmdline" ]] || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" || return 1
  [[ "${cmdline}" == *"/$1 "* && "${cmdline}" == *"${lab}/"* ]] || return 1
  printf '%s\n' "${pid}"
}

# Every live process of component $1 started for this lab directory, the recorded one or not:
# a PID file can be stale (a restart that lost a race), and a process it no longer names must
# not outlive `down` (an orphaned kube-apiserver keeps the port, and the next lab cannot start).
component_pids() {
  local f cmdline
  for f in /proc/[0-9]*/cmdline; do
    cmdline="$(tr '\0' ' ' <"${f}" 2>/dev/null)" || continue
    [[ "${cmdline}" == *"/$1 "* && "${cmdline}" == *"${lab}/"* ]] || continue
    f="${f#/proc/}"
    printf '%s\n' "${f%/cmdline}"
  done
}

# TERM to every component in $@ at once (their data is thrown away, so there is nothing to
# order), up to 10s of grace, then KILL.
stop_components() {
  local c pid i
  local -a live=()
  for c in "$@"; do
    for pid in $(component_pids "${c}"); do
      log "stopping ${c} (pid ${pid})"
      kill -TERM "${pid}" 2>/dev/null || true
      live+=("${pid}")
    done
  done
  ((${#live[@]})) || return 0
  for ((i = 0; i < 100; i++)); do
    any_alive "${live[@]}" || return 0
    sleep 0.1
  done
  for pid in "${live[@]}"; do
    if kill -0 "${pid}" 2>/dev/null; then
      log "pid ${pid} ignored TERM for 10s; sending KILL"
      kill -KILL "${pid}" 2>/dev/null || true
    fi
  done
  for ((i = 0; i < 50; i++)); do
    any_alive "${live[@]}" || return 0
    sleep 0.1
  done
  log "warning: still running after KILL: ${live[*]}"
}

stop_all() {
  local c
  stop_components "${components[@]}"
  for c in "${components[@]}"; do rm -f "${pids}/${c}.pid" "${pids}/${c}.argv"; done
}

any_alive() {
  local pid
  for pid in "$@"; do
    kill -0 "${pid}" 2>/dev/null && return 0
  done
  return 1
}

start_component() { # name logfile binary args...
  local name="$1" logfile="$2"
  shift 2
  # setsid: its own session, so that signals sent to the caller's process
  # group (Ctrl-C, a test runner's timeout) do not reach it; `down` stops it.
  # fd 8 (our lock) is closed for the child, or it would hold the lock forever.
  # Appended: a restart keeps the log from before it.
  setsid "$@" >>"${logfile}" 2>&1 </dev/null 8<&- &
  local pid=$!
  printf '%s\n' "${pid}" >"${pids}/${name}.pid"
  printf '%s\0' "$@" >"${pids}/${name}.argv"
  log "started ${name} (pid ${pid}), log ${logfile}"
}

# --- ports ---------------------------------------------------------------------

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

free_port() { # prints a free TCP port, preferring $1
  local p="$1" i
  if ! port_busy "${p}"; then printf '%s\n' "${p}"; return 0; fi
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 20000))
    if ! port_busy "${p}"; then printf '%s\n' "${p}"; return 0; fi
  done
  die "no free TCP port found"
}

pick_port() { # env_value default -> port (fails if an explicit port is busy)
  local explicit="$1" default="$2" what="$3"
  if [[ -n "${explicit}" ]]; then
    port_busy "${explicit}" && die "${what} port ${explicit} is already in use: $(ss -Hltnp "sport = :${explicit}" | head -n1)"
    printf '%s\n' "${explicit}"
  else
    free_port "${default}"
  fi
}

# --- certificates -------------------------------------------------------------

gen_pki() {
  local addr="$1"
  mkdir -p "${pki}"
  (
    umask 077
    cd "${pki}"
    local days=3650 ossl=(openssl)
    # CA.
    "${ossl[@]}" ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    "${ossl[@]}" req -x509 -new -key ca.key -sha256 -days "${days}" \
      -subj "/CN=herald-lab-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out ca.crt 2>/dev/null

    # kube-apiserver serving certificate.
    local sans="IP:127.0.0.1,IP:::1,DNS:localhost,IP:${service_first_ip}"
    sans+=",DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    sans+=",DNS:kubernetes.default.svc.cluster.local"
    [[ "${addr}" == "127.0.0.1" ]] || sans+=",IP:${addr}"
    "${ossl[@]}" ecparam -name prime256v1 -genkey -noout -out apiserver.key 2>/dev/null
    "${ossl[@]}" req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" "subjectAltName=${sans}" >apiserver.ext
    "${ossl[@]}" x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -sha256 -days "${days}" -extfile apiserver.ext -out apiserver.crt 2>/dev/null

    # Admin client certificate: user herald-admin in group system:masters.
    "${ossl[@]}" ecparam -name prime256v1 -genkey -noout -out admin.key 2>/dev/null
    "${ossl[@]}" req -new -key admin.key -subj "/O=system:masters/CN=herald-admin" -out admin.csr 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth" >admin.ext
    "${ossl[@]}" x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -sha256 -days "${days}" -extfile admin.ext -out admin.crt 2>/dev/null

    # The API server's client certificate towards kubelets (logs, exec, port-forward).
    "${ossl[@]}" ecparam -name prime256v1 -genkey -noout -out kubelet-client.key 2>/dev/null
    "${ossl[@]}" req -new -key kubelet-client.key \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" -out kubelet-client.csr 2>/dev/null
    "${ossl[@]}" x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -sha256 -days "${days}" -extfile admin.ext -out kubelet-client.crt 2>/dev/null

    # Service-account token signing key pair.
    "${ossl[@]}" ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    "${ossl[@]}" ec -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext ca.srl
  ) || die "generating certificates with openssl failed"
}

write_kubeconfig() {
  local server="$1"
  local ca admin_crt admin_key
  ca="$(base64 -w0 <"${pki}/ca.crt")"
  admin_crt="$(base64 -w0 <"${pki}/admin.crt")"
  admin_key="$(base64 -w0 <"${pki}/admin.key")"
  (
    umask 077
    cat >"${lab}/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: herald-lab
  cluster:
    server: ${server}
    certificate-authority-data: ${ca}
users:
- name: herald-admin
  user:
    client-certificate-data: ${admin_crt}
    client-key-data: ${admin_key}
contexts:
- name: herald-lab
  context:
    cluster: herald-lab
    user: herald-admin
    namespace: default
current-context: herald-lab
EOF
  )
}

# --- probes ---------------------------------------------------------------------

lab_var() { # NAME -> its value in .lab/env
  [[ -f "${lab}/env" ]] || return 1
  # shellcheck disable=SC1091
  (. "${lab}/env" && printf '%s\n' "${!1}")
}

apiserver_get() { # path -> body (fails on non-2xx)
  local url
  url="$(lab_var HERALD_APISERVER_URL)" || return 1
  [[ -n "${url}" ]] || return 1
  curl -fsS --max-time 5 --cacert "${pki}/ca.crt" \
    --cert "${pki}/admin.crt" --key "${pki}/admin.key" "${url}$1" 2>/dev/null
}

is_ready() { [[ "$(apiserver_get /readyz 2>/dev/null)" == "ok" ]]; }

tail_logs() {
  local f
  for f in "${logs}"/*.log; do
    [[ -f "${f}" ]] || continue
    printf '\n===== last lines of %s =====\n' "${f}" >&2
    tail -n "${1:-30}" "${f}" >&2
  done
}

fail_up() {
  log "error: $*"
  tail_logs 30
  stop_all
  log "processes stopped; logs kept in ${logs} (\`$0 down\` removes them)"
  exit 1
}

wait_for() { # timeout_seconds pid description command...
  local timeout="$1" pid="$2" what="$3"
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    kill -0 "${pid}" 2>/dev/null || fail_up "${what}: the process exited"
    ((SECONDS < deadline)) || fail_up "${what}: not ready after ${timeout}s"
    sleep 0.2
  done
}

etcd_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health":"true"'
}

default_ns_ready() {
  apiserver_get /api/v1/namespaces/default >/dev/null 2>&1
}

default_sa_ready() {
  apiserver_get /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1
}

# --- commands ---------------------------------------------------------------------

# Prints "up", "down" or "broken".
state() {
  local c alive=0
  for c in "${components[@]}"; do
    if pid_of "${c}" >/dev/null; then alive=$((alive + 1)); fi
  done
  if ((alive == ${#components[@]})); then
    echo up
  elif ((alive == 0)) && [[ ! -d "${pids}" || -z "$(ls -A "${pids}" 2>/dev/null)" ]]; then
    echo down
  else
    echo broken
  fi
}

cmd_up() {
  local began=${SECONDS} st
  st="$(state)"
  if [[ "${st}" == up ]] && is_ready; then
    log "already up: KUBECONFIG=${lab}/kubeconfig"
    return 0
  fi
  if [[ "${st}" != down || -e "${lab}/env" ]]; then
    log "clearing previous control plane state in ${lab} (was: ${st})"
  fi
  cmd_down

  command -v openssl >/dev/null || die "openssl is not installed"
  command -v curl >/dev/null || die "curl is not installed"
  command -v ss >/dev/null || die "ss (iproute2) is not installed"

  local bin
  if [[ -n "${HERALD_K8S_BIN:-}" ]]; then
    bin="${HERALD_K8S_BIN}"
  else
    bin="$("${lab_src}/build-k8s.sh")" || die "building the Kubernetes binaries failed"
  fi
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    [[ -x "${bin}/${b}" ]] || die "missing ${bin}/${b}"
  done

  local addr="${HERALD_APISERVER_ADDRESS:-127.0.0.1}"
  local api_port etcd_client etcd_peer
  # The apiserver port is never chosen silently: 6443 or what was asked for.
  api_port="$(pick_port "${HERALD_APISERVER_PORT:-6443}" 6443 kube-apiserver)"
  etcd_client="$(pick_port "${HERALD_ETCD_CLIENT_PORT:-}" 2379 "etcd client")"
  etcd_peer="$(pick_port "${HERALD_ETCD_PEER_PORT:-}" 2380 "etcd peer")"
  [[ "${etcd_client}" != "${etcd_peer}" ]] || etcd_peer="$(free_port $((etcd_client + 1)))"

  local url_host="${addr}"
  [[ "${addr}" == *:* ]] && url_host="[${addr}]"
  local api_url="https://${url_host}:${api_port}"

  mkdir -p "${lab}" "${logs}" "${pids}" "${lab}/etcd"
  chmod 700 "${lab}/etcd"
  gen_pki "${addr}"
  write_kubeconfig "${api_url}"
  {
    printf '%s=%q\n' \
      HERALD_LAB_DIR "${lab}" \
      HERALD_K8S_BIN "${bin}" \
      HERALD_APISERVER_URL "${api_url}" \
      HERALD_APISERVER_PORT "${api_port}" \
      HERALD_ETCD_URL "http://127.0.0.1:${etcd_client}" \
      HERALD_ETCD_CLIENT_PORT "${etcd_client}" \
      HERALD_ETCD_PEER_PORT "${etcd_peer}" \
      HERALD_SERVICE_CIDR "${service_cidr}" \
      HERALD_SERVICE_CIDR_V6 "${service_cidr_v6}" \
      HERALD_AUDIT_LOG "${logs}/audit.log" \
      KUBECONFIG "${lab}/kubeconfig"
  } >"${lab}/env"

  # etcd: single member, loopback, plain HTTP. --unsafe-no-fsync as in
  # controller-runtime's envtest: the lab's data is thrown away anyway and
  # fsync latency would only add noise to benchmarks.
  start_component etcd "${logs}/etcd.log" "${bin}/etcd" \
    --name=herald-lab \
    --data-dir="${lab}/etcd" \
    --listen-client-urls="http://127.0.0.1:${etcd_client}" \
    --advertise-client-urls="http://127.0.0.1:${etcd_client}" \
    --listen-peer-urls="http://127.0.0.1:${etcd_peer}" \
    --initial-advertise-peer-urls="http://127.0.0.1:${etcd_peer}" \
    --initial-cluster="herald-lab=http://127.0.0.1:${etcd_peer}" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --quota-backend-bytes=$((4 * 1024 * 1024 * 1024)) \
    --log-level=warn
  local etcd_pid
  etcd_pid="$(cat "${pids}/etcd.pid")"
  wait_for 30 "${etcd_pid}" "etcd" etcd_healthy "${etcd_client}"
  log "etcd healthy on 127.0.0.1:${etcd_client} after $((SECONDS - began))s"

  # kube-apiserver, with the flag set of controller-runtime's envtest plus
  # client-cert auth, RBAC and what kubelets need (a client certificate towards
  # them, their InternalIP first). On loopback there is no endpoint reconciler:
  # a loopback address is not a valid endpoint, so the "kubernetes" Service keeps
  # its ClusterIP but gets no endpoints; on the node lab's address pods reach the
  # API server through that Service, as in any cluster. Higher in-flight limits:
  # benchmarks push thousands of writes (requests from system:masters are exempt
  # from priority-and-fairness anyway).
  local reconciler=lease
  [[ "${addr}" == 127.* || "${addr}" == ::1 ]] && reconciler=none
  # The audit log counts the API requests of the load balancers' pods (the benchmarks read it:
  # every lab client but those pods is the admin, so nothing else tells them apart): each
  # request of a service account in herald-system or metallb-system, once, when received.
  cat >"${lab}/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [ResponseStarted, ResponseComplete, Panic]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:herald-system", "system:serviceaccounts:metallb-system"]
  - level: None
POLICY
  start_component kube-apiserver "${logs}/kube-apiserver.log" "${bin}/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:${etcd_client}" \
    --bind-address="${addr}" \
    --advertise-address="${addr}" \
    --secure-port="${api_port}" \
    --cert-dir="${pki}" \
    --tls-cert-file="${pki}/apiserver.crt" \
    --tls-private-key-file="${pki}/apiserver.key" \
    --client-ca-file="${pki}/ca.crt" \
    --kubelet-client-certificate="${pki}/kubelet-client.crt" \
    --kubelet-client-key="${pki}/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer="${api_url}" \
    --service-account-key-file="${pki}/sa.pub" \
    --service-account-signing-key-file="${pki}/sa.key" \
    --api-audiences="${api_url}" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range="${service_cidrs}" \
    --allow-privileged=true \
    --endpoint-reconciler-type="${reconciler}" \
    --max-requests-inflight=1600 \
    --max-mutating-requests-inflight=800 \
    --audit-policy-file="${lab}/audit-policy.yaml" \
    --audit-log-path="${logs}/audit.log" \
    --audit-log-format=json \
    --audit-log-maxsize=0 \
    --v=1
  local api_pid
  api_pid="$(cat "${pids}/kube-apiserver.pid")"
  wait_for "${HERALD_READY_TIMEOUT:-60}" "${api_pid}" "kube-apiserver /readyz" is_ready
  wait_for 20 "${api_pid}" "namespace default" default_ns_ready
  log "kube-apiserver ready at ${api_url} after $((SECONDS - began))s"

  # kube-controller-manager: every default controller, as the admin (the lab's
  # one identity), no cloud, no node CIDR allocation (the node lab gives each
  # node its pod range in its CNI configuration). A node whose kubelet stops is
  # NotReady after 20 s (upstream: 50 s), so tests of it are quick. Its and the
  # scheduler's secure ports are off: several labs may run on one machine.
  start_component kube-controller-manager "${logs}/kube-controller-manager.log" \
    "${bin}/kube-controller-manager" \
    --kubeconfig="${lab}/kubeconfig" \
    --authentication-skip-lookup=true \
    --secure-port=0 \
    --leader-elect=false \
    --controllers='*' \
    --allocate-node-cidrs=false \
    --service-cluster-ip-range="${service_cidrs}" \
    --root-ca-file="${pki}/ca.crt" \
    --service-account-private-key-file="${pki}/sa.key" \
    --use-service-account-credentials=false \
    --node-monitor-grace-period=20s \
    --node-monitor-period=2s \
    --concurrent-service-endpoint-syncs=10 \
    --v=1
  start_component kube-scheduler "${logs}/kube-scheduler.log" "${bin}/kube-scheduler" \
    --kubeconfig="${lab}/kubeconfig" \
    --authentication-skip-lookup=true \
    --secure-port=0 \
    --leader-elect=false \
    --v=1
  local kcm_pid
  kcm_pid="$(cat "${pids}/kube-controller-manager.pid")"
  # The default ServiceAccount exists once the controller-manager runs: pods
  # (which the ServiceAccount admission plugin gives its token) can be created.
  wait_for 60 "${kcm_pid}" "ServiceAccount default/default" default_sa_ready
  log "kube-controller-manager and kube-scheduler running after $((SECONDS - began))s"
  log "KUBECONFIG=${lab}/kubeconfig"
}

cmd_down() {
  stop_all
  # Remove exactly what `up` made, so that other parts of the lab may keep
  # their own things in .lab/; then the directories, once empty.
  local had=0 f
  for f in "${lab}/kubeconfig" "${lab}/env" "${pki}" "${lab}/etcd" \
    "${logs}/etcd.log" "${logs}/kube-apiserver.log" "${logs}/kube-controller-manager.log" \
    "${logs}/kube-scheduler.log" "${logs}/audit.log" "${lab}/audit-policy.yaml"; do
    if [[ -e "${f}" ]]; then
      had=1
      rm -rf "${f}"
    fi
  done
  for f in "${pids}" "${logs}" "${lab}"; do
    if [[ -d "${f}" ]]; then rmdir --ignore-fail-on-non-empty "${f}"; fi
  done
  if [[ -d "${lab}" ]]; then
    ((had == 0)) || log "removed the control plane's state from ${lab} (other files remain)"
  elif ((had)); then
    log "removed ${lab}"
  fi
}

cmd_status() {
  local st c pid
  st="$(state)"
  for c in "${components[@]}"; do
    if pid="$(pid_of "${c}")"; then
      printf '%-15s running (pid %s)\n' "${c}" "${pid}"
    else
      printf '%-15s not running\n' "${c}"
    fi
  done
  case "${st}" in
    up)
      if is_ready; then
        printf '%-15s ready at %s\n' "readyz" "$(lab_var HERALD_APISERVER_URL)"
        printf 'KUBECONFIG=%s\n' "${lab}/kubeconfig"
        return 0
      fi
      printf '%-15s not ready\n' "readyz"
      return 1
      ;;
    down) return 3 ;;
    *) return 1 ;;
  esac
}

cmd_restart() { # component
  local c="$1" argv_file="${pids}/$1.argv"
  [[ " ${components[*]} " == *" ${c} "* ]] || die "unknown component ${c} (one of: ${components[*]})"
  [[ -f "${argv_file}" ]] || die "${c} has no recorded command line (${argv_file}): bring the control plane up with this script"
  stop_components "${c}"
  local -a argv
  mapfile -d '' -t argv <"${argv_file}"
  start_component "${c}" "${logs}/${c}.log" "${argv[@]}"
  [[ "${c}" == kube-apiserver ]] || return 0
  local timeout="${HERALD_READY_TIMEOUT:-60}"
  local deadline=$((SECONDS + timeout))
  until is_ready; do
    pid_of "${c}" >/dev/null || die "${c} exited after its restart (log: ${logs}/${c}.log)"
    ((SECONDS < deadline)) || die "${c} not ready ${timeout}s after its restart"
    sleep 0.2
  done
  log "${c} restarted and ready"
}

cmd_env() {
  [[ -f "${lab}/env" ]] || die "the control plane is not up (no ${lab}/env)"
  cat "${lab}/env"
}

main() {
  [[ $# -eq 1 || ($# -eq 2 && "$1" == restart) ]] || usage
  case "$1" in
    restart)
      exec 8<"${BASH_SOURCE[0]}"
      flock 8
      cmd_restart "$2"
      ;;
    up | down | status | env)
      # One control-plane operation at a time on this machine: lock the
      # script file itself, so that no lock file is left behind.
      exec 8<"${BASH_SOURCE[0]}"
      flock 8
      "cmd_$1"
      ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
