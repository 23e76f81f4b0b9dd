use super::*;
use crate::decide::subnets::Link;
use herald_config::l2advertisement::{InterfaceName, PreferredNodeSelector};
use proptest::prelude::*;
use std::collections::HashMap;

struct Members {
    liveness: HashMap<NodeName, Liveness>,
    links: HashMap<NodeName, NodeLinks>,
}

impl MembershipView for Members {
    fn liveness(&self, node: &NodeName) -> Liveness {
        self.liveness.get(node).copied().unwrap_or(Liveness::Absent)
    }
    fn usable_links(&self, node: &NodeName) -> Option<NodeLinks> {
        self.links.get(node).cloned()
    }
}

/// Links by these names, without addresses (the subnet rule never applies to them).
fn named(names: &[&str]) -> NodeLinks {
    NodeLinks {
        links: names.iter().map(|n| Link::named(*n)).collect(),
        subnets_known: true,
    }
}

/// Links with subnets: `(name, ["198.51.100.0/24", …])`.
fn homed(links: &[(&str, &[&str])]) -> NodeLinks {
    NodeLinks {
        links: links
            .iter()
            .map(|(name, nets)| Link {
                name: name.to_string(),
                subnets: nets.iter().map(|n| n.parse().unwrap()).collect(),
            })
            .collect(),
        subnets_known: true,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(k.to_string(), v.to_string())].into()),
        ..Default::default()
    }
}

struct Lab {
    nodes: BTreeMap<NodeName, NodeInfo>,
    pools: Vec<PoolInfo>,
    ads: Vec<AdvertisementInfo>,
    services: Vec<ServiceInfo>,
    members: Members,
}

