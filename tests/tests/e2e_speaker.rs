//! End-to-end, in the node lab with the speakers running (root only): what a user on the LAN
//! sees. `arping`, `ndisc6` and `curl` run in the client namespace; faults are real (SIGKILL,
//! SIGTERM, a link down, a cut bridge port, membership traffic dropped).
//!
//! Run: `make e2e` as root (or `tests/lab/lab.sh up` and
//! `cargo test -p herald-tests --test e2e_speaker -- --test-threads=1`). Each test uses its own
//! pool in 192.0.2.124-192.0.2.139 / 2001:db8::124-2001:db8::139 and its own namespace, and
//! restarts any speaker it stopped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use herald_tests::node_lab::*;
use herald_tests::{init_tracing, rand_u32};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The tests stop and start shared speakers: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Case {
    client: Client,
    ns: String,
    pool: String,
}

impl Case {
    /// A namespace, a pool of `v4`/`v6` ranges and an advertisement on eth0.
    async fn new(lab: &Lab, test: &str, v4: &str, v6: &str) -> anyhow::Result<Case> {
        let client = lab.client().await?;
        let ns = format!("{test}-{:x}", rand_u32() & 0xffff);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        let pool = format!("e2e-{test}");
        let apply = PatchParams::apply("herald-e2e").force();
        let pools: Api<herald_config::IPAddressPool> = Api::all(client.clone());
        pools
            .patch(
                &pool,
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "herald.dev/v1beta1", "kind": "IPAddressPool",
                    "metadata": {"name": pool}, "spec": {"addresses": [v4, v6]}
                })),
            )
            .await?;
        let ads: Api<herald_config::L2Advertisement> = Api::all(client.clone());
        ads.patch(
            &pool,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "herald.dev/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": pool},
                "spec": {"ipAddressPools": [pool], "interfaces": ["eth0"]}
            })),
        )
        .await?;
        Ok(Case { client, ns, pool })
    }

    /// A selector-less LoadBalancer Service (the lab's controller gives it IPs).
    async fn service(&self, name: &str, dual: bool, policy: &str) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
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
        services
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {
                        "type": "LoadBalancer", "externalTrafficPolicy": policy,
                        "ipFamilyPolicy": family_policy, "ipFamilies": families,
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
                    }
                }))?,
            )
            .await?;
        Ok(())
    }

    /// The Service's endpoints: the backends of `nodes`, for each family.
    async fn endpoints(&self, service: &str, nodes: &[&Node]) -> anyhow::Result<()> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        for (family, suffix) in [("IPv4", "v4"), ("IPv6", "v6")] {
            let endpoints: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let ip = if family == "IPv4" {
                        &n.pod_ip4
                    } else {
                        &n.pod_ip6
                    };
                    json!({"addresses": [ip], "nodeName": n.name, "conditions": {"ready": true}})
                })
                .collect();
            let name = format!("{service}-{suffix}");
            slices
                .patch(
                    &name,
                    &PatchParams::apply("herald-e2e").force(),
                    &Patch::Apply(json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
                        "addressType": family,
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                        "endpoints": endpoints
                    })),
                )
                .await?;
        }
        Ok(())
    }

    /// Waits for the Service's status IPs.
    async fn ips(&self, service: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        for _ in 0..200 {
            let ips: Vec<String> =
                herald_config::service::status_ips(&services.get(service).await?)
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

    async fn cleanup(self) {
        let ns: Api<Namespace> = Api::all(self.client.clone());
        // Without a controller-manager a namespace never finishes terminating: delete what
        // kube-proxy and the speakers act on first.
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        let _ = services
            .delete_collection(&DeleteParams::default(), &Default::default())
            .await;
        let _ = slices
            .delete_collection(&DeleteParams::default(), &Default::default())
            .await;
        let _ = ns.delete(&self.ns, &DeleteParams::default()).await;
        let pools: Api<herald_config::IPAddressPool> = Api::all(self.client.clone());
        let ads: Api<herald_config::L2Advertisement> = Api::all(self.client.clone());
        let _ = pools.delete(&self.pool, &DeleteParams::default()).await;
        let _ = ads.delete(&self.pool, &DeleteParams::default()).await;
    }
}

impl Case {
    /// Waits until the Service's `herald.dev/Announced` condition names `node` on eth0, and an
    /// `AnnouncerChanged` Event says so.
    async fn condition_names(&self, service: &str, node: &str) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let want = herald_speaker::service_status::message(node, "eth0");
        let mut last = None;
        for _ in 0..100 {
            last = herald_speaker::service_status::current(&services.get(service).await?);
            if last.as_deref() == Some(want.as_str()) {
                let events: Api<k8s_openapi::api::events::v1::Event> =
                    Api::namespaced(self.client.clone(), &self.ns);
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
        bail!("{service}: condition {last:?}, wanted {want:?} with its Event")
    }
}

/// The nodes whose speaker reports announcing `ip`.
async fn announcers(lab: &Lab, ip: &str) -> anyhow::Result<Vec<Node>> {
    let mut out = Vec::new();
    let needle = format!("herald_speaker_announced{{ip=\"{ip}\"}} 1");
    for node in lab.nodes()? {
        let metrics = speaker_metrics(&node.name).await.unwrap_or_default();
        if metrics.contains(&needle) {
            out.push(node);
        }
    }
    Ok(out)
}

/// Waits until exactly one node announces `ip` (and, if given, a node other than `not`).
async fn one_announcer(lab: &Lab, ip: &str, not: Option<&str>) -> anyhow::Result<Node> {
    let mut last = Vec::new();
    for _ in 0..150 {
        last = announcers(lab, ip).await?;
        if let [one] = last.as_slice()
            && not != Some(one.name.as_str())
        {
            return Ok(one.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{ip}: expected one announcer, have {:?}",
        last.iter().map(|n| &n.name).collect::<Vec<_>>()
    )
}

/// One `arping` probe from the client: the MACs that replied.
async fn arping_once(lab: &Lab, ip: &str) -> anyhow::Result<BTreeSet<String>> {
    let out = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.client_ns()?,
            "arping",
            "-c",
            "1",
            "-w",
            "1",
            "-I",
            "eth0",
            ip,
        ])
        .output()
        .await
        .context("arping")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_lowercase()))
        .collect())
}

