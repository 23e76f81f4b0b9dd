# Herald: `make demo` brings up the lab cluster with Herald installed and shows it answer and fail
# over; `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
LAB := tests/lab

.PHONY: help k8s helm promtool metallb build image test e2e chaos lint docs crds demo lab-up lab-down bench bench-versus

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

k8s: ## build (once; cached in ~/.cache/herald) etcd and the Kubernetes components the lab runs
	@$(LAB)/install-deps.sh
	@$(LAB)/build-k8s.sh >/dev/null

helm: ## build (once; cached in ~/.cache/herald) helm, which the chart test (tests/tests/packaging.rs) runs
	@$(LAB)/build-helm.sh >/dev/null

promtool: ## build (once; cached in ~/.cache/herald) promtool, which the alert tests (cli/tests/monitoring.rs) run
	@$(LAB)/build-promtool.sh >/dev/null

metallb: ## build (once; cached in ~/.cache/herald) MetalLB's controller and speaker from its Go module, for make bench-versus
	@$(LAB)/build-metallb.sh >/dev/null

build: ## build Herald's binaries (release)
	cargo build --release --workspace --bins

image: ## Herald's OCI image, no Docker engine: target/image/herald.oci.tar (deploy/Dockerfile builds the same)
	@deploy/build-image.sh

test: k8s helm promtool ## unit, property, integration (the lab's API server) and, as root, end-to-end tests in the lab cluster (kube-proxy iptables and nftables)
	cargo build --workspace --all-targets --quiet
	$(LAB)/with-control-plane.sh cargo test --workspace --all-targets
	$(LAB)/e2e.sh

e2e: k8s ## end-to-end tests in the lab cluster (root): Herald installed as pods, arping, ndisc6, curl; HERALD_KUBE_PROXY_MODE picks one mode
	$(LAB)/e2e.sh

# The fault-injection run's length and seed (empty: a random seed, printed and recorded).
CHAOS_DURATION ?= 30m
CHAOS_SEED ?=

chaos: ## fault-injection run in the lab cluster (root, after make lab-up): CHAOS_DURATION (30m) of random faults from seed CHAOS_SEED, invariants checked; JSON lines in bench/results/, wire capture in target/chaos/
	cargo run -p herald-tests --bin herald-chaos --quiet -- --duration $(CHAOS_DURATION) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) --capture target/chaos/wire.pcap

lint: ## rustfmt, clippy and shellcheck, as CI runs them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	@$(LAB)/install-deps.sh --lint
	shellcheck -x tests/lab/*.sh tests/bench/*.sh deploy/*.sh

docs: ## check docs/: references against the CRD schema, the binaries' --help and metrics; links, anchors, Mermaid
	cargo build --workspace --bins --quiet
	cargo test -p herald-cli --test docs

crds: ## regenerate deploy/crds/herald.yaml (and the Helm chart's copy) from the Rust types
	cargo run --quiet --bin herald-crdgen > deploy/crds/herald.yaml
	cp deploy/crds/herald.yaml deploy/helm/herald/crds/herald.yaml

demo: ## the lab cluster (root), Herald installed as the README says, a pool and a Service: it answers, then fails over
	$(LAB)/demo.sh

lab-up: ## start the lab cluster (root: control plane, HERALD_NODES=3 nodes with kubelet, containerd and kube-proxy, Herald installed); writes .lab/kubeconfig and .lab/env
	$(LAB)/lab.sh up

lab-down: ## stop the lab and remove .lab/
	$(LAB)/lab.sh down

bench: k8s ## benchmarks (figures go to BENCHMARKS.md)
	tests/bench/run.sh

bench-versus: k8s metallb ## Herald and MetalLB side by side in the lab (root, lab up): bench/results/versus-DATE.jsonl
	tests/bench/versus.sh
