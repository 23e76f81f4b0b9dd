//! `herald status`: who announces each allocated IP, pool usage, and each node's speaker.
//!
//! Per IP: its Services, pool, announcing node and interface, since when, and the last owner
//! change. Per pool: usage. Per node: its speaker. Pure: a [`Snapshot`] in, a [`StatusReport`]
//! out.

use std::collections::BTreeMap;
use std::net::IpAddr;

use herald_config::IpRange;
use herald_config::pod::is_ready;
use herald_config::service::{ServiceKey, status_ips};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::announcer::{self, EVENT_CHANGED, EVENT_CONFLICT};
use crate::cluster::Snapshot;
use crate::table;

/// Nodes with this label never announce (Kubernetes' well-known label).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Everything `herald status` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The controller's leader.
    pub controller: ControllerStatus,
    /// One entry per allocated IP, in address order.
    pub ips: Vec<IpStatus>,
    /// One entry per pool, by name.
    pub pools: Vec<PoolUsage>,
    /// One entry per node, by name.
    pub nodes: Vec<NodeStatus>,
}

/// Who leads the controllers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// The replica holding an unexpired Lease.
    pub leader: Option<String>,
    /// The Lease's last renewal.
    pub renewed: Option<Timestamp>,
    /// Why there is no leader, when there is none.
    pub problem: Option<String>,
}

/// One allocated IP.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpStatus {
    /// The IP.
    pub ip: IpAddr,
    /// Services holding it (`namespace/name`; several when shared).
    pub services: Vec<String>,
    /// The pool(s) it lies in.
    pub pools: Vec<String>,
    /// The announcing node, as the speakers report it.
    pub node: Option<String>,
    /// The interface it is announced on.
    pub interface: Option<String>,
    /// Since when that node announces it.
    pub since: Option<Timestamp>,
    /// The last change of announcing node.
    pub last_change: Option<OwnerChange>,
    /// Nodes whose speaker metrics say they announce it (when the metrics were reachable).
    pub announced_by_metrics: Vec<String>,
    /// Other MACs seen answering for it (`IPConflict` Events).
    pub conflicts: Vec<String>,
}

/// A change of announcing node, from the `AnnouncerChanged` Events.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerChange {
    /// When.
    pub at: Option<Timestamp>,
    /// The previous node, when an earlier Event names one.
    pub from: Option<String>,
    /// The new node.
    pub to: String,
}

/// A pool's usage, from its status.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// The pool.
    pub name: String,
    /// Its `spec.addresses`.
    pub addresses: Vec<String>,
    /// IPv4 addresses held, and free.
    pub ipv4: (i64, i64),
    /// IPv6 addresses held, and free.
    pub ipv6: (i64, i64),
    /// Held / (held + free), both families, in percent.
    pub used_percent: Option<f64>,
    /// Conditions that are not as they should be (`Overlapping=True`, `Valid=False`).
    pub problems: Vec<String>,
}

/// Whether a node can answer for IPs now.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "answer")]
pub enum CanAnswer {
    /// Yes.
    Yes,
    /// No, and why.
    No {
        /// Why not.
        why: String,
    },
    /// Cannot tell, and why.
    Unknown {
        /// What is missing.
        why: String,
    },
}

/// One node and its speaker.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node.
    pub name: String,
    /// Its speaker pod.
    pub speaker: Option<String>,
    /// Whether that pod is Ready.
    pub speaker_ready: bool,
    /// Members its speaker hears, itself included (metrics).
    pub members_heard: Option<i64>,
    /// Speakers known to exist (the Nodes).
    pub members_known: usize,
    /// Whether it is a member: it hears a majority (without one a speaker leaves the
    /// membership and must go through the hold-down again).
    pub member: Option<bool>,
    /// Whether it has quorum (metrics).
    pub quorum: Option<bool>,
    /// Whether it can answer for IPs now.
    pub can_answer: CanAnswer,
    /// IPs it announces, by the Services' reports.
    pub announces: usize,
    /// Why its metrics could not be read.
    pub metrics_error: Option<String>,
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn event_key(e: &Event) -> Option<ServiceKey> {
    let o = &e.involved_object;
    (o.kind.as_deref() == Some("Service"))
        .then(|| Some(ServiceKey::new(o.namespace.clone()?, o.name.clone()?)))?
}

