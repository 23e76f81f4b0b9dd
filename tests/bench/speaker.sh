#!/usr/bin/env bash
# The speaker benchmarks (issue 3, section 4) against the node lab.
#
#   tests/bench/speaker.sh [herald-speaker-bench run options...]
#
# Needs root and the node lab up with its speakers running (`make lab-up` as root; the
# lab's directory comes from HERALD_LAB_DIR, else KUBECONFIG's directory, else .lab).
# It never starts or stops the lab itself; whatever happens it leaves the lab as it found
# it (speakers running, links up, its Services, EndpointSlices, pools and namespace deleted).
#
# Builds target/release/herald-speaker-bench (not the speaker: the lab runs the image it
# installed, HERALD_IMAGE in .lab/env), then runs, in this order:
#   failover    >= 20 trials each of SIGKILL of the owner's speaker, the owner's eth0 down,
#               SIGTERM, membership traffic dropped one way into the owner and out of it
#               (--faults chooses): fault to the first answer through another node, client
#               request every 10 ms on a fresh TCP connection (p50, p99, max)
#   arp         ARP reply latency, 10,000 requests/s to a VIP (the speaker answers) and
#               10,000/s to the owner node's own address (its kernel answers), interleaved
#   resources   each speaker's VmHWM/VmRSS and utime+stime over 60 s, with 0, 100 and
#               1,000 IPv6 Services
#   api         API requests/min of the speakers and the controller at steady state with
#               100 and 1,000 Services: a 580 s window, counted in the API server's audit log
# About 45 minutes on 2 cores, most of it the two API windows (--api-window-s shortens
# them); `--phases scale` adds the last-create-to-last-status timing of 1,000 and 10,000
# Services. `--system metallb` measures MetalLB instead (tests/lab/systems.sh use metallb
# first; tests/bench/versus.sh runs both). Before each measurement it waits until the controller benchmark (herald-bench)
# is not running.
#
# Results: target/bench/speaker-DATE.json and .md (HERALD_BENCH_OUT changes the
# directory); the Markdown tables are also printed. `herald-speaker-bench report FILE`
# prints them again from the JSON.
#
# Examples:
#   tests/bench/speaker.sh
#   tests/bench/speaker.sh --phases failover,arp --trials 30
#   tests/bench/speaker.sh --phases api --api-window-s 290
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"

log() { printf '[speaker-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "needs root (network namespaces, AF_PACKET, signals to the speakers); run as root after make lab-up"

if [[ -z "${HERALD_LAB_DIR:-}" ]]; then
  if [[ -n "${KUBECONFIG:-}" && -f "$(dirname "${KUBECONFIG}")/env" ]]; then
    HERALD_LAB_DIR="$(dirname "${KUBECONFIG}")"
  else
    HERALD_LAB_DIR="${repo_root}/.lab"
  fi
fi
export HERALD_LAB_DIR
[[ -f "${HERALD_LAB_DIR}/env" ]] || die "no ${HERALD_LAB_DIR}/env: the lab is not up (make lab-up as root)"
grep -q '^HERALD_CLIENT_NS=' "${HERALD_LAB_DIR}/env" ||
  die "${HERALD_LAB_DIR}/env has no node lab (make lab-up as root)"
export KUBECONFIG="${KUBECONFIG:-${HERALD_LAB_DIR}/kubeconfig}"

log "building target/release/herald-speaker-bench"
cargo build --release --locked -p herald-tests --bin herald-speaker-bench

out="${HERALD_BENCH_OUT:-${repo_root}/target/bench}"
mkdir -p "${out}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
json="${out}/speaker-${stamp}.json"
md="${out}/speaker-${stamp}.md"

log "lab ${HERALD_LAB_DIR}; results ${json}"
rc=0
target/release/herald-speaker-bench run --results "${json}" "$@" >"${md}" || rc=$?
cat "${md}"
log "tables in ${md}"
exit "${rc}"
