//! End-to-end, in the node lab (root only): the data path the speaker relies on.
//!
//! Herald plays no part here. Each test writes a selector-less `type: LoadBalancer` Service of a
//! class nobody serves (`herald.dev/e2e-static`), its EndpointSlice (backend pods it places on
//! chosen nodes) and its status IP itself, then stands in for the speaker's ARP/NDP answer with a
//! static neighbour entry in the client namespace (VIP → a node's MAC) and `curl`s the VIP from
//! the client. What answers is kube-proxy's rules in the node namespace that got the frame. (The
//! other end-to-end tests use Services with selectors, whose EndpointSlices Kubernetes writes.)
//!
//! What the lab shows (kube-proxy v1.34, nftables mode):
//! - Cluster policy: any node that gets the frame carries the request to any node's backend. A
//!   request served by another node's backend arrives there from the receiving node's address
//!   (masqueraded).
//! - Local policy: only a node with a ready local endpoint answers, and the backend sees the
//!   client's own address. A node without one drops the traffic silently (curl times out, no
//!   RST), and its health-check node port answers 503 where the endpoint's node answers 200. When
//!   the endpoint moves, the answering node moves with it.
//!
//! Run: `make lab-up` as root (or `tests/lab/lab.sh up`), then
//! `KUBECONFIG=.lab/kubeconfig cargo test -p herald-tests --test e2e_lab -- --ignored`.
//! The VIPs used are 192.0.2.148, 192.0.2.149 and 2001:db8::1ff (top of the lab's pool ranges).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, ensure};
use herald_tests::node_lab::*;
use herald_tests::{init_tracing, rand_u32};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const CLASS: &str = "herald.dev/e2e-static";
const MANAGER: &str = "herald-e2e";

/// The speaker's stand-in: the client resolves `vip` to `mac`.
async fn pin_neighbour(lab: &Lab, vip: &str, mac: &str) -> anyhow::Result<()> {
    let ns = lab.client_ns()?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "neigh",
            "replace",
            vip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )
    .await
    .map(|_| ())
}

/// One test's namespace, Services, backend pods, EndpointSlices and neighbour entries. A case
/// first removes any Service of [`CLASS`] still holding its VIP (left by an interrupted run).
struct Case {
    client: Client,
    ns: String,
    vips: Vec<String>,
    services: Vec<String>,
    backend_image: String,
}

impl Case {
    async fn new(lab: &Lab, test: &str) -> anyhow::Result<Case> {
        let client = lab.client().await?;
        let ns = format!("{test}-{:x}", rand_u32());
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        Ok(Case {
            client,
            ns,
            vips: Vec::new(),
            services: Vec::new(),
            backend_image: lab.backend_image()?.to_string(),
        })
    }

    /// Deletes a Service and its EndpointSlices.
    async fn delete_service(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        slices
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("kubernetes.io/service-name={name}")),
            )
            .await?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        if services.get_opt(name).await?.is_some() {
            services.delete(name, &DeleteParams::default()).await?;
        }
        Ok(())
    }

    /// Removes Services of [`CLASS`] that hold `vip`, wherever they are.
    async fn claim_vip(&self, vip: &str) -> anyhow::Result<()> {
        let all: Api<Service> = Api::all(self.client.clone());
        for svc in all.list(&ListParams::default()).await?.items {
            let class = svc
                .spec
                .as_ref()
                .and_then(|s| s.load_balancer_class.as_deref());
            let holds = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|ing| ing.iter().any(|i| i.ip.as_deref() == Some(vip)));
            if class == Some(CLASS) && holds {
                let ns = svc.namespace().unwrap_or_default();
                eprintln!("removing {ns}/{}, left holding {vip}", svc.name_any());
                self.delete_service(&ns, &svc.name_any()).await?;
            }
        }
        Ok(())
    }

    /// A selector-less LoadBalancer Service (port 80 → 8080) with `vip` as its status IP.
    async fn service(
        &mut self,
        name: &str,
        family: &str,
        policy: &str,
        vip: &str,
    ) -> anyhow::Result<Service> {
        self.claim_vip(vip).await?;
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": CLASS,
                "externalTrafficPolicy": policy,
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": [family],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        });
        let params = PatchParams::apply(MANAGER).force();
        self.services.push(name.to_string());
        api.patch(name, &params, &Patch::Apply(&svc)).await?;
        self.vips.push(vip.to_string());
        let status =
            json!({"status": {"loadBalancer": {"ingress": [{"ip": vip, "ipMode": "VIP"}]}}});
        Ok(api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?)
    }

    /// The Service's one EndpointSlice, written here: a backend pod on each of `nodes` (placed
    /// first, and removed from other nodes), ready, port 8080.
    async fn endpoints(&self, service: &str, family: &str, nodes: &[&Node]) -> anyhow::Result<()> {
        let backends =
            place_backends(&self.client, &self.backend_image, &self.ns, service, nodes).await?;
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        let endpoints: Vec<_> = backends
            .iter()
            .map(|b| {
                let addr = if family == "IPv6" { &b.ip6 } else { &b.ip4 };
                json!({
                    "addresses": [addr],
                    "nodeName": b.node,
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                })
            })
            .collect();
        let name = format!("{service}-lab");
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": MANAGER,
                },
            },
            "addressType": family,
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        });
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await?;
        Ok(())
    }

    /// Deletes the Services, their EndpointSlices, the namespace and the client's neighbour
    /// entries; reports but does not fail.
    async fn cleanup(self, lab: &Lab) {
        for name in &self.services {
            if let Err(e) = self.delete_service(&self.ns, name).await {
                eprintln!("warning: deleting {}/{name}: {e}", self.ns);
            }
        }
        if let Ok(ns) = lab.client_ns() {
            for vip in &self.vips {
                let _ = run("ip", &["-n", ns, "neigh", "del", vip, "dev", "eth0"]).await;
            }
        }
        if let Err(e) = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await
        {
            eprintln!("warning: deleting namespace {}: {e}", self.ns);
        }
    }
}