/// Who leads the controllers, from their Lease.
pub fn leader_of(lease: Option<&Lease>, now: Timestamp) -> ControllerStatus {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return ControllerStatus {
            problem: Some("no controller Lease: is the controller running?".into()),
            ..ControllerStatus::default()
        };
    };
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let fresh = renewed.is_some_and(|r| now.as_second() - r.as_second() <= duration);
    match holder {
        Some(h) if fresh => ControllerStatus {
            leader: Some(h),
            renewed,
            problem: None,
        },
        Some(h) => ControllerStatus {
            leader: None,
            renewed,
            problem: Some(format!("the Lease of {h} has expired: no replica leads")),
        },
        None => ControllerStatus {
            leader: None,
            renewed,
            problem: Some("the Lease is free: no replica leads".into()),
        },
    }
}

fn pool_usage(pool: &herald_config::IPAddressPool) -> PoolUsage {
    let status = pool.status.clone().unwrap_or_default();
    let held = status.assigned_ipv4.saturating_add(status.assigned_ipv6);
    let total = held
        .saturating_add(status.available_ipv4)
        .saturating_add(status.available_ipv6);
    let problems = status
        .conditions
        .iter()
        .filter(|c| {
            (c.type_ == herald_config::pool::CONDITION_OVERLAPPING && c.status == "True")
                || (c.type_ == herald_config::pool::CONDITION_VALID && c.status == "False")
        })
        .map(|c| format!("{}={}: {}", c.type_, c.status, c.message))
        .collect();
    PoolUsage {
        name: pool.name_any(),
        addresses: pool.spec.addresses.clone(),
        ipv4: (status.assigned_ipv4, status.available_ipv4),
        ipv6: (status.assigned_ipv6, status.available_ipv6),
        used_percent: (total > 0).then(|| held as f64 * 100.0 / total as f64),
        problems,
    }
}

/// Why a node may not announce whatever its speaker says, if it may not.
pub fn node_barred(node: &Node) -> Option<String> {
    if node.labels().contains_key(EXCLUDE_LABEL) {
        return Some(format!("labelled {EXCLUDE_LABEL}"));
    }
    herald_config::node::network_unavailable(node).then(|| "NetworkUnavailable".to_string())
}

