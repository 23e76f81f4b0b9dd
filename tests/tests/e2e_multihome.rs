//! End-to-end, in the node lab (root only): multi-homed nodes answer for an IP only on the
//! network it belongs to. Every node is on network A (eth0, the first switch) and network B
//! (eth1, a second switch); node 1 is also on VLAN 100 of the first switch (eth0.100). A client
//! sits on each (`hl-client`, `hl-clientb`, `hl-clientv`). The advertisements name no
//! interface, so every interface may answer; the subnet rule alone decides.
//!
//! Run: `make e2e` as root (or `tests/lab/lab.sh up` and
//! `cargo test -p herald-tests --test e2e_multihome -- --ignored --test-threads=1`). Pools:
//! 192.0.2.140-141 / 2001:db8::140-141 (A), 203.0.113.208-209 / 2001:db8:b::140-141 (B),
//! 203.0.113.168-169 (the VLAN).

use std::collections::BTreeSet;

use anyhow::{Context, ensure};
use herald_tests::lab_case;
use herald_tests::lab_case::*;
use herald_tests::node_lab::*;
use serde_json::json;

/// Network A's addresses (the case's own pool).
const POOL_A: &[&str] = &["192.0.2.140-192.0.2.141", "2001:db8::140-2001:db8::141"];

/// A client on one network: its namespace and interface.
struct Client {
    ns: String,
    interface: String,
}

impl Client {
    fn of(lab: &Lab, prefix: &str) -> anyhow::Result<Client> {
        Ok(Client {
            ns: lab.var(&format!("{prefix}_NS"))?.to_string(),
            interface: lab.var(&format!("{prefix}_IF"))?.to_string(),
        })
    }

    /// The MACs answering `ip` (ARP or NDP by family): one probe.
    async fn macs(&self, ip: &str) -> anyhow::Result<BTreeSet<String>> {
        if ip.contains(':') {
            Ok(ndisc_from(&self.ns, &self.interface, ip)
                .await?
                .into_iter()
                .collect())
        } else {
            arping_from(&self.ns, &self.interface, ip).await
        }
    }
}

/// The three networks' clients: A, B and the VLAN (none where the kernel has no 802.1Q
/// support: the lab then has no VLAN, `HERALD_VLAN_NODE=0`).
struct Clients {
    a: Client,
    b: Client,
    vlan: Option<Client>,
}

impl Clients {
    fn of(lab: &Lab) -> anyhow::Result<Clients> {
        Ok(Clients {
            a: Client::of(lab, "HERALD_CLIENT")?,
            b: Client::of(lab, "HERALD_CLIENT_B")?,
            vlan: match vlan_node(lab)? {
                0 => None,
                _ => Some(Client::of(lab, "HERALD_CLIENT_VLAN")?),
            },
        })
    }

    /// `ip` is answered by exactly `mac` on `right`'s network, and by nobody on the others.
    async fn only_on(&self, right: &Client, ip: &str, mac: &str) -> anyhow::Result<()> {
        let mut seen = BTreeSet::new();
        // A just-moved IP: the new owner answers within a few probes.
        for _ in 0..5 {
            seen = right.macs(ip).await?;
            if !seen.is_empty() {
                break;
            }
        }
        ensure!(
            seen == BTreeSet::from([mac.to_string()]),
            "{ip} from {}: {seen:?}, wanted only {mac}",
            right.ns
        );
        for wrong in [Some(&self.a), Some(&self.b), self.vlan.as_ref()]
            .into_iter()
            .flatten()
        {
            if wrong.ns == right.ns {
                continue;
            }
            let heard = wrong.macs(ip).await?;
            ensure!(
                heard.is_empty(),
                "{ip} answered on the wrong network, to {}: {heard:?}",
                wrong.ns
            );
        }
        Ok(())
    }
}

/// The node on the VLAN; 0 when the lab has none.
fn vlan_node(lab: &Lab) -> anyhow::Result<usize> {
    Ok(lab.var("HERALD_VLAN_NODE")?.parse()?)
}

