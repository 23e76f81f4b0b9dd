#!/usr/bin/env bash
# Installs Herald into the lab the way the README tells operators to: the commands of its
# quickstart block (between `<!-- quickstart:begin -->` and `<!-- quickstart:end -->`), run word
# for word from the repository root. The one change is the one the README tells users who run
# their own image to make: `kubectl apply -k` is pointed at a kustomization that adds an
# `images:` entry (here: the image the lab built and imported into every node).
#
#   tests/lab/install.sh IMAGE_NAME IMAGE_TAG     install (KUBECONFIG: the lab's); on a lab
#                                                 where Herald is installed already, upgrade
#                                                 it the way a user would: `kubectl apply -k`
#                                                 and wait for the rollouts
#   tests/lab/install.sh --print IMAGE_NAME TAG   print the commands it would run
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"

log() { printf '[install] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

print=0
if [[ "${1:-}" == --print ]]; then print=1; shift; fi
(($# == 2)) || die "usage: $0 [--print] IMAGE_NAME IMAGE_TAG"
image_name="$1" image_tag="$2"

# The quickstart block: the shell lines of the fenced block between the markers.
quickstart="$(awk '
  /<!-- quickstart:begin -->/ {on = 1; next}
  /<!-- quickstart:end -->/ {on = 0}
  on && /^```/ {fence = !fence; next}
  on && fence {print}
' "${repo_root}/README.md")"
[[ -n "${quickstart}" ]] || die "README.md has no quickstart block (<!-- quickstart:begin --> ... <!-- quickstart:end -->)"
grep -q 'kubectl apply -k deploy/kustomize' <<<"${quickstart}" ||
  die "the README's quickstart does not install with kubectl apply -k deploy/kustomize"

# The user's kustomization over the base: the README's "your own image" example.
overlay="${lab}/install"
mkdir -p "${overlay}"
# kustomize takes bases by relative path only.
base="$(realpath --relative-to="${overlay}" "${repo_root}/deploy/kustomize")"
cat >"${overlay}/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ${base}
images:
  - name: ghcr.io/herald-lb/herald
    newName: ${image_name}
    newTag: ${image_tag}
EOF
script="${quickstart//kubectl apply -k deploy\/kustomize/kubectl apply -k ${overlay}}"

if ((print)); then
  printf '%s\n' "${script}"
  exit 0
fi
cd "${repo_root}"
if kubectl -n herald-system get secret herald-memberlist >/dev/null 2>&1; then
  log "Herald is installed: upgrading it to ${image_name}:${image_tag} (kubectl apply -k)"
  kubectl apply -k "${overlay}" >/dev/null
  kubectl -n herald-system rollout status daemonset/herald-speaker --timeout=5m
  kubectl -n herald-system rollout status deployment/herald-controller --timeout=5m
  exit 0
fi
log "installing Herald (${image_name}:${image_tag}) with the README's quickstart:"
printf '%s\n' "${quickstart}" | sed 's/^/    /' >&2
bash -euo pipefail -c "${script}"
