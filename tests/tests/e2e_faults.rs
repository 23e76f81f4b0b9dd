//! End-to-end, in the node lab with the speakers running (root only): the faults of issue 8 as
//! a LAN client sees them. A watch in the client namespace asks for the VIP every 5 ms and
//! records every frame claiming it (`herald_tests::arp_watch`), so "never two answers" is
//! checked at 10 ms resolution, and a client keeps opening TCP connections to it. Membership
//! faults are nft rules in a node's namespace (one way or both); speakers are stopped with
//! SIGSTOP, killed, or left running on a Node that is gone.
//!
//! Run: `make e2e` as root (or `tests/lab/lab.sh up` and
//! `cargo test -p herald-tests --test e2e_faults -- --ignored --test-threads=1`). Each test uses
//! its own pool in 192.0.2.211-192.0.2.229 / 2001:db8::211-2001:db8::229 and its own namespace,
//! and undoes every fault it applies.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use herald_tests::arp_watch::{ArpLog, ArpWatch};
use herald_tests::lab_case;
use herald_tests::lab_case::*;
use herald_tests::node_lab::*;
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const SYSTEM: &str = "herald-system";
const SECRET: &str = "herald-memberlist";
/// The lab's hold-down (the speaker's default).
const HOLD_DOWN: Duration = Duration::from_secs(3);

/// A Cluster-policy Service `name` with a backend on every node; its one IPv4 address and the
/// node that announces it.
async fn served(lab: &Lab, case: &Case, name: &str) -> anyhow::Result<(String, Node)> {
    case.service(name, false, "Cluster").await?;
    let nodes = lab.nodes()?;
    case.endpoints(name, &nodes.iter().collect::<Vec<_>>())
        .await?;
    let ip = case.ips(name, 1).await?.remove(0);
    let owner = one_announcer(lab, &ip, None).await?;
    fetch_eventually(lab, &url(&ip)).await?;
    Ok((ip, owner))
}

/// A watch on `ip` every 5 ms and a TCP client every 20 ms.
struct Watching {
    arp: ArpWatch,
    tcp: Prober,
}

impl Watching {
    fn start(lab: &Lab, ip: &str) -> anyhow::Result<Watching> {
        let v4: Ipv4Addr = ip.parse()?;
        Ok(Watching {
            arp: ArpWatch::start(lab, v4, Duration::from_millis(5))?,
            tcp: Prober::start(
                lab,
                SocketAddr::new(v4.into(), 80),
                Duration::from_millis(20),
            )?,
        })
    }

    /// Stops both and fails if two MACs ever claimed the IP within 10 ms.
    fn stop(self, what: &str) -> anyhow::Result<(ArpLog, ProbeReport)> {
        let log = self.arp.stop()?;
        let tcp = self.tcp.stop()?;
        eprintln!(
            "{what}: {} ARP requests, {} claims by {:?}, longest silence {:?}; TCP {} of {} answered, longest gap {:?}",
            log.requests,
            log.claims.len(),
            log.macs(),
            log.longest_silence(log.started, log.stopped),
            tcp.answered,
            tcp.sent,
            tcp.longest_gap
        );
        log.never_two_macs(what)?;
        Ok((log, tcp))
    }
}

