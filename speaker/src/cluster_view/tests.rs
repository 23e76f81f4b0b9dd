use super::*;
use herald_config::l2advertisement::{InterfaceName, PreferredNodeSelector};
use std::collections::HashMap;

struct Members {
    liveness: HashMap<NodeName, Liveness>,
    links: HashMap<NodeName, Vec<String>>,
}

impl MembershipView for Members {
    fn liveness(&self, node: &NodeName) -> Liveness {
        self.liveness.get(node).copied().unwrap_or(Liveness::Absent)
    }
    fn usable_links(&self, node: &NodeName) -> Option<Vec<String>> {
        self.links.get(node).cloned()
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
                    .map(|n| (n.clone(), vec!["eth0".to_string()]))
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
            .insert(NodeName::new(n), vec!["eth0".into(), "eth1".into()]);
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
        .insert(NodeName::new("hl-node3"), vec!["eth0".into()]);
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
