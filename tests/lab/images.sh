#!/usr/bin/env bash
# The images the lab's nodes run besides Herald's, built here because the lab has no registry:
#   pause    registry.k8s.io/pause:3.10.1, from Kubernetes' own build/pause/linux/pause.c (in the
#            pinned k8s.io/kubernetes module), `gcc -static` as upstream's Makefile does
#   backend  herald.lab/backend:<hash>, tests/lab/backend (answers with its node's name)
#
#   tests/lab/images.sh     builds what is missing; prints `NAME=ARCHIVE:REFERENCE` lines
#
# Archives go to ${HERALD_CACHE:-~/.cache/herald}/images (pause: built once) and
# target/lab-images (backend: rebuilt when its source changes).
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache="${HERALD_CACHE:-${home}/.cache/herald}/images"
out="${repo_root}/target/lab-images"
pause_version="3.10.1"

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "${cache}" "${out}"

# --- pause -------------------------------------------------------------------------------------
k8s_version="$(sed -n 's/^K8S_VERSION="\(.*\)"/\1/p' "${lab_src}/build-k8s.sh")"
pause_tar="${cache}/pause-${pause_version}-${k8s_version}.oci.tar"
if [[ ! -f "${pause_tar}" ]]; then
  pause_c="$(cd "${lab_src}/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  [[ -f "${pause_c}" ]] || die "no ${pause_c} (run tests/lab/build-k8s.sh first)"
  command -v gcc >/dev/null || die "gcc is not installed"
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  # The flags of build/pause/Makefile.
  gcc -Os -Wall -Werror -static -DVERSION="v${pause_version}-herald-lab" -o "${work}/pause" "${pause_c}"
  strip "${work}/pause"
  "${repo_root}/deploy/oci-image.sh" --out "${pause_tar}" --tag "${pause_version}" \
    --entrypoint /pause --user 65535:65535 "${work}/pause:/pause"
fi
printf 'pause=%s:registry.k8s.io/pause:%s\n' "${pause_tar}" "${pause_version}"

# --- backend -----------------------------------------------------------------------------------
target="$(rustc -vV | sed -n 's/^host: //p')"
backend_src=("${lab_src}/backend/Cargo.toml" "${lab_src}/backend/src/main.rs")
backend_hash="$(cat "${backend_src[@]}" | sha256sum | cut -c1-12)"
backend_tar="${out}/backend-${backend_hash}.oci.tar"
if [[ ! -f "${backend_tar}" ]]; then
  log "building the backend (static)"
  # Its own target directory: a build of Herald's image may hold the workspace's.
  (
    cd "${repo_root}"
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" CARGO_TARGET_DIR="${out}/target" \
      cargo build --quiet --release --locked --target "${target}" -p herald-lab-backend
  )
  "${repo_root}/deploy/oci-image.sh" --out "${backend_tar}" --tag "${backend_hash}" \
    --entrypoint /backend --user 65532:65532 \
    "${out}/target/${target}/release/herald-lab-backend:/backend"
fi
printf 'backend=%s:herald.lab/backend:%s\n' "${backend_tar}" "${backend_hash}"
