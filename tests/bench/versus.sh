#!/usr/bin/env bash
# Herald and MetalLB side by side (issue 12): the same lab, the same run, the same measuring
# code (herald-speaker-bench, once with --system herald and once with --system metallb per
# group of phases).
#
#   tests/bench/versus.sh        (make bench-versus) as root, with the lab up (make lab-up)
#
# 1. Builds target/release/herald-speaker-bench, and MetalLB from its Go module with its images
#    (tests/lab/build-metallb.sh, tests/lab/metallb.sh; cached in ~/.cache/herald).
# 2. For each group of phases, runs the two systems one after the other, never both at once
#    (tests/lab/systems.sh use SYSTEM pauses the other: its controller scaled to 0, its speaker
#    DaemonSet on no node), alternating which goes first from group to group:
#      failover   >= 20 trials each of SIGKILL of the owner's speaker, the owner's link down,
#                 SIGTERM; the two-MAC watch from the client
#      scale      1,000 and 10,000 Services: last create to last status written
#      steady     speaker memory and idle CPU with 0, 100 and 1,000 Services; API requests per
#                 minute at steady state with 100 and 1,000 Services (audit log)
# 3. Appends every figure as one JSON line to bench/results/versus-DATE.jsonl (system, metric,
#    value, unit, trials, versions) and prints the table of that file (both columns, ratio).
#
# It leaves Herald running and MetalLB paused. Each run's JSON and Markdown go to
# target/bench/versus-STAMP/. Environment: HERALD_VERSUS_GROUPS (failover,scale,steady),
# HERALD_VERSUS_TRIALS (20), HERALD_VERSUS_SCALE_SIZES (1000,10000),
# HERALD_VERSUS_API_WINDOW_S (600: client-go's watches, MetalLB's, are renewed every 5 to 10
# minutes, Herald's every 290 s), HERALD_VERSUS_OUT (the .jsonl file). About 2 hours on 2 cores.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"

log() { printf '[versus] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "needs root (network namespaces, AF_PACKET, signals to the speakers); run as root after make lab-up"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
export HERALD_LAB_DIR="${lab}"
[[ -f "${lab}/env" ]] || die "no ${lab}/env: the lab is not up (make lab-up as root)"
grep -q '^HERALD_CLIENT_NS=' "${lab}/env" || die "${lab}/env has no node lab (make lab-up as root)"
grep -q '^HERALD_AUDIT_LOG=' "${lab}/env" ||
  die "the lab's API server keeps no audit log (a lab from before it did): make lab-down and make lab-up"
export KUBECONFIG="${lab}/kubeconfig"

IFS=, read -r -a groups <<<"${HERALD_VERSUS_GROUPS:-failover,scale,steady}"
trials="${HERALD_VERSUS_TRIALS:-20}"
sizes="${HERALD_VERSUS_SCALE_SIZES:-1000,10000}"
api_window="${HERALD_VERSUS_API_WINDOW_S:-600}"
jsonl="${HERALD_VERSUS_OUT:-${repo_root}/bench/results/versus-$(date -u +%Y-%m-%d).jsonl}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${repo_root}/target/bench/versus-${stamp}"
mkdir -p "${out}" "$(dirname "${jsonl}")"

log "building target/release/herald-speaker-bench"
cargo build --release --locked -p herald-tests --bin herald-speaker-bench
bench="${repo_root}/target/release/herald-speaker-bench"
log "building MetalLB $(tests/lab/build-metallb.sh --version) and its images"
tests/lab/metallb.sh image >/dev/null

# Whatever happens: Herald running, MetalLB paused.
restore() {
  local rc=$?
  tests/lab/systems.sh use herald || log "could not bring Herald back (tests/lab/systems.sh use herald)"
  exit "${rc}"
}
trap restore EXIT

began=${SECONDS}
order=(herald metallb)
for group in "${groups[@]}"; do
  case "${group}" in
    failover) args=(--phases failover --faults "sigkill,link-down,sigterm" --trials "${trials}") ;;
    scale) args=(--phases scale --scale-sizes "${sizes}") ;;
    steady) args=(--phases "resources,api" --api-window-s "${api_window}") ;;
    *) die "unknown group ${group} (failover, scale, steady)" ;;
  esac
  for system in "${order[@]}"; do
    log "${group}: ${system} ($((SECONDS - began))s into the run)"
    tests/lab/systems.sh use "${system}"
    json="${out}/${group}-${system}.json"
    rc=0
    "${bench}" run --system "${system}" "${args[@]}" --results "${json}" >"${out}/${group}-${system}.md" || rc=$?
    # Whatever it measured before an error still counts (the results say the error).
    if [[ -f "${json}" ]]; then
      "${bench}" versus-lines "${json}" >>"${jsonl}"
    fi
    ((rc == 0)) || log "${group} of ${system} ended with an error (${out}/${group}-${system}.md)"
  done
  order=("${order[1]}" "${order[0]}")
done

log "done in $((SECONDS - began))s; figures in ${jsonl}, each run's tables in ${out}"
"${bench}" versus-table "${jsonl}"
