//! Whether a node may own an IP, from plain facts the edge gathers (membership, the Node
//! object, the L2Advertisements, rtnetlink, EndpointSlices), and the hold-down that keeps a
//! node that (re)joins out of elections until it has stayed up for a while.
//!
//! Every speaker must reach the same verdict for every node, so the rules use only facts all
//! speakers share — except the interface, which each node reports about itself through the
//! membership (the caller's concern).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::decide::election::NodeName;

/// The Node label that removes a node from external load balancers (Kubernetes' well-known
/// label, honoured by the service controller and by MetalLB). Its presence counts, whatever
/// its value.
pub const EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Interface name prefixes never used unless an advertisement names them (MetalLB's list).
pub const DEFAULT_EXCLUDED_PREFIXES: &[&str] = &[
    "docker",
    "cbr",
    "dummy",
    "virbr",
    "lxcbr",
    "veth",
    "cali",
    "tunl",
    "flannel",
    "kube-ipvs",
    "cni",
    "nodelocaldns",
    "lxc",
];

/// Whether an interface of this name is used when no advertisement names interfaces.
pub fn is_default_candidate(name: &str) -> bool {
    name != "lo"
        && !DEFAULT_EXCLUDED_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// How the membership, after hold-down, sees a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Up, and for at least the hold-down.
    Alive,
    /// Up, but not yet for the hold-down: it (re)joined recently.
    HeldDown,
    /// Alive, but its fence period ended (it lost its quorum): it answers for nothing and
    /// says so in its heartbeats, so its IPs move at once.
    Fenced,
    /// Not a live member, or not a speaker that counts.
    Absent,
}

/// `spec.externalTrafficPolicy` of the Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Any node may forward to any endpoint.
    #[default]
    Cluster,
    /// Only nodes with a local endpoint may receive traffic (it keeps the client's source IP).
    Local,
}

/// What is known about a node, whatever the IP.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    /// From the membership and [`HoldDown`].
    pub liveness: Liveness,
    /// The Node's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The Node's `NetworkUnavailable` condition is `True`.
    pub network_unavailable: bool,
}

/// What is known about a node for one IP (one election key).
#[derive(Debug, Clone, Copy)]
pub struct AddressFacts {
    /// The node matches the `nodeSelectors` of an L2Advertisement that covers the IP's pool
    /// and whose `serviceSelectors` match the Service.
    pub advertised: bool,
    /// The node has an interface the advertisement allows that is up with carrier (as the
    /// node itself reports; up without carrier answers nobody: Cilium's announcer does not
    /// fail over on it, cilium #35507, Herald does).
    pub usable_interface: bool,
    /// The Service's traffic policy.
    pub policy: TrafficPolicy,
    /// The Service has a serving endpoint somewhere. With either policy nothing is announced
    /// without one, as MetalLB does: an answered ARP for a dead Service only hides the outage.
    pub has_endpoints: bool,
    /// The Service has a ready endpoint on this node.
    pub local_endpoint: bool,
}

/// The rule that made a node ineligible, first failing in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Exclusion {
    /// Not a live member of the speakers' membership.
    #[error("speaker not alive in the membership")]
    NotMember,
    /// Rejoined recently and is still in hold-down.
    #[error("rejoined recently, in hold-down")]
    HeldDown,
    /// Its speaker says its fence closed (no quorum): it answers for nothing.
    #[error("its speaker lost its quorum (fenced)")]
    Fenced,
    /// Labelled [`EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS`].
    #[error("labelled {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS}")]
    ExcludedByLabel,
    /// `NetworkUnavailable` is `True`.
    #[error("condition NetworkUnavailable is True")]
    NetworkUnavailable,
    /// No L2Advertisement for the IP's pool selects this node (and the Service).
    #[error("no L2Advertisement for the pool selects this node")]
    NotAdvertised,
    /// No interface the advertisement allows is up with carrier on the node.
    #[error("no usable interface for the advertisement")]
    NoInterface,
    /// The Service has no serving endpoint anywhere.
    #[error("Service has no serving endpoint")]
    NoEndpoints,
    /// `externalTrafficPolicy: Local` and no ready endpoint on this node.
    #[error("externalTrafficPolicy Local and no ready endpoint on this node")]
    NoLocalEndpoint,
    /// Another eligible node has an interface in the IP's subnet and this one has none
    /// (`crate::decide::subnets`); judged after every other rule, over all nodes.
    #[error("no interface in the IP's subnet, which another eligible node has")]
    NotOnSubnet,
}

