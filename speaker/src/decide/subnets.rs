//! Which of a node's interfaces face an IP's network, and the rule that follows from it.
//!
//! An interface *faces* an IP when one of its addresses' subnets contains the IP: clients of
//! the IP are on that segment, and an ARP request or Neighbor Solicitation for it arrives
//! there. On a multi-homed node (a management LAN, a service LAN, VLAN sub-interfaces) answering
//! on every interface would claim the IP on networks where it does not belong.
//!
//! The rule, per IP (every speaker computes it from the links each node reports):
//!
//! - When some node that is otherwise eligible has an allowed interface facing the IP, only
//!   nodes with such an interface are eligible, and the owner answers (and sends gratuitous
//!   ARP/NA) only on its interfaces facing the IP. The owner can then always reach the IP's
//!   clients.
//! - When none does — a routed VIP range on a flat segment, MetalLB's usual layout: the pool is
//!   not any node's subnet — every allowed interface answers, as before.
//!
//! A node whose speaker does not report subnets (wire version 2) is never excluded by the rule
//! and answers on all its allowed interfaces: nothing is known to exclude it on.

use std::net::IpAddr;

use ipnet::IpNet;

/// An interface that can answer, with the subnets of its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    /// The interface's name.
    pub name: String,
    /// The subnets of its addresses (IPv6 link-local excluded: every interface has one).
    pub subnets: Vec<IpNet>,
}

impl Link {
    /// A link named `name` without subnets.
    pub fn named(name: impl Into<String>) -> Link {
        Link {
            name: name.into(),
            subnets: Vec::new(),
        }
    }

    /// Whether one of its subnets contains `ip`.
    pub fn faces(&self, ip: IpAddr) -> bool {
        self.subnets.iter().any(|net| net.contains(&ip))
    }
}

/// A node's usable links as it reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLinks {
    /// Its interfaces that are up with carrier and can answer.
    pub links: Vec<Link>,
    /// Whether it reported their subnets (an older speaker, wire version 2, does not).
    pub subnets_known: bool,
}

/// A node's interfaces for one IP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Usable and allowed by the advertisements: where it answers without the subnet rule.
    pub allowed: Vec<String>,
    /// Those of `allowed` that face the IP.
    pub facing: Vec<String>,
    /// Whether the node's subnets are known.
    pub known: bool,
}

/// `links`' interfaces for `ip`: those `allowed` by the advertisements, and of them those
/// facing the IP.
pub fn reach(links: &NodeLinks, allowed: impl Fn(&str) -> bool, ip: IpAddr) -> Reach {
    let usable: Vec<&Link> = links.links.iter().filter(|l| allowed(&l.name)).collect();
    Reach {
        allowed: usable.iter().map(|l| l.name.clone()).collect(),
        facing: usable
            .iter()
            .filter(|l| l.faces(ip))
            .map(|l| l.name.clone())
            .collect(),
        known: links.subnets_known,
    }
}

/// Whether the subnet rule applies to an IP: some otherwise eligible node (their `reaches`
/// for the IP) has an allowed interface facing it.
pub fn rule_applies<'a>(reaches: impl IntoIterator<Item = &'a Reach>) -> bool {
    reaches.into_iter().any(|r| r.known && !r.facing.is_empty())
}

