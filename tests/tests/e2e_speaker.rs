//! End-to-end, in the node lab with the speakers running (root only): what a user on the LAN
//! sees. `arping`, `ndisc6` and `curl` run in the client namespace; faults are real (SIGKILL,
//! SIGTERM, a link down, a cut bridge port, membership traffic dropped).
//!
//! Run: `make e2e` as root (or `tests/lab/lab.sh up` and
//! `cargo test -p herald-tests --test e2e_speaker -- --ignored --test-threads=1`). Each test uses its own
//! pool in 192.0.2.124-192.0.2.139 / 2001:db8::124-2001:db8::139 and its own namespace, and
//! restarts any speaker it stopped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use herald_tests::lab_case::*;
use herald_tests::node_lab::*;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// The client's neighbour entry for `ip`.
async fn neighbour(lab: &Lab, ip: &str) -> anyhow::Result<Option<String>> {
    let out = run("ip", &["-n", lab.client_ns()?, "neigh", "show", ip]).await?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_lowercase))
}

/// Runs `body` with a fresh case (a pool of one IPv4 and one IPv6 address), and always cleans up.
macro_rules! e2e {
    ($test:expr, $v4:expr, $v6:expr, |$lab:ident, $case:ident| $body:block) => {
        herald_tests::lab_case!($test, &[$v4, $v6], |$lab, $case| $body)
    };
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
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
            condition_names(&case, "web", &owner.name, "eth0").await?;
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
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
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
        // The nodes whose link to bring back up (with the routes and address it lost).
        let restore: Vec<String> = match fault {
            "kill" => {
                speakers(&lab, "kill", &owner).await?;
                vec![]
            }
            "term" => {
                speakers(&lab, "stop", &owner).await?;
                vec![]
            }
            "delete" => {
                speakers(&lab, "delete", &owner).await?;
                vec![]
            }
            "link" => {
                let index = owner.index.to_string();
                lab.script("nodes.sh", &["link", "down", &index]).await?;
                vec![index]
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
            condition_names(&case, "web", &new_owner.name, "eth0").await?;
            let reply = fetch_eventually(&lab, &url(&ip)).await?;
            ensure!(reply.node.starts_with("hl-node"));
            Ok(())
        }
        .await;
        for index in restore {
            lab.script("nodes.sh", &["link", "up", &index]).await?;
        }
        speakers(&lab, "start", &owner).await?;
        result
    })
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
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
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn sigterm_hands_over() -> anyhow::Result<()> {
    failover(
        "sigterm_handover",
        "192.0.2.127/32",
        "2001:db8::127/128",
        "term",
    )
    .await
}

/// `kubectl delete pod` of the owner's speaker: SIGTERM from the kubelet, a graceful handover.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn speaker_pod_deleted_hands_over() -> anyhow::Result<()> {
    failover(
        "pod_delete_handover",
        "192.0.2.135/32",
        "2001:db8::135/128",
        "delete",
    )
    .await
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn owner_link_down_fails_over() -> anyhow::Result<()> {
    failover(
        "link_down_failover",
        "192.0.2.128/32",
        "2001:db8::128/128",
        "link",
    )
    .await
}

async fn partition(test: &str, v4: &str, v6: &str, gossip_only: bool) -> anyhow::Result<()> {
    e2e!(test, v4, v6, |lab, case| {
        case.service("web", false, "Cluster").await?;
        let nodes = lab.nodes()?;
        case.endpoints("web", &nodes.iter().collect::<Vec<_>>())
            .await?;
        let ip = case.ips("web", 1).await?.remove(0);
        let owner = one_announcer(&lab, &ip, None).await?;
        let port = format!("node{}", owner.index);
        let switch = lab.var("HERALD_SWITCH_NS")?.to_string();
        let gossip = if gossip_only {
            Some(MembershipFault::both_ways(&owner).await?)
        } else {
            run("ip", &["-n", &switch, "link", "set", &port, "down"]).await?;
            None
        };
        let heal = async {
            match gossip {
                Some(fault) => fault.heal().await,
                None => run("ip", &["-n", &switch, "link", "set", &port, "up"])
                    .await
                    .map(|_| ()),
            }
        };
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
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn cut_bridge_port_never_two_macs() -> anyhow::Result<()> {
    partition("bridge_cut", "192.0.2.129/32", "2001:db8::129/128", false).await
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn gossip_only_cut_never_two_macs() -> anyhow::Result<()> {
    partition("gossip_cut", "192.0.2.130/32", "2001:db8::130/128", true).await
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
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
            let rejected = |metrics: &str| {
                herald_tests::bench::metrics::Samples::parse(metrics)
                    .sum("herald_speaker_heartbeats_rejected_total", &[])
            };
            let rejected_before = rejected(&speaker_metrics(&owner.name).await?);
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
            // All 40 refused before any HMAC (structure or source: the client is no node);
            // the flood test in e2e_faults sends well-formed and replayed heartbeats too.
            let refused = rejected(&metrics) - rejected_before;
            ensure!(
                refused >= 40.0,
                "{refused} of 40 forged or garbage datagrams counted as refused:\n{metrics}"
            );
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

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
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
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
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
                        "spec": {"type": "LoadBalancer", "selector": {"app": name},
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

/// A two-node cluster (the third node's kubelet stopped, its speaker killed, its Node object
/// deleted): one node alone is only half, a tie, which the witness Lease breaks. A gossip-only
/// cut between the two leaves exactly one MAC answering (the holder's side); killing the owner's
/// speaker lets the survivor take over through the witness.
#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn two_node_cluster_breaks_ties_with_the_witness_lease() -> anyhow::Result<()> {
    e2e!(
        "two_node_witness",
        "192.0.2.134/32",
        "2001:db8::134/128",
        |lab, case| {
            // The third node leaves for good: no kubelet to restart its speaker, no Node.
            let (ip, third) = two_node_cluster(&lab, &case, "web").await?;
            let nodes = lab.nodes()?;
            let pair = [nodes[0].clone(), nodes[1].clone()];
            let mut killed: Option<Node> = None;
            let mut cut: Option<MembershipFault> = None;
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
                cut = Some(MembershipFault::both_ways(&owner).await?);
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
                if let Some(fault) = cut.take() {
                    fault.heal().await?;
                }
                never_two_macs(&lab, &ip, Duration::from_secs(4)).await?;

                // The owner's speaker killed for good (its kubelet stopped first, or it would
                // restart the container within a second and, back in a cluster of two, win the
                // IP again): the survivor is half the cluster and takes over once it holds the
                // witness (at once if free, else after its 10 s expiry).
                let owner = one_announcer(&lab, &ip, None).await?;
                lab.script("nodes.sh", &["kubelet", "stop", &owner.index.to_string()])
                    .await?;
                killed = Some(owner.clone());
                speakers(&lab, "kill", &owner).await?;
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
            if let Some(fault) = cut {
                fault.heal().await?;
            }
            if let Some(node) = killed {
                lab.script("nodes.sh", &["kubelet", "start", &node.index.to_string()])
                    .await?;
                wait_node_ready(&case.client, &node.name).await?;
                speakers(&lab, "start", &node).await?;
            }
            restore_third(&lab, &case, &third).await?;
            result
        }
    )
}