/// Whether the node may own the IP; if not, the first rule that excludes it. Node readiness,
/// cordons and taints are deliberately not rules (MetalLB ignores them too): a cordoned node
/// still forwards traffic, and the speaker's own liveness is the membership's job.
pub fn check(node: &NodeFacts<'_>, address: &AddressFacts) -> Result<(), Exclusion> {
    match node.liveness {
        Liveness::Alive => {}
        Liveness::HeldDown => return Err(Exclusion::HeldDown),
        Liveness::Fenced => return Err(Exclusion::Fenced),
        Liveness::Absent => return Err(Exclusion::NotMember),
    }
    if node
        .labels
        .contains_key(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS)
    {
        return Err(Exclusion::ExcludedByLabel);
    }
    if node.network_unavailable {
        return Err(Exclusion::NetworkUnavailable);
    }
    if !address.advertised {
        return Err(Exclusion::NotAdvertised);
    }
    if !address.usable_interface {
        return Err(Exclusion::NoInterface);
    }
    if !address.has_endpoints {
        return Err(Exclusion::NoEndpoints);
    }
    if address.policy == TrafficPolicy::Local && !address.local_endpoint {
        return Err(Exclusion::NoLocalEndpoint);
    }
    Ok(())
}

/// Keeps a node that joins or returns out of elections until it has been a member, without a
/// break, for the hold-down. A flapping node's membership restarts on every return, so it never
/// pulls IPs back and forth (MetalLB #800, #1144); a node that leaves loses its IPs at once.
///
/// It keeps no history of its own: every election hands it the members with the moment each
/// became one, as each reports it in its heartbeats ([`HoldDown::set_members`]), so every
/// speaker agrees on who is held down — a speaker that just restarted included.
///
/// Pure: time is always an argument, nothing sleeps. The caller arms a timer for
/// [`HoldDown::next_change`] and re-runs the elections when it fires.
#[derive(Debug, Clone)]
pub struct HoldDown {
    hold: Duration,
    /// The live members, each with the start of its current unbroken membership.
    up_since: HashMap<NodeName, Instant>,
}

impl HoldDown {
    /// A hold-down of `hold` (zero disables it), with no members yet.
    pub fn new(hold: Duration) -> HoldDown {
        HoldDown {
            hold,
            up_since: HashMap::new(),
        }
    }

