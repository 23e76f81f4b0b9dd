//! Whether a node may own an IP, from plain facts the edge gathers (membership, the Node
//! object, the L2Advertisements, rtnetlink, EndpointSlices), and the hold-down that keeps a
//! node that (re)joins out of elections until it has stayed up for a while.
//!
//! Every speaker must reach the same verdict for every node, so the rules use only facts all
//! speakers share — except the interface, which each node reports about itself through the
//! membership (the caller's concern).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::election::NodeName;

/// The Node label that removes a node from external load balancers (Kubernetes' well-known
/// label, honoured by the service controller and by MetalLB). Its presence counts, whatever
/// its value.
pub const EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// How the membership, after hold-down, sees a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Up, and for at least the hold-down.
    Alive,
    /// Up, but not yet for the hold-down: it (re)joined recently.
    HeldDown,
    /// Not a live member.
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

/// The state of the interface a node would announce on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_LOWER_UP`: has carrier. Up without carrier answers nobody: Cilium's announcer does
    /// not fail over on it (cilium #35507), Herald does.
    pub carrier: bool,
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
    /// The best interface the advertisement allows on this node; `None` when it has none
    /// (none named by the advertisement exists, or all are excluded).
    pub link: Option<Link>,
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
    /// Labelled [`EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS`].
    #[error("labelled {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS}")]
    ExcludedByLabel,
    /// `NetworkUnavailable` is `True`.
    #[error("condition NetworkUnavailable is True")]
    NetworkUnavailable,
    /// No L2Advertisement for the IP's pool selects this node (and the Service).
    #[error("no L2Advertisement for the pool selects this node")]
    NotAdvertised,
    /// No interface the advertisement allows exists on the node.
    #[error("no usable interface for the advertisement")]
    NoInterface,
    /// The interface is administratively down.
    #[error("interface is down")]
    InterfaceDown,
    /// The interface is up but has no carrier.
    #[error("interface has no carrier")]
    NoCarrier,
    /// The Service has no serving endpoint anywhere.
    #[error("Service has no serving endpoint")]
    NoEndpoints,
    /// `externalTrafficPolicy: Local` and no ready endpoint on this node.
    #[error("externalTrafficPolicy Local and no ready endpoint on this node")]
    NoLocalEndpoint,
}

impl Exclusion {
    /// Every rule, for pre-registering counters.
    pub const ALL: [Exclusion; 10] = [
        Exclusion::NotMember,
        Exclusion::HeldDown,
        Exclusion::ExcludedByLabel,
        Exclusion::NetworkUnavailable,
        Exclusion::NotAdvertised,
        Exclusion::NoInterface,
        Exclusion::InterfaceDown,
        Exclusion::NoCarrier,
        Exclusion::NoEndpoints,
        Exclusion::NoLocalEndpoint,
    ];

    /// A short, stable label for metrics.
    pub const fn metric_label(&self) -> &'static str {
        match self {
            Exclusion::NotMember => "not_member",
            Exclusion::HeldDown => "held_down",
            Exclusion::ExcludedByLabel => "excluded_by_label",
            Exclusion::NetworkUnavailable => "network_unavailable",
            Exclusion::NotAdvertised => "not_advertised",
            Exclusion::NoInterface => "no_interface",
            Exclusion::InterfaceDown => "interface_down",
            Exclusion::NoCarrier => "no_carrier",
            Exclusion::NoEndpoints => "no_endpoints",
            Exclusion::NoLocalEndpoint => "no_local_endpoint",
        }
    }
}

