//! Which eligible node owns an IP: rendezvous (highest-random-weight) hashing.
//!
//! Every speaker computes the same answer from the same view, so ownership needs no API
//! traffic per Service, and a node joining or leaving moves only the IPs it wins or held
//! (Thaler & Ravishankar, "Using name-based mappings to increase hit rates", 1998).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// A Kubernetes Node's name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// Wraps a Node's `metadata.name`.
    pub fn new(name: impl Into<String>) -> NodeName {
        NodeName(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for NodeName {
    fn from(name: &str) -> NodeName {
        NodeName::new(name)
    }
}

/// What an election is held for: one IP, standing for every IP that must be announced from
/// the same node (both IPs of a dual-stack Service, and every Service sharing an IP).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ElectionKey(IpAddr);

impl ElectionKey {
    /// The key for an IP that stands alone.
    pub fn new(ip: IpAddr) -> ElectionKey {
        ElectionKey(ip)
    }

    /// The IP the key is named after.
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

/// The election key of every IP of `services` (each item one Service's IPs): IPs linked
/// through any chain of Services get one key, the lowest IP of the chain, so every IP has
/// exactly one owner and a Service's IPs all land on that owner. The lowest is by `IpAddr`'s
/// order (IPv4 before IPv6), not the order in a Service's status: MetalLB keys on the
/// status's first IP, so two Services sharing an IPv4 address, one of them IPv6-primary
/// dual-stack, would hash the shared IP under two keys and could announce it from two nodes.
pub fn keys_by_ip<'a>(
    services: impl IntoIterator<Item = &'a [IpAddr]>,
) -> BTreeMap<IpAddr, ElectionKey> {
    // Union-find whose root is always the lowest IP of its set.
    let mut parent: BTreeMap<IpAddr, IpAddr> = BTreeMap::new();
    fn root(parent: &mut BTreeMap<IpAddr, IpAddr>, mut ip: IpAddr) -> IpAddr {
        while let Some(&up) = parent.get(&ip) {
            if up == ip {
                break;
            }
            // Path halving keeps the chains short.
            let grand = parent[&up];
            parent.insert(ip, grand);
            ip = grand;
        }
        ip
    }
    for ips in services {
        for &ip in ips {
            parent.entry(ip).or_insert(ip);
        }
        for pair in ips.windows(2) {
            let (a, b) = (root(&mut parent, pair[0]), root(&mut parent, pair[1]));
            if a != b {
                parent.insert(a.max(b), a.min(b));
            }
        }
    }
    let ips: Vec<IpAddr> = parent.keys().copied().collect();
    ips.into_iter()
        .map(|ip| (ip, ElectionKey(root(&mut parent, ip))))
        .collect()
}

/// A node that may own the key, with its preference: the sum of the weights of the
/// L2Advertisement `preferredNodeSelectors` it matches (computed by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a NodeName,
    /// Higher wins before the hash is consulted.
    pub preference: u32,
}

/// The node's pseudo-random weight for the key: the first 8 octets, big-endian, of
/// SHA-256(node name ‖ 0x00 ‖ the IP's 4 or 16 network-order octets). The NUL cannot occur in
/// a node name, so no two (name, IP) pairs hash the same input. Fixed forever: every speaker
/// of every version and architecture must agree, or two nodes announce one IP during a
/// rolling upgrade. A test pins it.
pub fn weight(node: &NodeName, key: ElectionKey) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(node.as_str().as_bytes());
    hasher.update([0u8]);
    match key.0 {
        IpAddr::V4(ip) => hasher.update(ip.octets()),
        IpAddr::V6(ip) => hasher.update(ip.octets()),
    }
    let digest = hasher.finalize();
    let mut first8 = [0u8; 8];
    first8.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first8)
}