    /// The live members now, each with the moment it became a member. Anyone not listed is
    /// absent; its next return starts a new hold-down.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = (NodeName, Instant)>) {
        self.up_since = members.into_iter().collect();
    }

    /// How `node` stands at `now`.
    pub fn liveness(&self, node: &NodeName, now: Instant) -> Liveness {
        match self.up_since.get(node) {
            None => Liveness::Absent,
            Some(&since) if now.saturating_duration_since(since) >= self.hold => Liveness::Alive,
            Some(_) => Liveness::HeldDown,
        }
    }

    /// The next instant after `now` at which a held-down node becomes alive: when to re-run
    /// the elections. `None` when no node is held down.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        self.up_since
            .values()
            .map(|&since| since + self.hold)
            .filter(|&at| at > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> NodeFacts<'static> {
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        NodeFacts {
            liveness: Liveness::Alive,
            labels: &NO_LABELS,
            network_unavailable: false,
        }
    }

    fn address() -> AddressFacts {
        AddressFacts {
            advertised: true,
            usable_interface: true,
            policy: TrafficPolicy::Cluster,
            has_endpoints: true,
            local_endpoint: false,
        }
    }

    #[test]
    fn a_healthy_node_is_eligible() {
        assert_eq!(check(&node(), &address()), Ok(()));
        let local = AddressFacts {
            policy: TrafficPolicy::Local,
            local_endpoint: true,
            ..address()
        };
        assert_eq!(check(&node(), &local), Ok(()));
    }

    #[test]
    fn each_rule_excludes_and_says_which() {
        let labels = BTreeMap::from([(
            EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.to_string(),
            String::new(),
        )]);
        let cases: [(NodeFacts, AddressFacts, Exclusion); 9] = [
            (
                NodeFacts {
                    liveness: Liveness::Fenced,
                    ..node()
                },
                address(),
                Exclusion::Fenced,
            ),
            (
                NodeFacts {
                    liveness: Liveness::Absent,
                    ..node()
                },
                address(),
                Exclusion::NotMember,
            ),
            (
                NodeFacts {
                    liveness: Liveness::HeldDown,
                    ..node()
                },
                address(),
                Exclusion::HeldDown,
            ),
            (
                NodeFacts {
                    labels: &labels,
                    ..node()
                },
                address(),
                Exclusion::ExcludedByLabel,
            ),
            (
                NodeFacts {
                    network_unavailable: true,
                    ..node()
                },
                address(),
                Exclusion::NetworkUnavailable,
            ),
            (
                node(),
                AddressFacts {
                    advertised: false,
                    ..address()
                },
                Exclusion::NotAdvertised,
            ),
            (
                node(),
                AddressFacts {
                    usable_interface: false,
                    ..address()
                },
                Exclusion::NoInterface,
            ),
            (
                node(),
                AddressFacts {
                    has_endpoints: false,
                    local_endpoint: false,
                    ..address()
                },
                Exclusion::NoEndpoints,
            ),
            (
                node(),
                AddressFacts {
                    policy: TrafficPolicy::Local,
                    local_endpoint: false,
                    ..address()
                },
                Exclusion::NoLocalEndpoint,
            ),
        ];
        for (n, a, why) in cases {
            assert_eq!(check(&n, &a), Err(why));
        }
    }

    #[test]
    fn the_first_failing_rule_is_reported() {
        let everything_wrong = AddressFacts {
            advertised: false,
            usable_interface: false,
            policy: TrafficPolicy::Local,
            has_endpoints: false,
            local_endpoint: false,
        };
        let n = NodeFacts {
            network_unavailable: true,
            ..node()
        };
        assert_eq!(
            check(&n, &everything_wrong),
            Err(Exclusion::NetworkUnavailable)
        );
    }

    const HOLD: Duration = Duration::from_secs(5);

    #[test]
    fn a_joining_node_waits_out_the_hold_down() {
        let t0 = Instant::now();
        let n = NodeName::from("node-a");
        let mut h = HoldDown::new(HOLD);
        assert_eq!(h.liveness(&n, t0), Liveness::Absent);
        assert_eq!(h.next_change(t0), None);
        h.set_members([(n.clone(), t0)]);
        assert_eq!(h.liveness(&n, t0), Liveness::HeldDown);
        assert_eq!(h.next_change(t0), Some(t0 + HOLD));
        assert_eq!(
            h.liveness(&n, t0 + HOLD - Duration::from_millis(1)),
            Liveness::HeldDown
        );
        assert_eq!(h.liveness(&n, t0 + HOLD), Liveness::Alive);
        assert_eq!(h.next_change(t0 + HOLD), None);
        // Leaving is immediate.
        h.set_members([]);
        assert_eq!(h.liveness(&n, t0 + HOLD), Liveness::Absent);
    }

    #[test]
    fn a_flapping_node_never_becomes_eligible_while_it_flaps() {
        let t0 = Instant::now();
        let flapper = NodeName::from("node-flap");
        let steady = NodeName::from("node-steady");
        let mut h = HoldDown::new(HOLD);
        // Up for 4.9 s, down for 0.1 s, a hundred times over: each return is a new membership.
        let mut t = t0;
        for _ in 0..100 {
            h.set_members([(steady.clone(), t0), (flapper.clone(), t)]);
            for ms in (0..4900).step_by(100) {
                let at = t + Duration::from_millis(ms);
                assert_ne!(h.liveness(&flapper, at), Liveness::Alive);
            }
            t += Duration::from_millis(4900);
            h.set_members([(steady.clone(), t0)]);
            assert_eq!(h.liveness(&flapper, t), Liveness::Absent);
            t += Duration::from_millis(100);
        }
        assert_eq!(h.liveness(&steady, t), Liveness::Alive);
        // Once it stops flapping it is eligible after one full hold-down.
        h.set_members([(steady.clone(), t0), (flapper.clone(), t)]);
        assert_eq!(h.liveness(&flapper, t + HOLD), Liveness::Alive);
    }

    #[test]
    fn a_restarted_speaker_takes_the_ages_members_report() {
        let t0 = Instant::now();
        let n = NodeName::from("node-a");
        let mut h = HoldDown::new(HOLD);
        // Just started at t0 + 60 s, it hears that the node has been a member since t0.
        h.set_members([(n.clone(), t0)]);
        assert_eq!(
            h.liveness(&n, t0 + Duration::from_secs(60)),
            Liveness::Alive
        );
    }

    #[test]
    fn zero_hold_down_is_off() {
        let t0 = Instant::now();
        let n = NodeName::from("node-a");
        let mut h = HoldDown::new(Duration::ZERO);
        h.set_members([(n.clone(), t0)]);
        assert_eq!(h.liveness(&n, t0), Liveness::Alive);
        assert_eq!(h.next_change(t0), None);
    }

    proptest! {
        /// Against a model: a node is alive exactly when it is up and its current up period
        /// has lasted the hold-down; with every up period shorter than the hold-down it is
        /// never alive.
        #[test]
        fn hold_down_matches_the_model(
            hold_ms in 1u64..3000,
            periods in proptest::collection::vec((1u64..4000, 1u64..2000), 1..40),
        ) {
            let hold = Duration::from_millis(hold_ms);
            let t0 = Instant::now();
            let n = NodeName::from("node-a");
            let mut h = HoldDown::new(hold);
            let mut t = t0;
            let all_short = periods.iter().all(|&(up, _)| up < hold_ms);
            for (up_ms, down_ms) in periods {
                h.set_members([(n.clone(), t)]);
                for probe in [0, up_ms / 2, up_ms.saturating_sub(1), hold_ms, hold_ms.saturating_sub(1)] {
                    if probe >= up_ms {
                        continue;
                    }
                    let expect = if probe >= hold_ms { Liveness::Alive } else { Liveness::HeldDown };
                    prop_assert_eq!(h.liveness(&n, t + Duration::from_millis(probe)), expect);
                    if all_short {
                        prop_assert_ne!(expect, Liveness::Alive);
                    }
                }
                t += Duration::from_millis(up_ms);
                h.set_members([]);
                prop_assert_eq!(h.liveness(&n, t), Liveness::Absent);
                prop_assert_eq!(h.next_change(t), None);
                t += Duration::from_millis(down_ms);
            }
        }
    }
}