fn url(vip: &str) -> String {
    if vip.contains(':') {
        format!("http://[{vip}]:80/")
    } else {
        format!("http://{vip}:80/")
    }
}

/// Through every node in turn, `per_node` requests; every answer comes from a lab backend, and
/// a request served by another node's backend reached it from the receiving node's address.
async fn every_node_carries(
    lab: &Lab,
    vip: &str,
    nodes: &[Node],
    per_node: usize,
) -> anyhow::Result<BTreeSet<String>> {
    let names: BTreeSet<_> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut served = BTreeSet::new();
    for via in nodes {
        pin_neighbour(lab, vip, &via.mac).await?;
        fetch_eventually(lab, &url(vip)).await?;
        let mut seen = BTreeMap::<String, usize>::new();
        for _ in 0..per_node {
            let reply = fetch(lab, &url(vip))
                .await?
                .map_err(|e| anyhow::anyhow!("{vip} via {}: {e}", via.name))?;
            ensure!(names.contains(&reply.node), "unexpected answer {reply:?}");
            let via_ip = if vip.contains(':') {
                &via.ip6
            } else {
                &via.ip4
            };
            if reply.node != via.name {
                ensure!(
                    &reply.peer == via_ip,
                    "via {}: {} saw peer {} (expected the masquerading node's {})",
                    via.name,
                    reply.node,
                    reply.peer,
                    via_ip
                );
            }
            *seen
                .entry(format!("{} (peer {})", reply.node, reply.peer))
                .or_default() += 1;
            served.insert(reply.node);
        }
        eprintln!("{vip} via {} ({}): {seen:?}", via.name, via.mac);
    }
    Ok(served)
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn cluster_policy_vip_is_served_through_any_node() -> anyhow::Result<()> {
    let test = "cluster_policy_vip_is_served_through_any_node";
    let lab = Lab::load(test)?;
    init_tracing();
    let mut case = Case::new(&lab, "e2e-cluster").await?;
    let result = async {
        let nodes = lab.nodes()?;
        let vip = "192.0.2.148";
        case.service("web", "IPv4", "Cluster", vip).await?;
        case.endpoints("web", "IPv4", &nodes.iter().collect::<Vec<_>>())
            .await?;
        let served = every_node_carries(&lab, vip, &nodes, 12).await?;
        if nodes.len() > 1 {
            // 36 requests over 3 random endpoints: all on one would be a 1-in-10^16 event.
            ensure!(served.len() > 1, "only {served:?} ever answered");
        }
        Ok(())
    }
    .await;
    case.cleanup(&lab).await;
    result
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn local_policy_vip_is_served_only_where_the_endpoint_is() -> anyhow::Result<()> {
    let test = "local_policy_vip_is_served_only_where_the_endpoint_is";
    let lab = Lab::load(test)?;
    init_tracing();
    let nodes = lab.nodes()?;
    ensure!(
        nodes.len() >= 2,
        "{test}: needs 2 nodes or more (HERALD_NODES)"
    );
    let mut case = Case::new(&lab, "e2e-local").await?;
    let result = async {
        let client_ip = lab.var("HERALD_CLIENT_IP4")?.to_string();
        let (node1, node2) = (&nodes[0], &nodes[1]);
        let vip = "192.0.2.149";
        let svc = case.service("web", "IPv4", "Local", vip).await?;
        let hc_port = svc
            .spec
            .as_ref()
            .and_then(|s| s.health_check_node_port)
            .context("no healthCheckNodePort")?;
        case.endpoints("web", "IPv4", &[node2]).await?;

        // Through the endpoint's node: served there, and the client's own address arrives.
        pin_neighbour(&lab, vip, &node2.mac).await?;
        fetch_eventually(&lab, &url(vip)).await?;
        for _ in 0..6 {
            let reply = fetch(&lab, &url(vip)).await?.map_err(anyhow::Error::msg)?;
            ensure!(
                reply.node == node2.name && reply.peer == client_ip,
                "via {}: {reply:?}",
                node2.name
            );
        }
        eprintln!(
            "{vip} via {}: served by {} with the client's address",
            node2.name, node2.name
        );

        // Through a node without one: dropped.
        pin_neighbour(&lab, vip, &node1.mac).await?;
        let err = fetch_fails_eventually(&lab, &url(vip)).await?;
        eprintln!("{vip} via {} (no local endpoint): {err}", node1.name);

        // kube-proxy's health check node port says the same.
        let hc = |n: &Node| format!("http://{}:{hc_port}/", n.ip4);
        let h2 = health(&lab, &hc(node2)).await?;
        let h1 = health(&lab, &hc(node1)).await?;
        eprintln!(
            "health check port {hc_port}: {}: {h2:?}; {}: {h1:?}",
            node2.name, node1.name
        );
        ensure!(
            h2.0 == 200 && h2.1.contains("\"localEndpoints\": 1"),
            "{h2:?}"
        );
        ensure!(
            h1.0 == 503 && h1.1.contains("\"localEndpoints\": 0"),
            "{h1:?}"
        );

        // The endpoint moves to the last node: that node answers, node2 stops.
        if let Some(last) = nodes.get(2..).and_then(|rest| rest.last()) {
            case.endpoints("web", "IPv4", &[last]).await?;
            pin_neighbour(&lab, vip, &node2.mac).await?;
            let err = fetch_fails_eventually(&lab, &url(vip)).await?;
            eprintln!("{vip} via {} after the move: {err}", node2.name);
            pin_neighbour(&lab, vip, &last.mac).await?;
            let reply = fetch_eventually(&lab, &url(vip)).await?;
            ensure!(
                reply.node == last.name && reply.peer == client_ip,
                "{reply:?}"
            );
            eprintln!("{vip} via {}: served by {}", last.name, reply.node);
        }
        Ok(())
    }
    .await;
    case.cleanup(&lab).await;
    result
}

/// Status code and body of kube-proxy's health check node port, from the client.
async fn health(lab: &Lab, url: &str) -> anyhow::Result<(u16, String)> {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            lab.client_ns()?,
            "curl",
            "-sS",
            "--max-time",
            "2",
            "-w",
            "\n%{http_code}",
            url,
        ],
    )
    .await?;
    let (body, code) = out.trim().rsplit_once('\n').unwrap_or(("", out.trim()));
    Ok((code.parse()?, body.to_string()))
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn ipv6_vip_is_served_through_any_node() -> anyhow::Result<()> {
    let test = "ipv6_vip_is_served_through_any_node";
    let lab = Lab::load(test)?;
    init_tracing();
    let mut case = Case::new(&lab, "e2e-ipv6").await?;
    let result = async {
        let nodes = lab.nodes()?;
        let vip = "2001:db8::1ff";
        case.service("web6", "IPv6", "Cluster", vip).await?;
        case.endpoints("web6", "IPv6", &nodes.iter().collect::<Vec<_>>())
            .await?;
        let served = every_node_carries(&lab, vip, &nodes, 12).await?;
        if nodes.len() > 1 {
            ensure!(served.len() > 1, "only {served:?} ever answered");
        }
        Ok(())
    }
    .await;
    case.cleanup(&lab).await;
    result
}
