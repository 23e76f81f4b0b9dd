#!/usr/bin/env bash
# The node lab: N nodes (network namespaces) and a client on one Linux bridge, and a second
# network (a second bridge, every node's eth1 and a client) and a VLAN on the first bridge (node
# 1's eth0.100 and a client), for multi-homed nodes. Every node runs
# a kubelet with its own containerd, registered as that Node (pods on a CNI bridge; hostNetwork
# pods share the node's namespace), and kube-proxy. Root only. `tests/lab/lab.sh up` runs it.
#
#   tests/lab/nodes.sh net             namespaces, bridge, veths, addresses, routes and the API
#                                      server's address (no processes)
#   tests/lab/nodes.sh up              `net`, then per node: containerd (with the lab's images
#                                      imported), kubelet, kube-proxy; waits for every Node
#                                      Ready; adds the node lab's settings to .lab/env. Needs the
#                                      control plane up on the API address (lab.sh up does that)
#   tests/lab/nodes.sh down            stop every process and pod, remove every namespace,
#                                      mount, cgroup, link, address and file it made
#   tests/lab/nodes.sh env             print the node lab's settings (sourceable)
#   tests/lab/nodes.sh api-address     print the address the API server must use
#   tests/lab/nodes.sh kubelet stop|start I
#                                      stop (SIGTERM) or start node I's kubelet alone (its pods
#                                      and containerd run on)
#   tests/lab/nodes.sh link down|up I  node I's LAN link (eth0) down, or up again with the
#                                      addresses and routes a link down removes
#   tests/lab/nodes.sh import ARCHIVE REFERENCE
#                                      import an OCI archive into every node's containerd as
#                                      REFERENCE (there is no registry)
#   tests/lab/nodes.sh enter I CMD...  run CMD in node I's mount and network namespaces (where its
#                                      kubelet and containerd see /var/lib/kubelet, /run/containerd)
#
# Layout (i = 1..N, N <= 8):
#   hl-sw      switch: bridge br0, ports node<i> and client (no addresses, IPv6 off)
#   hl-node<i> eth0 192.0.2.(10+i)/24, 2001:db8::(10+i)/64, MAC 02:00:00:00:00:<i in hex>
#              cni0 (made by the CNI bridge plugin): pods 203.0.113.16(i-1)/28,
#              2001:db8:113:<i>::/64; routes to every other node's pod ranges via its eth0
#              mgmt0 203.0.113.(127+2i)/31 -> root hl-m<i> 203.0.113.(126+2i)/31: the API server
#              (203.0.113.254, on root's hl-api0) and the Service ranges, nothing else
#              its own mount namespace (/run/herald-lab/mnt/hl-node<i>) with per-node
#              /var/lib/kubelet, /var/lib/containerd, /run/containerd, /var/lib/cni,
#              /var/log/pods, /var/log/containers, /etc/cni/net.d and /run/netns (under
#              .lab/nodes/hl-node<i>/), since kubelet and containerd use those fixed paths
#              cgroups under /hl-node<i> (cgroupfs driver: this machine kind has cgroup v1 only)
#   hl-client  eth0 192.0.2.200/24, 2001:db8::200/64, MAC 02:00:00:00:00:c8
#   hl-swb     switch of network B: bridge br0, ports node<i> and client (IPv6 off)
#   hl-node<i> eth1 on hl-swb: 203.0.113.(192+i)/27, 2001:db8:b::(10+i)/64,
#              MAC 02:00:00:00:01:<i in hex>
#   hl-clientb eth0 on hl-swb: 203.0.113.222/27, 2001:db8:b::200/64, MAC 02:00:00:00:01:c8
#   hl-node1   eth0.100 (VLAN 100 on eth0, tagged through hl-sw): 203.0.113.161/28,
#              2001:db8:c::11/64
#   hl-clientv eth0 on hl-sw (port clientv, no address), MAC 02:00:00:00:02:c8, and eth0.100:
#              203.0.113.174/28, 2001:db8:c::200/64
# 192.0.2.100-192.0.2.149 and 2001:db8::100-2001:db8::1ff belong to no one: they are for
# LoadBalancer pools; so are 203.0.113.208-203.0.113.215 and 2001:db8:b::100-2001:db8:b::1ff on
# network B, and 203.0.113.168-203.0.113.171 and 2001:db8:c::100-2001:db8:c::1ff on the VLAN. The root namespace gets hl-api0, hl-m<i> and routes to each node's own
# addresses and pod range through hl-m<i> (the API server reaches kubelets and pods); it has no
# route to the client or to the pools.
#
# kube-proxy runs as a process in each node namespace, the way distributions that run it as a
# host service do, rather than as a DaemonSet: its image would need the host's iptables and nft
# userland, and Herald's tests need it up before any pod (it carries the API server's Service).
#
# Environment: HERALD_NODES (default 3, 1..8), HERALD_LAB_DIR, HERALD_KUBE_PROXY_MODE (nftables
# or iptables; default nftables when `nft` works in a namespace), HERALD_NODES_FORCE=1 (`down`
# also removes a node lab another lab dir made).
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
nodes_dir="${lab}/nodes"
logs="${lab}/logs"
pids="${lab}/pids"
n_nodes="${HERALD_NODES:-3}"
max_nodes=8