/// Membership lost one way only, around the owner: it stops answering (no two-way majority) and
/// its IPs move while the loss lasts — even though nothing changed in the API (no watch event
/// wakes the election: the owner's own heartbeats say it withdrew, or its silence does).
async fn one_way_around_the_owner(test: &str, address: &str, into: bool) -> anyhow::Result<()> {
    lab_case!(test, &[address], |lab, case| {
        let (ip, owner) = served(&lab, &case, "web").await?;
        let watching = Watching::start(&lab, &ip)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let faulted = Instant::now();
        let fault = if into {
            MembershipFault::into(&owner).await?
        } else {
            MembershipFault::out_of(&owner).await?
        };
        let during = async {
            let other = another_announcer(&lab, &ip, &owner.name, Duration::from_secs(10))
                .await
                .context("the IP must move while the owner has no two-way majority")?;
            let quorum = speaker_samples(&owner)
                .await?
                .sum("herald_speaker_quorum", &[]);
            ensure!(quorum == 0.0, "{}: fence still open", owner.name);
            // It stays with the others while the loss lasts.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let still = one_announcer(&lab, &ip, None).await?;
            ensure!(still.name == other.name, "moved again to {}", still.name);
            Ok(other)
        }
        .await;
        fault.heal().await?;
        let healed = Instant::now();
        // The owner comes back through its hold-down, then takes its IP back (the hash).
        tokio::time::sleep(HOLD_DOWN + Duration::from_secs(2)).await;
        let (log, tcp) = watching.stop(test)?;
        let other = during?;
        let moved = log
            .first_other(&owner.mac.to_lowercase(), faulted)
            .map(|c| c.at.duration_since(faulted));
        eprintln!(
            "{test}: {ip} moved from {} to {} in {moved:?} (ARP); {} TCP requests failed",
            owner.name,
            other.name,
            tcp.sent - tcp.answered
        );
        // Back from the loss, the owner did not answer before its hold-down.
        let early = log.claims_by(
            &owner.mac.to_lowercase(),
            healed,
            healed + HOLD_DOWN - Duration::from_millis(200),
        );
        ensure!(
            early == 0,
            "{} answered {early} times within its hold-down",
            owner.name
        );
        Ok(())
    })
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn one_way_loss_into_the_owner_moves_its_ips_without_any_watch_event() -> anyhow::Result<()> {
    one_way_around_the_owner("one_way_into_owner", "192.0.2.211/32", true).await
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn one_way_loss_out_of_the_owner_never_two_macs() -> anyhow::Result<()> {
    one_way_around_the_owner("one_way_out_of_owner", "192.0.2.212/32", false).await
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn one_way_loss_between_two_non_owners_moves_nothing() -> anyhow::Result<()> {
    lab_case!(
        "one_way_between_others",
        &["192.0.2.213-192.0.2.216"],
        |lab, case| {
            let nodes = lab.nodes()?;
            ensure!(nodes.len() >= 3, "needs three nodes");
            // Services until two of them have different owners: x's owner is "the owner",
            // y's owner is b, and the third node is c.
            let mut owners: Vec<(String, Node)> = Vec::new();
            for i in 0..4 {
                let served = served(&lab, &case, &format!("web{i}")).await?;
                if owners.iter().all(|(_, n)| n.name != served.1.name) {
                    owners.push(served);
                }
                if owners.len() == 2 {
                    break;
                }
            }
            ensure!(
                owners.len() == 2,
                "four Services, one owner: {:?}",
                owners.iter().map(|o| &o.1.name).collect::<Vec<_>>()
            );
            let (x, a) = owners[0].clone();
            let (y, b) = owners[1].clone();
            let c = nodes
                .iter()
                .find(|n| n.name != a.name && n.name != b.name)
                .context("a third node")?
                .clone();
            let watch_x = Watching::start(&lab, &x)?;
            let watch_y = Watching::start(&lab, &y)?;
            // b's heartbeats no longer reach c; everything else flows. Before, c declared b
            // dead and took y while b kept answering it.
            let fault = MembershipFault::between(&b, &c).await?;
            let during = async {
                tokio::time::sleep(Duration::from_secs(4)).await;
                for (ip, owner) in [(&x, &a), (&y, &b)] {
                    let now = one_announcer(&lab, ip, None).await?;
                    ensure!(now.name == owner.name, "{ip} moved to {}", now.name);
                }
                for n in &nodes {
                    let samples = speaker_samples(n).await?;
                    ensure!(
                        samples.sum("herald_speaker_quorum", &[]) == 1.0
                            && samples.sum("herald_speaker_members", &[]) == nodes.len() as f64,
                        "{}: quorum {} members {}",
                        n.name,
                        samples.sum("herald_speaker_quorum", &[]),
                        samples.sum("herald_speaker_members", &[])
                    );
                }
                Ok(())
            }
            .await;
            fault.heal().await?;
            let (log_x, _) = watch_x.stop("x, owned by the third node")?;
            let (log_y, _) = watch_y.stop("y, owned by the node c does not hear")?;
            during?;
            ensure!(log_x.macs().len() == 1 && log_y.macs().len() == 1);
            Ok(())
        }
    )
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn two_node_cluster_one_way_loss_answers_from_the_witness_side_only() -> anyhow::Result<()> {
    lab_case!("two_node_one_way", &["192.0.2.217/32"], |lab, case| {
        let (ip, third) = two_node_cluster(&lab, &case, "web").await?;
        let result = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let owner = one_announcer(&lab, &ip, None).await?;
            let watching = Watching::start(&lab, &ip)?;
            // Each direction in turn: the owner's heartbeats lost, then the other's.
            for into in [false, true] {
                let fault = if into {
                    MembershipFault::into(&owner).await?
                } else {
                    MembershipFault::out_of(&owner).await?
                };
                let during = async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let now = one_announcer(&lab, &ip, None).await?;
                    eprintln!(
                        "two nodes, loss {} {}: {} answers",
                        if into { "into" } else { "out of" },
                        owner.name,
                        now.name
                    );
                    Ok::<_, anyhow::Error>(())
                }
                .await;
                fault.heal().await?;
                during?;
                tokio::time::sleep(HOLD_DOWN + Duration::from_secs(2)).await;
            }
            watching.stop("two-node cluster, one-way loss")?;
            Ok(())
        }
        .await;
        restore_third(&lab, &case, &third).await?;
        result
    })
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn a_stalled_owner_never_answers_from_before_its_stall_and_is_held_down() -> anyhow::Result<()>
{
    lab_case!("stalled_owner", &["192.0.2.218/32"], |lab, case| {
        let (ip, owner) = served(&lab, &case, "web").await?;
        let pid = speaker_pid(&lab, &owner).await?;
        let watching = Watching::start(&lab, &ip)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Paused longer than dead-after: the others take its IP; when it resumes, its
        // snapshot still says it owns the IP, and requests queued in its socket meanwhile.
        run("kill", &["-STOP", &pid.to_string()]).await?;
        let stopped = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let other = another_announcer(&lab, &ip, &owner.name, Duration::from_secs(5)).await;
        run("kill", &["-CONT", &pid.to_string()]).await?;
        let resumed = Instant::now();
        tokio::time::sleep(HOLD_DOWN + Duration::from_secs(2)).await;
        let (log, _) = watching.stop("SIGSTOP of the owner")?;
        let other = other?;
        let mac = owner.mac.to_lowercase();
        let early = log.claims_by(
            &mac,
            resumed,
            resumed + HOLD_DOWN - Duration::from_millis(200),
        );
        ensure!(
            early == 0,
            "{} answered {early} times within {HOLD_DOWN:?} of resuming (hold-down skipped)",
            owner.name
        );
        eprintln!(
            "stall: {ip} to {} {:?} after SIGSTOP; {} back after {:?}",
            other.name,
            log.first_other(&mac, stopped)
                .map(|c| c.at.duration_since(stopped)),
            owner.name,
            log.claims
                .iter()
                .find(|c| c.mac == mac && c.at > resumed)
                .map(|c| c.at.duration_since(resumed))
        );
        Ok(())
    })
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn a_flood_of_garbage_and_replays_does_not_starve_heartbeats() -> anyhow::Result<()> {
    lab_case!("membership_flood", &["192.0.2.219/32"], |lab, case| {
        let (ip, owner) = served(&lab, &case, "web").await?;
        let nodes = lab.nodes()?;
        let victim = nodes
            .iter()
            .find(|n| n.name != owner.name)
            .context("another node")?
            .clone();
        // Real heartbeats to the victim, captured on its own interface.
        let capture = format!(
            r#"
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
s.bind(("eth0", 0))
s.settimeout(2)
out = []
end = time.time() + 1.5
while time.time() < end and len(out) < 40:
    try:
        f = s.recv(65535)
    except socket.timeout:
        break
    ip = f[14:]
    if ip[9] == 17 and ip[16:20] == socket.inet_aton("{victim}") and int.from_bytes(ip[22:24], "big") == 7947:
        out.append(f[14:].hex())
print("\n".join(out))
"#,
            victim = victim.ip4
        );
        let captured = run(
            "ip",
            &["netns", "exec", &victim.name, "python3", "-c", &capture],
        )
        .await?;
        let replays: Vec<&str> = captured.lines().filter(|l| !l.is_empty()).collect();
        ensure!(!replays.is_empty(), "no heartbeat captured");
        let before = speaker_samples(&victim).await?;
        let watching = Watching::start(&lab, &ip)?;
        // From the client for 5 s: random garbage at the victim's port from the client's own
        // address, and the captured heartbeats replayed with their senders' addresses
        // (spoofed: the datagrams are real, signed, and old).
        let flood = format!(
            r#"
import os, socket, time
def replayable(h):
    p = bytearray(bytes.fromhex(h))
    ihl = (p[0] & 0x0f) * 4
    # Captured on a veth, the UDP checksum is only the offloaded partial sum: zero means none.
    p[ihl + 6:ihl + 8] = b"\0\0"
    return bytes(p), bytes(p[ihl + 8:])
packets = [replayable(h) for h in """{replays}""".split()]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 5
sent = 0
while time.time() < end:
    for spoofed, payload in packets:
        raw.sendto(spoofed, ("{victim}", 0))
        udp.sendto(payload, ("{victim}", 7947))
        udp.sendto(os.urandom(200), ("{victim}", 7947))
        sent += 3
print(sent)
"#,
            replays = replays.join(" "),
            victim = victim.ip4
        );
        let client = lab.client_ns()?.to_string();
        let flooding = tokio::spawn(async move {
            run("ip", &["netns", "exec", &client, "python3", "-c", &flood]).await
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mid = speaker_samples(&victim).await?;
        let sent = flooding.await??;
        let after = speaker_samples(&victim).await?;
        watching.stop("membership flood")?;
        eprintln!("flood: {} datagrams sent at {}", sent.trim(), victim.name);
        let counted = |s: &herald_tests::bench::metrics::Samples, reason: &str| {
            s.sum(
                "herald_speaker_heartbeats_rejected_total",
                &[("reason", reason)],
            )
        };
        for reason in herald_speaker::decide::membership::Rejection::ALL {
            let reason = reason.metric_label();
            eprintln!(
                "  rejected {reason}: {}",
                counted(&after, reason) - counted(&before, reason)
            );
        }
        // Garbage fails the structure checks; a real heartbeat sent from the client's own
        // address fails the source check: both before any HMAC.
        let cheap = ["bad_length", "bad_version", "malformed"]
            .iter()
            .map(|r| counted(&after, r) - counted(&before, r))
            .sum::<f64>();
        ensure!(cheap > 0.0, "garbage not refused by the structure checks");
        ensure!(
            counted(&after, "unknown_source") > counted(&before, "unknown_source"),
            "heartbeats from the client's address not refused as unknown_source"
        );
        let replayed = ["stale", "unproven", "rate_limited"]
            .iter()
            .map(|r| counted(&after, r) - counted(&before, r))
            .sum::<f64>();
        ensure!(replayed > 0.0, "replays not refused");
        // Heartbeats flowed all along: the victim kept its quorum and its members, and kept
        // accepting heartbeats during the flood.
        let accepted = |s: &herald_tests::bench::metrics::Samples| {
            s.sum("herald_speaker_heartbeats_accepted_total", &[])
        };
        ensure!(
            accepted(&after) - accepted(&mid) > 10.0,
            "heartbeats starved: {} accepted in the second half of the flood",
            accepted(&after) - accepted(&mid)
        );
        for s in [&mid, &after] {
            ensure!(
                s.sum("herald_speaker_quorum", &[]) == 1.0
                    && s.sum("herald_speaker_members", &[]) == nodes.len() as f64,
                "{}: lost its quorum or members under the flood",
                victim.name
            );
        }
        let still = one_announcer(&lab, &ip, None).await?;
        ensure!(still.name == owner.name, "{ip} moved to {}", still.name);
        Ok(())
    })
}

/// How many Events with `reason` were published about Node objects (a series counts its
/// repeats): compared before and after a step.
async fn node_events(case: &Case, reason: &str) -> anyhow::Result<usize> {
    let events: Api<Event> = Api::all(case.client.clone());
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Node")
        })
        .map(|e| usize::try_from(e.series.as_ref().map_or(1, |s| s.count.max(1))).unwrap_or(1))
        .sum())
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn the_membership_key_deleted_emptied_short_or_rotated_darkens_nothing() -> anyhow::Result<()>
{
    lab_case!("membership_key", &["192.0.2.220/32"], |lab, case| {
        let (ip, owner) = served(&lab, &case, "web").await?;
        let nodes = lab.nodes()?;
        let secrets: Api<Secret> = Api::namespaced(case.client.clone(), SYSTEM);
        let original = secrets.get(SECRET).await?;
        let key = original
            .data
            .as_ref()
            .and_then(|d| d.get("secretkey"))
            .map(|k| k.0.clone())
            .context("the lab's Secret has no secretkey")?;
        let watching = Watching::start(&lab, &ip)?;
        let put = |value: &[u8]| {
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": SECRET, "namespace": SYSTEM},
                   "data": {"secretkey": k8s_openapi::ByteString(value.to_vec())}})
        };
        let apply = PatchParams::apply("herald-e2e").force();
        let all_keep_quorum = |what: &'static str| {
            let nodes = nodes.clone();
            async move {
                for n in &nodes {
                    let s = speaker_samples(n).await?;
                    ensure!(
                        s.sum("herald_speaker_quorum", &[]) == 1.0,
                        "{what}: {} lost its quorum",
                        n.name
                    );
                }
                Ok::<_, anyhow::Error>(())
            }
        };
        let steps = async {
            // Deleted.
            let missing = node_events(&case, "MembershipKeyMissing").await?;
            secrets.delete(SECRET, &DeleteParams::default()).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            all_keep_quorum("Secret deleted").await?;
            ensure!(
                node_events(&case, "MembershipKeyMissing").await? > missing,
                "no MembershipKeyMissing Event"
            );
            secrets
                .create(&PostParams::default(), &serde_json::from_value(put(&key))?)
                .await?;
            // Emptied, then a short key.
            for (value, reason) in [
                (&b""[..], "MembershipKeyEmpty"),
                (&b"too-short"[..], "MembershipKeyTooShort"),
            ] {
                let before = node_events(&case, reason).await?;
                secrets
                    .patch(SECRET, &apply, &Patch::Apply(put(value)))
                    .await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                all_keep_quorum(reason).await?;
                ensure!(
                    node_events(&case, reason).await? > before,
                    "no {reason} Event"
                );
            }
            // Rotated to a new key: both accepted for the window; nobody loses quorum.
            let rotated: Vec<u8> =
                format!("rotated-{:032x}", herald_tests::rand_u32()).into_bytes();
            secrets
                .patch(SECRET, &apply, &Patch::Apply(put(&rotated)))
                .await?;
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                all_keep_quorum("rotation").await?;
            }
            let s = speaker_samples(&owner).await?;
            ensure!(
                s.sum("herald_speaker_keys_accepted", &[]) == 2.0,
                "not both keys accepted during the rotation window"
            );
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let (_, tcp) = watching.stop("membership key")?;
        steps?;
        let still = one_announcer(&lab, &ip, None).await?;
        ensure!(still.name == owner.name, "{ip} moved to {}", still.name);
        ensure!(
            tcp.longest_gap < Duration::from_secs(1),
            "the VIP went unanswered for {:?}",
            tcp.longest_gap
        );
        Ok(())
    })
}

/// The speaker pod on `node`.
async fn speaker_pod(case: &Case, node: &Node) -> anyhow::Result<Option<Pod>> {
    let pods: Api<Pod> = Api::namespaced(case.client.clone(), SYSTEM);
    Ok(pods
        .list(
            &ListParams::default()
                .labels("app.kubernetes.io/name=herald,app.kubernetes.io/component=speaker")
                .fields(&format!("spec.nodeName={}", node.name)),
        )
        .await?
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none()))
}

