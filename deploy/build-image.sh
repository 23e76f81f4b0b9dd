#!/usr/bin/env bash
# `make image`: Herald's image (herald-controller and herald-speaker, static, on an empty base)
# as an OCI archive, built from this checkout with no Docker engine. deploy/Dockerfile builds
# the same image for those who have Docker (tests/tests/image.rs checks that the two agree).
#
#   deploy/build-image.sh        prints "ARCHIVE TAG" on stdout
#
# Environment: HERALD_IMAGE_TAG (default: v<workspace version>; `content`: sha-<hash of the
# binaries>, so a rebuilt binary gets a new tag), HERALD_IMAGE_OUT (default
# target/image/herald.oci.tar), HERALD_IMAGE_BINARIES (a directory holding the binaries to
# pack instead of building them: tests/tests/image.rs packs stand-ins), HERALD_IMAGE_PROFILE
# (cargo profile, default release — what ships; `dev` builds in a fraction of the time, for
# iterating on the lab).
#
# What goes in the image (base, user, entrypoint, which binary where) is in deploy/image.env,
# which tests/tests/image.rs also reads to check deploy/Dockerfile against it.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=deploy/image.env
source "${repo_root}/deploy/image.env"
# oci-image.sh makes single-layer images on an empty base and nothing else.
[[ "${IMAGE_BASE}" == scratch ]] || die "deploy/image.env: IMAGE_BASE=${IMAGE_BASE}, only scratch is supported"
# shellcheck disable=SC2153 # IMAGE_FILES comes from image.env
read -r -a image_files <<<"${IMAGE_FILES}"
binaries=() packages=() file_args=()

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "${repo_root}/Cargo.toml" | head -n 1)"
tag="${HERALD_IMAGE_TAG:-v${version}}"
out="${HERALD_IMAGE_OUT:-${repo_root}/target/image/herald.oci.tar}"

if [[ -n "${HERALD_IMAGE_BINARIES:-}" ]]; then
  bins="${HERALD_IMAGE_BINARIES}"
  log "packing the binaries in ${bins} (not building them)"
else
  target="$(rustc -vV | sed -n 's/^host: //p')"
  [[ "${target}" == *-linux-gnu ]] || die "building the image needs a *-linux-gnu host (got ${target})"
  profile="${HERALD_IMAGE_PROFILE:-release}"
  profile_dir="${profile}"
  [[ "${profile}" == dev ]] && profile_dir=debug
  bins="${repo_root}/target/${target}/${profile_dir}"
fi
for f in "${image_files[@]}"; do
  binaries+=("${f%%:*}")
  packages+=(-p "${f%%:*}")
  file_args+=("${bins}/${f%%:*}:${f#*:}")
done

if [[ -z "${HERALD_IMAGE_BINARIES:-}" ]]; then
  # Static binaries: the image has no C library. `--target` keeps the static flag away from
  # build scripts and proc macros, which must stay dynamic.
  log "building ${binaries[*]} (${profile}, static, ${target}); cold release: about 6 minutes on 2 cores"
  began=${SECONDS}
  (
    cd "${repo_root}"
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
      cargo build --profile "${profile}" --locked --target "${target}" "${packages[@]}"
  )
  log "built in $((SECONDS - began))s"
fi
for b in "${binaries[@]}"; do
  [[ -f "${bins}/${b}" ]] || die "no binary ${bins}/${b}"
  # Static: no shared library needed (ldd alone cannot tell: it says "statically linked" and
  # succeeds for static-pie binaries).
  if readelf -d "${bins}/${b}" 2>/dev/null | grep -q '(NEEDED)'; then die "${bins}/${b} is not static"; fi
done

if [[ "${tag}" == content ]]; then
  tag="sha-$(for b in "${binaries[@]}"; do cat "${bins}/${b}"; done | sha256sum | cut -c1-12)"
fi
"${repo_root}/deploy/oci-image.sh" --out "${out}" --tag "${tag}" \
  --entrypoint "${IMAGE_ENTRYPOINT}" --user "${IMAGE_USER}" \
  --label "org.opencontainers.image.source=${IMAGE_SOURCE}" \
  --label "org.opencontainers.image.version=${version}" \
  "${file_args[@]}"
printf '%s %s\n' "${out}" "${tag}"