api_addr="203.0.113.254"
service_cidr4="198.51.100.0/24"
service_cidr6="2001:db8:5::/108"
sw_ns="hl-sw"
bridge="br0"
client_ns="hl-client"
client_mac="02:00:00:00:00:c8"
client_ip4="192.0.2.200"
client_ip6="2001:db8::200"
# Network B: its own switch, every node's eth1 and a client.
swb_ns="hl-swb"
clientb_ns="hl-clientb"
clientb_mac="02:00:00:00:01:c8"
clientb_ip4="203.0.113.222"
clientb_ip6="2001:db8:b::200"
# The VLAN on the first switch: node 1's eth0.100 and a client.
vlan_id=100
vlan_if="eth0.${vlan_id}"
vlan_node=1
vlan_node_ip4="203.0.113.161"
vlan_node_ip6="2001:db8:c::11"
clientv_ns="hl-clientv"
clientv_mac="02:00:00:00:02:c8"
clientv_ip4="203.0.113.174"
clientv_ip6="2001:db8:c::200"
mnt_dir="/run/herald-lab/mnt"
cni_bin="/usr/lib/cni"
owner_tag="herald-lab:${lab}"
# Keys this script owns in .lab/env.
env_keys='^(HERALD_NODE|HERALD_CLIENT_|HERALD_SWITCH_|HERALD_LB_|HERALD_KUBE_PROXY_MODE=|HERALD_NODES=|HERALD_LAB_IMAGE_)'

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
node_mac_b() { printf '02:00:00:00:01:%02x' "$1"; }
node_ip4_b() { printf '203.0.113.%s' $((192 + $1)); }
node_ip6_b() { printf '2001:db8:b::%s' $((10 + $1)); }
pod_cidr4() { printf '203.0.113.%s/28' $((16 * ($1 - 1))); }
pod_gw4() { printf '203.0.113.%s' $((16 * ($1 - 1) + 1)); }
pod_cidr6() { printf '2001:db8:113:%x::/64' "$1"; }
mgmt_root_ip() { printf '203.0.113.%s' $((126 + 2 * $1)); }
mgmt_node_ip() { printf '203.0.113.%s' $((127 + 2 * $1)); }
node_dir() { printf '%s/%s' "${nodes_dir}" "$(node_ns "$1")"; }
node_mnt() { printf '%s/%s' "${mnt_dir}" "$(node_ns "$1")"; }

ns_exists() { [[ -e "/run/netns/$1" ]]; }
in_ns() { local ns="$1"; shift; ip netns exec "${ns}" "$@"; }
# Node i's mount and network namespaces. Not `ip netns exec`: it remounts /sys, which hides
# the cgroup mounts the kubelet needs.
in_node() { local i="$1"; shift; nsenter --mount="$(node_mnt "${i}")" --net="/run/netns/$(node_ns "${i}")" -- "$@"; }
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
  ensure_port_on "${sw_ns}" "$1" eth0 "$2" "$3" "$4" "$5"
}

# A namespace's interface IF, attached to switch namespace SW (its bridge) as port PORT;
# empty addresses are not set.
ensure_port_on() { # sw ns if port mac ip4/len ip6/len
  local sw="$1" ns="$2" ifname="$3" port="$4" mac="$5" ip4="$6" ip6="$7"
  ensure_ns "${ns}"
  sysctl_ns "${ns}" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  if ! ip -n "${ns}" link show "${ifname}" >/dev/null 2>&1; then
    ip -n "${sw}" link del "${port}" 2>/dev/null || true
    ip -n "${ns}" link add "${ifname}" address "${mac}" type veth peer name "${port}" netns "${sw}"
  fi
  ip -n "${ns}" link set "${ifname}" address "${mac}"
  sysctl_ns "${ns}" "net.ipv6.conf.${ifname}.accept_dad=0"
  ip -n "${sw}" link set "${port}" master "${bridge}" up
  if [[ -n "${ip4}" ]]; then ip -n "${ns}" addr replace "${ip4}" dev "${ifname}"; fi
  if [[ -n "${ip6}" ]]; then ip -n "${ns}" addr replace "${ip6}" dev "${ifname}" nodad; fi
  ip -n "${ns}" link set "${ifname}" up
}

# VLAN ${vlan_id} on a namespace's eth0 (the switch forwards the tagged frames as they are).
# Fails when the kernel has no 802.1Q support (no 8021q module: "Unknown device type").
ensure_vlan() { # ns ip4/len ip6/len
  local ns="$1" ip4="$2" ip6="$3"
  if ! ip -n "${ns}" link show "${vlan_if}" >/dev/null 2>&1; then
    ip -n "${ns}" link add link eth0 name "${vlan_if}" type vlan id "${vlan_id}" 2>/dev/null ||
      return 1
  fi
  sysctl_ns "${ns}" "net/ipv6/conf/${vlan_if}/accept_dad=0"
  ip -n "${ns}" addr replace "${ip4}" dev "${vlan_if}"
  ip -n "${ns}" addr replace "${ip6}" dev "${vlan_if}" nodad
  ip -n "${ns}" link set "${vlan_if}" up
}

# Whether the lab has its VLAN (the VLAN client's sub-interface exists).
lab_has_vlan() { ip -n "${clientv_ns}" link show "${vlan_if}" >/dev/null 2>&1; }

