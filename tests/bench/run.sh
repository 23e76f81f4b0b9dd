#!/usr/bin/env bash
# The controller benchmark (issue 2, section 5); `make bench` runs it.
#
#   tests/bench/run.sh [SIZE...]      default sizes: 1000 10000
#
# Builds the release binaries (herald-controller, herald-bench), then runs:
#   micro                 allocator / index micro-benchmarks (no cluster)
#   for each SIZE N, HERALD_BENCH_REPS times (odd repetitions limit first, even
#   ones drain first, so that neither always runs on a warmer machine):
#     direct N            N Services of a class nobody serves, then N status
#                         patches sent directly: the API server's limit
#     drain N             N Services of the served class, then the controller
#                         starts; time to the last status written
#   and once per SIZE:
#     live N              the controller runs while N Services are created
#   drain 250 per pool    the same drain from a /120, a /112 and a /64 pool
#                         (three rounds)
# Every cluster phase gets a fresh control plane (tests/lab/control-plane.sh
# up ... down), so nothing from a previous phase lingers in etcd. The results
# go to target/bench/results-DATE.jsonl and are printed as Markdown tables.
#
# The bench's control plane has its own state directory and port, so that it
# never touches a lab someone else is using in the same tree (.lab, :6443).
#
# Environment:
#   HERALD_BENCH_OUT             results and logs (default target/bench)
#   HERALD_BENCH_LAB_DIR         the bench lab's state (default target/bench-lab)
#   HERALD_BENCH_APISERVER_PORT  its kube-apiserver port (default 16443)
#   HERALD_BENCH_REPS            repetitions of direct + drain (default 2)
#   HERALD_BENCH_POOL_SIZES      0 skips the per-pool-size drains (default 1)
#   HERALD_BENCH_MICRO           0 skips the micro-benchmarks (default 1)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"
cp_sh="${repo_root}/tests/lab/control-plane.sh"

log() { printf '[bench] %s\n' "$*" >&2; }

sizes=("$@")
((${#sizes[@]})) || sizes=(1000 10000)
for n in "${sizes[@]}"; do
  [[ "${n}" =~ ^[1-9][0-9]*$ ]] || { log "error: size ${n} is not a positive number"; exit 2; }
done

out="${HERALD_BENCH_OUT:-${repo_root}/target/bench}"
export HERALD_LAB_DIR="${HERALD_BENCH_LAB_DIR:-${repo_root}/target/bench-lab}"
export HERALD_APISERVER_PORT="${HERALD_BENCH_APISERVER_PORT:-16443}"
# Never the shared lab: `down` below would stop someone else's control plane.
if [[ "$(realpath -m "${HERALD_LAB_DIR}")" == "$(realpath -m "${repo_root}/.lab")" ]]; then
  log "error: HERALD_BENCH_LAB_DIR must not be the shared lab ${repo_root}/.lab"
  exit 2
fi
mkdir -p "${out}"
results="${out}/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"

log "building release binaries"
cargo build --release --locked -p herald-controller --bin herald-controller \
  -p herald-tests --bin herald-bench
bench="${repo_root}/target/release/herald-bench"
controller="${repo_root}/target/release/herald-controller"

child=""
lab_started=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  if [[ -n "${child}" ]] && kill -0 "${child}" 2>/dev/null; then
    kill -TERM "${child}" 2>/dev/null || true
    wait "${child}" 2>/dev/null || true
  fi
  # The bench kills its controller itself; this is for when the bench died first.
  if [[ -f "${out}/controller.pid" ]]; then
    pid="$(cat "${out}/controller.pid")"
    if [[ "${pid}" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q herald-controller; then
      log "killing the leftover controller (pid ${pid})"
      kill -KILL "${pid}" 2>/dev/null || true
    fi
    rm -f "${out}/controller.pid"
  fi
  if ((lab_started)); then
    "${cp_sh}" down >/dev/null 2>&1 || log "warning: stopping the bench control plane failed"
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs the bench as a child that this shell waits for, so that signals reach
# the traps at once (bash defers traps while a foreground command runs).
run_bench() {
  "${bench}" "$@" --results "${results}" --out "${out}" --controller "${controller}" &
  child=$!
  local rc=0
  wait "${child}" || rc=$?
  child=""
  return "${rc}"
}

cluster_phase() { # tag command args...
  local tag="$1"
  shift
  log "== ${tag}: fresh control plane"
  "${cp_sh}" down >/dev/null 2>&1 || true
  lab_started=1
  "${cp_sh}" up
  set -a
  # shellcheck disable=SC1090
  . <("${cp_sh}" env)
  set +a
  local began=${SECONDS} rc=0
  run_bench "$@" || rc=$?
  cp "${HERALD_LAB_DIR}/logs/kube-apiserver.log" "${out}/${tag}.apiserver.log" 2>/dev/null || true
  "${cp_sh}" down >/dev/null 2>&1 || log "warning: stopping the bench control plane failed"
  lab_started=0
  ((rc == 0)) || { log "error: ${tag} failed (exit ${rc})"; return "${rc}"; }
  log "== ${tag}: done in $((SECONDS - began))s"
}

began=${SECONDS}
log "results: ${results}"
if [[ "${HERALD_BENCH_MICRO:-1}" != 0 ]]; then
  log "== micro"
  run_bench micro
fi
reps="${HERALD_BENCH_REPS:-2}"
[[ "${reps}" =~ ^[1-9][0-9]*$ ]] || { log "error: HERALD_BENCH_REPS=${reps} is not a positive number"; exit 2; }
for n in "${sizes[@]}"; do
  for ((rep = 1; rep <= reps; rep++)); do
    if ((rep % 2)); then
      cluster_phase "direct-${n}-rep${rep}" direct --n "${n}" --rep "${rep}"
      cluster_phase "drain-${n}-rep${rep}" drain --n "${n}" --rep "${rep}"
    else
      cluster_phase "drain-${n}-rep${rep}" drain --n "${n}" --rep "${rep}"
      cluster_phase "direct-${n}-rep${rep}" direct --n "${n}" --rep "${rep}"
    fi
  done
  cluster_phase "live-${n}" live --n "${n}"
done
if [[ "${HERALD_BENCH_POOL_SIZES:-1}" != 0 ]]; then
  # Short runs (a few tenths of a second): three rounds over the pools.
  for rep in 1 2 3; do
    for pool in 2001:db8:100::/120 2001:db8:100::/112 2001:db8:100::/64; do
      cluster_phase "drain-250-${pool//[:\/]/_}-rep${rep}" drain --n 250 --pool "${pool}" --rep "${rep}"
    done
  done
fi
log "all phases done in $((SECONDS - began))s"

{
  printf '## Results (%s, %s CPUs, %s)\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$(uname -srm)"
  "${bench}" report "${results}"
} | tee "${results%.jsonl}.md"