/// Builds the report.
pub fn build(snapshot: &Snapshot, now: Timestamp) -> StatusReport {
    let pool_ranges: Vec<(String, Vec<IpRange>)> = snapshot
        .pools
        .iter()
        .map(|p| {
            let ranges = p
                .spec
                .addresses
                .iter()
                .filter_map(|a| IpRange::parse(a).ok())
                .collect();
            (p.name_any(), ranges)
        })
        .collect();

    // Events per Service (only those about the Service that exists now, by UID), oldest first.
    let uids: BTreeMap<ServiceKey, Option<String>> = snapshot
        .services
        .iter()
        .filter_map(|s| Some((ServiceKey::of(s)?, s.metadata.uid.clone())))
        .collect();
    let mut changes: BTreeMap<ServiceKey, Vec<(Option<Timestamp>, String)>> = BTreeMap::new();
    let mut conflicts: BTreeMap<ServiceKey, Vec<String>> = BTreeMap::new();
    for e in &snapshot.events {
        let Some(key) = event_key(e) else { continue };
        let Some(uid) = uids.get(&key) else { continue };
        if let (Some(want), Some(got)) = (uid, &e.involved_object.uid)
            && want != got
        {
            continue;
        }
        let note = e.message.clone().unwrap_or_default();
        match e.reason.as_deref() {
            Some(EVENT_CHANGED) => {
                if let Some((node, _)) = announcer::parse_message(&note) {
                    changes.entry(key).or_default().push((event_time(e), node));
                }
            }
            Some(EVENT_CONFLICT) => conflicts.entry(key).or_default().push(note),
            _ => {}
        }
    }
    for list in changes.values_mut() {
        list.sort();
    }

    // Which speakers' metrics say they announce which IP.
    let pod_node: BTreeMap<String, String> = snapshot
        .speakers
        .iter()
        .filter_map(|p| Some((p.name_any(), p.spec.as_ref()?.node_name.clone()?)))
        .collect();
    let mut by_metrics: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pod, reading) in &snapshot.speaker_metrics {
        if let (Ok(m), Some(node)) = (reading, pod_node.get(pod)) {
            for ip in &m.announced {
                by_metrics.entry(ip.clone()).or_default().push(node.clone());
            }
        }
    }

    let mut ips: BTreeMap<IpAddr, IpStatus> = BTreeMap::new();
    for svc in &snapshot.services {
        let Some(key) = ServiceKey::of(svc) else {
            continue;
        };
        let announcement = announcer::announcer_of(svc);
        let history = changes.get(&key);
        let last_change = history.and_then(|h| {
            let (at, to) = h.last()?;
            let from = h.iter().rev().map(|(_, n)| n).find(|n| *n != to).cloned();
            Some(OwnerChange {
                at: *at,
                from,
                to: to.clone(),
            })
        });
        for ip in status_ips(svc) {
            let entry = ips.entry(ip).or_insert_with(|| IpStatus {
                ip,
                services: Vec::new(),
                pools: pool_ranges
                    .iter()
                    .filter(|(_, ranges)| ranges.iter().any(|r| r.contains(ip)))
                    .map(|(name, _)| name.clone())
                    .collect(),
                node: None,
                interface: None,
                since: None,
                last_change: None,
                announced_by_metrics: by_metrics.get(&ip.to_string()).cloned().unwrap_or_default(),
                conflicts: Vec::new(),
            });
            entry.services.push(key.to_string());
            // Services sharing an IP are announced together; the newest report wins.
            if let Some(a) = &announcement
                && (entry.since.is_none() || a.since > entry.since)
            {
                entry.node = Some(a.node.clone());
                entry.interface = a.interface.clone();
                entry.since = a.since;
                entry.last_change = last_change.clone();
            }
            entry.conflicts.extend(
                conflicts
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter(|c| c.contains(&ip.to_string()))
                    .cloned(),
            );
        }
    }
    let ips: Vec<IpStatus> = ips.into_values().collect();

    let mut announces: BTreeMap<&str, usize> = BTreeMap::new();
    for ip in &ips {
        if let Some(node) = &ip.node {
            *announces.entry(node.as_str()).or_default() += 1;
        }
    }
    let known = snapshot.nodes.len();
    let nodes = snapshot
        .nodes
        .iter()
        .map(|node| {
            let name = node.name_any();
            let speaker = snapshot.speakers.iter().find(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
            });
            let speaker_ready = speaker.is_some_and(is_ready);
            let reading = speaker.and_then(|p| snapshot.speaker_metrics.get(&p.name_any()));
            let metrics = reading.and_then(|r| r.as_ref().ok());
            let metrics_error = reading.and_then(|r| r.as_ref().err()).cloned();
            let quorum = metrics.and_then(|m| m.quorum);
            let can_answer = if let Some(why) = node_barred(node) {
                CanAnswer::No { why }
            } else if speaker.is_none() {
                CanAnswer::No {
                    why: "no speaker pod on this node".into(),
                }
            } else if !speaker_ready {
                CanAnswer::No {
                    why: "its speaker is not Ready".into(),
                }
            } else if metrics.and_then(|m| m.interfaces_answering) == Some(0) {
                CanAnswer::No {
                    why: "no interface can answer (packet sockets not open)".into(),
                }
            } else {
                match quorum {
                    Some(true) => CanAnswer::Yes,
                    Some(false) => CanAnswer::No {
                        why: "its speaker has no quorum (it hears no majority)".into(),
                    },
                    None => CanAnswer::Unknown {
                        why: format!(
                            "speaker metrics not read: {}",
                            metrics_error
                                .clone()
                                .unwrap_or_else(|| "no quorum metric".into())
                        ),
                    },
                }
            };
            NodeStatus {
                announces: announces.get(name.as_str()).copied().unwrap_or_default(),
                name,
                speaker: speaker.map(|p| p.name_any()),
                speaker_ready,
                members_heard: metrics.and_then(|m| m.members),
                members_known: known,
                member: quorum,
                quorum,
                can_answer,
                metrics_error,
            }
        })
        .collect();
    let mut pools: Vec<PoolUsage> = snapshot.pools.iter().map(pool_usage).collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    StatusReport {
        controller: leader_of(snapshot.controller_lease.as_ref(), now),
        ips,
        pools,
        nodes,
    }
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "?".into(),
    }
}

