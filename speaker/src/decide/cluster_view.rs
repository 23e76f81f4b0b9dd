//! Who owns each announced IP, from plain facts every speaker shares: Nodes, pools,
//! L2Advertisements, Services with their status IPs and endpoints, and the membership.
//!
//! Every speaker runs this same pure function over the same view and reaches the same answer,
//! so no per-Service coordination (and no per-Service API traffic) is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use herald_config::addresses::IpRange;
use herald_config::l2advertisement::L2AdvertisementSpec;
use herald_config::selection::Labels;
use herald_config::service::ServiceKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector, SelectorExt};

use crate::decide::election::{Candidate, ElectionKey, NodeName, keys_by_ip, owner};
use crate::decide::eligibility::{
    self, AddressFacts, Exclusion, Liveness, NodeFacts, TrafficPolicy, is_default_candidate,
};
use crate::decide::subnets::{self, NodeLinks, Reach};

/// A Node, as far as elections care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its labels.
    pub labels: Labels,
    /// Its `NetworkUnavailable` condition is `True`.
    pub network_unavailable: bool,
}

/// A pool: which addresses belong to it (to find the advertisements covering an IP).
#[derive(Clone, Debug)]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// Pool labels (for `ipAddressPoolSelectors`).
    pub labels: Labels,
    /// Its address ranges.
    pub ranges: Vec<IpRange>,
}

/// An L2Advertisement with its selectors parsed. A selector that does not parse matches
/// nothing (fail closed).
#[derive(Clone, Debug)]
pub struct AdvertisementInfo {
    /// Name.
    pub name: String,
    pool_names: Vec<String>,
    pool_selectors: Vec<Selector>,
    node_selectors: Vec<Selector>,
    service_selectors: Vec<Selector>,
    /// Interfaces named; empty means any usable one.
    pub interfaces: Vec<String>,
    preferred: Vec<(u32, Selector)>,
}

fn parse(selectors: &[LabelSelector]) -> Vec<Selector> {
    selectors
        .iter()
        .map(|s| {
            Selector::try_from(s.clone()).unwrap_or_else(|_| {
                Selector::from_iter([Expression::In(
                    "herald.dev/invalid-selector".into(),
                    Default::default(),
                )])
            })
        })
        .collect()
}

fn any_match(selectors: &[Selector], labels: &Labels) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