# A switch: a bridge that forwards at once (no STP, no multicast snooping, so NDP's multicast
# reaches every port) and says nothing itself.
ensure_switch() { # ns
  local ns="$1" f
  ensure_ns "${ns}"
  sysctl_ns "${ns}" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  if ! ip -n "${ns}" link show "${bridge}" >/dev/null 2>&1; then
    ip -n "${ns}" link add "${bridge}" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  fi
  ip -n "${ns}" link set "${bridge}" up
  # No netfilter on the switch's bridged frames (the knobs exist when br_netfilter is there).
  for f in iptables ip6tables arptables; do
    if [[ -e /proc/sys/net/bridge/bridge-nf-call-${f} ]]; then
      in_ns "${ns}" sh -c "echo 0 >/proc/sys/net/bridge/bridge-nf-call-${f}" 2>/dev/null || true
    fi
  done
}

net_up() {
  if ! [[ "${n_nodes}" =~ ^[0-9]+$ ]] || ((n_nodes < 1 || n_nodes > max_nodes)); then
    die "HERALD_NODES must be 1..${max_nodes} (got ${n_nodes}): each node has a /28 of pods in 203.0.113.0/25"
  fi
  check_owner || die "bring it down there first (HERALD_LAB_DIR=... $0 down)"
  local began=${SECONDS} i j

  ensure_switch "${sw_ns}"
  ip -n "${sw_ns}" link set "${bridge}" alias "${owner_tag}"
  ensure_switch "${swb_ns}"

  # The API server's address in the root namespace.
  add_dummy "" hl-api0
  sysctl -qw net.ipv6.conf.hl-api0.disable_ipv6=1 >/dev/null 2>&1 || true
  ip link set hl-api0 up
  ip addr replace "${api_addr}/32" dev hl-api0

  ensure_port "${client_ns}" client "${client_mac}" "${client_ip4}/24" "${client_ip6}/64"
  ensure_port_on "${swb_ns}" "${clientb_ns}" eth0 client "${clientb_mac}" "${clientb_ip4}/27" "${clientb_ip6}/64"
  ensure_port "${clientv_ns}" clientv "${clientv_mac}" "" ""
  if ! ensure_vlan "${clientv_ns}" "${clientv_ip4}/28" "${clientv_ip6}/64"; then
    log "warning: this kernel has no 802.1Q VLAN support (ip link add ... type vlan: Unknown device type): the lab has no VLAN, and the VLAN end-to-end test is skipped"
  fi

  for ((i = 1; i <= n_nodes; i++)); do
    local ns mi
    ns="$(node_ns "${i}")"
    mi="hl-m${i}"
    ensure_port "${ns}" "node${i}" "$(node_mac "${i}")" "$(node_ip4 "${i}")/24" "$(node_ip6 "${i}")/64"
    ensure_port_on "${swb_ns}" "${ns}" eth1 "node${i}" "$(node_mac_b "${i}")" "$(node_ip4_b "${i}")/27" "$(node_ip6_b "${i}")/64"
    if ((i == vlan_node)) && lab_has_vlan; then ensure_vlan "${ns}" "${vlan_node_ip4}/28" "${vlan_node_ip6}/64"; fi
    # A node routes (kube-proxy forwards to other nodes' pods) but sends no redirects. Pods'
    # bridge ports are filtered by kube-proxy's rules (br_netfilter where the kernel has it).
    sysctl_ns "${ns}" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
      net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0 \
      net.ipv4.conf.eth1.send_redirects=0
    # Management: a veth to the root namespace, IPv4 only: the API server and, for the
    # source address of connections to a Service IP before kube-proxy rewrites it, the
    # Service ranges.
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
    ip -n "${ns}" route replace "${service_cidr4}" via "$(mgmt_root_ip "${i}")" dev mgmt0
    # The root namespace (the API server) reaches the node's kubelet and its pods.
    ip route replace "$(node_ip4 "${i}")/32" via "$(mgmt_node_ip "${i}")" dev "${mi}"
    ip route replace "$(pod_cidr4 "${i}")" via "$(mgmt_node_ip "${i}")" dev "${mi}"
  done
  for ((i = 1; i <= n_nodes; i++)); do lan_routes "${i}"; done
  remove_nodes_above "${n_nodes}"
  log "network ready: ${n_nodes} nodes, clients ${client_ns}, ${clientb_ns} (network B, switch ${swb_ns}) and ${clientv_ns} (VLAN ${vlan_id} on ${sw_ns}/${bridge}), API address ${api_addr} ($((SECONDS - began))s)"
}

# Node i reaches every other node's pods through that node, over eth0. A link down removes
# these routes and eth0's (and its VLAN's) global IPv6 address, so `link up` puts them back.
lan_routes() {
  local i="$1" j ns
  ns="$(node_ns "${i}")"
  ip -n "${ns}" addr replace "$(node_ip6 "${i}")/64" dev eth0 nodad
  for ((j = 1; j <= n_nodes; j++)); do
    ((i == j)) && continue
    ip -n "${ns}" route replace "$(pod_cidr4 "${j}")" via "$(node_ip4 "${j}")" dev eth0
    ip -n "${ns}" -6 route replace "$(pod_cidr6 "${j}")" via "$(node_ip6 "${j}")" dev eth0
  done
  ip -n "${ns}" -6 route replace "${service_cidr6}" dev eth0
  # The VLAN on eth0 went down with it, and lost its IPv6 address too.
  if ((i == vlan_node)) && ip -n "${ns}" link show "${vlan_if}" >/dev/null 2>&1; then
    ip -n "${ns}" link set "${vlan_if}" up
    ip -n "${ns}" addr replace "${vlan_node_ip6}/64" dev "${vlan_if}" nodad
  fi
}

