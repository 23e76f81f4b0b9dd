//! End-to-end, in the lab cluster (root only): Herald as the README installs it — pods started
//! by kubelets — and what only pods make possible: rolling updates under traffic, a drained
//! node, a stopped kubelet, the controller's leader pod deleted, a rescheduled backend, and
//! `loadBalancerSourceRanges` through kube-proxy's firewall chains.
//!
//! Run: `make e2e` as root (or `make lab-up`, then
//! `cargo test -p herald-tests --test e2e_install -- --ignored --test-threads=1`). Each test uses its own
//! pool in 192.0.2.136-192.0.2.147 / 2001:db8::136-2001:db8::147 and its own namespace, and puts
//! back what it changed (images, cordons, kubelets).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use herald_tests::lab_case::{Case, SERIAL, url};
use herald_tests::node_lab::*;
use herald_tests::{init_tracing, rand_u32};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const SYSTEM: &str = "herald-system";
const SPEAKER: &str = "herald-speaker";
const CONTROLLER: &str = "herald-controller";

/// What the install tests do with their [`Case`] beyond the speaker tests' helpers.
trait InstallCase {
    async fn lb_service(
        &self,
        name: &str,
        app: &str,
        extra: serde_json::Value,
    ) -> anyhow::Result<()>;
    async fn deployment(&self, name: &str, replicas: i32) -> anyhow::Result<()>;
    async fn ip(&self, service: &str) -> anyhow::Result<String>;
    async fn status_ips(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>>;
}

impl InstallCase for Case {
    /// A LoadBalancer Service (port 80 → 8080) selecting the pods of app `app`.
    async fn lb_service(
        &self,
        name: &str,
        app: &str,
        extra: serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut spec = json!({
            "type": "LoadBalancer", "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        self.services()
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?,
            )
            .await?;
        Ok(())
    }

    /// A Deployment of `replicas` backends (app `name`), spread over the nodes.
    async fn deployment(&self, name: &str, replicas: i32) -> anyhow::Result<()> {
        let mut pod = backend_pod(&self.backend_image, name, "unused");
        let spec = pod["spec"].as_object_mut().context("pod spec")?;
        spec.remove("nodeName");
        spec.insert(
            "topologySpreadConstraints".into(),
            json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": name}}}]),
        );
        let deployment = json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod["spec"]}
            }
        });
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        api.create(&PostParams::default(), &serde_json::from_value(deployment)?)
            .await?;
        wait_until(
            Duration::from_secs(90),
            "the backend Deployment ready",
            || async {
                let d = api.get(name).await?;
                Ok(d.status.and_then(|s| s.ready_replicas).unwrap_or(0) == replicas)
            },
        )
        .await
    }

    /// Waits for the Service's first status IP.
    async fn ip(&self, service: &str) -> anyhow::Result<String> {
        let services = self.services();
        let start = Instant::now();
        loop {
            if let Some(ip) =
                herald_config::service::status_ips(&services.get(service).await?).first()
            {
                return Ok(ip.to_string());
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "{service}: no status IP after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every Service's status IPs in the namespace.
    async fn status_ips(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        Ok(self
            .services()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    herald_config::service::status_ips(s)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                )
            })
            .collect())
    }
}

/// Polls `check` every 200 ms until it gives a value, for at most `limit`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if start.elapsed() > limit {
            bail!("{what}: not after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `check` every 200 ms until it says yes, for at most `limit`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{what}: not after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn target(ip: &str) -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::new(ip.parse()?, 80))
}

