//! One end-to-end test's own corner of the lab cluster — a namespace, a pool and its
//! L2Advertisement — and what the speaker tests do with it: Services with backends, the IPs
//! they get, the faults they apply to the membership (nft rules in a node's namespace) and to
//! the speakers (`tests/lab/speakers.sh`), and the checks a LAN client makes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::bench::metrics::Samples;
use crate::node_lab::{Lab, Node, arping_once, place_backends, run};
use crate::rand_u32;

/// The tests stop and start shared speakers and cut shared links: one at a time per binary.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test's namespace, pool and advertisement.
pub struct Case {
    /// A client for the lab's API server.
    pub client: Client,
    /// The test's namespace.
    pub ns: String,
    /// The pool's (and the advertisement's) name.
    pub pool: String,
    /// The lab's backend image.
    pub backend_image: String,
    /// Further pools and advertisements the test made (deleted with the case).
    extra: std::sync::Mutex<Vec<String>>,
}

impl Case {
    /// A namespace, a pool of `addresses` and an advertisement on eth0.
    pub async fn new(lab: &Lab, test: &str, addresses: &[&str]) -> anyhow::Result<Case> {
        let client = lab.client().await?;
        let ns = format!("{test}-{:x}", rand_u32() & 0xffff);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        let case = Case {
            client,
            ns,
            pool: format!("e2e-{test}"),
            backend_image: lab.backend_image()?.to_string(),
            extra: std::sync::Mutex::new(Vec::new()),
        };
        case.apply_pool(&case.pool, addresses, json!({"interfaces": ["eth0"]}))
            .await?;
        Ok(case)
    }

    fn remember(&self, name: &str) {
        if name != self.pool {
            let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
            if !extra.iter().any(|e| e == name) {
                extra.push(name.to_string());
            }
        }
    }

