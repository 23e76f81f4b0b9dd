#!/usr/bin/env bash
# The end-to-end tests (tests/tests/e2e_*.rs) in the lab cluster, with Herald installed as the
# README says: needs root (network namespaces, kubelets). Uses the lab already up (make lab-up as
# root) in its kube-proxy mode; else brings one up in .lab-e2e/ per kube-proxy mode — iptables
# (kube-proxy's default) and nftables, or only HERALD_KUBE_PROXY_MODE when set — and takes it down
# afterwards. The short chaos run (tests/tests/e2e_chaos.rs, about 2 minutes of random faults)
# runs once, in the last mode (nftables unless HERALD_KUBE_PROXY_MODE picks one). Without root
# it says so and skips.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
tests=(--test e2e_lab --test e2e_speaker --test e2e_faults --test e2e_install --test e2e_multihome)

if [[ "$(id -u)" != 0 ]]; then
  echo "SKIPPED end-to-end tests (${tests[*]} --test e2e_chaos): they need root for network namespaces and kubelets; run make test as root"
  exit 0
fi

# The end-to-end tests are #[ignore]d (plain `cargo test` reports them as ignored): run them on
# purpose, one at a time (they share the lab), with what each printed (the figures it measured).
# A lab on a kernel without 802.1Q support has no VLAN: its test is skipped, and said so.
run_tests() {
  local skip=()
  if grep -q '^HERALD_VLAN_NODE=0$' "${HERALD_LAB_DIR}/env"; then
    echo "SKIPPED the_vlans_ip_is_answered_only_by_the_vlan_node: this kernel has no 802.1Q VLAN support, so the lab has no VLAN" >&2
    skip=(--skip the_vlans_ip_is_answered_only_by_the_vlan_node)
  fi
  (cd "${repo_root}" && cargo test -p herald-tests "${tests[@]}" -- --ignored --test-threads=1 --show-output "${skip[@]}")
}

run_chaos() {
  (cd "${repo_root}" && cargo test -p herald-tests --test e2e_chaos -- --ignored --nocapture)
}

default_lab="${repo_root}/.lab"
if [[ -f "${default_lab}/env" ]] && grep -q '^HERALD_CLIENT_NS=' "${default_lab}/env"; then
  mode="$(sed -n 's/^HERALD_KUBE_PROXY_MODE=//p' "${default_lab}/env")"
  echo "[e2e] using the lab in ${default_lab} (kube-proxy ${mode})" >&2
  HERALD_LAB_DIR="${default_lab}" KUBECONFIG="${default_lab}/kubeconfig" run_tests
  HERALD_LAB_DIR="${default_lab}" KUBECONFIG="${default_lab}/kubeconfig" run_chaos
  exit
fi

modes=(iptables nftables)
[[ -n "${HERALD_KUBE_PROXY_MODE:-}" ]] && modes=("${HERALD_KUBE_PROXY_MODE}")
export HERALD_LAB_DIR="${repo_root}/.lab-e2e"
export KUBECONFIG="${HERALD_LAB_DIR}/kubeconfig"
trap '"${lab_src}/lab.sh" down >&2 || true' EXIT
for mode in "${modes[@]}"; do
  began=${SECONDS}
  echo "[e2e] ===== kube-proxy ${mode}: bringing the lab up =====" >&2
  HERALD_KUBE_PROXY_MODE="${mode}" "${lab_src}/lab.sh" up >&2
  echo "[e2e] ===== kube-proxy ${mode}: running the end-to-end tests =====" >&2
  run_tests
  if [[ "${mode}" == "${modes[-1]}" ]]; then
    echo "[e2e] ===== kube-proxy ${mode}: the short chaos run =====" >&2
    run_chaos
  fi
  "${lab_src}/lab.sh" down >&2
  echo "[e2e] ===== kube-proxy ${mode}: passed in $((SECONDS - began))s =====" >&2
done