/// `/proc/<pid>/status` fields of node `node`'s process named `comm`.
fn process_status(node: &Node, comm: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let pid = process_in_node(&node.name, comm)
        .with_context(|| format!("no {comm} process in {}", node.name))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// The README's install: a speaker on every node and two controller replicas, all Ready, from
/// the image the lab built; the speaker runs as uid 0 holding CAP_NET_RAW alone, with no way to
/// gain more, under a seccomp filter; the controller as uid 65532 with no capability.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn installed_as_the_readme_says_with_least_privilege() -> anyhow::Result<()> {
    let lab = Lab::load("installed_as_the_readme_says_with_least_privilege")?;
    init_tracing();
    let _serial = SERIAL.lock().await;
    let client = lab.client().await?;
    let nodes = lab.nodes()?;
    let image = lab.var("HERALD_IMAGE")?.to_string();
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), SYSTEM);
    let speaker = ds.get(SPEAKER).await?;
    let status = speaker.status.context("no DaemonSet status")?;
    ensure!(
        status.number_ready as usize == nodes.len()
            && status.desired_number_scheduled == status.number_ready,
        "speakers ready {} of {} nodes",
        status.number_ready,
        nodes.len()
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM);
    let controller = deployments.get(CONTROLLER).await?;
    ensure!(
        controller.status.and_then(|s| s.ready_replicas) == Some(2),
        "controller replicas not ready"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    for pod in pods.list(&ListParams::default()).await?.items {
        for c in pod.spec.context("pod spec")?.containers {
            ensure!(
                c.image.as_deref() == Some(image.as_str()),
                "{:?} runs {:?}",
                c.name,
                c.image
            );
        }
    }
    // CAP_NET_RAW is bit 13.
    let net_raw_only = format!("{:016x}", 1u64 << 13);
    for node in &nodes {
        let s = process_status(node, "herald-speaker")?;
        let uid = s
            .get("Uid")
            .map(|u| u.split_whitespace().next().unwrap_or_default());
        ensure!(uid == Some("0"), "{}: speaker uid {uid:?}", node.name);
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            ensure!(
                s.get(set) == Some(&net_raw_only),
                "{}: speaker {set} {:?}, want NET_RAW only",
                node.name,
                s.get(set)
            );
        }
        ensure!(s.get("CapAmb").map(String::as_str) == Some("0000000000000000"));
        ensure!(
            s.get("NoNewPrivs").map(String::as_str) == Some("1"),
            "{}: no_new_privs",
            node.name
        );
        ensure!(
            s.get("Seccomp").map(String::as_str) == Some("2"),
            "{}: no seccomp filter",
            node.name
        );
    }
    // The controller's pods have network namespaces of their own: find them by name.
    let mut controllers = 0;
    for pid in std::fs::read_dir("/proc")?.flatten() {
        let comm = std::fs::read_to_string(pid.path().join("comm")).unwrap_or_default();
        // comm is the first 15 bytes of the name.
        if comm.trim() != "herald-controll" {
            continue;
        }
        let status = std::fs::read_to_string(pid.path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        };
        ensure!(
            field("Uid").as_deref() == Some("65532"),
            "controller uid {:?}",
            field("Uid")
        );
        ensure!(
            field("CapEff").as_deref() == Some("0000000000000000"),
            "controller CapEff {:?}",
            field("CapEff")
        );
        controllers += 1;
    }
    ensure!(
        controllers == 2,
        "{controllers} controller processes, want 2"
    );
    Ok(())
}

/// Rolling update of the speaker DaemonSet under continuous client traffic: every speaker is
/// replaced, one node at a time; the Service keeps its IP and the client is served again after
/// each handover. Reports the longest gap the client saw.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn speaker_rolling_update_under_traffic() -> anyhow::Result<()> {
    herald_tests::lab_case!(
        "speaker_rolling_update",
        &["192.0.2.136/32", "2001:db8::136/128"],
        |lab, case| {
            case.deployment("web", 3).await?;
            case.lb_service("web", "web", json!({})).await?;
            let ip = case.ip("web").await?;
            one_announcer(&lab, &ip, None).await?;
            fetch_eventually(&lab, &url(&ip)).await?;
            let before = case.status_ips().await?;
            let prober = Prober::start(&lab, target(&ip)?, Duration::from_millis(10))?;
            let rolled = roll(&lab, &case.client, "daemonset", SPEAKER).await;
            let report = prober.stop()?;
            rolled?;
            eprintln!(
                "speaker rolling update: {} of {} requests answered, longest gap {:?}, served by {:?}",
                report.answered, report.sent, report.longest_gap, report.nodes
            );
            ensure!(
                case.status_ips().await? == before,
                "an IP changed in status"
            );
            one_announcer(&lab, &ip, None).await?;
            fetch_eventually(&lab, &url(&ip)).await?;
            Ok(())
        }
    )
}

