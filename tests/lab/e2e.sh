#!/usr/bin/env bash
# The end-to-end tests (tests/tests/e2e_*.rs) in the node lab: needs root (network namespaces).
# Uses the node lab already up (make lab-up as root), else brings one up in .lab-e2e/ and takes
# it down afterwards. Without root it says so and skips.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"

if [[ "$(id -u)" != 0 ]]; then
  echo "SKIPPED end-to-end tests (e2e_lab, e2e_speaker): they need root for network namespaces; run make test as root"
  exit 0
fi

run_tests() {
  (cd "${repo_root}" && cargo test -p herald-tests --test e2e_lab --test e2e_speaker -- --test-threads=1)
}

default_lab="${repo_root}/.lab"
if [[ -f "${default_lab}/env" ]] && grep -q '^HERALD_CLIENT_NS=' "${default_lab}/env"; then
  echo "[e2e] using the node lab in ${default_lab}" >&2
  HERALD_LAB_DIR="${default_lab}" KUBECONFIG="${default_lab}/kubeconfig" run_tests
  exit
fi

# The debug build `make test` already made: no second (release) build just for these tests.
export HERALD_PROFILE="${HERALD_PROFILE:-dev}"
export HERALD_LAB_DIR="${repo_root}/.lab-e2e"
export KUBECONFIG="${HERALD_LAB_DIR}/kubeconfig"
trap '"${lab_src}/lab.sh" down >&2 || true' EXIT
"${lab_src}/lab.sh" up >&2
run_tests
