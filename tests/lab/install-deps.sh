#!/usr/bin/env bash
# Installs the Debian packages the lab needs when they are missing (as root), so `make test` and
# `make demo` work on a fresh machine. Go and Rust are expected on the machine already.
#   --node-lab  also what the node lab (tests/lab/nodes.sh) and its images need: containerd,
#               runc and the CNI plugins for the kubelets, nft, iptables and conntrack for
#               kube-proxy, umoci and a static C library for the images, arping, ndisc6,
#               tcpdump and python3 (raw frames) for the client.
#   --lint      also shellcheck, for make lint.
set -euo pipefail

declare -A package_of=(
  [openssl]=openssl [curl]=curl [ss]=iproute2 [ip]=iproute2 [flock]=util-linux
)
if [[ "${1:-}" == --node-lab ]]; then
  package_of+=(
    [nft]=nftables [iptables]=iptables [conntrack]=conntrack [arping]=iputils-arping
    [ndisc6]=ndisc6 [tcpdump]=tcpdump [python3]=python3 [containerd]=containerd [runc]=runc [umoci]=umoci
    [nsenter]=util-linux [gcc]=gcc [/usr/lib/cni/bridge]=containernetworking-plugins
    ["/usr/lib/$(uname -m)-linux-gnu/libc.a"]=libc6-dev
  )
fi
if [[ "${1:-}" == --lint ]]; then
  package_of+=([shellcheck]=shellcheck)
fi
missing=()
for cmd in "${!package_of[@]}"; do
  if [[ "${cmd}" == /* ]]; then
    [[ -e "${cmd}" ]] || missing+=("${package_of[${cmd}]}")
  else
    command -v "${cmd}" >/dev/null 2>&1 || missing+=("${package_of[${cmd}]}")
  fi
done
for tool in go cargo; do
  command -v "${tool}" >/dev/null 2>&1 || { echo "[deps] error: ${tool} is not installed" >&2; exit 1; }
done
((${#missing[@]} == 0)) && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ "$(id -u)" != 0 ]]; then
  echo "[deps] error: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "[deps] installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