impl Lab {
    fn new(n: usize) -> Lab {
        let names: Vec<NodeName> = (1..=n)
            .map(|i| NodeName::new(format!("hl-node{i}")))
            .collect();
        Lab {
            nodes: names
                .iter()
                .map(|n| {
                    (
                        n.clone(),
                        NodeInfo {
                            labels: labels(&[("kubernetes.io/hostname", n.as_str())]),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            pools: vec![PoolInfo {
                name: "lab".into(),
                labels: labels(&[("tier", "lab")]),
                ranges: vec![
                    IpRange::parse("192.0.2.100-192.0.2.149").unwrap(),
                    IpRange::parse("2001:db8::100-2001:db8::1ff").unwrap(),
                ],
            }],
            ads: vec![AdvertisementInfo::from_spec(
                "all",
                &L2AdvertisementSpec::default(),
            )],
            services: Vec::new(),
            members: Members {
                liveness: names.iter().map(|n| (n.clone(), Liveness::Alive)).collect(),
                links: names
                    .iter()
                    .map(|n| (n.clone(), named(&["eth0"])))
                    .collect(),
            },
        }
    }

    fn service(&mut self, name: &str, ips: &[&str]) -> &mut ServiceInfo {
        self.services.push(ServiceInfo {
            key: ServiceKey::new("default", name),
            ips: ips.iter().map(|s| ip(s)).collect(),
            labels: Labels::new(),
            policy: TrafficPolicy::Cluster,
            endpoint_nodes: self.nodes.keys().cloned().collect(),
            has_endpoints: true,
        });
        self.services.last_mut().unwrap()
    }

    fn elect(&self) -> Vec<Ownership> {
        ClusterView {
            nodes: &self.nodes,
            pools: &self.pools,
            advertisements: &self.ads,
            services: &self.services,
            membership: &self.members,
        }
        .elect()
    }

    fn owner_of(&self, addr: &str) -> Option<String> {
        self.elect()
            .into_iter()
            .find(|o| o.ip == ip(addr))
            .and_then(|o| o.owner)
            .map(|n| n.as_str().to_string())
    }
}

#[test]
fn one_owner_shared_by_dual_stack_and_shared_ips() {
    let mut lab = Lab::new(3);
    lab.service("dual", &["192.0.2.100", "2001:db8::100"]);
    lab.service("sharer", &["192.0.2.100"]);
    let all = lab.elect();
    assert_eq!(all.len(), 2);
    assert!(all[0].owner.is_some());
    assert_eq!(all[0].owner, all[1].owner);
    assert_eq!(all[0].services.len(), 2);
}

#[test]
fn dead_and_excluded_nodes_do_not_win() {
    let mut lab = Lab::new(3);
    lab.service("web", &["192.0.2.101"]);
    let first = lab.owner_of("192.0.2.101").unwrap();
    lab.members
        .liveness
        .insert(NodeName::new(first.clone()), Liveness::Absent);
    let second = lab.owner_of("192.0.2.101").unwrap();
    assert_ne!(first, second);
    lab.nodes
        .get_mut(&NodeName::new(second.clone()))
        .unwrap()
        .labels
        .insert(
            eligibility::EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.into(),
            String::new(),
        );
    let third = lab.owner_of("192.0.2.101").unwrap();
    assert!(third != first && third != second);
    let o = lab.elect().remove(0);
    assert_eq!(
        o.excluded.get(&NodeName::new(first)),
        Some(&Exclusion::NotMember)
    );
    assert_eq!(
        o.excluded.get(&NodeName::new(second)),
        Some(&Exclusion::ExcludedByLabel)
    );
}

#[test]
fn node_selectors_interfaces_and_preferences() {
    let mut lab = Lab::new(3);
    lab.service("web", &["192.0.2.102"]);
    lab.ads = vec![AdvertisementInfo::from_spec(
        "only-2-3",
        &L2AdvertisementSpec {
            node_selectors: vec![
                selector("kubernetes.io/hostname", "hl-node2"),
                selector("kubernetes.io/hostname", "hl-node3"),
            ],
            interfaces: vec![InterfaceName("eth1".into())],
            preferred_node_selectors: vec![PreferredNodeSelector {
                weight: 10,
                preference: selector("kubernetes.io/hostname", "hl-node3"),
            }],
            ..Default::default()
        },
    )];
    // Nobody has eth1 yet.
    assert_eq!(lab.owner_of("192.0.2.102"), None);
    for n in ["hl-node1", "hl-node2", "hl-node3"] {
        lab.members
            .links
            .insert(NodeName::new(n), named(&["eth0", "eth1"]));
    }
    assert_eq!(lab.owner_of("192.0.2.102").as_deref(), Some("hl-node3"));
    let o = lab.elect().remove(0);
    assert_eq!(o.interfaces, vec!["eth1".to_string()]);
    assert_eq!(
        o.excluded.get(&NodeName::new("hl-node1")),
        Some(&Exclusion::NotAdvertised)
    );
    // node3's eth1 loses carrier (it stops reporting it): node2 takes over.
    lab.members
        .links
        .insert(NodeName::new("hl-node3"), named(&["eth0"]));
    assert_eq!(lab.owner_of("192.0.2.102").as_deref(), Some("hl-node2"));
}

#[test]
fn local_policy_needs_a_local_endpoint_and_any_policy_needs_one() {
    let mut lab = Lab::new(3);
    let svc = lab.service("local", &["192.0.2.103"]);
    svc.policy = TrafficPolicy::Local;
    svc.endpoint_nodes = [NodeName::new("hl-node2")].into();
    assert_eq!(lab.owner_of("192.0.2.103").as_deref(), Some("hl-node2"));
    lab.services[0].endpoint_nodes = [NodeName::new("hl-node1")].into();
    assert_eq!(lab.owner_of("192.0.2.103").as_deref(), Some("hl-node1"));
    lab.services[0].endpoint_nodes.clear();
    lab.services[0].has_endpoints = false;
    assert_eq!(lab.owner_of("192.0.2.103"), None);
}

#[test]
fn pools_without_advertisement_and_ips_outside_pools_are_not_announced() {
    let mut lab = Lab::new(2);
    lab.service("outside", &["203.0.113.50"]);
    lab.service("web", &["192.0.2.104"]);
    lab.ads = vec![AdvertisementInfo::from_spec(
        "other",
        &L2AdvertisementSpec {
            ip_address_pools: vec!["not-lab".into()],
            ..Default::default()
        },
    )];
    assert_eq!(lab.owner_of("203.0.113.50"), None);
    assert_eq!(lab.owner_of("192.0.2.104"), None);
    lab.ads = vec![AdvertisementInfo::from_spec(
        "by-label",
        &L2AdvertisementSpec {
            ip_address_pool_selectors: vec![selector("tier", "lab")],
            ..Default::default()
        },
    )];
    assert!(lab.owner_of("192.0.2.104").is_some());
}

/// Two pools, one per family, each with its own advertisement (MetalLB's usual layout).
fn two_pools_two_advertisements(lab: &mut Lab, v4_nodes: &[&str], v6_nodes: &[&str]) {
    lab.pools = vec![
        PoolInfo {
            name: "v4".into(),
            labels: labels(&[("family", "v4")]),
            ranges: vec![IpRange::parse("192.0.2.100-192.0.2.149").unwrap()],
        },
        PoolInfo {
            name: "v6".into(),
            labels: labels(&[("family", "v6")]),
            ranges: vec![IpRange::parse("2001:db8::100-2001:db8::1ff").unwrap()],
        },
    ];
    let on = |nodes: &[&str]| -> Vec<LabelSelector> {
        nodes
            .iter()
            .map(|n| selector("kubernetes.io/hostname", n))
            .collect()
    };
    lab.ads = vec![
        AdvertisementInfo::from_spec(
            "v4",
            &L2AdvertisementSpec {
                ip_address_pools: vec!["v4".into()],
                node_selectors: on(v4_nodes),
                interfaces: vec![InterfaceName("eth0".into())],
                ..Default::default()
            },
        ),
        AdvertisementInfo::from_spec(
            "v6",
            &L2AdvertisementSpec {
                ip_address_pools: vec!["v6".into()],
                node_selectors: on(v6_nodes),
                interfaces: vec![InterfaceName("eth1".into())],
                ..Default::default()
            },
        ),
    ];
    for n in ["hl-node1", "hl-node2", "hl-node3"] {
        lab.members
            .links
            .insert(NodeName::new(n), named(&["eth0", "eth1"]));
    }
}

#[test]
fn a_dual_stack_service_from_two_pools_with_their_own_advertisements_is_announced() {
    // Before, an advertisement had to cover both IPs' pools: none did, nobody was eligible.
    let mut lab = Lab::new(3);
    two_pools_two_advertisements(&mut lab, &[], &[]);
    lab.service("dual", &["192.0.2.110", "2001:db8::110"]);
    let all = lab.elect();
    assert_eq!(all.len(), 2);
    assert!(all[0].owner.is_some(), "{:?}", all[0].excluded);
    assert_eq!(
        all[0].owner, all[1].owner,
        "one node announces both families"
    );
    // Each family on the interfaces its own advertisement names.
    let by_ip: BTreeMap<IpAddr, &Ownership> = all.iter().map(|o| (o.ip, o)).collect();
    assert_eq!(by_ip[&ip("192.0.2.110")].interfaces, ["eth0"]);
    assert_eq!(by_ip[&ip("2001:db8::110")].interfaces, ["eth1"]);
}

#[test]
fn a_dual_stack_owner_must_be_allowed_by_both_families_advertisements() {
    // v4 may be announced from nodes 1 and 2, v6 from 2 and 3: only node 2 may own both.
    let mut lab = Lab::new(3);
    two_pools_two_advertisements(
        &mut lab,
        &["hl-node1", "hl-node2"],
        &["hl-node2", "hl-node3"],
    );
    lab.service("dual", &["192.0.2.111", "2001:db8::111"]);
    assert_eq!(lab.owner_of("192.0.2.111").as_deref(), Some("hl-node2"));
    assert_eq!(lab.owner_of("2001:db8::111").as_deref(), Some("hl-node2"));
    let o = lab.elect().remove(0);
    assert_eq!(
        o.excluded.get(&NodeName::new("hl-node1")),
        Some(&Exclusion::NotAdvertised)
    );
    // Node 2 loses the interface the v6 advertisement names: nobody may own both.
    lab.members
        .links
        .insert(NodeName::new("hl-node2"), named(&["eth0"]));
    assert_eq!(lab.owner_of("192.0.2.111"), None);
    let o = lab.elect().remove(0);
    assert_eq!(
        o.excluded.get(&NodeName::new("hl-node2")),
        Some(&Exclusion::NoInterface)
    );
}

#[test]
fn services_sharing_an_ip_selected_by_different_advertisements_are_announced() {
    // Two Services share 192.0.2.120; one advertisement selects Services labelled team=a,
    // another team=b. Before, one advertisement had to select both: none did.
    let mut lab = Lab::new(3);
    let service_selector = |team: &str| L2AdvertisementSpec {
        service_selectors: vec![selector("team", team)],
        ..Default::default()
    };
    lab.ads = vec![
        AdvertisementInfo::from_spec("a", &service_selector("a")),
        AdvertisementInfo::from_spec("b", &service_selector("b")),
    ];
    lab.service("web", &["192.0.2.120"]).labels = labels(&[("team", "a")]);
    lab.service("api", &["192.0.2.120"]).labels = labels(&[("team", "b")]);
    let o = lab.elect().remove(0);
    assert!(o.owner.is_some(), "{:?}", o.excluded);
    assert_eq!(o.services.len(), 2);
    // A third Service sharing it that no advertisement selects: the IP cannot be announced
    // for it, so nobody owns the group (every Service using an IP must be advertised).
    lab.service("other", &["192.0.2.120"]).labels = labels(&[("team", "c")]);
    let o = lab.elect().remove(0);
    assert_eq!(o.owner, None);
    assert!(o.excluded.values().all(|e| *e == Exclusion::NotAdvertised));
}

/// The lab's layout: every node on network A (eth0: 192.0.2.0/24, 2001:db8:a::/64) and B (eth1:
/// 198.51.100.0/24, 2001:db8:b::/64); node 1 also on a VLAN of A's switch (eth0.100:
/// 203.0.113.64/27).
fn multi_homed(lab: &mut Lab) {
    lab.pools = vec![PoolInfo {
        name: "lab".into(),
        labels: Labels::new(),
        ranges: [
            "192.0.2.100-192.0.2.149",
            "198.51.100.100-198.51.100.149",
            "203.0.113.80-203.0.113.89",
            "2001:db8:b::100-2001:db8:b::1ff",
            "203.0.113.200-203.0.113.209",
        ]
        .iter()
        .map(|r| IpRange::parse(r).unwrap())
        .collect(),
    }];
    for (i, n) in ["hl-node1", "hl-node2", "hl-node3"].iter().enumerate() {
        let mut links: Vec<(&str, &[&str])> = vec![
            ("eth0", &["192.0.2.0/24", "2001:db8:a::/64"]),
            ("eth1", &["198.51.100.0/24", "2001:db8:b::/64"]),
        ];
        if i == 0 {
            links.push(("eth0.100", &["203.0.113.64/27"]));
        }
        lab.members.links.insert(NodeName::new(*n), homed(&links));
    }
}

#[test]
fn an_ip_in_a_node_subnet_is_answered_only_where_it_belongs() {
    let mut lab = Lab::new(3);
    multi_homed(&mut lab);
    lab.service("a", &["192.0.2.100"]);
    lab.service("b", &["198.51.100.100"]);
    lab.service("b6", &["2001:db8:b::100"]);
    let all = lab.elect();
    let by_ip: BTreeMap<IpAddr, &Ownership> = all.iter().map(|o| (o.ip, o)).collect();
    assert_eq!(by_ip[&ip("192.0.2.100")].interfaces, ["eth0"]);
    assert_eq!(by_ip[&ip("198.51.100.100")].interfaces, ["eth1"]);
    assert_eq!(by_ip[&ip("2001:db8:b::100")].interfaces, ["eth1"]);
    assert!(all.iter().all(|o| o.owner.is_some()));
}

#[test]
fn only_a_node_on_the_vlan_owns_its_ips() {
    let mut lab = Lab::new(3);
    multi_homed(&mut lab);
    for i in 0..10 {
        lab.service(&format!("v{i}"), &[&format!("203.0.113.8{i}")]);
    }
    for o in lab.elect() {
        assert_eq!(o.owner.as_ref().map(NodeName::as_str), Some("hl-node1"));
        assert_eq!(o.interfaces, ["eth0.100"]);
        for n in ["hl-node2", "hl-node3"] {
            assert_eq!(
                o.excluded.get(&NodeName::new(n)),
                Some(&Exclusion::NotOnSubnet)
            );
        }
    }
    // The VLAN's node goes: nobody else faces the subnet, so the rule no longer applies and
    // the IP falls back to every interface of whoever wins (a routed range, as before).
    lab.members
        .liveness
        .insert(NodeName::new("hl-node1"), Liveness::Absent);
    let o = lab.elect().remove(0);
    assert!(o.owner.is_some());
    assert_eq!(o.interfaces, ["eth0", "eth1"]);
}

#[test]
fn a_routed_range_is_answered_on_every_allowed_interface() {
    let mut lab = Lab::new(3);
    multi_homed(&mut lab);
    lab.service("routed", &["203.0.113.200"]);
    let o = lab.elect().remove(0);
    assert!(o.owner.is_some());
    assert!(o.excluded.is_empty());
    assert_eq!(o.interfaces, ["eth0", "eth1"]);
    // An advertisement's interfaces still restrict it.
    lab.ads = vec![AdvertisementInfo::from_spec(
        "eth1-only",
        &L2AdvertisementSpec {
            interfaces: vec![InterfaceName("eth1".into())],
            ..Default::default()
        },
    )];
    assert_eq!(lab.elect().remove(0).interfaces, ["eth1"]);
    // And where the advertisement allows no interface facing the IP, the rule does not
    // apply: B's interface answers for an IP of A's subnet, as before.
    lab.service("a", &["192.0.2.101"]);
    let a = lab
        .elect()
        .into_iter()
        .find(|o| o.ip == ip("192.0.2.101"))
        .unwrap();
    assert_eq!(a.interfaces, ["eth1"]);
}

#[test]
fn a_node_that_does_not_report_subnets_is_not_excluded() {
    let mut lab = Lab::new(3);
    multi_homed(&mut lab);
    // hl-node1 runs an older speaker (wire version 2): names only.
    lab.members.links.insert(
        NodeName::new("hl-node1"),
        NodeLinks {
            links: vec![Link::named("eth0"), Link::named("eth1")],
            subnets_known: false,
        },
    );
    lab.service("b", &["198.51.100.100"]);
    let o = lab.elect().remove(0);
    assert!(o.excluded.is_empty(), "{:?}", o.excluded);
}

#[test]
fn dual_stack_needs_an_owner_facing_every_family_that_has_a_subnet() {
    let mut lab = Lab::new(3);
    multi_homed(&mut lab);
    // B's v6 is on every node; the VLAN's v4 only on node 1: node 1 owns both, each IP on its
    // own interface.
    lab.service("dual", &["203.0.113.81", "2001:db8:b::181"]);
    let all = lab.elect();
    assert!(
        all.iter()
            .all(|o| o.owner.as_ref().map(NodeName::as_str) == Some("hl-node1"))
    );
    let by_ip: BTreeMap<IpAddr, &Ownership> = all.iter().map(|o| (o.ip, o)).collect();
    assert_eq!(by_ip[&ip("203.0.113.81")].interfaces, ["eth0.100"]);
    assert_eq!(by_ip[&ip("2001:db8:b::181")].interfaces, ["eth1"]);
}

/// A node's links drawn from three networks (A, B and a VLAN), some missing.
fn arb_links() -> impl Strategy<Value = NodeLinks> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, vlan, known)| {
        let mut links: Vec<(&str, &[&str])> = Vec::new();
        if a {
            links.push(("eth0", &["192.0.2.0/24"]));
        }
        if b {
            links.push(("eth1", &["198.51.100.0/24"]));
        }
        if vlan {
            links.push(("eth0.100", &["203.0.113.64/27"]));
        }
        NodeLinks {
            subnets_known: known,
            ..homed(&links)
        }
    })
}

proptest! {
    /// Whatever the nodes' networks: when some eligible node faces an IP, the owner faces it
    /// too (or reports no subnets) and answers only on interfaces facing it; when none does,
    /// the owner answers on every usable interface, as without the rule; and there is an owner
    /// exactly when there would be one without the rule.
    #[test]
    fn the_owner_faces_the_ip_whenever_some_eligible_node_does(
        nodes in proptest::collection::vec(arb_links(), 1..6),
        last in 100u8..110,
        network in 0usize..4,
    ) {
        let mut lab = Lab::new(nodes.len());
        lab.pools[0].ranges = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.64/27", "203.0.113.200/29"]
            .iter()
            .map(|r| IpRange::parse(r).unwrap())
            .collect();
        let target = match network {
            0 => IpAddr::from([192, 0, 2, last]),
            1 => IpAddr::from([198, 51, 100, last]),
            2 => IpAddr::from([203, 0, 113, 64 + last - 100]),
            _ => IpAddr::from([203, 0, 113, 200 + (last - 100) % 8]),
        };
        let names: Vec<NodeName> = lab.nodes.keys().cloned().collect();
        for (name, links) in names.iter().zip(&nodes) {
            lab.members.links.insert(name.clone(), links.clone());
        }
        lab.service("s", &[&target.to_string()]);
        let o = lab.elect().remove(0);
        let faces = |l: &NodeLinks| l.links.iter().any(|x| x.faces(target));
        let has_link = |l: &NodeLinks| !l.links.is_empty();
        let someone_faces = nodes.iter().any(|l| l.subnets_known && faces(l));
        prop_assert_eq!(o.owner.is_some(), nodes.iter().any(has_link));
        if let Some(owner) = &o.owner {
            let links = &lab.members.links[owner];
            if someone_faces && links.subnets_known {
                prop_assert!(!o.interfaces.is_empty());
                for i in &o.interfaces {
                    let l = links.links.iter().find(|l| &l.name == i).unwrap();
                    prop_assert!(l.faces(target), "{} does not face {}", i, target);
                }
            } else {
                let all: Vec<String> = links.links.iter().map(|l| l.name.clone()).collect();
                prop_assert_eq!(&o.interfaces, &all);
            }
        }
        for (name, links) in names.iter().zip(&nodes) {
            let excluded_by_rule = o.excluded.get(name) == Some(&Exclusion::NotOnSubnet);
            prop_assert_eq!(
                excluded_by_rule,
                someone_faces && links.subnets_known && has_link(links) && !faces(links)
            );
        }
    }
}