/// The owner of `key` among `candidates` (the eligible nodes): the highest preference, then
/// the highest [`weight`], then — for a 2⁻⁶⁴ tie — the greatest name. `None` when nobody is
/// eligible. The order of `candidates` does not matter.
pub fn owner<'a>(
    key: ElectionKey,
    candidates: impl IntoIterator<Item = Candidate<'a>>,
) -> Option<&'a NodeName> {
    candidates
        .into_iter()
        .map(|c| ((c.preference, weight(c.node, key), c.node), c.node))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, node)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Service sharing nothing is keyed on its lowest IP.
    fn key_of_service(ips: &[IpAddr]) -> Option<ElectionKey> {
        ips.iter().min().copied().map(ElectionKey)
    }
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn plain(nodes: &[NodeName]) -> impl Iterator<Item = Candidate<'_>> {
        nodes.iter().map(|node| Candidate {
            node,
            preference: 0,
        })
    }

    #[test]
    fn weight_is_pinned() {
        // Computed independently: Python hashlib.sha256(name + b"\0" + ip.packed).
        assert_eq!(
            weight(&"node-a".into(), ElectionKey::new(ip("192.0.2.10"))),
            0x4105_9b6b_5dfe_b1a0
        );
        assert_eq!(
            weight(&"node-b".into(), ElectionKey::new(ip("2001:db8::10"))),
            0x6673_6cb1_6949_f3b5
        );
    }

    #[test]
    fn nobody_eligible_means_no_owner() {
        assert_eq!(owner(ElectionKey::new(ip("192.0.2.1")), []), None);
    }

    #[test]
    fn preference_beats_the_hash() {
        let nodes: Vec<NodeName> = ["node-a", "node-b", "node-c"].map(NodeName::from).into();
        for last in 0..=255u8 {
            let key = ElectionKey::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)));
            let by_hash = owner(key, plain(&nodes)).unwrap();
            let preferred = nodes.iter().find(|n| *n != by_hash).unwrap();
            let candidates = nodes.iter().map(|node| Candidate {
                node,
                preference: if node == preferred { 50 } else { 10 },
            });
            assert_eq!(owner(key, candidates), Some(preferred));
        }
    }

    #[test]
    fn dual_stack_and_shared_ips_share_a_key() {
        let (v4, v6) = (ip("192.0.2.10"), ip("2001:db8::10"));
        // IPv6-primary dual-stack: still keyed on the IPv4 address.
        assert_eq!(key_of_service(&[v6, v4]), Some(ElectionKey::new(v4)));
        assert_eq!(key_of_service(&[]), None);
        // A dual-stack Service and an IPv6-only Service sharing its IPv6 address, and a third
        // Service that shares the IPv4 address with a fourth, unrelated IP: one key for all.
        let other = ip("203.0.113.9");
        let lone = ip("198.51.100.1");
        let services: [&[IpAddr]; 4] = [&[v6, v4], &[v6], &[other, v4], &[lone]];
        let keys = keys_by_ip(services);
        assert_eq!(keys.len(), 4);
        for x in [v4, v6, other] {
            assert_eq!(keys[&x], ElectionKey::new(v4), "{x}");
        }
        assert_eq!(keys[&lone], ElectionKey::new(lone));
    }

    #[test]
    fn three_nodes_share_a_thousand_keys_evenly() {
        let nodes: Vec<NodeName> = ["node-a", "node-b", "node-c"].map(NodeName::from).into();
        let mut wins = BTreeMap::<&NodeName, u32>::new();
        for i in 0..1000u128 {
            let key = ElectionKey::new(IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i)));
            *wins.entry(owner(key, plain(&nodes)).unwrap()).or_default() += 1;
        }
        assert!(wins.values().all(|&w| w >= 200), "{wins:?}");
    }

    fn node_names(min: usize, max: usize) -> impl Strategy<Value = Vec<NodeName>> {
        proptest::collection::btree_set("[a-z][a-z0-9-]{0,15}", min..max)
            .prop_map(|names| names.into_iter().map(NodeName::new).collect())
    }

    fn doc_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (
                prop_oneof![Just([192, 0, 2]), Just([198, 51, 100]), Just([203, 0, 113])],
                any::<u8>()
            )
                .prop_map(|([a, b, c], d)| IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
            any::<u64>().prop_map(|low| IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(low)
            ))),
        ]
    }

    fn doc_keys() -> impl Strategy<Value = Vec<ElectionKey>> {
        proptest::collection::vec(doc_ip().prop_map(ElectionKey::new), 1..50)
    }

    proptest! {
        #[test]
        fn owner_is_an_eligible_node_whatever_the_order(
            nodes in node_names(1, 12),
            keys in doc_keys(),
            preferences in proptest::collection::vec(0u32..300, 12),
        ) {
            let candidates: Vec<Candidate> = nodes
                .iter()
                .zip(&preferences)
                .map(|(node, &preference)| Candidate { node, preference })
                .collect();
            for key in keys {
                let winner = owner(key, candidates.iter().copied()).unwrap();
                prop_assert!(nodes.contains(winner));
                prop_assert_eq!(Some(winner), owner(key, candidates.iter().rev().copied()));
            }
        }

        #[test]
        fn removing_a_non_owner_never_moves_the_key(nodes in node_names(2, 12), keys in doc_keys()) {
            for key in keys {
                let winner = owner(key, plain(&nodes)).unwrap().clone();
                for gone in nodes.iter().filter(|n| **n != winner) {
                    let rest = nodes.iter().filter(|n| *n != gone).map(|node| Candidate { node, preference: 0 });
                    prop_assert_eq!(owner(key, rest), Some(&winner));
                }
            }
        }

        #[test]
        fn adding_a_node_moves_only_the_keys_it_wins(
            nodes in node_names(2, 12),
            keys in doc_keys(),
        ) {
            let (newcomer, before) = nodes.split_last().unwrap();
            for key in keys {
                let old = owner(key, plain(before)).unwrap();
                let new = owner(key, plain(&nodes)).unwrap();
                prop_assert!(new == old || new == newcomer, "{key:?}: {old} -> {new}");
            }
        }

        #[test]
        fn a_thousand_keys_spread_over_any_three_nodes(
            nodes in node_names(3, 4),
            offset in any::<u64>(),
        ) {
            let mut wins = BTreeMap::<&NodeName, u32>::new();
            for i in 0..1000u128 {
                let low = u128::from(offset) + i;
                let key = ElectionKey::new(IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | low)));
                *wins.entry(owner(key, plain(&nodes)).unwrap()).or_default() += 1;
            }
            prop_assert_eq!(wins.len(), 3);
            prop_assert!(wins.values().all(|&w| w >= 200), "{:?}", wins);
        }

        #[test]
        fn linked_ips_share_one_key_from_among_them(
            services in proptest::collection::vec(proptest::collection::vec(doc_ip(), 1..3), 0..30),
        ) {
            let slices: Vec<&[IpAddr]> = services.iter().map(Vec::as_slice).collect();
            let keys = keys_by_ip(slices.iter().copied());
            let all: BTreeSet<IpAddr> = services.iter().flatten().copied().collect();
            prop_assert_eq!(keys.keys().copied().collect::<BTreeSet<_>>(), all);
            for ips in &services {
                let first = keys[&ips[0]];
                prop_assert!(ips.iter().all(|ip| keys[ip] == first));
                // The key is an IP of the group and no IP of the group is lower.
                prop_assert!(keys.contains_key(&first.ip()));
                prop_assert!(keys[&first.ip()] == first);
                prop_assert!(ips.iter().all(|ip| first.ip() <= *ip));
            }
            // A Service sharing nothing keeps its own first IP.
            for ips in &services {
                let shared = services.iter().filter(|s| s.iter().any(|ip| ips.contains(ip))).count() > 1;
                if !shared {
                    prop_assert_eq!(Some(keys[&ips[0]]), key_of_service(ips));
                }
            }
        }
    }
}