/// The report as tables.
pub fn render_table(report: &StatusReport, now: Timestamp) -> String {
    let mut out = String::new();
    match (&report.controller.leader, &report.controller.problem) {
        (Some(leader), _) => out.push_str(&format!(
            "Controller leader: {leader} (renewed {} ago)\n\n",
            table::age(report.controller.renewed, now)
        )),
        (None, problem) => out.push_str(&format!(
            "Controller leader: NONE ({})\n\n",
            problem.as_deref().unwrap_or("unknown")
        )),
    }
    let rows: Vec<Vec<String>> = report
        .ips
        .iter()
        .map(|ip| {
            let mut node = ip.node.clone().unwrap_or_else(|| "<none>".into());
            if ip.node.is_none() && !ip.announced_by_metrics.is_empty() {
                node = format!("<none> (metrics: {})", ip.announced_by_metrics.join(","));
            }
            if !ip.conflicts.is_empty() {
                node.push_str(" CONFLICT");
            }
            vec![
                ip.ip.to_string(),
                ip.services.join(","),
                if ip.pools.is_empty() {
                    "<none>".into()
                } else {
                    ip.pools.join(",")
                },
                node,
                ip.interface.clone().unwrap_or_else(|| "-".into()),
                table::age(ip.since, now),
                match &ip.last_change {
                    None => "-".into(),
                    Some(c) => format!(
                        "{} ago {} -> {}",
                        table::age(c.at, now),
                        c.from.as_deref().unwrap_or("(none)"),
                        c.to
                    ),
                },
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "IP",
            "SERVICES",
            "POOL",
            "NODE",
            "INTERFACE",
            "SINCE",
            "LAST OWNER CHANGE",
        ],
        &rows,
    ));
    out.push('\n');
    let rows: Vec<Vec<String>> = report
        .pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                format!("{}/{}", p.ipv4.0, p.ipv4.0.saturating_add(p.ipv4.1)),
                format!("{}/{}", p.ipv6.0, p.ipv6.0.saturating_add(p.ipv6.1)),
                p.used_percent
                    .map(|u| format!("{u:.0}%"))
                    .unwrap_or_else(|| "-".into()),
                if p.problems.is_empty() {
                    "-".into()
                } else {
                    p.problems.join("; ")
                },
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["POOL", "IPV4 USED", "IPV6 USED", "USAGE", "PROBLEMS"],
        &rows,
    ));
    out.push('\n');
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                match (&n.speaker, n.speaker_ready) {
                    (None, _) => "<none>".into(),
                    (Some(p), true) => format!("{p} (Ready)"),
                    (Some(p), false) => format!("{p} (not Ready)"),
                },
                format!(
                    "{}/{}",
                    n.members_heard
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "?".into()),
                    n.members_known
                ),
                yes_no(n.member),
                yes_no(n.quorum),
                match &n.can_answer {
                    CanAnswer::Yes => "yes".into(),
                    CanAnswer::No { why } => format!("no: {why}"),
                    CanAnswer::Unknown { why } => format!("unknown: {why}"),
                },
                n.announces.to_string(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "NODE",
            "SPEAKER",
            "HEARD",
            "MEMBER",
            "QUORUM",
            "CAN ANSWER",
            "ANNOUNCES",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests;