/// Makes `node` a Node whose speaker never ran: its kubelet stopped, its speaker pod
/// force-deleted (the DaemonSet's new pod there stays Pending) and the old speaker process
/// killed. The pod goes first, so the count drops before the speaker falls silent.
async fn unstarted(lab: &Lab, case: &Case, node: &Node) -> anyhow::Result<()> {
    lab.script("nodes.sh", &["kubelet", "stop", &node.index.to_string()])
        .await?;
    let pods: Api<Pod> = Api::namespaced(case.client.clone(), SYSTEM);
    if let Some(pod) = speaker_pod(case, node).await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        pods.delete(
            &name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await?;
    }
    // The replacement exists and is not ready.
    for _ in 0..100 {
        if let Some(pod) = speaker_pod(case, node).await?
            && !herald_speaker::decide::inputs::speaker_ready(&pod)
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return speakers(lab, "kill", node).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{}: no pending speaker pod after 20 s", node.name)
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn nodes_whose_speakers_never_ran_do_not_count() -> anyhow::Result<()> {
    lab_case!("unstarted_speakers", &["192.0.2.221/32"], |lab, case| {
        let (ip, owner) = served(&lab, &case, "web").await?;
        let nodes = lab.nodes()?;
        // As many Nodes without a running speaker as with one, or more (3 → 7 before the new
        // speakers start): before, the Nodes were the count, and nobody had a majority.
        let others: Vec<Node> = nodes
            .iter()
            .filter(|n| n.name != owner.name)
            .cloned()
            .collect();
        let watching = Watching::start(&lab, &ip)?;
        let mut stopped = Vec::new();
        let result = async {
            for n in &others {
                unstarted(&lab, &case, n).await?;
                stopped.push(n.clone());
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let s = speaker_samples(&owner).await?;
            ensure!(
                s.sum("herald_speaker_counted_speakers", &[]) == 1.0,
                "counted {}",
                s.sum("herald_speaker_counted_speakers", &[])
            );
            ensure!(s.sum("herald_speaker_quorum", &[]) == 1.0, "no quorum");
            let now = one_announcer(&lab, &ip, None).await?;
            ensure!(now.name == owner.name);
            // The speakers start, one by one: each counts once it runs, the IP stays put
            // until the hash gives it elsewhere, never two answers.
            for n in stopped.drain(..) {
                lab.script("nodes.sh", &["kubelet", "start", &n.index.to_string()])
                    .await?;
                wait_node_ready(&case.client, &n.name).await?;
                speakers(&lab, "start", &n).await?;
            }
            tokio::time::sleep(HOLD_DOWN + Duration::from_secs(2)).await;
            let s = speaker_samples(&owner).await?;
            ensure!(
                s.sum("herald_speaker_counted_speakers", &[]) == nodes.len() as f64,
                "counted {} after the speakers started",
                s.sum("herald_speaker_counted_speakers", &[])
            );
            Ok(())
        }
        .await;
        for n in &stopped {
            lab.script("nodes.sh", &["kubelet", "start", &n.index.to_string()])
                .await?;
            wait_node_ready(&case.client, &n.name).await?;
            speakers(&lab, "start", n).await?;
        }
        let (_, tcp) = watching.stop("Nodes without a speaker")?;
        result?;
        ensure!(
            tcp.longest_gap < Duration::from_secs(1),
            "the VIP went unanswered for {:?}",
            tcp.longest_gap
        );
        Ok(())
    })
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn a_node_deleted_while_its_speaker_runs_counts_for_nobody() -> anyhow::Result<()> {
    lab_case!("deleted_node", &["192.0.2.222/32"], |lab, case| {
        let nodes = lab.nodes()?;
        ensure!(nodes.len() >= 3, "needs the three-node lab");
        let (a, b, gone) = (nodes[0].clone(), nodes[1].clone(), nodes[2].clone());
        case.service("web", false, "Cluster").await?;
        case.endpoints("web", &[&a, &b]).await?;
        let ip = case.ips("web", 1).await?.remove(0);
        one_announcer(&lab, &ip, None).await?;
        // The Node goes; its kubelet is stopped so it does not come back, its speaker runs on
        // and keeps sending heartbeats.
        lab.script("nodes.sh", &["kubelet", "stop", &gone.index.to_string()])
            .await?;
        let node_api: Api<NodeObject> = Api::all(case.client.clone());
        node_api
            .delete(&gone.name, &DeleteParams::default())
            .await?;
        let result = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            ensure!(
                speaker_pid(&lab, &gone).await.is_ok(),
                "the deleted Node's speaker must still run for this test"
            );
            let s = speaker_samples(&a).await?;
            ensure!(
                s.sum("herald_speaker_counted_speakers", &[]) == 2.0,
                "counted {}",
                s.sum("herald_speaker_counted_speakers", &[])
            );
            // Split a from the others: a is half of the two Nodes; b hears the deleted
            // Node's speaker too, which must not make b a majority. Only the witness holder's
            // side answers.
            let watching = Watching::start(&lab, &ip)?;
            let fault = MembershipFault::both_ways(&a).await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let answering = announcers(&lab, &ip).await?;
            fault.heal().await?;
            tokio::time::sleep(HOLD_DOWN + Duration::from_secs(2)).await;
            watching.stop("a deleted Node's speaker in a split")?;
            ensure!(
                answering.len() == 1 && answering[0].name != gone.name,
                "during the split: {:?}",
                answering.iter().map(|n| &n.name).collect::<Vec<_>>()
            );
            let own = speaker_samples(&gone).await?;
            ensure!(
                own.of("herald_speaker_announced", &[]).count() == 0,
                "the deleted Node's speaker announces"
            );
            Ok(())
        }
        .await;
        speakers(&lab, "kill", &gone).await.ok();
        restore_third(&lab, &case, &gone).await?;
        result
    })
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn a_dual_stack_service_from_two_pools_with_their_own_advertisements_is_announced()
-> anyhow::Result<()> {
    lab_case!("two_pool_dual_stack", &["192.0.2.223/32"], |lab, case| {
        // The IPv4 pool is the case's own (advertised on eth0); the IPv6 one has another
        // advertisement. Neither advertisement covers both pools.
        let v6_pool = format!("{}-v6", case.pool);
        case.apply_pool(
            &v6_pool,
            &["2001:db8::223/128"],
            json!({"interfaces": ["eth0"]}),
        )
        .await?;
        case.service_from(json!({
            "metadata": {"name": "dual", "annotations": {
                "herald.dev/loadBalancerIPs": "192.0.2.223,2001:db8::223"}},
            "spec": {
                "type": "LoadBalancer", "selector": {"app": "dual"},
                "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
            }
        }))
        .await?;
        let nodes = lab.nodes()?;
        case.endpoints("dual", &nodes.iter().collect::<Vec<_>>())
            .await?;
        let ips = case.ips("dual", 2).await?;
        let v4 = one_announcer(&lab, &ips[0], None).await?;
        let v6 = one_announcer(&lab, &ips[1], None).await?;
        ensure!(
            v4.name == v6.name,
            "two owners: {} and {}",
            v4.name,
            v6.name
        );
        ensure!(arping_once(&lab, &ips[0]).await? == [v4.mac.to_lowercase()].into());
        ensure!(ndisc_mac(&lab, &ips[1]).await? == v4.mac.to_lowercase());
        for ip in &ips {
            fetch_eventually(&lab, &url(ip)).await?;
        }
        Ok(())
    })
}

#[tokio::test]
#[ignore = "end-to-end: needs root and the lab cluster (make e2e)"]
async fn services_sharing_an_ip_selected_by_different_advertisements_are_announced()
-> anyhow::Result<()> {
    lab_case!("shared_ip_two_ads", &["192.0.2.224/32"], |lab, case| {
        // The case's advertisement selects Services labelled team=a; another, over the same
        // pool, those labelled team=b.
        case.apply_pool(
            &case.pool.clone(),
            &["192.0.2.224/32"],
            json!({"interfaces": ["eth0"],
                   "serviceSelectors": [{"matchLabels": {"team": "a"}}]}),
        )
        .await?;
        case.advertisement(
            &format!("{}-b", case.pool),
            json!({"ipAddressPools": [case.pool], "interfaces": ["eth0"],
                   "serviceSelectors": [{"matchLabels": {"team": "b"}}]}),
        )
        .await?;
        for (name, team, port) in [("web", "a", 80), ("alt", "b", 8081)] {
            case.service_from(json!({
                "metadata": {"name": name, "labels": {"team": team},
                             "annotations": {"herald.dev/allow-shared-ip": "shared"}},
                "spec": {"type": "LoadBalancer", "selector": {"app": name},
                         "ports": [{"name": "http", "port": port, "targetPort": 8080}]}
            }))
            .await?;
        }
        let nodes = lab.nodes()?;
        for name in ["web", "alt"] {
            case.endpoints(name, &nodes.iter().collect::<Vec<_>>())
                .await?;
        }
        let a = case.ips("web", 1).await?;
        let b = case.ips("alt", 1).await?;
        ensure!(a == b, "not shared: {a:?} {b:?}");
        let owner = one_announcer(&lab, &a[0], None).await?;
        ensure!(arping_once(&lab, &a[0]).await? == [owner.mac.to_lowercase()].into());
        fetch_eventually(&lab, &format!("http://{}/", a[0])).await?;
        fetch_eventually(&lab, &format!("http://{}:8081/", a[0])).await?;
        Ok(())
    })
}