    /// Creates or replaces pool `name` with `addresses` and its advertisement `name` with
    /// `spec` (its `ipAddressPools` set to this pool).
    pub async fn apply_pool(
        &self,
        name: &str,
        addresses: &[&str],
        mut spec: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.remember(name);
        let apply = PatchParams::apply("herald-e2e").force();
        let pools: Api<herald_config::IPAddressPool> = Api::all(self.client.clone());
        pools
            .patch(
                name,
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "herald.dev/v1beta1", "kind": "IPAddressPool",
                    "metadata": {"name": name}, "spec": {"addresses": addresses}
                })),
            )
            .await?;
        spec["ipAddressPools"] = json!([name]);
        self.advertisement(name, spec).await
    }

    /// Creates or replaces advertisement `name` with `spec`.
    pub async fn advertisement(&self, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
        self.remember(name);
        let ads: Api<herald_config::L2Advertisement> = Api::all(self.client.clone());
        ads.patch(
            name,
            &PatchParams::apply("herald-e2e").force(),
            &Patch::Apply(json!({
                "apiVersion": "herald.dev/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": name}, "spec": spec
            })),
        )
        .await?;
        Ok(())
    }

    /// The Services of this namespace.
    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A LoadBalancer Service selecting the backend pods of app `name` (Herald's controller
    /// gives it IPs; the EndpointSlice controller its endpoints).
    pub async fn service(&self, name: &str, dual: bool, policy: &str) -> anyhow::Result<()> {
        let families = if dual {
            json!(["IPv4", "IPv6"])
        } else {
            json!(["IPv4"])
        };
        let family_policy = if dual {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        self.service_from(json!({
            "metadata": {"name": name},
            "spec": {
                "type": "LoadBalancer", "externalTrafficPolicy": policy,
                "selector": {"app": name},
                "ipFamilyPolicy": family_policy, "ipFamilies": families,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
            }
        }))
        .await
    }

    /// A Service from its JSON.
    pub async fn service_from(&self, service: serde_json::Value) -> anyhow::Result<()> {
        self.services()
            .create(&PostParams::default(), &serde_json::from_value(service)?)
            .await?;
        Ok(())
    }

    /// The Service's endpoints: one backend pod on each of `nodes` (and none elsewhere), Ready.
    pub async fn endpoints(&self, service: &str, nodes: &[&Node]) -> anyhow::Result<()> {
        place_backends(&self.client, &self.backend_image, &self.ns, service, nodes).await?;
        Ok(())
    }

    /// Waits for the Service's status IPs.
    pub async fn ips(&self, service: &str, count: usize) -> anyhow::Result<Vec<String>> {
        for _ in 0..200 {
            let ips: Vec<String> =
                herald_config::service::status_ips(&self.services().get(service).await?)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
            if ips.len() == count {
                return Ok(ips);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{service} never got {count} IPs")
    }

    /// Deletes the namespace (and what is in it), the pools and the advertisements.
    pub async fn cleanup(self) {
        let ns: Api<Namespace> = Api::all(self.client.clone());
        let _ = ns.delete(&self.ns, &DeleteParams::default()).await;
        let pools: Api<herald_config::IPAddressPool> = Api::all(self.client.clone());
        let ads: Api<herald_config::L2Advertisement> = Api::all(self.client.clone());
        let extra = self.extra.lock().map(|e| e.clone()).unwrap_or_default();
        for name in std::iter::once(&self.pool).chain(&extra) {
            let _ = pools.delete(name, &DeleteParams::default()).await;
            let _ = ads.delete(name, &DeleteParams::default()).await;
        }
    }
}

/// Runs `body` with a fresh [`Case`] (`SERIAL` held), and always cleans up. The case's name is
/// the test's, shortened to a DNS label.
#[macro_export]
macro_rules! lab_case {
    ($test:expr, $addresses:expr, |$lab:ident, $case:ident| $body:block) => {{
        let $lab = $crate::node_lab::Lab::load($test)?;
        $crate::init_tracing();
        let _serial = $crate::lab_case::SERIAL.lock().await;
        let $case = $crate::lab_case::Case::new(
            &$lab,
            $test
                .replace('_', "-")
                .chars()
                .take(30)
                .collect::<String>()
                .trim_end_matches('-'),
            $addresses,
        )
        .await?;
        let result: anyhow::Result<()> = async { $body }.await;
        $case.cleanup().await;
        result
    }};
}

/// A two-node cluster for Service `service` (Cluster policy, backends on the first two
/// nodes): the third node leaves for good — its kubelet stopped (no speaker restarts there),
/// its speaker killed, its Node deleted. Returns the Service's IP and the third node, to bring
/// back with [`restore_third`].
pub async fn two_node_cluster(
    lab: &Lab,
    case: &Case,
    service: &str,
) -> anyhow::Result<(String, Node)> {
    let nodes = lab.nodes()?;
    ensure!(nodes.len() >= 3, "needs the three-node lab");
    let third = nodes[2].clone();
    case.service(service, false, "Cluster").await?;
    case.endpoints(service, &[&nodes[0], &nodes[1]]).await?;
    let ip = case.ips(service, 1).await?.remove(0);
    crate::node_lab::one_announcer(lab, &ip, None).await?;
    remove_node(lab, &case.client, &third).await?;
    Ok((ip, third))
}

/// `node` leaves the cluster for good: its kubelet stopped (no speaker restarts there), its
/// speaker killed, its Node deleted. [`restore_third`] brings it back.
pub async fn remove_node(lab: &Lab, client: &Client, node: &Node) -> anyhow::Result<()> {
    lab.script("nodes.sh", &["kubelet", "stop", &node.index.to_string()])
        .await?;
    speakers(lab, "kill", node).await?;
    let node_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    node_api
        .delete(&node.name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// The third node (or any removed by [`remove_node`]) back: its kubelet registers the Node
/// again, and the DaemonSet runs a speaker there.
pub async fn restore_third(lab: &Lab, case: &Case, third: &Node) -> anyhow::Result<()> {
    lab.script("nodes.sh", &["kubelet", "start", &third.index.to_string()])
        .await?;
    crate::node_lab::wait_node_ready(&case.client, &third.name).await?;
    speakers(lab, "start", third).await
}

/// `tests/lab/speakers.sh ACTION I` for `node`.
pub async fn speakers(lab: &Lab, action: &str, node: &Node) -> anyhow::Result<()> {
    lab.script("speakers.sh", &[action, &node.index.to_string()])
        .await
        .map(|_| ())
}

/// The PID of `node`'s speaker process.
pub async fn speaker_pid(lab: &Lab, node: &Node) -> anyhow::Result<u32> {
    let out = lab
        .script("speakers.sh", &["pid", &node.index.to_string()])
        .await?;
    out.trim()
        .parse()
        .with_context(|| format!("speakers.sh pid: {out:?}"))
}

/// `http://ip/` (IPv6 in brackets).
pub fn url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]/")
    } else {
        format!("http://{ip}/")
    }
}

/// Probes every ~50 ms for `for_`, failing if one probe is answered by two MACs.
pub async fn never_two_macs(
    lab: &Lab,
    ip: &str,
    for_: Duration,
) -> anyhow::Result<BTreeSet<String>> {
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    while start.elapsed() < for_ {
        let macs = arping_once(lab, ip).await?;
        ensure!(
            macs.len() <= 1,
            "{ip}: two MACs answered one probe: {macs:?}"
        );
        seen.extend(macs);
    }
    Ok(seen)
}

/// A membership fault in a node's namespace: an nft table of its own, so several can be
/// applied and removed independently.
pub struct MembershipFault {
    node_ns: String,
    table: String,
}

impl MembershipFault {
    /// Drops membership traffic at `node` matching `rules` (nft chain bodies keyed by hook:
    /// `("input", "udp dport 7947 drop")`), in table `herald_fault_<name>`.
    pub async fn apply(node: &Node, name: &str, rules: &[(&str, String)]) -> anyhow::Result<Self> {
        let table = format!("herald_fault_{name}");
        let chains: String = rules
            .iter()
            .enumerate()
            .map(|(i, (hook, body))| {
                format!("chain c{i} {{ type filter hook {hook} priority -10; {body}; }}; ")
            })
            .collect();
        let spec = format!("table inet {table} {{ {chains}}}");
        run("ip", &["netns", "exec", &node.name, "nft", &spec]).await?;
        Ok(MembershipFault {
            node_ns: node.name.clone(),
            table,
        })
    }

    /// Membership traffic into `node` dropped (it hears nobody; its heartbeats still go out).
    pub async fn into(node: &Node) -> anyhow::Result<Self> {
        Self::apply(node, "in", &[("input", "udp dport 7947 drop".into())]).await
    }

    /// Membership traffic out of `node` dropped (nobody hears it; it still hears them).
    pub async fn out_of(node: &Node) -> anyhow::Result<Self> {
        Self::apply(node, "out", &[("output", "udp dport 7947 drop".into())]).await
    }

    /// Membership traffic from `from` to `to` dropped (one direction between two nodes).
    pub async fn between(from: &Node, to: &Node) -> anyhow::Result<Self> {
        Self::apply(
            from,
            "to",
            &[(
                "output",
                format!(
                    "ip daddr {} udp dport 7947 drop; ip6 daddr {} udp dport 7947 drop",
                    to.ip4, to.ip6
                ),
            )],
        )
        .await
    }

    /// Membership traffic in and out of `node` dropped (the LAN and the API stay reachable).
    pub async fn both_ways(node: &Node) -> anyhow::Result<Self> {
        Self::apply(
            node,
            "both",
            &[
                ("input", "udp dport 7947 drop".into()),
                ("output", "udp dport 7947 drop".into()),
            ],
        )
        .await
    }

    /// Removes the rules.
    pub async fn heal(self) -> anyhow::Result<()> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.node_ns,
                "nft",
                &format!("delete table inet {}", self.table),
            ],
        )
        .await?;
        Ok(())
    }
}

