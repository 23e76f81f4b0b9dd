#!/usr/bin/env bash
# `make demo` (root): the lab cluster with Herald installed as the README says, a pool, an
# L2Advertisement, a Deployment and its LoadBalancer Service; then the proof that a client on
# the LAN reaches it through the node Herald elected, and how long the client goes unserved
# when that node drops off the LAN. The lab stays up; `make lab-down` stops it.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"

if [[ "$(id -u)" != 0 ]]; then
  echo "make demo needs root: the lab's nodes are network namespaces, each with a kubelet and a containerd." >&2
  exit 1
fi

began=${SECONDS}
"${lab_src}/lab.sh" up
set -a
# shellcheck disable=SC1091
. "${lab}/env"
set +a
export PATH="${HERALD_K8S_BIN}:${PATH}"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
client() { ip netns exec "${HERALD_CLIENT_NS}" "$@"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

say kubectl get nodes -o wide
kubectl get nodes -o wide
say kubectl get pods -n herald-system -o wide
kubectl get pods -n herald-system -o wide

say kubectl apply -f deploy/examples/pool.yaml
kubectl apply -f "${repo_root}/deploy/examples/pool.yaml"
# The Deployment behind the Service: the lab's backend image (it answers with its node's name).
say "kubectl apply -f - # Deployment web: 3 replicas, one per node"
kubectl apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
           labelSelector: {matchLabels: {app: web}}}
      containers:
        - name: web
          image: ${HERALD_LAB_IMAGE_BACKEND}
          args: ["8080"]
          ports: [{containerPort: 8080}]
          env: [{name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
          readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
EOF
kubectl rollout status deployment/web --timeout=120s
say kubectl apply -f deploy/examples/service.yaml
start=$(date +%s%N)
kubectl apply -f "${repo_root}/deploy/examples/service.yaml"
ip=""
for _ in $(seq 1 100); do
  ip="$(kubectl get svc web -o jsonpath='{.status.loadBalancer.ingress[0].ip}')"
  [[ -n "${ip}" ]] && break
  sleep 0.05
done
[[ -n "${ip}" ]] || { echo "no EXTERNAL-IP after 5 s" >&2; exit 1; }
allocated_ms="$(ms_since "${start}")"
say kubectl get svc web
kubectl get svc web
printf 'web got EXTERNAL-IP %s %s ms after it was applied.\n' "${ip}" "${allocated_ms}"
say kubectl get ipaddresspools
sleep 0.6 # pool status is written at most twice a second
kubectl get ipaddresspools

# Which node announces it: the speaker's condition on the Service.
owner=""
for _ in $(seq 1 100); do
  owner="$(kubectl get svc web -o jsonpath='{.status.conditions[?(@.type=="herald.dev/Announced")].message}')"
  [[ -n "${owner}" ]] && break
  sleep 0.1
done
say "kubectl get svc web -o jsonpath='{.status.conditions}'"
kubectl get svc web -o jsonpath='{range .status.conditions[*]}{.type}: {.message}{"\n"}{end}'
owner_node="$(sed -n 's/.*node \(hl-node[0-9]*\).*/\1/p' <<<"${owner}")"
[[ -n "${owner_node}" ]] || { echo "no node announces ${ip}: ${owner:-no condition}" >&2; exit 1; }

say "ip netns exec ${HERALD_CLIENT_NS} arping -c 3 ${ip}"
answered=""
for _ in $(seq 1 50); do
  if client arping -c 1 -w 1 -I eth0 "${ip}" >/dev/null 2>&1; then answered=yes; break; fi
  sleep 0.1
done
[[ -n "${answered}" ]] || { echo "no speaker answered ARP for ${ip}" >&2; exit 1; }
client arping -c 3 -w 3 -I eth0 "${ip}" || true
say "ip netns exec ${HERALD_CLIENT_NS} curl http://${ip}/"
body=""
for _ in $(seq 1 30); do
  if body="$(client curl -s --max-time 1 "http://${ip}/")" && [[ -n "${body}" ]]; then break; fi
  sleep 0.2
done
echo "${body}"
[[ "${body}" == hl-node* ]] || { echo "curl ${ip} did not reach a backend" >&2; exit 1; }
printf 'A client on the LAN resolved %s to %s'"'"'s MAC and a backend pod (on %s) answered through kube-proxy.\n' \
  "${ip}" "${owner_node}" "${body}"

# Failover: the announcing node drops off the LAN (its link cut, as when a node dies or its
# switch port goes down). The client keeps asking every 10 ms; the time until it is served
# again is the failover a user sees.
i="${owner_node#hl-node}"
port_var="HERALD_NODE${i}_SWITCH_PORT"
say "ip -n ${HERALD_SWITCH_NS} link set ${!port_var} down   # ${owner_node} drops off the LAN"
cut=$(date +%s%N)
ip -n "${HERALD_SWITCH_NS}" link set "${!port_var}" down
served=""
while (($(ms_since "${cut}") < 20000)); do
  if body="$(client curl -s --max-time 0.1 "http://${ip}/")" && [[ -n "${body}" ]]; then
    served="$(ms_since "${cut}")"
    break
  fi
  sleep 0.01
done
new_owner=""
for _ in $(seq 1 50); do
  new_owner="$(kubectl get svc web -o jsonpath='{.status.conditions[?(@.type=="herald.dev/Announced")].message}')"
  [[ "${new_owner}" != "${owner}" && -n "${new_owner}" ]] && break
  sleep 0.1
done
ip -n "${HERALD_SWITCH_NS}" link set "${!port_var}" up
[[ -n "${served}" ]] || { echo "the client was not served again within 20 s" >&2; exit 1; }
printf '\nServed again %s ms after %s dropped off the LAN (answered by %s); now: %s\n' \
  "${served}" "${owner_node}" "${body}" "${new_owner}"
printf '%s is back on the LAN; it does not pull the IP back while its hold-down runs.\n' "${owner_node}"

printf '\nmake demo took %ss. The lab stays up: . %s/env, kubectl get svc; make lab-down stops it.\n' \
  "$((SECONDS - began))" "${lab}"