/// `ndisc6` from the client: the MAC that answered.
async fn ndisc_mac(lab: &Lab, ip: &str) -> anyhow::Result<String> {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            lab.client_ns()?,
            "ndisc6",
            "-r",
            "3",
            "-w",
            "500",
            ip,
            "eth0",
        ],
    )
    .await?;
    out.lines()
        .find_map(|l| l.strip_prefix("Target link-layer address: "))
        .map(|m| m.trim().to_lowercase())
        .with_context(|| format!("no answer in {out:?}"))
}

/// The client's neighbour entry for `ip`.
async fn neighbour(lab: &Lab, ip: &str) -> anyhow::Result<Option<String>> {
    let out = run("ip", &["-n", lab.client_ns()?, "neigh", "show", ip]).await?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_lowercase))
}

fn index(node: &Node) -> String {
    node.name.trim_start_matches("hl-node").to_string()
}

async fn speakers(lab: &Lab, action: &str, node: &Node) -> anyhow::Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/speakers.sh");
    let out = tokio::process::Command::new(script)
        .arg(action)
        .arg(index(node))
        .env("HERALD_LAB_DIR", &lab.dir)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "speakers.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]/")
    } else {
        format!("http://{ip}/")
    }
}

/// Runs `body` with a fresh case, and always cleans up.
macro_rules! e2e {
    ($test:expr, $v4:expr, $v6:expr, |$lab:ident, $case:ident| $body:block) => {{
        let Some($lab) = Lab::load($test) else {
            return Ok(());
        };
        init_tracing();
        let _serial = SERIAL.lock().await;
        let $case = Case::new(
            &$lab,
            $test
                .replace('_', "-")
                .chars()
                .take(30)
                .collect::<String>()
                .trim_end_matches('-'),
            $v4,
            $v6,
        )
        .await?;
        let result: anyhow::Result<()> = async { $body }.await;
        $case.cleanup().await;
        result
    }};
}

