#!/usr/bin/env bash
# MetalLB in the lab, beside Herald, for the side-by-side benchmark (`make bench-versus`): built
# from its Go module (build-metallb.sh), installed from the manifests of the same module version
# (its config/manifests/metallb-native-prometheus.yaml: the native L2/BGP install plus the RBAC
# its HTTPS metrics endpoint needs), as pods on the lab's nodes.
#
#   tests/lab/metallb.sh image      build the binaries and two images (static binaries, no
#                                   Docker: deploy/oci-image.sh); prints `ARCHIVE REFERENCE` lines
#   tests/lab/metallb.sh render     print the manifests the lab applies (no cluster needed)
#   tests/lab/metallb.sh install    (root, the lab up) import the images into every node, apply
#                                   the manifests, make sure of the memberlist Secret, wait until a
#                                   speaker runs on every node and the controller is ready. On a
#                                   lab where it is installed: apply again and wait
#   tests/lab/metallb.sh uninstall  delete what install made (its CRDs and namespace too)
#
# What the lab changes in MetalLB's manifests, and why (kustomize, as a user would):
#   - the images: the ones built here, imported into every node (the lab has no registry);
#   - webhooks off: the controller's validating webhooks and the BGPPeer conversion webhook are
#     called by the API server, which runs in the lab's root network namespace with no route to
#     Service ClusterIPs (kube-proxy runs in the nodes); so the ValidatingWebhookConfiguration
#     and the CRD's `conversion` go, and the controller runs with --webhook-mode=disabled;
#   - ServiceMonitors go (no Prometheus Operator in the lab);
#   - one ServiceAccount and ClusterRole of the lab's own, `metrics-reader`, allowed to GET
#     /metrics: MetalLB's metrics endpoint takes only bearer tokens that the API server
#     authorizes (the benchmark reads `metallb_speaker_announced` there).
# Everything else is MetalLB's: L2 mode, memberlist on with its default settings (the Secret
# `memberlist`, key `secretkey`: MetalLB's controller makes it when it starts; made here when
# the controller has not yet), hostNetwork speakers on every node.
set -euo pipefail

lab_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${lab_src}/../.." && pwd)"
lab="${HERALD_LAB_DIR:-${repo_root}/.lab}"
namespace=metallb-system
image_repo=metallb.lab