/// Whether the node may own the IP; if not, the first rule that excludes it. Node readiness,
/// cordons and taints are deliberately not rules (MetalLB ignores them too): a cordoned node
/// still forwards traffic, and the speaker's own liveness is the membership's job.
pub fn check(node: &NodeFacts<'_>, address: &AddressFacts) -> Result<(), Exclusion> {
    match node.liveness {
        Liveness::Alive => {}
        Liveness::HeldDown => return Err(Exclusion::HeldDown),
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
    match address.link {
        None => return Err(Exclusion::NoInterface),
        Some(Link { up: false, .. }) => return Err(Exclusion::InterfaceDown),
        Some(Link { carrier: false, .. }) => return Err(Exclusion::NoCarrier),
        Some(_) => {}
    }
    if !address.has_endpoints {
        return Err(Exclusion::NoEndpoints);
    }
    if address.policy == TrafficPolicy::Local && !address.local_endpoint {
        return Err(Exclusion::NoLocalEndpoint);
    }
    Ok(())
}

/// Keeps a node that joins or returns out of elections until it has been up, without a break,
/// for the hold-down. A flapping node restarts the clock on every return, so it never pulls
/// IPs back and forth (MetalLB #800, #1144); a node that leaves loses its IPs at once.
///
/// Pure: time is always an argument, nothing sleeps. The caller arms a timer for
/// [`HoldDown::next_change`] and re-runs the elections when it fires.
#[derive(Debug, Clone)]
pub struct HoldDown {
    hold: Duration,
    /// Nodes that are up, with the start of their current unbroken up period. Nodes that are
    /// down are simply absent.
    up_since: HashMap<NodeName, Instant>,
}

impl HoldDown {
    /// A tracker with the given hold-down. Zero disables it.
    pub fn new(hold: Duration) -> HoldDown {
        HoldDown {
            hold,
            up_since: HashMap::new(),
        }
    }

    /// The hold-down.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// The membership reports `node` up, and it has been since `since`. Usually `since` is now;
    /// a caller that knows better (a node's uptime gossiped in the membership, when this
    /// speaker has just started and sees everyone "join" at once) passes the earlier instant,
    /// so a restarted speaker agrees with the others instead of holding down the cluster.
    /// Repeated reports keep the earliest start.
    pub fn up(&mut self, node: &NodeName, since: Instant) {
        self.up_since
            .entry(node.clone())
            .and_modify(|s| *s = (*s).min(since))
            .or_insert(since);
    }

    /// The membership reports `node` down (dead, left, or suspected by the rule the caller
    /// uses). Its next return starts a new hold-down.
    pub fn down(&mut self, node: &NodeName) {
        self.up_since.remove(node);
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
            link: Some(Link {
                up: true,
                carrier: true,
            }),
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
        let link = |up, carrier| Some(Link { up, carrier });
        let cases: [(NodeFacts, AddressFacts, Exclusion); 10] = [
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
                    link: None,
                    ..address()
                },
                Exclusion::NoInterface,
            ),
            (
                node(),
                AddressFacts {
                    link: link(false, true),
                    ..address()
                },
                Exclusion::InterfaceDown,
            ),
            (
                node(),
                AddressFacts {
                    link: link(true, false),
                    ..address()
                },
                Exclusion::NoCarrier,
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
            link: None,
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

    #[test]
    fn metric_labels_are_unique() {
        let mut labels: Vec<_> = Exclusion::ALL.iter().map(|e| e.metric_label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Exclusion::ALL.len());
    }

    const HOLD: Duration = Duration::from_secs(5);

    #[test]
    fn a_joining_node_waits_out_the_hold_down() {
        let t0 = Instant::now();
        let n = NodeName::from("node-a");
        let mut h = HoldDown::new(HOLD);
        assert_eq!(h.liveness(&n, t0), Liveness::Absent);
        assert_eq!(h.next_change(t0), None);
        h.up(&n, t0);
        assert_eq!(h.liveness(&n, t0), Liveness::HeldDown);
        assert_eq!(h.next_change(t0), Some(t0 + HOLD));
        assert_eq!(
            h.liveness(&n, t0 + HOLD - Duration::from_millis(1)),
            Liveness::HeldDown
        );
        assert_eq!(h.liveness(&n, t0 + HOLD), Liveness::Alive);
        assert_eq!(h.next_change(t0 + HOLD), None);
        // Repeated reports do not restart the clock.
        h.up(&n, t0 + HOLD);
        assert_eq!(h.liveness(&n, t0 + HOLD), Liveness::Alive);
        // Leaving is immediate.
        h.down(&n);
        assert_eq!(h.liveness(&n, t0 + HOLD), Liveness::Absent);
    }

    #[test]
    fn a_flapping_node_never_becomes_eligible_while_it_flaps() {
        let t0 = Instant::now();
        let flapper = NodeName::from("node-flap");
        let steady = NodeName::from("node-steady");
        let mut h = HoldDown::new(HOLD);
        h.up(&steady, t0);
        // Up for 4.9 s, down for 0.1 s, a hundred times over.
        let mut t = t0;
        for _ in 0..100 {
            h.up(&flapper, t);
            for ms in (0..4900).step_by(100) {
                let at = t + Duration::from_millis(ms);
                assert_ne!(h.liveness(&flapper, at), Liveness::Alive);
            }
            t += Duration::from_millis(4900);
            h.down(&flapper);
            assert_eq!(h.liveness(&flapper, t), Liveness::Absent);
            t += Duration::from_millis(100);
        }
        assert_eq!(h.liveness(&steady, t), Liveness::Alive);
        // Once it stops flapping it is eligible after one full hold-down.
        h.up(&flapper, t);
        assert_eq!(h.liveness(&flapper, t + HOLD), Liveness::Alive);
    }

    #[test]
    fn a_restarted_speaker_can_backdate_members_it_finds() {
        let t0 = Instant::now();
        let n = NodeName::from("node-a");
        let mut h = HoldDown::new(HOLD);
        h.up(&n, t0 + Duration::from_secs(60));
        // The membership says the node has been up since t0.
        h.up(&n, t0);
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
        h.up(&n, t0);
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
                h.up(&n, t);
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
                h.down(&n);
                prop_assert_eq!(h.liveness(&n, t), Liveness::Absent);
                prop_assert_eq!(h.next_change(t), None);
                t += Duration::from_millis(down_ms);
            }
        }
    }
}