# Nodes beyond N (left by an earlier `up` with a larger HERALD_NODES).
remove_nodes_above() {
  local n="$1" ns i
  while read -r ns; do
    i="${ns#hl-node}"
    ((i > n)) || continue
    remove_node "${i}"
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

start_in_node() { # i name logfile command...: a long-running process of node i
  local i="$1" name="$2" logfile="$3"
  shift 3
  # setsid: away from the caller's process group (Ctrl-C, test timeouts); nsenter execs, so
  # $! is the command itself. fd 7 (our lock) is closed for the child.
  setsid nsenter --mount="$(node_mnt "${i}")" --net="/run/netns/$(node_ns "${i}")" -- \
    "$@" >>"${logfile}" 2>&1 </dev/null 7<&- &
  local pid=$! t
  printf '%s\n' "${pid}" >"${pids}/${name}.pid"
  # Until nsenter has entered the node (pid_of checks the namespace).
  for ((t = 0; t < 100; t++)); do
    [[ "$(ip netns identify "${pid}" 2>/dev/null)" == "$(node_ns "${i}")" ]] && break
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.02
  done
  log "started ${name} (pid ${pid}), log ${logfile}"
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

# The v1 cgroup hierarchies (one per mounted controller set).
cgroup_hierarchies() {
  awk '$3 == "cgroup" {print $2}' /proc/self/mounts
}

# Every process of node i: in its network namespace (kubelet, containerd, its shims,
# kube-proxy, hostNetwork pods), in its cgroups (every pod's containers, whatever their
# network namespace) and in its mount namespace.
node_processes() {
  local i="$1" ns mnt_ino h
  ns="$(node_ns "${i}")"
  {
    if ns_exists "${ns}"; then ip netns pids "${ns}" 2>/dev/null || true; fi
    for h in $(cgroup_hierarchies); do
      if [[ -d "${h}/${ns}" ]]; then find "${h}/${ns}" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
    done
    if [[ -e "$(node_mnt "${i}")" ]]; then
      mnt_ino="$(stat -L -c %i "$(node_mnt "${i}")" 2>/dev/null || true)"
      if [[ -n "${mnt_ino}" ]]; then
        local p
        for p in /proc/[0-9]*; do
          [[ "$(stat -L -c %i "${p}/ns/mnt" 2>/dev/null)" == "${mnt_ino}" ]] && printf '%s\n' "${p#/proc/}"
        done
      fi
    fi
  } | sort -un
}

# Stops everything node i runs and removes what it made outside its directory: its pods
# (SIGKILL: the lab is going away), kubelet, containerd, kube-proxy; its mount namespace;
# its cgroups; its network namespace and management link.
remove_node() {
  local i="$1" ns h
  ns="$(node_ns "${i}")"
  local -a p
  mapfile -t p < <(node_processes "${i}")
  if ((${#p[@]})); then
    # Freeze nothing, ask nothing: pods first (their kubelet would restart them), then the rest.
    kill -KILL "${p[@]}" 2>/dev/null || true
    local t
    for ((t = 0; t < 50; t++)); do
      mapfile -t p < <(node_processes "${i}")
      ((${#p[@]})) || break
      kill -KILL "${p[@]}" 2>/dev/null || true
      sleep 0.1
    done
    ((${#p[@]} == 0)) || log "warning: ${ns}: processes still alive: ${p[*]}"
  fi
  if [[ -e "$(node_mnt "${i}")" ]]; then
    umount "$(node_mnt "${i}")" 2>/dev/null || umount -l "$(node_mnt "${i}")" 2>/dev/null || true
    rm -f "$(node_mnt "${i}")"
  fi
  for h in $(cgroup_hierarchies); do
    if [[ -d "${h}/${ns}" ]]; then
      # Deepest first; a cgroup directory is removed with rmdir, never rm -r.
      find "${h}/${ns}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    fi
  done
  if ns_exists "${ns}"; then ip netns del "${ns}"; fi
  ip link del "hl-m${i}" 2>/dev/null || true
  ip -n "${sw_ns}" link del "node${i}" 2>/dev/null || true
  # Bind-mounted directories are gone with the mount namespace; containerd's snapshots may
  # hold files owned by any user: rm as root.
  rm -rf "$(node_dir "${i}")"
  rm -f "${pids}"/*-"${ns}".pid
}

# --- one node: mount namespace, containerd, kubelet, kube-proxy ------------------------

# The directories a node's kubelet and containerd use at fixed paths, each bound to its own
# under .lab/nodes/hl-node<i>/.
node_binds=(
  /var/lib/kubelet /var/lib/containerd /run/containerd /var/lib/cni
  /var/log/pods /var/log/containers /etc/cni/net.d /run/netns
)

mount_dir_ready() { # the directory holding the nodes' mount namespace files is a private mount
  mkdir -p "${mnt_dir}"
  if ! findmnt -n "${mnt_dir}" >/dev/null 2>&1; then
    mount --bind "${mnt_dir}" "${mnt_dir}"
  fi
  mount --make-private "${mnt_dir}"
}

node_mount_ns() { # i: node i's mount namespace with its binds (kept while it exists)
  local i="$1" d b
  d="$(node_dir "${i}")"
  [[ -e "$(node_mnt "${i}")" ]] && findmnt -n "$(node_mnt "${i}")" >/dev/null 2>&1 && return 0
  mount_dir_ready
  touch "$(node_mnt "${i}")"
  unshare --mount="$(node_mnt "${i}")" --propagation private true
  local script=""
  for b in "${node_binds[@]}"; do
    mkdir -p "${d}/fs${b}"
    script+="mkdir -p '${b}' && mount --bind '${d}/fs${b}' '${b}' && "
  done
  nsenter --mount="$(node_mnt "${i}")" -- sh -c "${script} true"
}

cgroups_ready() { # i: /hl-node<i> in every v1 hierarchy (the kubelet's cgroupRoot)
  local ns h
  ns="$(node_ns "$1")"
  for h in $(cgroup_hierarchies); do
    mkdir -p "${h}/${ns}"
    # A cpuset cgroup takes no task until it has CPUs and memory nodes.
    if [[ -f "${h}/cpuset.cpus" && -z "$(tr -d '[:space:]' <"${h}/${ns}/cpuset.cpus")" ]]; then
      cat "${h}/cpuset.cpus" >"${h}/${ns}/cpuset.cpus"
      cat "${h}/cpuset.mems" >"${h}/${ns}/cpuset.mems"
    fi
  done
}

write_node_config() { # i: containerd, CNI and kubelet configuration of node i
  local i="$1" d ns pki
  d="$(node_dir "${i}")"
  ns="$(node_ns "${i}")"
  pki="${lab}/pki"
  mkdir -p "${d}" "${d}/fs/etc/cni/net.d"
  install -m 600 "${kubeconfig}" "${d}/kubeconfig"
  : >"${d}/resolv.conf"
  # containerd: no CAP_SYS_RESOURCE on this machine kind, so it may only raise a container's
  # OOM score (restrict_oom_score_adj); cgroupfs (no systemd); the lab's pause image; CNI from
  # Debian's containernetworking-plugins.
  cat >"${d}/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.1"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${cni_bin}"
    conf_dir = "/etc/cni/net.d"
EOF
  # Pods: a bridge with this node's ranges; no masquerade (every namespace of the lab routes
  # to every pod range), hairpin so a pod reaches itself through a Service.
  cat >"${d}/fs/etc/cni/net.d/10-herald-lab.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "herald-lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [
          [{"subnet": "$(pod_cidr4 "${i}")", "gateway": "$(pod_gw4 "${i}")"}],
          [{"subnet": "$(pod_cidr6 "${i}")"}]
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # kubelet: cgroupfs under /hl-node<i>; no OOM score of its own (no CAP_SYS_RESOURCE); images
  # are imported, never pulled, so image GC and disk-pressure eviction are off; a Node lease of
  # 20 s (NotReady 20 s after the kubelet stops, with the controller-manager's grace period);
  # the API server authenticated by the lab's CA.
  cat >"${d}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip4 "${i}")
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki}/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /${ns}
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
oomScoreAdj: 0
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 8760h
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
resolvConf: ${d}/resolv.conf
clusterDomain: cluster.local
maxPods: 30
nodeLeaseDurationSeconds: 20
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
rotateCertificates: false
serverTLSBootstrap: false
localStorageCapacityIsolation: true
EOF
}

start_node() { # i: containerd and kubelet of node i (each only when not running)
  local i="$1" ns d
  ns="$(node_ns "${i}")"
  d="$(node_dir "${i}")"
  if ! pid_of "containerd-${ns}" "${ns}" >/dev/null; then
    start_in_node "${i}" "containerd-${ns}" "${logs}/containerd-${ns}.log" \
      containerd --config "${d}/containerd.toml" --log-level warn
    local t
    for ((t = 0; t < 100; t++)); do
      [[ -S "${d}/fs/run/containerd/containerd.sock" ]] && break
      pid_of "containerd-${ns}" "${ns}" >/dev/null || {
        tail -n 30 "${logs}/containerd-${ns}.log" >&2
        die "containerd of ${ns} exited"
      }
      sleep 0.1
    done
    [[ -S "${d}/fs/run/containerd/containerd.sock" ]] || die "containerd of ${ns} has no socket after 10s"
  fi
  import_node_images "${i}"
  start_kubelet "${i}"
}

start_kubelet() { # i
  local i="$1" ns d
  ns="$(node_ns "${i}")"
  d="$(node_dir "${i}")"
  pid_of "kubelet-${ns}" "${ns}" >/dev/null && return 0
  start_in_node "${i}" "kubelet-${ns}" "${logs}/kubelet-${ns}.log" \
    "${bin}/kubelet" \
    --config="${d}/kubelet.yaml" \
    --kubeconfig="${d}/kubeconfig" \
    --hostname-override="${ns}" \
    --node-ip="$(node_ip4 "${i}"),$(node_ip6 "${i}")" \
    --node-labels=herald.dev/lab-node=true \
    --v=1
}

# The lab's images into node i's containerd (k8s.io is the CRI's namespace).
import_node_images() {
  local i="$1" line name archive ref sock
  sock="$(node_dir "${i}")/fs/run/containerd/containerd.sock"
  while IFS= read -r line; do
    [[ -n "${line}" ]] || continue
    name="${line%%=*}"
    archive="${line#*=}"
    ref="${archive#*:}"
    archive="${archive%%:*}"
    import_image "${sock}" "${archive}" "${ref}" || die "importing ${name} into $(node_ns "${i}") failed"
  done <"${nodes_dir}/images"
}

import_image() { # containerd-socket archive reference
  local sock="$1" archive="$2" ref="$3" try
  local repo="${ref%:*}"
  # A containerd that has just made its socket may not have loaded its image store yet: an
  # import then "succeeds" without a trace. Try again until the image is listed.
  for ((try = 1; try <= 10; try++)); do
    if ctr --address "${sock}" -n k8s.io images ls -q 2>/dev/null | grep -qxF "${ref}"; then
      return 0
    fi
    ctr --address "${sock}" -n k8s.io images import --base-name "${repo}" "${archive}" >/dev/null || true
    sleep 0.5
  done
  die "${archive} did not give the image ${ref} in ${sock}"
}

start_kube_proxy() { # i
  local i="$1" ns
  ns="$(node_ns "${i}")"
  pid_of "kube-proxy-${ns}" "${ns}" >/dev/null && return 0
  # --conntrack-max-per-core=0: nf_conntrack_max is not writable inside a network
  # namespace. NodePorts (and health check node ports) on the Node's InternalIPs only,
  # not on mgmt0 or cni0. Metrics and healthz keep their default ports: each namespace has
  # its own (127.0.0.1:10249, 0.0.0.0:10256).
  start_in_node "${i}" "kube-proxy-${ns}" "${logs}/kube-proxy-${ns}.log" \
    "${bin}/kube-proxy" \
    --kubeconfig="$(node_dir "${i}")/kubeconfig" \
    --hostname-override="${ns}" \
    --proxy-mode="${mode}" \
    --conntrack-max-per-core=0 \
    --nodeport-addresses=primary \
    --v=2
}

# --- the cluster side -------------------------------------------------------------

proxy_mode() {
  if [[ -n "${HERALD_KUBE_PROXY_MODE:-}" ]]; then
    case "${HERALD_KUBE_PROXY_MODE}" in
      iptables | nftables) printf '%s\n' "${HERALD_KUBE_PROXY_MODE}" ;;
      ipvs) die "HERALD_KUBE_PROXY_MODE=ipvs: this kernel has no IPVS (see the README for strictARP)" ;;
      *) die "HERALD_KUBE_PROXY_MODE must be iptables or nftables (got ${HERALD_KUBE_PROXY_MODE})" ;;
    esac
  elif command -v nft >/dev/null && in_ns "$(node_ns 1)" nft list tables >/dev/null 2>&1; then
    echo nftables
  elif command -v iptables >/dev/null; then
    echo iptables
  else
    die "neither nft nor iptables works (install nftables: tests/lab/install-deps.sh --node-lab)"
  fi
}

http_ok_in_ns() { # ns url
  in_ns "$1" curl -fsS --max-time 1 -o /dev/null "$2" 2>/dev/null
}

node_ready() { # name
  [[ "$(kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

cluster_up() {
  [[ -f "${lab}/env" ]] || die "the control plane is not up (no ${lab}/env): run tests/lab/lab.sh up"
  local url
  # shellcheck disable=SC1091
  url="$(. "${lab}/env" && printf '%s' "${HERALD_APISERVER_URL:-}")"
  # shellcheck disable=SC1091
  kubeconfig="$(. "${lab}/env" && printf '%s' "${KUBECONFIG:-}")"
  # shellcheck disable=SC1091
  bin="$(. "${lab}/env" && printf '%s' "${HERALD_K8S_BIN:-}")"
  [[ "${url}" == "https://${api_addr}:"* ]] ||
    die "the API server is at ${url:-?}, which the nodes cannot reach; start the control plane with HERALD_APISERVER_ADDRESS=${api_addr} (tests/lab/lab.sh up does, as root)"
  local b
  for b in kubelet kube-proxy; do [[ -x "${bin}/${b}" ]] || die "no ${b} in ${bin}"; done
  for b in containerd containerd-shim-runc-v2 runc ctr nsenter unshare; do
    command -v "${b}" >/dev/null || die "${b} is not installed (tests/lab/install-deps.sh --node-lab)"
  done
  [[ -x "${cni_bin}/bridge" ]] || die "no CNI plugins in ${cni_bin} (apt-get install containernetworking-plugins)"
  export KUBECONFIG="${kubeconfig}" PATH="${bin}:${PATH}"
  local began=${SECONDS} i ns
  mode="$(proxy_mode)"
  mkdir -p "${nodes_dir}" "${logs}" "${pids}"

  log "building the lab's images (pause from Kubernetes' pause.c, the backend)"
  "${lab_src}/images.sh" >"${nodes_dir}/images.new"
  mv "${nodes_dir}/images.new" "${nodes_dir}/images"

  for ((i = 1; i <= n_nodes; i++)); do
    write_node_config "${i}"
    node_mount_ns "${i}"
    cgroups_ready "${i}"
    start_node "${i}"
  done
  # Nodes of an earlier, larger lab.
  local stale
  stale="$(kubectl get nodes -l herald.dev/lab-node=true -o name |
    awk -F'hl-node' -v n="${n_nodes}" '$2 + 0 > n')"
  if [[ -n "${stale}" ]]; then
    # shellcheck disable=SC2086 # one name per word
    kubectl delete --wait=false ${stale} >/dev/null
  fi

  # Ready: every Node registered and Ready (its kubelet runs pods), every kube-proxy
  # healthy (synced).
  local deadline=$((SECONDS + 120)) pending
  while :; do
    pending=""
    for ((i = 1; i <= n_nodes; i++)); do
      ns="$(node_ns "${i}")"
      local c
      for c in containerd kubelet; do
        pid_of "${c}-${ns}" "${ns}" >/dev/null || {
          tail -n 30 "${logs}/${c}-${ns}.log" >&2
          die "${c} of ${ns} exited (log ${logs}/${c}-${ns}.log)"
        }
      done
      if node_ready "${ns}"; then
        start_kube_proxy "${i}"
        pid_of "kube-proxy-${ns}" "${ns}" >/dev/null || {
          tail -n 30 "${logs}/kube-proxy-${ns}.log" >&2
          die "kube-proxy in ${ns} exited (log ${logs}/kube-proxy-${ns}.log)"
        }
        http_ok_in_ns "${ns}" "http://127.0.0.1:10256/healthz" || pending+=" kube-proxy-${ns}"
      else
        pending+=" node-${ns}"
      fi
    done
    [[ -z "${pending}" ]] && break
    ((SECONDS < deadline)) || die "not ready after 120s:${pending} (logs in ${logs})"
    sleep 0.5
  done
  write_env
  log "node lab up: ${n_nodes} nodes Ready, kube-proxy ${mode} ($((SECONDS - began))s); . ${lab}/env"
}

write_env() {
  local i ns line
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
      HERALD_CLIENT_IP6 "${client_ip6}" \
      HERALD_SWITCH_B_NS "${swb_ns}" \
      HERALD_LB_RANGE_B4 "203.0.113.208-203.0.113.215" \
      HERALD_LB_RANGE_B6 "2001:db8:b::100-2001:db8:b::1ff" \
      HERALD_CLIENT_B_NS "${clientb_ns}" \
      HERALD_CLIENT_B_IF eth0 \
      HERALD_CLIENT_B_MAC "${clientb_mac}" \
      HERALD_CLIENT_B_IP4 "${clientb_ip4}" \
      HERALD_CLIENT_B_IP6 "${clientb_ip6}" \
      HERALD_LB_RANGE_VLAN4 "203.0.113.168-203.0.113.171" \
      HERALD_LB_RANGE_VLAN6 "2001:db8:c::100-2001:db8:c::1ff" \
      HERALD_VLAN_NODE "$(if lab_has_vlan; then echo "${vlan_node}"; else echo 0; fi)" \
      HERALD_CLIENT_VLAN_NS "${clientv_ns}" \
      HERALD_CLIENT_VLAN_IF "${vlan_if}" \
      HERALD_CLIENT_VLAN_MAC "${clientv_mac}" \
      HERALD_CLIENT_VLAN_IP4 "${clientv_ip4}" \
      HERALD_CLIENT_VLAN_IP6 "${clientv_ip6}"
    while IFS= read -r line; do
      [[ -n "${line}" ]] || continue
      printf 'HERALD_LAB_IMAGE_%s=%q\n' "$(tr '[:lower:]' '[:upper:]' <<<"${line%%=*}")" "${line#*:}"
    done <"${nodes_dir}/images"
    local all_pids=""
    for ((i = 1; i <= n_nodes; i++)); do
      ns="$(node_ns "${i}")"
      local kp kl cd
      kp="$(cat "${pids}/kube-proxy-${ns}.pid")"
      kl="$(cat "${pids}/kubelet-${ns}.pid")"
      cd="$(cat "${pids}/containerd-${ns}.pid")"
      all_pids+=" ${kp} ${kl} ${cd}"
      printf "HERALD_NODE${i}_%s=%q\n" \
        NAME "${ns}" \
        NS "${ns}" \
        IF eth0 \
        MAC "$(node_mac "${i}")" \
        IP4 "$(node_ip4 "${i}")" \
        IP6 "$(node_ip6 "${i}")" \
        IF_B eth1 \
        MAC_B "$(node_mac_b "${i}")" \
        IP4_B "$(node_ip4_b "${i}")" \
        IP6_B "$(node_ip6_b "${i}")" \
        POD_CIDR4 "$(pod_cidr4 "${i}")" \
        POD_CIDR6 "$(pod_cidr6 "${i}")" \
        SWITCH_PORT "node${i}" \
        MGMT_IF mgmt0 \
        MOUNT_NS "$(node_mnt "${i}")" \
        CONTAINERD_SOCKET "$(node_dir "${i}")/fs/run/containerd/containerd.sock" \
        KUBECONFIG "$(node_dir "${i}")/kubeconfig" \
        KUBE_PROXY_PID "${kp}" \
        KUBELET_PID "${kl}" \
        CONTAINERD_PID "${cd}"
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
  local began=${SECONDS} ns i
  # Node objects, when the API server is still there (lab.sh down stops it next).
  if [[ -f "${lab}/env" && -d "${nodes_dir}" ]]; then
    local kc b
    # shellcheck disable=SC1091
    kc="$(. "${lab}/env" && printf '%s' "${KUBECONFIG:-}")"
    # shellcheck disable=SC1091
    b="$(. "${lab}/env" && printf '%s' "${HERALD_K8S_BIN:-}")"
    if [[ -x "${b}/kubectl" && -f "${kc}" ]]; then
      "${b}/kubectl" --kubeconfig="${kc}" --request-timeout=3s delete nodes \
        -l herald.dev/lab-node=true --wait=false >/dev/null 2>&1 || true
    fi
  fi
  local -a lab_ns=()
  mapfile -t lab_ns < <(ip netns list | awk '{print $1}' | grep -E '^hl-(node[0-9]+|client|clientb|clientv|sw|swb)$' || true)
  local removed=0
  for ns in "${lab_ns[@]}"; do
    if [[ "${ns}" =~ ^hl-node([0-9]+)$ ]]; then
      remove_node "${BASH_REMATCH[1]}"
      removed=$((removed + 1))
    fi
  done
  # Node directories whose namespace is already gone (an interrupted run).
  local d
  for d in "${mnt_dir}"/hl-node* "${nodes_dir}"/hl-node*; do
    [[ -e "${d}" ]] || continue
    i="${d##*hl-node}"
    [[ "${i}" =~ ^[0-9]+$ ]] && remove_node "${i}"
  done
  local -a p=()
  for ns in "${client_ns}" "${clientb_ns}" "${clientv_ns}" "${sw_ns}" "${swb_ns}"; do
    ns_exists "${ns}" || continue
    mapfile -t -O "${#p[@]}" p < <(ip netns pids "${ns}" 2>/dev/null || true)
  done
  stop_pids "${p[@]}"
  for ns in "${client_ns}" "${clientb_ns}" "${clientv_ns}" "${sw_ns}" "${swb_ns}"; do
    if ns_exists "${ns}"; then ip netns del "${ns}"; fi
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
  rm -f "${logs}"/kube-proxy-hl-node*.log "${logs}"/kubelet-hl-node*.log "${logs}"/containerd-hl-node*.log
  if [[ -f "${lab}/env" ]]; then
    grep -v -E "${env_keys}" "${lab}/env" >"${lab}/env.nodes" || true
    mv "${lab}/env.nodes" "${lab}/env"
  fi
  # The lab's directories, once empty (after control-plane.sh down).
  local f
  for f in "${pids}" "${logs}" "${lab}"; do
    if [[ -d "${f}" ]]; then rmdir --ignore-fail-on-non-empty "${f}"; fi
  done
  if ((${#lab_ns[@]} + ${#root_links[@]})); then
    log "removed ${removed} nodes, ${#lab_ns[@]} namespaces and ${#root_links[@]} root links ($((SECONDS - began))s)"
  fi
}

cmd_env() {
  [[ -f "${nodes_dir}/env" ]] || die "the node lab is not up (no ${nodes_dir}/env)"
  cat "${nodes_dir}/env"
}

load_env() {
  [[ -f "${lab}/env" ]] || die "the lab is not up (no ${lab}/env)"
  # shellcheck disable=SC1091
  bin="$(. "${lab}/env" && printf '%s' "${HERALD_K8S_BIN:-}")"
  # shellcheck disable=SC1091
  kubeconfig="$(. "${lab}/env" && printf '%s' "${KUBECONFIG:-}")"
  # shellcheck disable=SC1091
  n_nodes="$(. "${lab}/env" && printf '%s' "${HERALD_NODES:-}")"
  [[ -n "${n_nodes}" ]] || die "the node lab is not up"
}

node_index() { # $1 must be a node of the lab
  if ! [[ "$1" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > n_nodes)); then
    die "no node $1 (1..${n_nodes})"
  fi
}

cmd_kubelet() { # stop|start I
  load_env
  node_index "${2:-}"
  local ns
  ns="$(node_ns "$2")"
  case "$1" in
    stop)
      local pid
      if pid="$(pid_of "kubelet-${ns}" "${ns}")"; then stop_pids "${pid}"; fi
      rm -f "${pids}/kubelet-${ns}.pid"
      log "stopped the kubelet of ${ns}"
      ;;
    start) start_kubelet "$2" ;;
    *) usage ;;
  esac
}

cmd_link() { # down|up I
  load_env
  node_index "$2"
  local ns
  ns="$(node_ns "$2")"
  case "$1" in
    down) ip -n "${ns}" link set eth0 down ;;
    up)
      ip -n "${ns}" link set eth0 up
      lan_routes "$2"
      ;;
    *) usage ;;
  esac
}

cmd_import() { # archive reference
  load_env
  local i
  for ((i = 1; i <= n_nodes; i++)); do
    import_image "$(node_dir "${i}")/fs/run/containerd/containerd.sock" "$1" "$2"
  done
  log "imported $2 into ${n_nodes} nodes"
}

main() {
  (($#)) || usage
  case "$1" in
    api-address) printf '%s\n' "${api_addr}"; return 0 ;;
    net | up | down | env) (($# == 1)) || usage ;;
    kubelet | import | link) (($# == 3)) || usage ;;
    enter) (($# >= 3)) || usage ;;
    *) usage ;;
  esac
  if [[ "$(id -u)" != 0 ]]; then
    echo "SKIP: the node lab needs root (network namespaces)" >&2
    exit 3
  fi
  if [[ "$1" == enter ]]; then
    shift
    load_env
    node_index "$1"
    local i="$1"
    shift
    in_node "${i}" "$@"
    return
  fi
  # One node-lab operation at a time on this machine (the names are global).
  exec 7<"${BASH_SOURCE[0]}"
  flock 7
  local cmd="$1"
  shift
  "cmd_${cmd}" "$@"
}

main "$@"
