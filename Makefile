# Herald: `make demo` runs the local lab with a pool and a Service; `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
LAB := tests/lab

.PHONY: help k8s build test e2e lint crds demo lab-up lab-down bench

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

k8s: ## build (once; cached in ~/.cache/herald) etcd, kube-apiserver, kube-proxy, kubectl
	@$(LAB)/install-deps.sh
	@$(LAB)/build-k8s.sh >/dev/null

build: ## build Herald's binaries (release)
	cargo build --release --workspace --bins

test: k8s ## unit, property, integration (the lab's API server) and, as root, end-to-end tests
	cargo build --workspace --all-targets --quiet
	$(LAB)/with-control-plane.sh cargo test --workspace --all-targets
	$(LAB)/e2e.sh

e2e: k8s ## end-to-end tests in the node lab (root): speakers, kube-proxy, arping, ndisc6, curl
	$(LAB)/e2e.sh

lint: ## rustfmt and clippy, as CI runs them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

crds: ## regenerate deploy/crds/herald.yaml from the Rust types
	cargo run --quiet --bin herald-crdgen > deploy/crds/herald.yaml

demo: ## the local lab, a pool and a Service, and the EXTERNAL-IP it got
	$(LAB)/demo.sh

lab-up: ## start the local lab (control plane + controller; as root also HERALD_NODES=3 node namespaces with kube-proxy and speakers); writes .lab/kubeconfig and .lab/env
	$(LAB)/lab.sh up

lab-down: ## stop the local lab and remove .lab/
	$(LAB)/lab.sh down

bench: k8s ## benchmarks (figures go to BENCHMARKS.md)
	tests/bench/run.sh