log() { printf '[metallb] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

version() { "${lab_src}/build-metallb.sh" --version; }

# The two images (controller, speaker): `ARCHIVE REFERENCE` per line. The tag is the version and
# a hash of the binaries, so a rebuild gives a new reference.
cmd_image() {
  local bin ver home cache c tag tar
  bin="$("${lab_src}/build-metallb.sh")"
  ver="$(version)"
  home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
  cache="${HERALD_CACHE:-${home}/.cache/herald}/images"
  mkdir -p "${cache}"
  tag="${ver}-$(cat "${bin}/metallb-controller" "${bin}/metallb-speaker" | sha256sum | cut -c1-12)"
  for c in controller speaker; do
    tar="${cache}/metallb-${c}-${tag}.oci.tar"
    if [[ ! -f "${tar}" ]]; then
      # Root, as MetalLB's own images (distroless/static): the speaker needs NET_RAW; the
      # controller's pod runs it as 65534.
      "${repo_root}/deploy/oci-image.sh" --out "${tar}.new" --tag "${tag}" \
        --entrypoint "/metallb-${c}" --label "org.opencontainers.image.version=${ver}" \
        "${bin}/metallb-${c}:/metallb-${c}" >&2
      mv "${tar}.new" "${tar}"
    fi
    printf '%s %s/%s:%s\n' "${tar}" "${image_repo}" "${c}" "${tag}"
  done
}

# The kustomization (in $1) over the module's manifests, with the images $2 (controller) and $3
# (speaker).
write_overlay() {
  local dir="$1" controller="$2" speaker="$3" module ver
  module="$("${lab_src}/build-metallb.sh" --module-dir)"
  ver="$(version)"
  local upstream="${module}/config/manifests/metallb-native-prometheus.yaml"
  [[ -f "${upstream}" ]] || die "no ${upstream} in the module (MetalLB ${ver})"
  mkdir -p "${dir}"
  # Documents whose kinds the lab cannot serve, dropped whole.
  awk '
    function flush() { if (doc != "" && doc !~ /\nkind: (ServiceMonitor|ValidatingWebhookConfiguration)\n/) printf "%s", doc; doc = "" }
    /^---$/ { flush(); doc = "---\n"; next }
    { doc = doc $0 "\n" }
    END { flush() }
  ' "${upstream}" | sed '1{/^---$/d}' >"${dir}/metallb-native-prometheus.yaml"
  cp "${lab_src}/metallb/metrics-reader.yaml" "${dir}/metrics-reader.yaml"
  cat >"${dir}/kustomization.yaml" <<EOF
# Made by tests/lab/metallb.sh from MetalLB ${ver}'s config/manifests/metallb-native-prometheus.yaml.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - metallb-native-prometheus.yaml
  - metrics-reader.yaml
images:
  - name: quay.io/metallb/controller
    newName: ${controller%:*}
    newTag: ${controller##*:}
  - name: quay.io/metallb/speaker
    newName: ${speaker%:*}
    newTag: ${speaker##*:}
patches:
  - target: {kind: CustomResourceDefinition, name: bgppeers.metallb.io}
    patch: |-
      - op: remove
        path: /spec/conversion
  - target: {kind: Deployment, name: controller, namespace: ${namespace}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --webhook-mode=disabled
EOF
}

cmd_render() {
  render_dir="$(mktemp -d)"
  trap 'rm -rf "${render_dir}"' EXIT
  write_overlay "${render_dir}" "${image_repo}/controller:TAG" "${image_repo}/speaker:TAG"
  kubectl kustomize "${render_dir}"
}

# shellcheck source=tests/lab/node-lab-env.sh
. "${lab_src}/node-lab-env.sh"

set_env() { # KEY VALUE: replace KEY in .lab/env
  { grep -v -E "^$1=" "${lab}/env" || true; printf '%s=%q\n' "$1" "$2"; } >"${lab}/env.new"
  mv "${lab}/env.new" "${lab}/env"
}

cmd_install() {
  load_node_lab
  local archive ref controller="" speaker=""
  while read -r archive ref; do
    "${lab_src}/nodes.sh" import "${archive}" "${ref}"
    case "${ref}" in
      */controller:*) controller="${ref}" ;;
      */speaker:*) speaker="${ref}" ;;
    esac
  done < <(cmd_image)
  [[ -n "${controller}" && -n "${speaker}" ]] || die "no images built"
  local dir="${lab}/metallb-install"
  write_overlay "${dir}" "${controller}" "${speaker}"
  log "installing MetalLB $(version) (${controller}, ${speaker})"
  kubectl apply --server-side --force-conflicts -k "${dir}" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s crd/ipaddresspools.metallb.io \
    crd/l2advertisements.metallb.io crd/servicel2statuses.metallb.io >/dev/null
  # MetalLB's controller makes the Secret as it starts, so it may appear between a check and a
  # create: whichever of the two makes it, the other finds it there.
  local made
  if ! made="$(kubectl -n "${namespace}" create secret generic memberlist \
    --from-literal=secretkey="$(openssl rand -base64 128)" 2>&1)"; then
    [[ "${made}" == *AlreadyExists* || "${made}" == *"already exists"* ]] || die "the memberlist Secret: ${made}"
  fi
  kubectl -n "${namespace}" rollout status daemonset/speaker --timeout=5m >&2
  kubectl -n "${namespace}" rollout status deployment/controller --timeout=5m >&2
  set_env HERALD_METALLB_VERSION "$(version)"
  set_env HERALD_METALLB_IMAGE_CONTROLLER "${controller}"
  set_env HERALD_METALLB_IMAGE_SPEAKER "${speaker}"
  log "MetalLB $(version) runs: a speaker on every node, the controller ready"
}

cmd_uninstall() {
  load_node_lab
  local dir="${lab}/metallb-install"
  if [[ -f "${dir}/kustomization.yaml" ]]; then
    kubectl delete --ignore-not-found --wait=true --timeout=120s -k "${dir}" >/dev/null || true
  fi
  kubectl delete --ignore-not-found namespace "${namespace}" --timeout=120s >/dev/null || true
  rm -rf "${dir}"
  { grep -v -E '^HERALD_METALLB_' "${lab}/env" || true; } >"${lab}/env.new"
  mv "${lab}/env.new" "${lab}/env"
  log "MetalLB removed"
}

case "${1:-}" in
  image) cmd_image ;;
  render)
    bin="$("${lab_src}/build-k8s.sh")"
    export PATH="${bin}:${PATH}"
    cmd_render
    ;;
  install) cmd_install ;;
  uninstall) cmd_uninstall ;;
  *) usage ;;
esac
