#!/usr/bin/env bash
# Assembles a single-layer OCI image from local files, with no Docker engine and no registry
# (umoci), and writes it as an OCI archive that `ctr images import` and `podman load` take.
#
#   deploy/oci-image.sh --out FILE.tar --tag TAG --entrypoint PATH [--user UID:GID] \
#       [--label KEY=VALUE]... SRC:DEST [SRC:DEST]...
#
# Every SRC (a file) is copied to DEST in an otherwise empty root filesystem (the base is
# `scratch`: the binaries that go in are static). The archive's index names the image TAG
# only; the importer adds the repository (`ctr images import --base-name REPO`).
set -euo pipefail

log() { printf '[oci-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

out="" tag="" entrypoint="" user="" labels=() files=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --entrypoint) entrypoint="$2"; shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --label) labels+=("$2"); shift 2 ;;
    -*) die "unknown option $1" ;;
    *) files+=("$1"); shift ;;
  esac
done
[[ -n "${out}" && -n "${tag}" && -n "${entrypoint}" ]] || die "--out, --tag and --entrypoint are required"
((${#files[@]})) || die "no files to put in the image"
command -v umoci >/dev/null || die "umoci is not installed (apt-get install umoci)"

work="$(mktemp -d "${TMPDIR:-/tmp}/oci-image.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
layout="${work}/layout"
bundle="${work}/bundle"
rootless=()
[[ "$(id -u)" == 0 ]] || rootless=(--rootless)

umoci init --layout "${layout}"
umoci new --image "${layout}:${tag}"
umoci unpack "${rootless[@]}" --image "${layout}:${tag}" "${bundle}" >/dev/null
for f in "${files[@]}"; do
  src="${f%%:*}"
  dest="${f#*:}"
  [[ -f "${src}" ]] || die "no such file: ${src}"
  [[ "${dest}" == /* ]] || die "destination must be absolute: ${dest}"
  install -D -m 0755 "${src}" "${bundle}/rootfs${dest}"
done
# Fixed times (the files' too: the layer's tar headers carry them) and no history of the build
# host: the same files give the same image.
find "${bundle}/rootfs" -exec touch -h -d @0 {} +
umoci repack --image "${layout}:${tag}" --history.created 1970-01-01T00:00:00Z \
  --history.created_by "deploy/oci-image.sh" "${bundle}"
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac
config=(--config.entrypoint "${entrypoint}" --config.workingdir / --os linux
  --architecture "${arch}" --created 1970-01-01T00:00:00Z
  --no-history)
[[ -n "${user}" ]] && config+=(--config.user "${user}")
for l in "${labels[@]}"; do config+=(--config.label "${l}"); done
umoci config --image "${layout}:${tag}" "${config[@]}"
umoci gc --layout "${layout}"
mkdir -p "$(dirname "${out}")"
tar -C "${layout}" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "${out}.tmp" .
mv "${out}.tmp" "${out}"
log "wrote ${out} (tag ${tag}, $(du -h "${out}" | cut -f1))"