/// Waits until exactly one node other than `not` announces `ip`, for up to `limit`.
pub async fn another_announcer(
    lab: &Lab,
    ip: &str,
    not: &str,
    limit: Duration,
) -> anyhow::Result<Node> {
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < limit {
        last = crate::node_lab::announcers(lab, ip).await?;
        if let [one] = last.as_slice()
            && one.name != not
        {
            return Ok(one.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{ip}: no single announcer other than {not} after {limit:?}: {:?}",
        last.iter().map(|n| &n.name).collect::<Vec<_>>()
    )
}

/// The scrape of `node`'s speaker (`/metrics`), parsed.
pub async fn speaker_samples(node: &Node) -> anyhow::Result<Samples> {
    Ok(Samples::parse(
        &crate::node_lab::speaker_metrics(&node.name).await?,
    ))
}

/// Patches a Node's labels (`null` removes one).
pub async fn label_node(
    client: &Client,
    node: &str,
    labels: serde_json::Value,
) -> anyhow::Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await?;
    Ok(())
}

/// Waits until `node`'s speaker reports the Service's IP in its `NodeL2Status` and the
/// controller has mirrored it: the Service's `herald.dev/Announced` condition names `node` on
/// `interface`, and an `AnnouncerChanged` Event says so.
pub async fn condition_names(
    case: &Case,
    service: &str,
    node: &str,
    interface: &str,
) -> anyhow::Result<()> {
    {
        let services: Api<Service> = Api::namespaced(case.client.clone(), &case.ns);
        let reports: Api<herald_config::NodeL2Status> = Api::all(case.client.clone());
        let want = herald_speaker::edge::service_status::message(node, interface);
        let mut last = None;
        for _ in 0..100 {
            let svc = services.get(service).await?;
            last = herald_speaker::edge::service_status::current(&svc);
            let ip = herald_config::service::status_ips(&svc).first().copied();
            let reported = match (ip, reports.get_opt(node).await?) {
                (Some(ip), Some(report)) => report.status.is_some_and(|status| {
                    herald_config::announcement::claims_of(node, &status).contains_key(&ip)
                }),
                _ => false,
            };
            if reported && last.as_deref() == Some(want.as_str()) {
                let events: Api<k8s_openapi::api::events::v1::Event> =
                    Api::namespaced(case.client.clone(), &case.ns);
                let seen = events
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some("AnnouncerChanged")
                            && e.note.as_deref() == Some(want.as_str())
                    });
                if seen {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{service}: condition {last:?}, wanted {want:?} with its Event and {node}'s report")
    }
}
