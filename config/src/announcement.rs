//! Who announces each IP, as the speakers report it: the `NodeL2Status` custom resource (one per
//! node, named after it, written by that node's speaker only), and the rule that turns every
//! node's report into one announcer per IP, which the controller mirrors into each Service's
//! `herald.dev/Announced` condition.
//!
//! The speaker writes nothing on Services: its RBAC has no `services/status`, so a compromised
//! node cannot change any Service's `status.loadBalancer.ingress`; the worst it can do is claim
//! in its own report to announce an IP it does not.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Service condition type that names the announcing node.
pub const CONDITION: &str = "herald.dev/Announced";
/// The condition's reason.
pub const CONDITION_REASON: &str = "Elected";
/// The Event reason published when a Service's announcing node changes.
pub const EVENT_CHANGED: &str = "AnnouncerChanged";

/// What the speaker on one node announces (ARP and NDP answers), as that speaker reports it.
///
/// One object per node, named after the node and owned by its Node object (deleted with it).
/// Written by that node's speaker only; the controller mirrors it into each Service's
/// `herald.dev/Announced` condition. Read-only for users.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1beta1",
    kind = "NodeL2Status",
    plural = "nodel2statuses",
    shortname = "nl2s",
    category = "herald",
    status = "L2Announcements",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct NodeL2StatusSpec {}

/// What a node announces now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct L2Announcements {
    /// The IPs this node answers for, grouped by interface and by when it started.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub announcing: Vec<Announcing>,
}

/// IPs announced on one interface since one moment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Announcing {
    /// The interface the node answers on.
    #[schemars(length(max = 64))]
    pub interface: String,
    /// When the node started answering for these IPs (its own clock).
    pub since: MicroTime,
    /// The IPs.
    #[schemars(length(max = 100000))]
    pub ips: Vec<String>,
}

/// One node's claim on an IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The node.
    pub node: String,
    /// The interface it answers on.
    pub interface: String,
    /// Since when.
    pub since: MicroTime,
}

impl Claim {
    /// The condition message users read: "announced by node N on interface I".
    pub fn message(&self) -> String {
        message(&self.node, &self.interface)
    }
}

/// The condition's message for this node and interface.
pub fn message(node: &str, interface: &str) -> String {
    format!("announced by node {node} on interface {interface}")
}

/// The message of the Service's current `herald.dev/Announced` condition, if True.
pub fn current(svc: &Service) -> Option<String> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == CONDITION && c.status == "True")
        .map(|c| c.message.clone())
}

/// The claims in one node's report, per IP (entries that are not IPs are skipped).
pub fn claims_of(node: &str, report: &L2Announcements) -> BTreeMap<IpAddr, Claim> {
    let mut claims = BTreeMap::new();
    for group in &report.announcing {
        for ip in &group.ips {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                claims.insert(
                    ip,
                    Claim {
                        node: node.to_string(),
                        interface: group.interface.clone(),
                        since: group.since.clone(),
                    },
                );
            }
        }
    }
    claims
}

/// Who announces an IP that several nodes' reports name: the latest claim. Only one node
/// answers at a time, and a node that stops removes the IP from its report when it can; one
/// that cannot (dead, cut off) leaves an older claim behind, which the new owner's outdates.
/// Ties go to the greater node name, so every reader agrees.
pub fn announcer<'a>(claims: impl IntoIterator<Item = &'a Claim>) -> Option<&'a Claim> {
    claims
        .into_iter()
        .max_by(|a, b| (&a.since.0, &a.node).cmp(&(&b.since.0, &b.node)))
}

/// A node's report from what it announces: IPs grouped by (interface, since), in order.
pub fn report(announced: &BTreeMap<IpAddr, (String, MicroTime)>) -> L2Announcements {
    let mut groups: BTreeMap<(String, k8s_openapi::jiff::Timestamp), Vec<String>> = BTreeMap::new();
    for (ip, (interface, since)) in announced {
        groups
            .entry((interface.clone(), since.0))
            .or_default()
            .push(ip.to_string());
    }
    L2Announcements {
        announcing: groups
            .into_iter()
            .map(|((interface, since), ips)| Announcing {
                interface,
                since: MicroTime(since),
                ips,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(second).expect("a valid time"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP")
    }

    #[test]
    fn a_report_round_trips_grouped_by_interface_and_time() {
        let announced = BTreeMap::from([
            (ip("192.0.2.1"), ("eth0".to_string(), at(10))),
            (ip("192.0.2.2"), ("eth0".to_string(), at(10))),
            (ip("2001:db8::1"), ("eth1".to_string(), at(12))),
        ]);
        let r = report(&announced);
        assert_eq!(r.announcing.len(), 2);
        assert_eq!(r.announcing[0].ips, ["192.0.2.1", "192.0.2.2"]);
        let claims = claims_of("hl-node1", &r);
        assert_eq!(claims.len(), 3);
        assert_eq!(
            claims[&ip("2001:db8::1")].message(),
            "announced by node hl-node1 on interface eth1"
        );
    }

    #[test]
    fn the_latest_claim_wins_and_ties_agree() {
        let claim = |node: &str, since| Claim {
            node: node.into(),
            interface: "eth0".into(),
            since: at(since),
        };
        let stale = claim("hl-node1", 10);
        let fresh = claim("hl-node2", 20);
        assert_eq!(announcer([&stale, &fresh]), Some(&fresh));
        assert_eq!(announcer([&fresh, &stale]), Some(&fresh));
        let tie = claim("hl-node3", 20);
        assert_eq!(announcer([&tie, &fresh]), Some(&tie));
        assert_eq!(announcer([&fresh, &tie]), Some(&tie));
        assert_eq!(announcer(std::iter::empty::<&Claim>()), None);
    }
}
