#!/usr/bin/env bash
# The speakers' memory in the lab cluster with N announced Services, running and right after a
# restart (the start-up peak: the initial lists and a takeover of every IP). Root; the lab up
# (`make lab-up`). Prints one line per speaker and phase: VmHWM and VmRSS in MiB.
#
#   tests/bench/speaker-memory.sh [N]     (default 1000)
#
# The Services are IPv6, selector-less, with an EndpointSlice naming a backend pod on every
# node, so every one is announced; they, their namespace, pool and advertisement are deleted
# at the end.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
n="${1:-1000}"
ns="speaker-memory"
settle=60

log() { printf '[speaker-memory] %s\n' "$*" >&2; }
[[ -f "${lab}/env" ]] || { log "the lab is not up (no ${lab}/env)"; exit 1; }
set -a
# shellcheck disable=SC1091
. "${lab}/env"
set +a
export PATH="${HERALD_K8S_BIN}:${PATH}"

status_of() { # node field -> MiB
  local pid
  pid="$("${repo_root}/tests/lab/speakers.sh" pid "$1")"
  awk -v f="$2:" '$1 == f {printf "%.1f", $2 / 1024}' "/proc/${pid}/status"
}

report() { # phase
  local i
  for i in $(seq 1 "${HERALD_NODES}"); do
    printf '%s\t%s\thl-node%s\tVmHWM %s MiB\tVmRSS %s MiB\n' "$1" "${n}" "${i}" \
      "$(status_of "${i}" VmHWM)" "$(status_of "${i}" VmRSS)"
  done
}

cleanup() {
  kubectl delete namespace "${ns}" --wait=false >/dev/null 2>&1 || true
  kubectl delete ipaddresspool "${ns}" l2advertisement "${ns}" >/dev/null 2>&1 || true
  kubectl delete l2advertisement "${ns}" >/dev/null 2>&1 || true
}
trap cleanup EXIT

kubectl create namespace "${ns}" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: herald.dev/v1beta1
kind: IPAddressPool
metadata: {name: ${ns}}
spec: {addresses: ["2001:db8:0:2::/116"], autoAssign: false}
---
apiVersion: herald.dev/v1beta1
kind: L2Advertisement
metadata: {name: ${ns}}
spec: {ipAddressPools: [${ns}]}
EOF
# One backend pod per node; the Services' slices name them.
endpoints=""
for i in $(seq 1 "${HERALD_NODES}"); do
  kubectl -n "${ns}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: backend-hl-node${i}, labels: {app: backend}}
spec:
  nodeName: hl-node${i}
  containers: [{name: b, image: ${HERALD_LAB_IMAGE_BACKEND}, args: ["8080"]}]
EOF
done
kubectl -n "${ns}" wait --for=condition=Ready pod -l app=backend --timeout=120s >/dev/null
for i in $(seq 1 "${HERALD_NODES}"); do
  ip="$(kubectl -n "${ns}" get pod "backend-hl-node${i}" -o jsonpath='{.status.podIPs[1].ip}')"
  endpoints+="{\"addresses\":[\"${ip}\"],\"nodeName\":\"hl-node${i}\",\"conditions\":{\"ready\":true}},"
done
endpoints="[${endpoints%,}]"

log "creating ${n} Services"
for ((s = 0; s < n; s++)); do
  cat <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: s${s}, namespace: ${ns}, annotations: {herald.dev/address-pool: ${ns}}}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s${s}, namespace: ${ns}, labels: {kubernetes.io/service-name: s${s}}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: ${endpoints}
EOF
done | kubectl apply --server-side -f - >/dev/null
log "waiting for ${n} announced IPs"
for _ in $(seq 1 300); do
  total=0
  for i in $(seq 1 "${HERALD_NODES}"); do
    c="$(ip netns exec "hl-node${i}" curl -s --max-time 1 http://127.0.0.1:7473/metrics |
      grep -c '^herald_speaker_announced{ip="2001:db8:0:2:' || true)"
    total=$((total + c))
  done
  ((total >= n)) && break
  sleep 1
done
log "${total} of ${n} IPs announced; ${settle}s to settle"
sleep "${settle}"
report running
log "restarting every speaker (delete its pod; the DaemonSet makes a new one)"
for i in $(seq 1 "${HERALD_NODES}"); do "${repo_root}/tests/lab/speakers.sh" delete "${i}"; done
for i in $(seq 1 "${HERALD_NODES}"); do "${repo_root}/tests/lab/speakers.sh" start "${i}"; done
sleep "${settle}"
report "after restart"
