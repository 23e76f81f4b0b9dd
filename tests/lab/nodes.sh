#!/usr/bin/env bash
# The node lab: N "nodes" (network namespaces) and a client on one Linux bridge,
# each node running kube-proxy and a backend that answers with its node's name.
# Root only (network namespaces). `tests/lab/lab.sh up` runs it when root.
#
#   tests/lab/nodes.sh net          namespaces, bridge, veths, addresses, routes
#                                   and the API server's address (no processes)
#   tests/lab/nodes.sh up           `net`, then per-node kubeconfigs, Node objects,
#                                   kube-proxy and backends; adds the node lab's
#                                   settings to .lab/env. Needs the control plane
#                                   up on the API address (lab.sh up does that).
#   tests/lab/nodes.sh down         stop every process, remove every namespace,
#                                   link, address and file it made
#   tests/lab/nodes.sh env          print the node lab's settings (sourceable)
#   tests/lab/nodes.sh api-address  print the address the API server must use
#
# Layout (i = 1..N):
#   hl-sw      switch: bridge br0, ports node<i> and client (no addresses, IPv6 off)
#   hl-node<i> eth0 192.0.2.(10+i)/24, 2001:db8::(10+i)/64, MAC 02:00:00:00:00:<i in hex>
#              pod0 (dummy, else ifb): pod IPs 203.0.113.(10+i)/32, 2001:db8:113::(10+i)/128
#              mgmt0 203.0.113.(127+2i)/31 -> root hl-m<i> 203.0.113.(126+2i)/31, the
#              only route out: 203.0.113.254/32 (the API server, on root's hl-api0)
#   hl-client  eth0 192.0.2.200/24, 2001:db8::200/64, MAC 02:00:00:00:00:c8
# 192.0.2.100-192.0.2.149 and 2001:db8::100-2001:db8::1ff belong to no one: they
# are for LoadBalancer pools. The root namespace only gets hl-api0 and hl-m<i>
# (203.0.113.0/24); it has no route into 192.0.2.0/24 of the lab.
#
# Environment: HERALD_NODES (default 3, 1..60), HERALD_LAB_DIR, HERALD_KUBE_PROXY_MODE
# (nftables or iptables; default nftables when `nft` works in a namespace),
# HERALD_NODES_FORCE=1 (`down` also removes a node lab another lab dir made).
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
nodes_dir="${lab}/nodes"
logs="${lab}/logs"
pids="${lab}/pids"
n_nodes="${HERALD_NODES:-3}"

api_addr="203.0.113.254"
sw_ns="hl-sw"
bridge="br0"
client_ns="hl-client"
client_mac="02:00:00:00:00:c8"
client_ip4="192.0.2.200"
client_ip6="2001:db8::200"
backend_port=8080
owner_tag="herald-lab:${lab}"
# Keys this script owns in .lab/env.
env_keys='^(HERALD_NODE|HERALD_CLIENT_|HERALD_SWITCH_|HERALD_LB_|HERALD_KUBE_PROXY_MODE=|HERALD_NODES=)'