/// The lab's per-node facts for network B.
fn mac_b(lab: &Lab, node: &Node) -> anyhow::Result<String> {
    Ok(lab
        .var(&format!("HERALD_NODE{}_MAC_B", node.index))?
        .to_string())
}

/// Pools A, B and the VLAN's, with advertisements that name no interface, and one Service in
/// each (A and B dual-stack) selecting one backend on the last node.
async fn three_networks(lab: &Lab, case: &Case) -> anyhow::Result<[Vec<String>; 3]> {
    let any_interface = json!({});
    case.apply_pool(&case.pool, POOL_A, any_interface.clone())
        .await?;
    let pool_b = format!("{}-b", case.pool);
    case.apply_pool(
        &pool_b,
        &[
            "203.0.113.208-203.0.113.209",
            "2001:db8:b::140-2001:db8:b::141",
        ],
        any_interface.clone(),
    )
    .await?;
    let pool_v = format!("{}-vlan", case.pool);
    case.apply_pool(&pool_v, &["203.0.113.168-203.0.113.169"], any_interface)
        .await?;
    let nodes = lab.nodes()?;
    let last = nodes.last().context("no nodes")?;
    case.endpoints("web", &[last]).await?;
    for (name, pool, dual) in [
        ("a", &case.pool, true),
        ("b", &pool_b, true),
        ("v", &pool_v, false),
    ] {
        let families = if dual {
            json!(["IPv4", "IPv6"])
        } else {
            json!(["IPv4"])
        };
        case.service_from(json!({
            "metadata": {"name": name, "annotations": {"herald.dev/address-pool": pool}},
            "spec": {
                "type": "LoadBalancer", "selector": {"app": "web"},
                "ipFamilyPolicy": if dual { "RequireDualStack" } else { "SingleStack" },
                "ipFamilies": families,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
            }
        }))
        .await?;
    }
    Ok([
        case.ips("a", 2).await?,
        case.ips("b", 2).await?,
        case.ips("v", 1).await?,
    ])
}

/// Waits for one node to announce `ip` (not `not`), and checks it names only `interface`.
async fn announced_on(
    lab: &Lab,
    ip: &str,
    interface: &str,
    not: Option<&str>,
) -> anyhow::Result<Node> {
    let owner = one_announcer(lab, ip, not).await?;
    let on = announcing_interfaces(lab, ip).await?;
    ensure!(
        on.len() == 1 && on[0].0.name == owner.name && on[0].1 == [interface],
        "{ip}: announced {:?}, wanted {} on {interface} only",
        on.iter().map(|(n, i)| (&n.name, i)).collect::<Vec<_>>(),
        owner.name
    );
    Ok(owner)
}

/// Each IP is announced by one node, on the interface facing it, and answered only on its own
/// network: A's on the first switch, B's on the second, the VLAN's (where the lab has one) by
/// the VLAN's node.
async fn each_ip_on_its_network(
    lab: &Lab,
    clients: &Clients,
    [a, b, v]: &[Vec<String>; 3],
    not: Option<&str>,
) -> anyhow::Result<[Node; 2]> {
    let owner_a = announced_on(lab, &a[0], "eth0", not).await?;
    let owner_b = announced_on(lab, &b[0], "eth1", not).await?;
    for ip in a {
        clients.only_on(&clients.a, ip, &owner_a.mac).await?;
    }
    for ip in b {
        clients
            .only_on(&clients.b, ip, &mac_b(lab, &owner_b)?)
            .await?;
    }
    if let Some(vlan) = &clients.vlan {
        let owner_v = announced_on(lab, &v[0], &vlan.interface, None).await?;
        ensure!(
            owner_v.index == vlan_node(lab)?,
            "{}: announced by {}, not by the VLAN's node",
            v[0],
            owner_v.name
        );
        // A VLAN sub-interface answers with its parent's MAC.
        clients.only_on(vlan, &v[0], &owner_v.mac).await?;
    }
    Ok([owner_a, owner_b])
}