impl AdvertisementInfo {
    /// Parses an advertisement.
    pub fn from_spec(name: &str, spec: &L2AdvertisementSpec) -> AdvertisementInfo {
        AdvertisementInfo {
            name: name.to_string(),
            pool_names: spec.ip_address_pools.clone(),
            pool_selectors: parse(&spec.ip_address_pool_selectors),
            node_selectors: parse(&spec.node_selectors),
            service_selectors: parse(&spec.service_selectors),
            interfaces: spec.interfaces.iter().map(|i| i.0.clone()).collect(),
            preferred: spec
                .preferred_node_selectors
                .iter()
                .map(|p| {
                    (
                        u32::try_from(p.weight.clamp(0, 100)).unwrap_or(0),
                        parse(std::slice::from_ref(&p.preference))
                            .pop()
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    /// Whether it announces `pool`: no pool list and no selector means every pool.
    pub fn covers_pool(&self, pool: &PoolInfo) -> bool {
        if self.pool_names.is_empty() && self.pool_selectors.is_empty() {
            return true;
        }
        self.pool_names.contains(&pool.name)
            || self.pool_selectors.iter().any(|s| s.matches(&pool.labels))
    }

    fn selects_node(&self, labels: &Labels) -> bool {
        any_match(&self.node_selectors, labels)
    }

    fn selects_service(&self, labels: &Labels) -> bool {
        any_match(&self.service_selectors, labels)
    }

    fn preference(&self, labels: &Labels) -> u32 {
        self.preferred
            .iter()
            .filter(|(_, s)| s.matches(labels))
            .map(|(w, _)| *w)
            .sum()
    }
}

/// A Service holding IPs.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    /// Namespace/name.
    pub key: ServiceKey,
    /// `status.loadBalancer.ingress` IPs.
    pub ips: Vec<IpAddr>,
    /// Labels (for advertisements' `serviceSelectors`).
    pub labels: Labels,
    /// `externalTrafficPolicy`.
    pub policy: TrafficPolicy,
    /// Nodes with a ready endpoint of the Service.
    pub endpoint_nodes: BTreeSet<NodeName>,
    /// The Service has a serving endpoint somewhere.
    pub has_endpoints: bool,
}

/// What the membership says about nodes.
pub trait MembershipView {
    /// Liveness after hold-down.
    fn liveness(&self, node: &NodeName) -> Liveness;
    /// The interfaces the node reports usable (up with carrier), with their subnets; `None`
    /// if unknown.
    fn usable_links(&self, node: &NodeName) -> Option<NodeLinks>;
}

/// The election's outcome for one IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// The IP.
    pub ip: IpAddr,
    /// The key it was elected under (shared by linked IPs).
    pub key: ElectionKey,
    /// The winner, if anyone is eligible.
    pub owner: Option<NodeName>,
    /// Interfaces the winner announces on: those facing the IP when the subnet rule applies
    /// (`crate::decide::subnets`), else every usable one its advertisements allow.
    pub interfaces: Vec<String>,
    /// The Services using the IP.
    pub services: Vec<ServiceKey>,
    /// Why each ineligible node was excluded.
    pub excluded: BTreeMap<NodeName, Exclusion>,
}

/// Everything the election reads.
pub struct ClusterView<'a, M: MembershipView> {
    /// Nodes by name.
    pub nodes: &'a BTreeMap<NodeName, NodeInfo>,
    /// Pools.
    pub pools: &'a [PoolInfo],
    /// Advertisements.
    pub advertisements: &'a [AdvertisementInfo],
    /// Services holding IPs.
    pub services: &'a [ServiceInfo],
    /// Membership.
    pub membership: &'a M,
}

impl<M: MembershipView> ClusterView<'_, M> {
    fn pool_of(&self, ip: IpAddr) -> Option<&PoolInfo> {
        self.pools
            .iter()
            .find(|p| p.ranges.iter().any(|r| r.contains(ip)))
    }

    /// The advertisements that may announce `ip` for `svc`: they cover the IP's pool and
    /// select the Service.
    fn advertising<'s>(&'s self, ip: IpAddr, svc: &ServiceInfo) -> Vec<&'s AdvertisementInfo> {
        let Some(pool) = self.pool_of(ip) else {
            return Vec::new();
        };
        self.advertisements
            .iter()
            .filter(|ad| ad.covers_pool(pool) && ad.selects_service(&svc.labels))
            .collect()
    }

    /// Elects an owner for every IP held by a Service.
    ///
    /// IPs that must share one owner (both IPs of a dual-stack Service, every Service sharing
    /// an IP) are elected together, but each keeps its own advertisements: a node may own the
    /// group when, for every IP of it and every Service using that IP, some advertisement
    /// covering the IP's pool and selecting the Service selects the node and allows one of the
    /// node's usable interfaces. So a dual-stack Service whose two families come from two
    /// pools, each with its own L2Advertisement, and Services sharing an IP whose
    /// advertisements select them by different labels, are announced by a node every one of
    /// those advertisements allows; each IP is announced on the interfaces its own
    /// advertisements allow (MetalLB elects each IP under one advertisement only, which finds
    /// no node for such a group).
    ///
    /// Then the subnet rule (`crate::decide::subnets`), per IP of the group: when a node that
    /// passed everything above has an allowed interface facing the IP, nodes without one are
    /// excluded ([`Exclusion::NotOnSubnet`]) and the owner answers only on its facing
    /// interfaces.
    pub fn elect(&self) -> Vec<Ownership> {
        let keys = keys_by_ip(self.services.iter().map(|s| s.ips.as_slice()));
        let mut groups: BTreeMap<ElectionKey, Vec<&ServiceInfo>> = BTreeMap::new();
        for svc in self.services {
            if let Some(key) = svc.ips.first().and_then(|ip| keys.get(ip)) {
                groups.entry(*key).or_default().push(svc);
            }
        }
        let mut out = Vec::new();
        for (key, services) in groups {
            let ips: BTreeSet<IpAddr> = services
                .iter()
                .flat_map(|s| s.ips.iter().copied())
                .collect();
            // Per IP, per Service using it: the advertisements that may announce it.
            let rules: Vec<(IpAddr, Vec<Vec<&AdvertisementInfo>>)> = ips
                .iter()
                .map(|&ip| {
                    let per_service = services
                        .iter()
                        .filter(|s| s.ips.contains(&ip))
                        .map(|s| self.advertising(ip, s))
                        .collect();
                    (ip, per_service)
                })
                .collect();
            let mut excluded = BTreeMap::new();
            // Nodes that pass every rule but the subnet rule, with their preference and, per
            // IP, their interfaces.
            let mut passing: Vec<(&NodeName, u32, BTreeMap<IpAddr, Reach>)> = Vec::new();
            for (name, node) in self.nodes {
                let links = self.membership.usable_links(name).unwrap_or_default();
                let mut advertised = true;
                let mut usable_interface = true;
                let mut preferring: Vec<&AdvertisementInfo> = Vec::new();
                let mut per_ip = BTreeMap::new();
                for (ip, per_service) in &rules {
                    // Every Service using the IP has an advertisement selecting this node.
                    let selecting: Vec<&AdvertisementInfo> = per_service
                        .iter()
                        .flat_map(|ads| ads.iter().filter(|ad| ad.selects_node(&node.labels)))
                        .copied()
                        .collect();
                    if !per_service
                        .iter()
                        .all(|ads| ads.iter().any(|ad| ad.selects_node(&node.labels)))
                    {
                        advertised = false;
                        continue;
                    }
                    let any_interface = selecting.iter().any(|ad| ad.interfaces.is_empty());
                    let reach = subnets::reach(
                        &links,
                        |l| {
                            if any_interface {
                                is_default_candidate(l)
                            } else {
                                selecting
                                    .iter()
                                    .any(|ad| ad.interfaces.iter().any(|i| i == l))
                            }
                        },
                        *ip,
                    );
                    usable_interface &= !reach.allowed.is_empty();
                    for ad in selecting {
                        if !preferring.iter().any(|p| std::ptr::eq(*p, ad)) {
                            preferring.push(ad);
                        }
                    }
                    per_ip.insert(*ip, reach);
                }
                let facts = NodeFacts {
                    liveness: self.membership.liveness(name),
                    labels: &node.labels,
                    network_unavailable: node.network_unavailable,
                };
                let verdict = services.iter().try_for_each(|svc| {
                    eligibility::check(
                        &facts,
                        &AddressFacts {
                            advertised,
                            usable_interface,
                            policy: svc.policy,
                            has_endpoints: svc.has_endpoints,
                            local_endpoint: svc.endpoint_nodes.contains(name),
                        },
                    )
                });
                match verdict {
                    Ok(()) => {
                        let preference = preferring
                            .iter()
                            .map(|ad| ad.preference(&node.labels))
                            .sum();
                        passing.push((name, preference, per_ip));
                    }
                    Err(e) => {
                        excluded.insert(name.clone(), e);
                    }
                }
            }
            // Per IP, whether some node that passed faces it: then only such nodes may own
            // the group, each answering where the IP belongs.
            let rule: BTreeMap<IpAddr, bool> = ips
                .iter()
                .map(|ip| {
                    let reaches = passing.iter().filter_map(|(_, _, per_ip)| per_ip.get(ip));
                    (*ip, subnets::rule_applies(reaches))
                })
                .collect();
            let mut candidates = Vec::new();
            let mut interfaces_of: BTreeMap<&NodeName, BTreeMap<IpAddr, Vec<String>>> =
                BTreeMap::new();
            for (name, preference, per_ip) in passing {
                let answer_on: Option<BTreeMap<IpAddr, Vec<String>>> = per_ip
                    .iter()
                    .map(|(ip, reach)| {
                        let on = reach.answer_on(rule.get(ip).copied().unwrap_or(false))?;
                        Some((*ip, on.to_vec()))
                    })
                    .collect();
                match answer_on {
                    Some(on) => {
                        candidates.push(Candidate {
                            node: name,
                            preference,
                        });
                        interfaces_of.insert(name, on);
                    }
                    None => {
                        excluded.insert(name.clone(), Exclusion::NotOnSubnet);
                    }
                }
            }
            let winner = owner(key, candidates).cloned();
            let service_keys: Vec<ServiceKey> = services.iter().map(|s| s.key.clone()).collect();
            let winner_interfaces = winner
                .as_ref()
                .and_then(|w| interfaces_of.remove(w))
                .unwrap_or_default();
            for ip in ips {
                out.push(Ownership {
                    ip,
                    key,
                    owner: winner.clone(),
                    interfaces: winner_interfaces.get(&ip).cloned().unwrap_or_default(),
                    services: service_keys
                        .iter()
                        .zip(&services)
                        .filter(|(_, s)| s.ips.contains(&ip))
                        .map(|(k, _)| k.clone())
                        .collect(),
                    excluded: excluded.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