/// Rolling update of the controller Deployment under continuous traffic: no IP changes, and a
/// Service created during the update gets an IP.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn controller_rolling_update_under_traffic() -> anyhow::Result<()> {
    herald_tests::lab_case!(
        "controller_rolling_update",
        &["192.0.2.137-192.0.2.138", "2001:db8::137/128"],
        |lab, case| {
            case.deployment("web", 3).await?;
            case.lb_service("web", "web", json!({})).await?;
            let ip = case.ip("web").await?;
            fetch_eventually(&lab, &url(&ip)).await?;
            let before = case.status_ips().await?;
            let prober = Prober::start(&lab, target(&ip)?, Duration::from_millis(10))?;
            let rolling = roll(&lab, &case.client, "deployment", CONTROLLER);
            let late = async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                case.lb_service("late", "web", json!({})).await
            };
            let (rolled, late) = tokio::join!(rolling, late);
            let report = prober.stop()?;
            rolled?;
            late?;
            eprintln!(
                "controller rolling update: {} of {} requests answered, longest gap {:?}",
                report.answered, report.sent, report.longest_gap
            );
            let late_ip = case.ip("late").await?;
            let mut after = case.status_ips().await?;
            after.remove("late");
            ensure!(
                after == before,
                "an IP changed in status: {before:?} -> {after:?}"
            );
            ensure!(late_ip != ip, "two Services with one IP");
            Ok(())
        }
    )
}

