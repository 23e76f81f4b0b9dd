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
  192.0.2.24[0-7]) echo "It is from pool 'demo' (192.0.2.240/29). The lab stays up: 'make lab-down' stops it." ;;
  *) echo "unexpected IP ${ip}" >&2; exit 1 ;;
esac
