# shellcheck shell=bash
# shellcheck disable=SC2154 # lab and die come from the caller
# Sourced by the lab's root scripts that act on the node lab (metallb.sh, speakers.sh,
# systems.sh).
#
# load_node_lab
#   Exports what ${lab}/env says (KUBECONFIG, the nodes' and client's namespaces, ...) and puts
#   the lab's Kubernetes binaries first on PATH; dies when the lab, or its node lab, is not up.

load_node_lab() {
  [[ -f "${lab}/env" ]] || die "the lab is not up (no ${lab}/env)"
  set -a
  # shellcheck disable=SC1091
  . "${lab}/env"
  set +a
  [[ -n "${HERALD_CLIENT_NS:-}" ]] || die "the node lab is not up (make lab-up as root)"
  export PATH="${HERALD_K8S_BIN}:${PATH}"
}