/// Restarts a DaemonSet's or Deployment's pods the way `kubectl rollout restart` does (a new
/// template), and waits for the rollout to finish.
async fn roll(lab: &Lab, client: &Client, kind: &str, name: &str) -> anyhow::Result<()> {
    let stamp = format!("{}", rand_u32());
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "herald.dev/e2e-restarted": stamp}}}}});
    let params = PatchParams::default();
    match kind {
        "daemonset" => {
            Api::<DaemonSet>::namespaced(client.clone(), SYSTEM)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
        _ => {
            Api::<Deployment>::namespaced(client.clone(), SYSTEM)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
    }
    let kubectl = PathBuf::from(lab.var("HERALD_K8S_BIN")?).join("kubectl");
    let out = tokio::process::Command::new(kubectl)
        .args([
            "-n",
            SYSTEM,
            "rollout",
            "status",
            &format!("{kind}/{name}"),
            "--timeout=5m",
        ])
        .env("KUBECONFIG", lab.var("KUBECONFIG")?)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "rollout of {kind}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The controller Deployment's leader pod deleted: the other replica takes the Lease (released
/// by the leaving one on SIGTERM) and serves a new Service; no IP changes.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn controller_leader_pod_deleted() -> anyhow::Result<()> {
    herald_tests::lab_case!(
        "controller_leader_deleted",
        &["192.0.2.139-192.0.2.140"],
        |lab, case| {
            case.deployment("web", 1).await?;
            case.lb_service("web", "web", json!({})).await?;
            let ip = case.ip("web").await?;
            let before = case.status_ips().await?;
            let leases: Api<Lease> = Api::namespaced(case.client.clone(), SYSTEM);
            let leader = leases
                .get(CONTROLLER)
                .await?
                .spec
                .and_then(|s| s.holder_identity)
                .context("nobody holds the controller Lease")?;
            let pods: Api<Pod> = Api::namespaced(case.client.clone(), SYSTEM);
            let deleted = Instant::now();
            pods.delete(&leader, &DeleteParams::default()).await?;
            wait_until(Duration::from_secs(30), "a new leader", || async {
                let holder = leases
                    .get(CONTROLLER)
                    .await?
                    .spec
                    .and_then(|s| s.holder_identity);
                Ok(holder.is_some_and(|h| h != leader))
            })
            .await?;
            eprintln!(
                "controller leader {leader} deleted: new leader after {:?}",
                deleted.elapsed()
            );
            case.lb_service("after", "web", json!({})).await?;
            let after_ip = case.ip("after").await?;
            eprintln!(
                "a Service created after the leader's deletion got {after_ip} after {:?}",
                deleted.elapsed()
            );
            let mut now = case.status_ips().await?;
            now.remove("after");
            ensure!(now == before, "an IP changed in status");
            ensure!(after_ip != ip);
            Ok(())
        }
    )
}

/// `kubectl drain` of the node that announces a Local-policy IP: its backend is evicted and
/// rescheduled on another node, and the IP follows the endpoint; `kubectl uncordon` puts the
/// node back. Traffic through a Cluster-policy IP keeps flowing all along.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn node_drained_and_uncordoned() -> anyhow::Result<()> {
    herald_tests::lab_case!("node_drain", &["192.0.2.141-192.0.2.142"], |lab, case| {
        case.deployment("web", 1).await?;
        case.deployment("spread", 3).await?;
        case.lb_service("local", "web", json!({"externalTrafficPolicy": "Local"}))
            .await?;
        case.lb_service("cluster", "spread", json!({})).await?;
        let local_ip = case.ip("local").await?;
        let cluster_ip = case.ip("cluster").await?;
        let owner = one_announcer(&lab, &local_ip, None).await?;
        fetch_eventually(&lab, &url(&cluster_ip)).await?;
        let before = case.status_ips().await?;
        let prober = Prober::start(&lab, target(&cluster_ip)?, Duration::from_millis(10))?;
        let kubectl = PathBuf::from(lab.var("HERALD_K8S_BIN")?).join("kubectl");
        let drain = tokio::process::Command::new(&kubectl)
            .args([
                "drain",
                &owner.name,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=120s",
                "--pod-selector",
                "app in (web,spread)",
            ])
            .env("KUBECONFIG", lab.var("KUBECONFIG")?)
            .output()
            .await?;
        let result = async {
            ensure!(
                drain.status.success(),
                "drain: {}",
                String::from_utf8_lossy(&drain.stderr)
            );
            let moved = one_announcer(&lab, &local_ip, Some(&owner.name)).await?;
            let reply = fetch_eventually(&lab, &url(&local_ip)).await?;
            ensure!(
                reply.node == moved.name,
                "served by {} but announced by {}",
                reply.node,
                moved.name
            );
            eprintln!(
                "drain of {}: the Local IP moved to {} with its backend",
                owner.name, moved.name
            );
            Ok(())
        }
        .await;
        let uncordon = tokio::process::Command::new(&kubectl)
            .args(["uncordon", &owner.name])
            .env("KUBECONFIG", lab.var("KUBECONFIG")?)
            .output()
            .await?;
        let report = prober.stop()?;
        result?;
        ensure!(uncordon.status.success(), "uncordon failed");
        eprintln!(
            "drain: Cluster IP {} of {} requests answered, longest gap {:?}",
            report.answered, report.sent, report.longest_gap
        );
        ensure!(
            case.status_ips().await? == before,
            "an IP changed in status"
        );
        Ok(())
    })
}