#[tokio::test]
#[ignore = "needs root and the lab cluster: make e2e"]
async fn each_ip_is_answered_only_on_its_own_network() -> anyhow::Result<()> {
    lab_case!("each_ip_on_its_network", POOL_A, |lab, case| {
        let clients = Clients::of(&lab)?;
        let ips = three_networks(&lab, &case).await?;
        let [owner_a, owner_b] = each_ip_on_its_network(&lab, &clients, &ips, None).await?;
        // The Announced condition names the interface actually used.
        condition_names(&case, "a", &owner_a.name, "eth0").await?;
        condition_names(&case, "b", &owner_b.name, "eth1").await?;
        Ok(())
    })
}

/// The VLAN's part on its own, so that a lab without a VLAN (a kernel without 802.1Q) fails
/// here, and `tests/lab/e2e.sh` skips this test, saying why, instead of passing it.
#[tokio::test]
#[ignore = "needs root and the lab cluster: make e2e"]
async fn the_vlans_ip_is_answered_only_by_the_vlan_node() -> anyhow::Result<()> {
    lab_case!("vlan_ip_on_its_network", POOL_A, |lab, case| {
        let clients = Clients::of(&lab)?;
        ensure!(
            clients.vlan.is_some(),
            "the lab has no VLAN (HERALD_VLAN_NODE=0: the kernel has no 802.1Q support)"
        );
        let ips = three_networks(&lab, &case).await?;
        each_ip_on_its_network(&lab, &clients, &ips, None).await?;
        Ok(())
    })
}

#[tokio::test]
#[ignore = "needs root and the lab cluster: make e2e"]
async fn failover_keeps_each_ip_on_its_network() -> anyhow::Result<()> {
    lab_case!("failover_on_its_network", POOL_A, |lab, case| {
        let clients = Clients::of(&lab)?;
        let ips = three_networks(&lab, &case).await?;
        let vlan_node = vlan_node(&lab)?;
        // Fail a node that owns A's or B's IP and is not the VLAN's node (whose IP has nowhere
        // else to go on its network), or else A's owner.
        let [owner_a, owner_b] = each_ip_on_its_network(&lab, &clients, &ips, None).await?;
        let victim = [&owner_a, &owner_b]
            .into_iter()
            .find(|n| n.index != vlan_node)
            .unwrap_or(&owner_a)
            .clone();
        // Its LAN link down: its speaker loses its quorum and falls silent everywhere (eth1
        // too), and stays out until the link is back (a stopped speaker would be restarted
        // and, past its hold-down, win IPs back mid-check).
        let index = victim.index.to_string();
        lab.script("nodes.sh", &["link", "down", &index]).await?;
        let result = async {
            let moved_from = Some(victim.name.as_str());
            let [a, b, _] = &ips;
            // Whichever moved, it moved to another node facing its network, and the VLAN's
            // IP stayed with the VLAN's node if that is not the victim.
            let not_a = (owner_a.name == victim.name).then_some(victim.name.as_str());
            let not_b = (owner_b.name == victim.name).then_some(victim.name.as_str());
            let new_a = announced_on(&lab, &a[0], "eth0", not_a).await?;
            let new_b = announced_on(&lab, &b[0], "eth1", not_b).await?;
            ensure!(
                Some(new_a.name.as_str()) != moved_from && Some(new_b.name.as_str()) != moved_from,
                "an IP stayed with the failed node"
            );
            if victim.index != vlan_node {
                each_ip_on_its_network(&lab, &clients, &ips, moved_from).await?;
            } else {
                for ip in a {
                    clients.only_on(&clients.a, ip, &new_a.mac).await?;
                }
                for ip in b {
                    clients
                        .only_on(&clients.b, ip, &mac_b(&lab, &new_b)?)
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        lab.script("nodes.sh", &["link", "up", &index]).await?;
        result
    })
}