#[tokio::test]
async fn one_node_answers_arp_and_ndp_and_traffic_flows() -> anyhow::Result<()> {
    e2e!(
        "one_node_answers",
        "192.0.2.124/32",
        "2001:db8::124/128",
        |lab, case| {
            case.service("web", true, "Cluster").await?;
            let nodes = lab.nodes()?;
            case.endpoints("web", &nodes.iter().collect::<Vec<_>>())
                .await?;
            let ips = case.ips("web", 2).await?;
            let (v4, v6) = (&ips[0], &ips[1]);
            let owner = one_announcer(&lab, v4, None).await?;
            let owner6 = one_announcer(&lab, v6, None).await?;
            ensure!(
                owner.name == owner6.name,
                "both IPs of a dual-stack Service from one node"
            );
            case.condition_names("web", &owner.name).await?;
            for _ in 0..3 {
                let macs = arping_once(&lab, v4).await?;
                ensure!(
                    macs == BTreeSet::from([owner.mac.to_lowercase()]),
                    "arping {v4}: {macs:?}, owner {}",
                    owner.mac
                );
            }
            ensure!(
                ndisc_mac(&lab, v6).await? == owner.mac.to_lowercase(),
                "ndisc6 {v6}"
            );
            for ip in [v4, v6] {
                let reply = fetch_eventually(&lab, &url(ip)).await?;
                ensure!(reply.node.starts_with("hl-node"), "{ip}: {reply:?}");
            }
            Ok(())
        }
    )
}

#[tokio::test]
async fn local_policy_announces_only_where_the_endpoint_is() -> anyhow::Result<()> {
    e2e!(
        "local_policy",
        "192.0.2.125/32",
        "2001:db8::125/128",
        |lab, case| {
            let nodes = lab.nodes()?;
            ensure!(nodes.len() >= 3, "needs 3 nodes");
            case.service("local", false, "Local").await?;
            case.endpoints("local", &[&nodes[1]]).await?;
            let ip = case.ips("local", 1).await?.remove(0);
            let owner = one_announcer(&lab, &ip, None).await?;
            ensure!(
                owner.name == nodes[1].name,
                "owner {} is not the endpoint's node",
                owner.name
            );
            let reply = fetch_eventually(&lab, &url(&ip)).await?;
            ensure!(reply.node == nodes[1].name, "{reply:?}");
            // The endpoint moves: so does the owner.
            case.endpoints("local", &[&nodes[2]]).await?;
            let owner = one_announcer(&lab, &ip, Some(&nodes[1].name)).await?;
            ensure!(owner.name == nodes[2].name);
            let reply = fetch_eventually(&lab, &url(&ip)).await?;
            ensure!(reply.node == nodes[2].name, "{reply:?}");
            Ok(())
        }
    )
}