/// A kubelet stopped: its Node goes NotReady, but the speaker there runs on (it is not the
/// kubelet's to stop), so the IPs it announces stay put and traffic flows through the other
/// nodes' backends.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn kubelet_stopped_node_not_ready_speaker_runs_on() -> anyhow::Result<()> {
    herald_tests::lab_case!("kubelet_stopped", &["192.0.2.143/32"], |lab, case| {
        case.deployment("web", 3).await?;
        case.lb_service("web", "web", json!({})).await?;
        let ip = case.ip("web").await?;
        let owner = one_announcer(&lab, &ip, None).await?;
        fetch_eventually(&lab, &url(&ip)).await?;
        let index = owner.index.to_string();
        lab.script("nodes.sh", &["kubelet", "stop", &index]).await?;
        let result = async {
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(case.client.clone());
            wait_until(Duration::from_secs(90), "the Node NotReady", || async {
                let node = nodes.get(&owner.name).await?;
                Ok(node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status != "True"))
            })
            .await?;
            eprintln!("{}: NotReady with its kubelet stopped", owner.name);
            process_status(&owner, "herald-speaker")
                .context("the speaker stopped with the kubelet")?;
            let still = one_announcer(&lab, &ip, None).await?;
            ensure!(still.name == owner.name, "the IP moved to {}", still.name);
            ensure!(arping_once(&lab, &ip).await? == [owner.mac.to_lowercase()].into());
            // Its backend is no longer ready (the node is NotReady): others serve.
            let reply = fetch_eventually(&lab, &url(&ip)).await?;
            eprintln!("served by {} through {}", reply.node, owner.name);
            Ok(())
        }
        .await;
        lab.script("nodes.sh", &["kubelet", "start", &index])
            .await?;
        wait_node_ready(&case.client, &owner.name).await?;
        result
    })
}

/// `spec.loadBalancerSourceRanges` is enforced by kube-proxy's firewall rules (KUBE-FW in
/// iptables mode, the firewall set in nftables mode) for the IP Herald announces: the client's
/// address is let in, a second address of the same client is not.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn load_balancer_source_ranges_are_honoured() -> anyhow::Result<()> {
    herald_tests::lab_case!("source_ranges", &["192.0.2.144/32"], |lab, case| {
        let client_ip = lab.var("HERALD_CLIENT_IP4")?.to_string();
        case.deployment("web", 3).await?;
        case.lb_service(
            "web",
            "web",
            json!({"loadBalancerSourceRanges": [format!("{client_ip}/32")]}),
        )
        .await?;
        let ip = case.ip("web").await?;
        one_announcer(&lab, &ip, None).await?;
        let other = "192.0.2.201";
        let ns = lab.client_ns()?.to_string();
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{other}/24"),
                "dev",
                "eth0",
                "nodad",
            ],
        )
        .await?;
        let result = async {
            let allowed = fetch_eventually(&lab, &url(&ip)).await?;
            eprintln!("from {client_ip}: served by {}", allowed.node);
            // From the second address: nothing (kube-proxy drops it).
            for _ in 0..5 {
                let out = tokio::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &ns,
                        "curl",
                        "-sS",
                        "--max-time",
                        "1",
                        "--interface",
                        other,
                        &url(&ip),
                    ])
                    .output()
                    .await?;
                ensure!(
                    !out.status.success(),
                    "from {other} (not in loadBalancerSourceRanges) the Service answered: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            // And the allowed address is still served.
            fetch_eventually(&lab, &url(&ip)).await?;
            Ok(())
        }
        .await;
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "del",
                &format!("{other}/24"),
                "dev",
                "eth0",
            ],
        )
        .await?;
        result
    })
}