log() { printf '[nodes] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

node_ns() { printf 'hl-node%s' "$1"; }
node_mac() { printf '02:00:00:00:00:%02x' "$1"; }
node_ip4() { printf '192.0.2.%s' $((10 + $1)); }
node_ip6() { printf '2001:db8::%s' $((10 + $1)); }
pod_ip4() { printf '203.0.113.%s' $((10 + $1)); }
pod_ip6() { printf '2001:db8:113::%s' $((10 + $1)); }
mgmt_root_ip() { printf '203.0.113.%s' $((126 + 2 * $1)); }
mgmt_node_ip() { printf '203.0.113.%s' $((127 + 2 * $1)); }

ns_exists() { [[ -e "/run/netns/$1" ]]; }
in_ns() { local ns="$1"; shift; ip netns exec "${ns}" "$@"; }
sysctl_ns() { # ns key=value...: best effort for keys a kernel may lack
  local ns="$1" kv
  shift
  for kv in "$@"; do
    in_ns "${ns}" sysctl -qw "${kv}" >/dev/null 2>&1 || log "warning: ${ns}: sysctl ${kv} failed"
  done
}

# --- ownership: the bridge's alias names the lab dir that made the node lab ----

owner() { ip -n "${sw_ns}" -o link show "${bridge}" 2>/dev/null | sed -n 's/.* alias \(.*\)$/\1/p'; }

check_owner() { # fails when the node lab belongs to another lab dir
  ns_exists "${sw_ns}" || return 0
  local o
  o="$(owner)"
  [[ -z "${o}" || "${o}" == "${owner_tag}" ]] && return 0
  log "the node lab on this machine belongs to ${o#herald-lab:}"
  return 1
}

# --- network -------------------------------------------------------------------

ensure_ns() {
  ns_exists "$1" || ip netns add "$1"
  ip -n "$1" link set lo up
}

add_dummy() { # ns name: a dummy device, or ifb where the kernel has no dummy
  local ns="$1" name="$2"
  local -a where=()
  [[ -n "${ns}" ]] && where=(-n "${ns}")
  ip "${where[@]}" link show "${name}" >/dev/null 2>&1 && return 0
  ip "${where[@]}" link add "${name}" type dummy 2>/dev/null ||
    ip "${where[@]}" link add "${name}" type ifb ||
    die "cannot create ${name}: the kernel has neither dummy nor ifb devices"
}

# A namespace's eth0, attached to the switch as port $2. IPv6 addresses are
# usable at once (no DAD).
ensure_port() { # ns swport mac ip4/len ip6/len
  local ns="$1" port="$2" mac="$3" ip4="$4" ip6="$5"
  ensure_ns "${ns}"
  sysctl_ns "${ns}" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  if ! ip -n "${ns}" link show eth0 >/dev/null 2>&1; then
    ip -n "${sw_ns}" link del "${port}" 2>/dev/null || true
    ip -n "${ns}" link add eth0 address "${mac}" type veth peer name "${port}" netns "${sw_ns}"
  fi
  ip -n "${ns}" link set eth0 address "${mac}"
  sysctl_ns "${ns}" net.ipv6.conf.eth0.accept_dad=0
  ip -n "${sw_ns}" link set "${port}" master "${bridge}" up
  ip -n "${ns}" addr replace "${ip4}" dev eth0
  ip -n "${ns}" addr replace "${ip6}" dev eth0 nodad
  ip -n "${ns}" link set eth0 up
}

net_up() {
  if ! [[ "${n_nodes}" =~ ^[0-9]+$ ]] || ((n_nodes < 1 || n_nodes > 60)); then
    die "HERALD_NODES must be 1..60 (got ${n_nodes})"
  fi
  check_owner || die "bring it down there first (HERALD_LAB_DIR=... $0 down)"
  local began=${SECONDS} i j

  # The switch: a bridge that forwards at once (no STP, no multicast snooping,
  # so NDP's multicast reaches every port) and says nothing itself.
  ensure_ns "${sw_ns}"
  sysctl_ns "${sw_ns}" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  if ! ip -n "${sw_ns}" link show "${bridge}" >/dev/null 2>&1; then
    ip -n "${sw_ns}" link add "${bridge}" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  fi
  ip -n "${sw_ns}" link set "${bridge}" alias "${owner_tag}"
  ip -n "${sw_ns}" link set "${bridge}" up
  # No netfilter on the switch's bridged frames (the knobs exist when br_netfilter is there).
  for f in iptables ip6tables arptables; do
    if [[ -e /proc/sys/net/bridge/bridge-nf-call-${f} ]]; then
      in_ns "${sw_ns}" sh -c "echo 0 >/proc/sys/net/bridge/bridge-nf-call-${f}" 2>/dev/null || true
    fi
  done

  # The API server's address in the root namespace.
  add_dummy "" hl-api0
  sysctl -qw net.ipv6.conf.hl-api0.disable_ipv6=1 >/dev/null 2>&1 || true
  ip link set hl-api0 up
  ip addr replace "${api_addr}/32" dev hl-api0

  ensure_port "${client_ns}" client "${client_mac}" "${client_ip4}/24" "${client_ip6}/64"

  for ((i = 1; i <= n_nodes; i++)); do
    local ns mi
    ns="$(node_ns "${i}")"
    mi="hl-m${i}"
    ensure_port "${ns}" "node${i}" "$(node_mac "${i}")" "$(node_ip4 "${i}")/24" "$(node_ip6 "${i}")/64"
    # A node routes (kube-proxy forwards to other nodes' pods) but sends no redirects.
    sysctl_ns "${ns}" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
      net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
    # Pod addresses for the backend.
    add_dummy "${ns}" pod0
    sysctl_ns "${ns}" net.ipv6.conf.pod0.accept_dad=0
    ip -n "${ns}" link set pod0 up
    ip -n "${ns}" addr replace "$(pod_ip4 "${i}")/32" dev pod0
    ip -n "${ns}" addr replace "$(pod_ip6 "${i}")/128" dev pod0 nodad
    # Management: a veth to the root namespace, IPv4 only, one route (the API server).
    if ! ip link show "${mi}" >/dev/null 2>&1; then
      ip -n "${ns}" link del mgmt0 2>/dev/null || true
      ip link add "${mi}" type veth peer name mgmt0 netns "${ns}"
    fi
    sysctl -qw "net.ipv6.conf.${mi}.disable_ipv6=1" >/dev/null
    sysctl_ns "${ns}" net.ipv6.conf.mgmt0.disable_ipv6=1
    ip addr replace "$(mgmt_root_ip "${i}")/31" dev "${mi}"
    ip link set "${mi}" up
    ip -n "${ns}" addr replace "$(mgmt_node_ip "${i}")/31" dev mgmt0
    ip -n "${ns}" link set mgmt0 up
    ip -n "${ns}" route replace "${api_addr}/32" via "$(mgmt_root_ip "${i}")" dev mgmt0
  done
  # Every node reaches every other node's pods through that node.
  for ((i = 1; i <= n_nodes; i++)); do
    for ((j = 1; j <= n_nodes; j++)); do
      ((i == j)) && continue
      ip -n "$(node_ns "${i}")" route replace "$(pod_ip4 "${j}")/32" via "$(node_ip4 "${j}")" dev eth0
      ip -n "$(node_ns "${i}")" -6 route replace "$(pod_ip6 "${j}")/128" via "$(node_ip6 "${j}")" dev eth0
    done
  done
  remove_nodes_above "${n_nodes}"
  log "network ready: ${n_nodes} nodes, client ${client_ns}, switch ${sw_ns}/${bridge}, API address ${api_addr} ($((SECONDS - began))s)"
}

# Nodes beyond N (left by an earlier `up` with a larger HERALD_NODES).
remove_nodes_above() {
  local n="$1" ns i
  while read -r ns; do
    i="${ns#hl-node}"
    ((i > n)) || continue
    stop_node_processes "${i}"
    ip netns del "${ns}"
    ip link del "hl-m${i}" 2>/dev/null || true
    ip -n "${sw_ns}" link del "node${i}" 2>/dev/null || true
    rm -rf "${nodes_dir:?}/${ns}"
    log "removed ${ns} (HERALD_NODES=${n})"
  done < <(ip netns list | awk '{print $1}' | grep -E '^hl-node[0-9]+$' || true)
}

# --- processes ------------------------------------------------------------------

pid_in_ns() { # pid ns: alive, and in that namespace
  [[ "$1" =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
    [[ "$(ip netns identify "$1" 2>/dev/null)" == "$2" ]]
}

pid_of() { # name ns -> recorded PID if that process is alive in ns
  local f="${pids}/$1.pid" pid
  [[ -f "${f}" ]] || return 1
  pid="$(cat "${f}")"
  pid_in_ns "${pid}" "$2" || return 1
  printf '%s\n' "${pid}"
}

start_in_ns() { # ns name logfile command...
  local ns="$1" name="$2" logfile="$3"
  shift 3
  # setsid: away from the caller's process group (Ctrl-C, test timeouts);
  # `ip netns exec` and setsid exec, so $! is the command itself.
  setsid ip netns exec "${ns}" "$@" >"${logfile}" 2>&1 </dev/null 7<&- &
  printf '%s\n' "$!" >"${pids}/${name}.pid"
  log "started ${name} in ${ns} (pid $!), log ${logfile}"
}

stop_pids() { # TERM, 5s grace, KILL
  local pid i
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    local alive=0
    for pid in "$@"; do kill -0 "${pid}" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "$@"; do
    kill -0 "${pid}" 2>/dev/null && { log "pid ${pid} ignored TERM; sending KILL"; kill -KILL "${pid}" 2>/dev/null || true; }
  done
  sleep 0.2
}

# Every process in node i's namespace (kube-proxy, backend, and whatever a test
# or a speaker started there).
stop_node_processes() {
  local ns
  ns="$(node_ns "$1")"
  ns_exists "${ns}" || return 0
  local -a p
  mapfile -t p < <(ip netns pids "${ns}" 2>/dev/null || true)
  stop_pids "${p[@]}"
  rm -f "${pids}/kube-proxy-${ns}.pid" "${pids}/backend-${ns}.pid"
}

# --- the cluster side -------------------------------------------------------------

python_bin() {
  local py
  py="$(command -v python3)" || die "python3 is not installed"
  # Past pyenv-style shims to the interpreter itself.
  "${py}" -c 'import sys; print(sys.executable)'
}

proxy_mode() {
  if [[ -n "${HERALD_KUBE_PROXY_MODE:-}" ]]; then
    printf '%s\n' "${HERALD_KUBE_PROXY_MODE}"
  elif command -v nft >/dev/null && in_ns "$(node_ns 1)" nft list tables >/dev/null 2>&1; then
    echo nftables
  elif command -v iptables >/dev/null; then
    echo iptables
  else
    die "neither nft nor iptables works (install nftables: tests/lab/install-deps.sh --node-lab)"
  fi
}

node_objects() {
  local i ns now
  now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for ((i = 1; i <= n_nodes; i++)); do
    ns="$(node_ns "${i}")"
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: ${ns}
  labels:
    kubernetes.io/hostname: ${ns}
    kubernetes.io/os: linux
    herald.dev/lab-node: "true"
EOF
  done | kubectl apply --server-side --force-conflicts --field-manager=herald-lab -f - >/dev/null
  for ((i = 1; i <= n_nodes; i++)); do
    ns="$(node_ns "${i}")"
    kubectl patch node "${ns}" --subresource=status --type=merge -p "$(
      cat <<EOF
{"status":{
 "addresses":[{"type":"InternalIP","address":"$(node_ip4 "${i}")"},
              {"type":"InternalIP","address":"$(node_ip6 "${i}")"},
              {"type":"Hostname","address":"${ns}"}],
 "conditions":[
  {"type":"Ready","status":"True","reason":"HeraldLab","message":"node lab namespace ${ns}","lastHeartbeatTime":"${now}","lastTransitionTime":"${now}"},
  {"type":"NetworkUnavailable","status":"False","reason":"HeraldLab","message":"bridge ${sw_ns}/${bridge}","lastHeartbeatTime":"${now}","lastTransitionTime":"${now}"}]}}
EOF
    )" >/dev/null
  done
}

http_ok_in_ns() { # ns url
  in_ns "$1" curl -fsS --max-time 1 -o /dev/null "$2" 2>/dev/null
}

cluster_up() {
  [[ -f "${lab}/env" ]] || die "the control plane is not up (no ${lab}/env): run tests/lab/lab.sh up"
  local url kubeconfig bin
  # shellcheck disable=SC1091
  url="$(. "${lab}/env" && printf '%s' "${HERALD_APISERVER_URL:-}")"
  # shellcheck disable=SC1091
  kubeconfig="$(. "${lab}/env" && printf '%s' "${KUBECONFIG:-}")"
  # shellcheck disable=SC1091
  bin="$(. "${lab}/env" && printf '%s' "${HERALD_K8S_BIN:-}")"
  [[ "${url}" == "https://${api_addr}:"* ]] ||
    die "the API server is at ${url:-?}, which the nodes cannot reach; start the control plane with HERALD_APISERVER_ADDRESS=${api_addr} (tests/lab/lab.sh up does, as root)"
  [[ -x "${bin}/kube-proxy" ]] || die "no kube-proxy in ${bin}"
  export KUBECONFIG="${kubeconfig}" PATH="${bin}:${PATH}"
  local began=${SECONDS} mode py i ns
  mode="$(proxy_mode)"
  py="$(python_bin)"
  mkdir -p "${nodes_dir}" "${logs}" "${pids}"

  for ((i = 1; i <= n_nodes; i++)); do
    ns="$(node_ns "${i}")"
    mkdir -p "${nodes_dir}/${ns}"
    # The admin identity: it is a lab. Replace this file to give a node less.
    install -m 600 "${kubeconfig}" "${nodes_dir}/${ns}/kubeconfig"
  done
  node_objects
  local stale
  stale="$(kubectl get nodes -l herald.dev/lab-node=true -o name |
    awk -F'hl-node' -v n="${n_nodes}" '$2 + 0 > n')"
  if [[ -n "${stale}" ]]; then
    # shellcheck disable=SC2086 # one name per word
    kubectl delete --wait=false ${stale} >/dev/null
  fi
  log "Node objects hl-node1..${n_nodes} Ready with their InternalIPs"

  for ((i = 1; i <= n_nodes; i++)); do
    ns="$(node_ns "${i}")"
    if pid_of "kube-proxy-${ns}" "${ns}" >/dev/null; then
      log "kube-proxy already running in ${ns}"
    else
      # --conntrack-max-per-core=0: nf_conntrack_max is not writable inside a
      # network namespace. NodePorts (and health check node ports) on the
      # Node object's InternalIPs only, not on mgmt0 or pod0. Metrics and
      # healthz keep their default ports: each namespace has its own
      # (127.0.0.1:10249, 0.0.0.0:10256).
      start_in_ns "${ns}" "kube-proxy-${ns}" "${logs}/kube-proxy-${ns}.log" \
        "${bin}/kube-proxy" \
        --kubeconfig="${nodes_dir}/${ns}/kubeconfig" \
        --hostname-override="${ns}" \
        --proxy-mode="${mode}" \
        --conntrack-max-per-core=0 \
        --nodeport-addresses=primary \
        --v=2
    fi
    if pid_of "backend-${ns}" "${ns}" >/dev/null; then
      log "backend already running in ${ns}"
    else
      start_in_ns "${ns}" "backend-${ns}" "${logs}/backend-${ns}.log" \
        "${py}" "${lab_src}/backend.py" "${ns}" "${backend_port}" "$(pod_ip4 "${i}")" "$(pod_ip6 "${i}")"
    fi
  done

  # Ready: every backend answers, every kube-proxy reports healthy (synced).
  local deadline=$((SECONDS + 60)) pending
  while :; do
    pending=""
    for ((i = 1; i <= n_nodes; i++)); do
      ns="$(node_ns "${i}")"
      pid_of "kube-proxy-${ns}" "${ns}" >/dev/null || {
        tail -n 30 "${logs}/kube-proxy-${ns}.log" >&2
        die "kube-proxy in ${ns} exited (log ${logs}/kube-proxy-${ns}.log)"
      }
      pid_of "backend-${ns}" "${ns}" >/dev/null || {
        tail -n 30 "${logs}/backend-${ns}.log" >&2
        die "the backend in ${ns} exited (log ${logs}/backend-${ns}.log)"
      }
      http_ok_in_ns "${ns}" "http://$(pod_ip4 "${i}"):${backend_port}/" || pending+=" backend-${ns}"
      http_ok_in_ns "${ns}" "http://127.0.0.1:10256/healthz" || pending+=" kube-proxy-${ns}"
    done
    [[ -z "${pending}" ]] && break
    ((SECONDS < deadline)) || die "not ready after 60s:${pending} (logs in ${logs})"
    sleep 0.3
  done
  write_env "${mode}"
  log "node lab up: ${n_nodes} nodes, kube-proxy ${mode} ($((SECONDS - began))s); . ${lab}/env"
}

write_env() {
  local mode="$1" i ns
  {
    printf '%s=%q\n' \
      HERALD_NODES "${n_nodes}" \
      HERALD_NODE_API_ADDRESS "${api_addr}" \
      HERALD_KUBE_PROXY_MODE "${mode}" \
      HERALD_LB_RANGE4 "192.0.2.100-192.0.2.149" \
      HERALD_LB_RANGE6 "2001:db8::100-2001:db8::1ff" \
      HERALD_SWITCH_NS "${sw_ns}" \
      HERALD_SWITCH_BRIDGE "${bridge}" \
      HERALD_CLIENT_NS "${client_ns}" \
      HERALD_CLIENT_IF eth0 \
      HERALD_CLIENT_MAC "${client_mac}" \
      HERALD_CLIENT_IP4 "${client_ip4}" \
      HERALD_CLIENT_IP6 "${client_ip6}"
    local all_pids=""
    for ((i = 1; i <= n_nodes; i++)); do
      ns="$(node_ns "${i}")"
      local kp be
      kp="$(cat "${pids}/kube-proxy-${ns}.pid")"
      be="$(cat "${pids}/backend-${ns}.pid")"
      all_pids+=" ${kp} ${be}"
      printf "HERALD_NODE${i}_%s=%q\n" \
        NAME "${ns}" \
        NS "${ns}" \
        IF eth0 \
        MAC "$(node_mac "${i}")" \
        IP4 "$(node_ip4 "${i}")" \
        IP6 "$(node_ip6 "${i}")" \
        POD_IP4 "$(pod_ip4 "${i}")" \
        POD_IP6 "$(pod_ip6 "${i}")" \
        SWITCH_PORT "node${i}" \
        MGMT_IF mgmt0 \
        KUBECONFIG "${nodes_dir}/${ns}/kubeconfig" \
        KUBE_PROXY_PID "${kp}" \
        BACKEND_PID "${be}"
    done
    printf 'HERALD_NODE_PIDS="%s"\n' "${all_pids# }"
  } >"${nodes_dir}/env"
  {
    grep -v -E "${env_keys}" "${lab}/env" || true
    cat "${nodes_dir}/env"
  } >"${lab}/env.nodes"
  mv "${lab}/env.nodes" "${lab}/env"
}

# --- commands -----------------------------------------------------------------------

cmd_net() { net_up; }

cmd_up() {
  local began=${SECONDS}
  if [[ -x "${lab_src}/install-deps.sh" ]]; then "${lab_src}/install-deps.sh" --node-lab; fi
  net_up
  cluster_up
  log "up in $((SECONDS - began))s"
}

cmd_down() {
  if ! check_owner; then
    if [[ "${HERALD_NODES_FORCE:-0}" != 1 ]]; then
      log "not removing it from ${lab} (HERALD_NODES_FORCE=1 to remove it anyway)"
      return 0
    fi
  fi
  local began=${SECONDS} ns i pid
  # Processes: those recorded, then anything else still inside a lab namespace.
  local -a p=()
  local f
  for f in "${pids}"/kube-proxy-hl-node*.pid "${pids}"/backend-hl-node*.pid; do
    [[ -f "${f}" ]] || continue
    ns="$(basename "${f}" .pid)"
    ns="${ns#kube-proxy-}"
    ns="${ns#backend-}"
    if pid="$(cat "${f}")" && pid_in_ns "${pid}" "${ns}"; then p+=("${pid}"); fi
    rm -f "${f}"
  done
  local -a lab_ns=()
  mapfile -t lab_ns < <(ip netns list | awk '{print $1}' | grep -E '^hl-(node[0-9]+|client|sw)$' || true)
  for ns in "${lab_ns[@]}"; do
    mapfile -t -O "${#p[@]}" p < <(ip netns pids "${ns}" 2>/dev/null || true)
  done
  if ((${#p[@]})); then
    mapfile -t p < <(printf '%s\n' "${p[@]}" | sort -un)
    log "stopping ${#p[@]} processes in the lab's namespaces"
    stop_pids "${p[@]}"
  fi
  # Node objects, when the API server is still there (lab.sh down stops it next).
  if [[ -f "${lab}/env" && -d "${nodes_dir}" ]]; then
    local kubeconfig bin
    # shellcheck disable=SC1091
    kubeconfig="$(. "${lab}/env" && printf '%s' "${KUBECONFIG:-}")"
    # shellcheck disable=SC1091
    bin="$(. "${lab}/env" && printf '%s' "${HERALD_K8S_BIN:-}")"
    if [[ -x "${bin}/kubectl" && -f "${kubeconfig}" ]]; then
      "${bin}/kubectl" --kubeconfig="${kubeconfig}" --request-timeout=3s delete nodes \
        -l herald.dev/lab-node=true --wait=false >/dev/null 2>&1 || true
    fi
  fi
  # Namespaces (their veths, routes, addresses, nft tables and conntrack go with
  # them), then the root namespace's links.
  for ns in "${lab_ns[@]}"; do
    ip netns del "${ns}"
  done
  # hl-api0 stays while an API server listens on its address (`nodes.sh down`
  # with the control plane up); lab.sh down stops the control plane first.
  local keep_api='^$'
  if ss -Hltn "src ${api_addr}" 2>/dev/null | grep -q .; then
    keep_api='^hl-api0$'
    log "keeping hl-api0 (${api_addr}): the API server listens there"
  fi
  local -a root_links
  mapfile -t root_links < <(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' |
    grep -E '^hl-(m[0-9]+|api0)$' | grep -v -E "${keep_api}" || true)
  for i in "${root_links[@]}"; do
    ip link del "${i}" 2>/dev/null || true
  done
  # Files.
  rm -rf "${nodes_dir}"
  rm -f "${logs}"/kube-proxy-hl-node*.log "${logs}"/backend-hl-node*.log
  if [[ -f "${lab}/env" ]]; then
    grep -v -E "${env_keys}" "${lab}/env" >"${lab}/env.nodes" || true
    mv "${lab}/env.nodes" "${lab}/env"
  fi
  # The lab's directories, once empty (after control-plane.sh down).
  for f in "${pids}" "${logs}" "${lab}"; do
    if [[ -d "${f}" ]]; then rmdir --ignore-fail-on-non-empty "${f}"; fi
  done
  if ((${#lab_ns[@]} + ${#root_links[@]})); then
    log "removed ${#lab_ns[@]} namespaces and ${#root_links[@]} root links ($((SECONDS - began))s)"
  fi
}

cmd_env() {
  [[ -f "${nodes_dir}/env" ]] || die "the node lab is not up (no ${nodes_dir}/env)"
  cat "${nodes_dir}/env"
}

main() {
  [[ $# -eq 1 ]] || usage
  case "$1" in
    api-address) printf '%s\n' "${api_addr}"; return 0 ;;
    net | up | down | env) ;;
    *) usage ;;
  esac
  if [[ "$(id -u)" != 0 ]]; then
    echo "SKIP: the node lab needs root (network namespaces)" >&2
    exit 3
  fi
  # One node-lab operation at a time on this machine (the names are global).
  exec 7<"${BASH_SOURCE[0]}"
  flock 7
  "cmd_$1"
}

main "$@"