/// Waits until the client's neighbour entry for `ip` leaves `old` — with no traffic from the
/// client, so only a gratuitous announcement can have moved it.
async fn neighbour_moves(lab: &Lab, ip: &str, old: &str) -> anyhow::Result<(String, Duration)> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(mac) = neighbour(lab, ip).await?
            && mac != old
        {
            return Ok((mac, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{ip}: the client's neighbour entry still points at {old} after 10 s")
}

async fn failover(test: &str, v4: &str, v6: &str, fault: &str) -> anyhow::Result<()> {
    e2e!(test, v4, v6, |lab, case| {
        case.service("web", false, "Cluster").await?;
        let nodes = lab.nodes()?;
        case.endpoints("web", &nodes.iter().collect::<Vec<_>>())
            .await?;
        let ip = case.ips("web", 1).await?.remove(0);
        let owner = one_announcer(&lab, &ip, None).await?;
        // The client knows the owner: its kernel resolved the VIP for real traffic.
        ensure!(arping_once(&lab, &ip).await? == BTreeSet::from([owner.mac.to_lowercase()]));
        fetch_eventually(&lab, &url(&ip)).await?;
        ensure!(neighbour(&lab, &ip).await?.as_deref() == Some(owner.mac.to_lowercase().as_str()));
        // Let Linux's 1 s neighbour locktime pass, as it has in a client that resolved long ago.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let faulted = Instant::now();
        let restore: Vec<Vec<String>> = match fault {
            "kill" => {
                speakers(&lab, "kill", &owner).await?;
                vec![]
            }
            "term" => {
                speakers(&lab, "stop", &owner).await?;
                vec![]
            }
            "link" => {
                run("ip", &["-n", &owner.name, "link", "set", "eth0", "down"]).await?;
                vec![vec![
                    "-n".into(),
                    owner.name.clone(),
                    "link".into(),
                    "set".into(),
                    "eth0".into(),
                    "up".into(),
                ]]
            }
            other => bail!("unknown fault {other}"),
        };
        let result = async {
            let (mac, _) = neighbour_moves(&lab, &ip, &owner.mac.to_lowercase()).await?;
            let took = faulted.elapsed();
            let new_owner = one_announcer(&lab, &ip, Some(&owner.name)).await?;
            eprintln!(
                "{fault}: {ip} moved from {} to {} in {took:?}",
                owner.name, new_owner.name
            );
            ensure!(
                mac == new_owner.mac.to_lowercase(),
                "entry {mac}, owner {}",
                new_owner.mac
            );
            case.condition_names("web", &new_owner.name).await?;
            let reply = fetch_eventually(&lab, &url(&ip)).await?;
            ensure!(reply.node.starts_with("hl-node"));
            Ok(())
        }
        .await;
        for args in restore {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("ip", &args).await?;
        }
        speakers(&lab, "start", &owner).await?;
        result
    })
}

#[tokio::test]
async fn sigkill_of_the_owner_fails_over_by_gratuitous_arp() -> anyhow::Result<()> {
    failover(
        "sigkill_failover",
        "192.0.2.126/32",
        "2001:db8::126/128",
        "kill",
    )
    .await
}

#[tokio::test]
async fn sigterm_hands_over() -> anyhow::Result<()> {
    failover(
        "sigterm_handover",
        "192.0.2.127/32",
        "2001:db8::127/128",
        "term",
    )
    .await
}

#[tokio::test]
async fn owner_link_down_fails_over() -> anyhow::Result<()> {
    failover(
        "link_down_failover",
        "192.0.2.128/32",
        "2001:db8::128/128",
        "link",
    )
    .await
}

/// Probes every ~50 ms for `for_`, failing if one probe is answered by two MACs.
async fn never_two_macs(lab: &Lab, ip: &str, for_: Duration) -> anyhow::Result<BTreeSet<String>> {
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

async fn partition(test: &str, v4: &str, v6: &str, gossip_only: bool) -> anyhow::Result<()> {
    e2e!(test, v4, v6, |lab, case| {
        case.service("web", false, "Cluster").await?;
        let nodes = lab.nodes()?;
        case.endpoints("web", &nodes.iter().collect::<Vec<_>>())
            .await?;
        let ip = case.ips("web", 1).await?.remove(0);
        let owner = one_announcer(&lab, &ip, None).await?;
        let port = format!("node{}", index(&owner));
        let switch = lab.var("HERALD_SWITCH_NS")?.to_string();
        let cut = async {
            if gossip_only {
                cut_gossip(&owner).await
            } else {
                run("ip", &["-n", &switch, "link", "set", &port, "down"])
                    .await
                    .map(|_| ())
            }
        };
        let heal = async {
            if gossip_only {
                heal_gossip(&owner).await
            } else {
                run("ip", &["-n", &switch, "link", "set", &port, "up"])
                    .await
                    .map(|_| ())
            }
        };
        cut.await?;
        let result = async {
            // During the cut and after the heal, no probe ever gets two answers.
            let during = never_two_macs(&lab, &ip, Duration::from_secs(3)).await?;
            let new_owner = one_announcer(&lab, &ip, Some(&owner.name)).await?;
            ensure!(
                during.contains(&new_owner.mac.to_lowercase()),
                "during the cut: {during:?}"
            );
            Ok(new_owner)
        }
        .await;
        heal.await?;
        let new_owner = result?;
        // The returning node is held down (the lab's speakers: 3 s): it does not pull the IP
        // back at once...
        let held = never_two_macs(&lab, &ip, Duration::from_millis(1500)).await?;
        ensure!(
            held == BTreeSet::from([new_owner.mac.to_lowercase()]),
            "right after the heal the returning node must not take the IP back: {held:?}"
        );
        // ...and when its hold-down ends and the hash gives the IP back, never two answer.
        never_two_macs(&lab, &ip, Duration::from_secs(3)).await?;
        Ok(())
    })
}

#[tokio::test]
async fn cut_bridge_port_never_two_macs() -> anyhow::Result<()> {
    partition("bridge_cut", "192.0.2.129/32", "2001:db8::129/128", false).await
}

#[tokio::test]
async fn gossip_only_cut_never_two_macs() -> anyhow::Result<()> {
    partition("gossip_cut", "192.0.2.130/32", "2001:db8::130/128", true).await
}

#[tokio::test]
async fn garbage_frames_are_dropped_and_counted() -> anyhow::Result<()> {
    e2e!(
        "garbage_frames",
        "192.0.2.131/32",
        "2001:db8::131/128",
        |lab, case| {
            case.service("web", false, "Cluster").await?;
            let nodes = lab.nodes()?;
            case.endpoints("web", &nodes.iter().collect::<Vec<_>>())
                .await?;
            let ip = case.ips("web", 1).await?.remove(0);
            let owner = one_announcer(&lab, &ip, None).await?;
            // Random bytes, a truncated ARP request, and an NS without options, broadcast.
            let script = r#"
import os, socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
src = bytes.fromhex("0200000000c8")
frames = []
for _ in range(50):
    frames.append(b"\xff" * 6 + src + b"\x08\x06" + os.urandom(28))
frames.append(b"\xff" * 6 + src + b"\x08\x06" + bytes.fromhex("00010800060400"))
ns = bytes.fromhex("6000000000183aff") + bytes(16) + bytes.fromhex("ff0200000000000000000001ff000131") \
     + bytes.fromhex("8700000000000000") + bytes.fromhex("20010db8000000000000000000000131")
frames.append(bytes.fromhex("3333ff000131") + src + b"\x86\xdd" + ns)
for f in frames:
    s.send(f)
"#;
            run(
                "ip",
                &["netns", "exec", lab.client_ns()?, "python3", "-c", script],
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let metrics = speaker_metrics(&owner.name).await?;
            let dropped: u64 = metrics
                .lines()
                .filter(|l| l.starts_with("herald_speaker_frames_dropped_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            ensure!(dropped > 0, "no dropped frames counted:\n{metrics}");
            // Still answering.
            ensure!(arping_once(&lab, &ip).await? == BTreeSet::from([owner.mac.to_lowercase()]));

            // Forged and garbage membership datagrams: refused and counted; nothing changes.
            let forge = format!(
                r#"
import socket, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
forged = b"\x01" + b'{{"node":"hl-node9","incarnation":1,"seq":1,"leaving":false,"links":["eth0"],"member_for_ms":99999}}' + bytes(32)
for _ in range(20):
    s.sendto(forged, ("{node_ip}", 7947))
    s.sendto(os.urandom(64), ("{node_ip}", 7947))
"#,
                node_ip = owner.ip4
            );
            run(
                "ip",
                &["netns", "exec", lab.client_ns()?, "python3", "-c", &forge],
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let metrics = speaker_metrics(&owner.name).await?;
            for reason in ["bad_tag", "bad_version"] {
                ensure!(
                    metrics.contains(&format!(
                        "herald_speaker_heartbeats_rejected_total{{reason=\"{reason}\"}}"
                    )),
                    "no {reason} count:\n{metrics}"
                );
            }
            ensure!(
                metrics.contains(&format!("herald_speaker_members {}", nodes.len())),
                "membership changed:\n{metrics}"
            );

            // Another station claims the owned IP: an IPConflict Warning Event and a count.
            let claim = format!(
                r#"
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mac = bytes.fromhex("0200000000c8")
ip = socket.inet_aton("{ip}")
arp = bytes.fromhex("0001080006040001") + mac + ip + bytes(6) + ip
s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
"#
            );
            run(
                "ip",
                &["netns", "exec", lab.client_ns()?, "python3", "-c", &claim],
            )
            .await?;
            let events: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(case.client.clone(), &case.ns);
            let mut seen = false;
            for _ in 0..50 {
                seen = events
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some("IPConflict")
                            && e.note
                                .as_deref()
                                .is_some_and(|n| n.contains("02:00:00:00:00:c8"))
                    });
                if seen {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ensure!(seen, "no IPConflict event");
            Ok(())
        }
    )
}

/// Patches a Node's labels (`null` removes one).
async fn label_node(client: &Client, node: &str, labels: serde_json::Value) -> anyhow::Result<()> {
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

#[tokio::test]
async fn exclusion_label_node_selectors_and_interfaces_decide_the_owner() -> anyhow::Result<()> {
    e2e!(
        "selectors",
        "192.0.2.132/32",
        "2001:db8::132/128",
        |lab, case| {
            case.service("web", false, "Cluster").await?;
            let nodes = lab.nodes()?;
            case.endpoints("web", &nodes.iter().collect::<Vec<_>>())
                .await?;
            let ip = case.ips("web", 1).await?.remove(0);
            let owner = one_announcer(&lab, &ip, None).await?;
            // The exclusion label takes the owner out.
            let exclude = "node.kubernetes.io/exclude-from-external-load-balancers";
            label_node(&case.client, &owner.name, json!({exclude: ""})).await?;
            let result = async {
                let other = one_announcer(&lab, &ip, Some(&owner.name)).await?;
                ensure!(
                    arping_once(&lab, &ip).await? == BTreeSet::from([other.mac.to_lowercase()])
                );
                Ok(())
            }
            .await;
            label_node(&case.client, &owner.name, json!({exclude: null})).await?;
            result?;
            // nodeSelectors pin the IP to one node.
            let ads: Api<herald_config::L2Advertisement> = Api::all(case.client.clone());
            let pinned = nodes.last().context("no nodes")?;
            let ad = |spec: serde_json::Value| {
                json!({"apiVersion": "herald.dev/v1beta1", "kind": "L2Advertisement",
                   "metadata": {"name": case.pool}, "spec": spec})
            };
            ads.patch(
                &case.pool,
                &PatchParams::apply("herald-e2e").force(),
                &Patch::Apply(ad(json!({
                    "ipAddressPools": [case.pool], "interfaces": ["eth0"],
                    "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": pinned.name}}]
                }))),
            )
            .await?;
            let result: anyhow::Result<()> = async {
                let owner = one_announcer(&lab, &ip, None).await?;
                ensure!(
                    owner.name == pinned.name,
                    "nodeSelectors: owner {}",
                    owner.name
                );
                // An advertisement naming an interface no node has: nobody answers.
                ads.patch(
                    &case.pool,
                    &PatchParams::apply("herald-e2e").force(),
                    &Patch::Apply(ad(
                        json!({"ipAddressPools": [case.pool], "interfaces": ["eth9"]}),
                    )),
                )
                .await?;
                for _ in 0..50 {
                    if announcers(&lab, &ip).await?.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ensure!(
                    announcers(&lab, &ip).await?.is_empty(),
                    "announced without the named interface"
                );
                ensure!(
                    arping_once(&lab, &ip).await?.is_empty(),
                    "answered without the named interface"
                );
                Ok(())
            }
            .await;
            result
        }
    )
}

#[tokio::test]
async fn a_shared_ip_has_one_owner_for_all_its_services() -> anyhow::Result<()> {
    e2e!(
        "shared_ip",
        "192.0.2.133/32",
        "2001:db8::133/128",
        |lab, case| {
            let services: Api<Service> = Api::namespaced(case.client.clone(), &case.ns);
            for (name, port) in [("web", 80), ("alt", 8081)] {
                services
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "metadata": {"name": name, "annotations": {"herald.dev/allow-shared-ip": "shared"}},
                        "spec": {"type": "LoadBalancer",
                                 "ports": [{"name": "http", "port": port, "targetPort": 8080}]}
                    }))?,
                )
                .await?;
            }
            let nodes = lab.nodes()?;
            case.endpoints("web", &nodes.iter().collect::<Vec<_>>())
                .await?;
            case.endpoints("alt", &nodes.iter().collect::<Vec<_>>())
                .await?;
            let a = case.ips("web", 1).await?;
            let b = case.ips("alt", 1).await?;
            ensure!(a == b, "not shared: {a:?} {b:?}");
            let owner = one_announcer(&lab, &a[0], None).await?;
            ensure!(arping_once(&lab, &a[0]).await? == BTreeSet::from([owner.mac.to_lowercase()]));
            fetch_eventually(&lab, &format!("http://{}/", a[0])).await?;
            fetch_eventually(&lab, &format!("http://{}:8081/", a[0])).await?;
            Ok(())
        }
    )
}

/// Waits until exactly one node other than `not` announces `ip`, for up to `limit`.
async fn another_announcer(
    lab: &Lab,
    ip: &str,
    not: &str,
    limit: Duration,
) -> anyhow::Result<Node> {
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < limit {
        last = announcers(lab, ip).await?;
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

/// Drops membership traffic in and out of `node` (the LAN and the API stay reachable).
async fn cut_gossip(node: &Node) -> anyhow::Result<()> {
    let rules = "table inet herald_cut { \
                 chain cut_in { type filter hook input priority -10; udp dport 7947 drop; }; \
                 chain cut_out { type filter hook output priority -10; udp dport 7947 drop; }; }";
    run("ip", &["netns", "exec", &node.name, "nft", rules]).await?;
    Ok(())
}

async fn heal_gossip(node: &Node) -> anyhow::Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            &node.name,
            "nft",
            "delete table inet herald_cut",
        ],
    )
    .await?;
    Ok(())
}

/// A two-node cluster (the third Node object deleted, its speaker stopped): one node alone is
/// only half, a tie, which the witness Lease breaks. A gossip-only cut between the two leaves
/// exactly one MAC answering (the holder's side); killing the owner's speaker lets the
/// survivor take over through the witness.
#[tokio::test]
async fn two_node_cluster_breaks_ties_with_the_witness_lease() -> anyhow::Result<()> {
    e2e!(
        "two_node_witness",
        "192.0.2.134/32",
        "2001:db8::134/128",
        |lab, case| {
            use k8s_openapi::api::core::v1::Node as NodeObject;
            let nodes = lab.nodes()?;
            ensure!(nodes.len() >= 3, "needs the three-node lab");
            let third = nodes[2].clone();
            let pair = [nodes[0].clone(), nodes[1].clone()];
            case.service("web", false, "Cluster").await?;
            case.endpoints("web", &pair.iter().collect::<Vec<_>>())
                .await?;
            let ip = case.ips("web", 1).await?.remove(0);
            one_announcer(&lab, &ip, None).await?;

            let node_api: Api<NodeObject> = Api::all(case.client.clone());
            let saved = node_api.get(&third.name).await?;
            speakers(&lab, "stop", &third).await?;
            node_api
                .delete(&third.name, &DeleteParams::default())
                .await?;
            let mut killed: Option<Node> = None;
            let mut cut: Option<Node> = None;
            let result = async {
                // Two Nodes, both speakers heard: a majority; one owner as before.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let owner = one_announcer(&lab, &ip, None).await?;
                ensure!(
                    pair.iter().any(|n| n.name == owner.name),
                    "owner {}",
                    owner.name
                );

                // Gossip-only cut: both sides see a tie; only the witness holder's answers.
                cut_gossip(&owner).await?;
                cut = Some(owner.clone());
                let during = never_two_macs(&lab, &ip, Duration::from_secs(4)).await?;
                let holder_side = one_announcer(&lab, &ip, None).await?;
                ensure!(
                    during.contains(&holder_side.mac.to_lowercase()),
                    "during the cut: {during:?}, announcer {}",
                    holder_side.name
                );
                eprintln!(
                    "gossip cut in a two-node cluster: only {} answered",
                    holder_side.name
                );
                heal_gossip(&owner).await?;
                cut = None;
                never_two_macs(&lab, &ip, Duration::from_secs(4)).await?;

                // The owner's speaker killed: the survivor is half the cluster and takes over
                // once it holds the witness (at once if free, else after its 10 s expiry).
                let owner = one_announcer(&lab, &ip, None).await?;
                speakers(&lab, "kill", &owner).await?;
                killed = Some(owner.clone());
                let faulted = Instant::now();
                let survivor =
                    another_announcer(&lab, &ip, &owner.name, Duration::from_secs(20)).await?;
                eprintln!(
                    "two-node SIGKILL: {ip} moved from {} to {} in {:?}",
                    owner.name,
                    survivor.name,
                    faulted.elapsed()
                );
                ensure!(
                    arping_once(&lab, &ip).await? == BTreeSet::from([survivor.mac.to_lowercase()])
                );
                let reply = fetch_eventually(&lab, &url(&ip)).await?;
                ensure!(reply.node.starts_with("hl-node"));
                Ok(())
            }
            .await;
            if let Some(node) = cut {
                heal_gossip(&node).await?;
            }
            if let Some(node) = killed {
                speakers(&lab, "start", &node).await?;
            }
            // The third Node comes back as the lab made it, then its speaker.
            let restored = NodeObject {
                metadata: kube::api::ObjectMeta {
                    name: saved.metadata.name.clone(),
                    labels: saved.metadata.labels.clone(),
                    ..Default::default()
                },
                ..Default::default()
            };
            for _ in 0..50 {
                match node_api.create(&PostParams::default(), &restored).await {
                    Ok(_) => break,
                    // Still being deleted.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            node_api
                .patch_status(
                    &third.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": saved.status})),
                )
                .await?;
            speakers(&lab, "start", &third).await?;
            result
        }
    )
}