impl Reach {
    /// Where this node answers for the IP when it owns it, given whether the rule applies;
    /// `None` when the rule excludes it (it knows its subnets and none faces the IP).
    pub fn answer_on(&self, rule: bool) -> Option<&[String]> {
        match (rule, self.known) {
            (true, true) if self.facing.is_empty() => None,
            (true, true) => Some(&self.facing),
            _ => Some(&self.allowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn link(name: &str, subnets: &[&str]) -> Link {
        Link {
            name: name.into(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn multi_homed() -> NodeLinks {
        NodeLinks {
            links: vec![
                link("eth0", &["192.0.2.0/24", "2001:db8:a::/64"]),
                link("eth1", &["198.51.100.0/24", "2001:db8:b::/64"]),
                link("eth0.100", &["203.0.113.0/26"]),
            ],
            subnets_known: true,
        }
    }

    #[test]
    fn an_interface_faces_the_ips_of_its_subnets() {
        let node = multi_homed();
        let any = |_: &str| true;
        let r = reach(&node, any, ip("198.51.100.40"));
        assert_eq!(r.allowed, ["eth0", "eth1", "eth0.100"]);
        assert_eq!(r.facing, ["eth1"]);
        assert_eq!(r.answer_on(true), Some(&["eth1".to_string()][..]));
        assert_eq!(reach(&node, any, ip("2001:db8:a::7")).facing, ["eth0"]);
        assert_eq!(reach(&node, any, ip("203.0.113.9")).facing, ["eth0.100"]);
        // Outside the VLAN's /26: no interface faces it.
        assert!(reach(&node, any, ip("203.0.113.200")).facing.is_empty());
    }

    #[test]
    fn an_advertisements_interfaces_still_restrict() {
        let r = reach(&multi_homed(), |n| n == "eth0", ip("198.51.100.40"));
        assert_eq!(r.allowed, ["eth0"]);
        assert!(r.facing.is_empty());
        // With the rule applying (another node faces it), this node is out.
        assert_eq!(r.answer_on(true), None);
        // Without, it answers on what it is allowed, as before.
        assert_eq!(r.answer_on(false), Some(&["eth0".to_string()][..]));
    }

    #[test]
    fn a_routed_range_on_a_flat_segment_falls_back_to_every_allowed_interface() {
        let node = multi_homed();
        let r = reach(&node, |_| true, ip("192.0.2.0") /* in eth0's subnet */);
        assert!(rule_applies([&r]));
        let routed = reach(&node, |_| true, ip("2001:db8:ffff::1"));
        assert!(!rule_applies([&routed]));
        assert_eq!(routed.answer_on(false).unwrap().len(), 3);
    }

    #[test]
    fn a_node_without_subnets_is_never_excluded_and_never_makes_the_rule() {
        let old = NodeLinks {
            links: vec![Link::named("eth0")],
            subnets_known: false,
        };
        let r = reach(&old, |_| true, ip("198.51.100.40"));
        assert!(!rule_applies([&r]));
        assert_eq!(r.answer_on(true), Some(&["eth0".to_string()][..]));
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u8>(), 20u8..=32).prop_map(|(d, len)| IpNet::new(
                IpAddr::from([198, 51, 100, d]),
                len
            )
            .unwrap()
            .trunc()),
            (any::<u16>(), 48u8..=128).prop_map(|(low, len)| IpNet::new(
                IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, low]),
                len
            )
            .unwrap()
            .trunc()),
        ]
    }

    fn arb_node() -> impl Strategy<Value = NodeLinks> {
        (
            proptest::collection::vec(proptest::collection::vec(arb_net(), 0..3), 0..4),
            any::<bool>(),
        )
            .prop_map(|(links, subnets_known)| NodeLinks {
                links: links
                    .into_iter()
                    .enumerate()
                    .map(|(i, subnets)| Link {
                        name: format!("eth{i}"),
                        subnets,
                    })
                    .collect(),
                subnets_known,
            })
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u8>().prop_map(|d| IpAddr::from([198, 51, 100, d])),
            any::<u16>().prop_map(|low| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, low])),
        ]
    }

    proptest! {
        /// Whatever the nodes: where the rule applies, every node that may still own the IP
        /// answers only on interfaces facing it (or reports no subnets), and at least one node
        /// remains; where it does not, every node answers where it is allowed, as before.
        #[test]
        fn the_rule_keeps_an_owner_and_answers_only_where_the_ip_belongs(
            nodes in proptest::collection::vec(arb_node(), 1..6),
            target in arb_ip(),
            forbidden in 0usize..4,
        ) {
            let allowed = |name: &str| name != format!("eth{forbidden}");
            let reaches: Vec<Reach> = nodes.iter().map(|n| reach(n, allowed, target)).collect();
            let rule = rule_applies(&reaches);
            let mut remaining = 0;
            for (node, r) in nodes.iter().zip(&reaches) {
                prop_assert!(r.facing.iter().all(|f| r.allowed.contains(f)));
                prop_assert!(r.allowed.iter().all(|a| allowed(a)));
                match r.answer_on(rule) {
                    None => prop_assert!(rule && r.known && r.facing.is_empty()),
                    Some(on) => {
                        remaining += 1;
                        prop_assert!(on.iter().all(|i| r.allowed.contains(i)));
                        if rule && node.subnets_known {
                            for name in on {
                                let l = node.links.iter().find(|l| &l.name == name).unwrap();
                                prop_assert!(l.faces(target));
                            }
                        } else {
                            prop_assert_eq!(on, r.allowed.as_slice());
                        }
                    }
                }
            }
            prop_assert!(remaining >= 1);
        }
    }
}
