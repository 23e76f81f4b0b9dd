#!/usr/bin/env bash
# `make demo`: the lab with a pool and a Service, and the proof that the Service
# got an EXTERNAL-IP from the pool. The lab stays up; `make lab-down` stops it.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"

"${lab_src}/lab.sh" up
set -a
# shellcheck disable=SC1091
. "${lab}/env"
set +a
export PATH="${HERALD_K8S_BIN}:${PATH}"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say kubectl apply -f deploy/examples/pool.yaml
kubectl apply -f "${repo_root}/deploy/examples/pool.yaml"
say kubectl apply -f deploy/examples/service.yaml
kubectl apply -f "${repo_root}/deploy/examples/service.yaml"

start=$(date +%s%N)
ip=""
for _ in $(seq 1 100); do
  ip="$(kubectl get svc web -o jsonpath='{.status.loadBalancer.ingress[0].ip}')"
  [[ -n "${ip}" ]] && break
  sleep 0.05
done
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[[ -n "${ip}" ]] || { echo "no EXTERNAL-IP after 5 s" >&2; exit 1; }

say kubectl get svc web
kubectl get svc web
say kubectl get ipaddresspools
sleep 0.6 # pool status is written at most twice a second
kubectl get ipaddresspools
say kubectl get events --field-selector involvedObject.name=web
kubectl get events --field-selector involvedObject.name=web
printf '\nweb got EXTERNAL-IP %s within %s ms of being applied.\n' "${ip}" "${elapsed_ms}"
case "${ip}" in
  192.0.2.24[0-7]) echo "It is from pool 'demo' (192.0.2.240/29)." ;;
  *) echo "unexpected IP ${ip}" >&2; exit 1 ;;
esac

if [[ -z "${HERALD_CLIENT_NS:-}" ]]; then
  echo "(Not root: no node lab, so no speakers to answer for it. As root, make demo also shows"
  echo " arping and curl from a client on the nodes' LAN.) The lab stays up: make lab-down."
  exit 0
fi

# The node lab: the Service's endpoints are the nodes' backends (no controller-manager here, so
# the demo writes the EndpointSlice itself, as for a selector-less Service).
addrs=()
for i in $(seq 1 "${HERALD_NODES}"); do
  v="HERALD_NODE${i}_POD_IP4"
  n="HERALD_NODE${i}_NAME"
  addrs+=("{\"addresses\":[\"${!v}\"],\"nodeName\":\"${!n}\",\"conditions\":{\"ready\":true}}")
done
endpoints="$(IFS=,; echo "${addrs[*]}")"
kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
 "metadata":{"name":"web-lab","namespace":"default",
   "labels":{"kubernetes.io/service-name":"web","endpointslice.kubernetes.io/managed-by":"herald-demo"}},
 "addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"}],
 "endpoints":[${endpoints}]}
EOF
client() { ip netns exec "${HERALD_CLIENT_NS}" "$@"; }
answered=""
for _ in $(seq 1 50); do
  if client arping -c 1 -w 1 -I eth0 "${ip}" >/dev/null 2>&1; then answered=yes; break; fi
  sleep 0.1
done
[[ -n "${answered}" ]] || { echo "no speaker answered ARP for ${ip}" >&2; exit 1; }
say "ip netns exec ${HERALD_CLIENT_NS} arping -c 3 ${ip}"
client arping -c 3 -w 3 -I eth0 "${ip}" || true
say "kubectl get svc web -o jsonpath='{.status.conditions}'"
sleep 0.5
kubectl get svc web -o jsonpath='{range .status.conditions[*]}{.type}: {.message}{"\n"}{end}'
say "ip netns exec ${HERALD_CLIENT_NS} curl http://${ip}/"
body=""
for _ in $(seq 1 30); do
  if body="$(client curl -s --max-time 1 "http://${ip}/")" && [[ -n "${body}" ]]; then break; fi
  sleep 0.2
done
echo "${body}"
[[ "${body}" == hl-node* ]] || { echo "curl ${ip} did not reach a backend" >&2; exit 1; }
printf '\nA client on the LAN resolved %s to one node'"'"'s MAC and reached a backend (%s) through kube-proxy.\n' "${ip}" "${body}"
echo "The lab stays up: 'make lab-down' stops it."