/// The defect the README's install once shipped: a speaker that cannot open its packet
/// sockets (here: run as uid 65532, where `capabilities.add` gives no effective capability).
/// One node's speaker is rolled onto that setting (the rollout stops there: the pod is never
/// Ready); that node reports no interface, is never elected, and says why in an Event on its
/// Node and in its metrics, while every IP is answered by the others. Then the rollout is
/// undone.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn a_speaker_without_packet_sockets_is_unready_never_elected_and_says_why()
-> anyhow::Result<()> {
    herald_tests::lab_case!(
        "speaker_without_sockets",
        &["192.0.2.145-192.0.2.147"],
        |lab, case| {
            case.deployment("web", 3).await?;
            let ds: Api<DaemonSet> = Api::namespaced(case.client.clone(), SYSTEM);
            ds.patch(
                SPEAKER,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "speaker", "securityContext": {"runAsUser": 65532, "runAsNonRoot": true}}
                ]}}}})),
            )
            .await?;
            let result = async {
                // The first replaced pod never gets Ready: find its node.
                let pods: Api<Pod> = Api::namespaced(case.client.clone(), SYSTEM);
                let broken: String = poll(
                    Duration::from_secs(90),
                    "a speaker running as uid 65532",
                    || async {
                        let mut found = None;
                        for pod in pods
                            .list(
                                &ListParams::default()
                                    .labels("app.kubernetes.io/component=speaker"),
                            )
                            .await?
                            .items
                        {
                            let spec = pod.spec.clone().unwrap_or_default();
                            let uid = spec
                                .containers
                                .first()
                                .and_then(|c| c.security_context.as_ref())
                                .and_then(|s| s.run_as_user);
                            let running = pod
                                .status
                                .as_ref()
                                .and_then(|s| s.container_statuses.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| {
                                        c.state.as_ref().is_some_and(|s| s.running.is_some())
                                    })
                                });
                            if uid == Some(65532) && running {
                                found = spec.node_name;
                            }
                        }
                        Ok(found)
                    },
                )
                .await?;
                let node = lab
                    .nodes()?
                    .into_iter()
                    .find(|n| n.name == broken)
                    .context("unknown node")?;
                eprintln!("the speaker of {broken} runs without CAP_NET_RAW");
                // It says why: metrics, readiness, and an Event on its Node.
                wait_until(
                    Duration::from_secs(30),
                    "its socket errors in the metrics",
                    || async {
                        let metrics = speaker_metrics(&broken).await.unwrap_or_default();
                        Ok(metrics.contains("herald_speaker_interfaces_answering 0")
                            && metrics.contains(
                                "herald_speaker_packet_socket_errors_total{interface=\"eth0\"}",
                            ))
                    },
                )
                .await?;
                let readyz = run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &broken,
                        "curl",
                        "-s",
                        "http://127.0.0.1:7473/readyz",
                    ],
                )
                .await?;
                ensure!(
                    readyz.contains("no interface can answer"),
                    "readyz: {readyz}"
                );
                let events: Api<k8s_openapi::api::events::v1::Event> =
                    Api::all(case.client.clone());
                wait_until(
                    Duration::from_secs(30),
                    "a PacketSocketsFailed Event on the Node",
                    || async {
                        Ok(events
                            .list(&ListParams::default())
                            .await?
                            .items
                            .iter()
                            .any(|e| {
                                e.reason.as_deref() == Some("PacketSocketsFailed")
                                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                        == Some(broken.as_str())
                            }))
                    },
                )
                .await?;
                // Never elected: three Services, each answered, none by the broken node.
                for name in ["a", "b", "c"] {
                    case.lb_service(name, "web", json!({})).await?;
                }
                for name in ["a", "b", "c"] {
                    let ip = case.ip(name).await?;
                    let owner = one_announcer(&lab, &ip, None).await?;
                    ensure!(
                        owner.name != broken,
                        "{ip} elected the node that cannot answer"
                    );
                    let macs = arping_once(&lab, &ip).await?;
                    ensure!(
                        macs == [owner.mac.to_lowercase()].into()
                            && !macs.contains(&node.mac.to_lowercase()),
                        "{ip}: {macs:?}"
                    );
                    fetch_eventually(&lab, &url(&ip)).await?;
                }
                Ok(())
            }
            .await;
            let kubectl = PathBuf::from(lab.var("HERALD_K8S_BIN")?).join("kubectl");
            let undo = tokio::process::Command::new(&kubectl)
                .args([
                    "-n",
                    SYSTEM,
                    "rollout",
                    "undo",
                    &format!("daemonset/{SPEAKER}"),
                ])
                .env("KUBECONFIG", lab.var("KUBECONFIG")?)
                .output()
                .await?;
            ensure!(
                undo.status.success(),
                "rollout undo: {}",
                String::from_utf8_lossy(&undo.stderr)
            );
            let status = tokio::process::Command::new(&kubectl)
                .args([
                    "-n",
                    SYSTEM,
                    "rollout",
                    "status",
                    &format!("daemonset/{SPEAKER}"),
                    "--timeout=5m",
                ])
                .env("KUBECONFIG", lab.var("KUBECONFIG")?)
                .output()
                .await?;
            ensure!(
                status.status.success(),
                "rollout status after undo: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            result
        }
    )
}
