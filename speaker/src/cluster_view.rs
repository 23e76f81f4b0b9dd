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

use crate::election::{Candidate, ElectionKey, NodeName, keys_by_ip, owner};
use crate::eligibility::{self, AddressFacts, Exclusion, Link, Liveness, NodeFacts, TrafficPolicy};
use crate::interfaces::is_default_candidate;

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
    /// The interfaces the node reports usable (up with carrier); `None` if unknown.
    fn usable_links(&self, node: &NodeName) -> Option<Vec<String>>;
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
    /// Interfaces the winner may announce on (empty: any usable one).
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

    /// Elects an owner for every IP held by a Service.
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
            // The advertisements that cover every IP of the group for every Service in it.
            let covering: Vec<&AdvertisementInfo> = self
                .advertisements
                .iter()
                .filter(|ad| {
                    ips.iter()
                        .all(|ip| self.pool_of(*ip).is_some_and(|p| ad.covers_pool(p)))
                        && services.iter().all(|s| ad.selects_service(&s.labels))
                })
                .collect();
            let any_interface = covering.iter().any(|ad| ad.interfaces.is_empty());
            let interfaces: Vec<String> = if any_interface {
                Vec::new()
            } else {
                covering
                    .iter()
                    .flat_map(|ad| ad.interfaces.iter().cloned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            };
            let mut excluded = BTreeMap::new();
            let mut candidates = Vec::new();
            for (name, node) in self.nodes {
                let link = self.membership.usable_links(name).and_then(|links| {
                    links
                        .iter()
                        .any(|l| {
                            if any_interface {
                                is_default_candidate(l)
                            } else {
                                interfaces.contains(l)
                            }
                        })
                        .then_some(Link {
                            up: true,
                            carrier: true,
                        })
                });
                let advertised_by: Vec<&&AdvertisementInfo> = covering
                    .iter()
                    .filter(|ad| ad.selects_node(&node.labels))
                    .collect();
                let facts = NodeFacts {
                    liveness: self.membership.liveness(name),
                    labels: &node.labels,
                    network_unavailable: node.network_unavailable,
                };
                let verdict = services.iter().try_for_each(|svc| {
                    eligibility::check(
                        &facts,
                        &AddressFacts {
                            advertised: !advertised_by.is_empty(),
                            link,
                            policy: svc.policy,
                            has_endpoints: svc.has_endpoints,
                            local_endpoint: svc.endpoint_nodes.contains(name),
                        },
                    )
                });
                match verdict {
                    Ok(()) => candidates.push(Candidate {
                        node: name,
                        preference: advertised_by
                            .iter()
                            .map(|ad| ad.preference(&node.labels))
                            .sum(),
                    }),
                    Err(e) => {
                        excluded.insert(name.clone(), e);
                    }
                }
            }
            let winner = owner(key, candidates).cloned();
            let service_keys: Vec<ServiceKey> = services.iter().map(|s| s.key.clone()).collect();
            for ip in ips {
                out.push(Ownership {
                    ip,
                    key,
                    owner: winner.clone(),
                    interfaces: interfaces.clone(),
                    services: service_keys.clone(),
                    excluded: excluded.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
