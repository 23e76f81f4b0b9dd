//! The cluster as the controller sees it (Services, pools, namespaces) and the decisions it
//! makes: which status to write and which Events to emit.
//!
//! Pure and synchronous, in the manner of linkerd2's policy index: watchers feed it objects,
//! it answers with [`Action`]s, and a leader-gated writer carries them out. While not active
//! (not leader, or not yet synced) it only keeps its caches; [`ControllerIndex::activate`]
//! rebuilds the allocation from the Services' status, exactly as after a restart, so a new
//! leader starts from the same truth and moves nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use herald_config::Family;
use herald_config::announcement::{self, Claim, L2Announcements};
use herald_config::pool::{IPAddressPool, IPAddressPoolSpec};
use herald_config::selection::{Labels, PoolPolicy};
use herald_config::service::{
    FamilyPolicy, ServedClass, ServiceInputError, ServiceKey, ServiceRequest, is_ours,
    parse_request, status_ips,
};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::jiff::Timestamp;

use crate::allocator::{Allocator, ServiceContext};
use crate::writer::StatusWrite;

/// Event reasons, as MetalLB users know them.
pub mod reasons {
    /// An IP was assigned.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// No IP could be assigned; the message says why.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// A held IP is no longer valid and was taken away.
    pub const CLEAR_ASSIGNMENT: &str = "ClearAssignment";
    /// The Service's annotations or spec cannot be understood.
    pub const INVALID_REQUEST: &str = "LoadBalancerFailed";
    /// A `metallb.universe.tf/` annotation was read.
    pub const DEPRECATED_ANNOTATION: &str = "DeprecatedAnnotation";
    /// A pool shares addresses with another.
    pub const POOL_OVERLAP: &str = "PoolOverlap";
    /// A pool has entries that cannot be used.
    pub const INVALID_ADDRESSES: &str = "InvalidAddresses";
    /// A pool declares a Node's address, which is never handed out.
    pub const NODE_ADDRESS_IN_POOL: &str = "NodeAddressInPool";
    /// The node announcing a Service changed (mirrored from the speakers' reports).
    pub const ANNOUNCER_CHANGED: &str = herald_config::announcement::EVENT_CHANGED;
}

/// What an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Regarding {
    /// A Service.
    Service {
        /// Its key.
        key: ServiceKey,
        /// Its uid.
        uid: Option<String>,
    },
    /// An IPAddressPool.
    Pool {
        /// Its name.
        name: String,
        /// Its uid.
        uid: Option<String>,
    },
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The object.
    pub regarding: Regarding,
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The Node the Event is also about (the announcing node): Events about different
    /// nodes are kept apart instead of aggregating into one series.
    pub node: Option<String>,
}

/// What the writer must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write a Service's status (its ingress IPs, its Announced condition), on the object the
    /// decision was made for.
    WriteStatus(StatusWrite),
    /// Publish an Event.
    Event(EventRecord),
    /// Count an allocation failure (for metrics).
    CountFailure(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ownership {
    Ours,
    NotLoadBalancer,
    OtherClass,
}

#[derive(Clone, Debug)]
struct ServiceView {
    uid: Option<String>,
    /// The `resourceVersion` last observed: writes are made on it.
    resource_version: Option<String>,
    created: Option<Timestamp>,
    labels: Labels,
    ownership: Ownership,
    request: Result<ServiceRequest, ServiceInputError>,
    /// `status.loadBalancer.ingress[].ip` as last observed.
    status_ips: Vec<IpAddr>,
    /// What we last wrote and have not seen echoed by the watch yet.
    written: Option<Vec<IpAddr>>,
    /// The message of the `herald.dev/Announced` condition as last observed.
    announced: Option<String>,
    /// The Announced message we last wrote and have not seen echoed yet.
    announced_written: Option<String>,
    /// Last problem event (reason, message), so a failing Service is not re-announced on every
    /// reconcile (MetalLB #800 showed one event ×1342).
    last_problem: Option<(&'static str, String)>,
    deprecated_reported: bool,
    /// Why the status IPs could not be adopted on activation.
    adopt_error: Option<String>,
}

#[derive(Clone, Debug)]
struct PoolView {
    uid: Option<String>,
    generation: Option<i64>,
    spec: IPAddressPoolSpec,
    policy: PoolPolicy,
    reported_overlap: String,
    reported_invalid: String,
    reported_node_addresses: String,
}

/// The controller's view of the cluster.
#[derive(Debug)]
pub struct ControllerIndex {
    class: ServedClass,
    services: HashMap<ServiceKey, ServiceView>,
    namespaces: HashMap<String, Labels>,
    /// Each Node's InternalIP addresses.
    nodes: BTreeMap<String, Vec<IpAddr>>,
    pools: BTreeMap<String, PoolView>,
    allocator: Allocator,
    active: bool,
    dirty: BTreeSet<ServiceKey>,
    pending: BTreeSet<ServiceKey>,
    pools_changed: bool,
    pool_events: Vec<Action>,
    /// Each node's report of what it announces, by IP: who announces is the latest claim.
    claims: HashMap<IpAddr, BTreeMap<String, Claim>>,
    /// The IPs each node's report claims.
    claimed_by: HashMap<String, Vec<IpAddr>>,
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ControllerIndex {
    /// An empty index for a controller serving `class`.
    pub fn new(class: ServedClass) -> ControllerIndex {
        ControllerIndex {
            class,
            services: HashMap::new(),
            namespaces: HashMap::new(),
            nodes: BTreeMap::new(),
            pools: BTreeMap::new(),
            allocator: Allocator::new(),
            active: false,
            dirty: BTreeSet::new(),
            pending: BTreeSet::new(),
            pools_changed: false,
            pool_events: Vec::new(),
            claims: HashMap::new(),
            claimed_by: HashMap::new(),
        }
    }

    /// Whether decisions are being made (leader and synced).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Records a Service as the watch shows it.
    pub fn apply_service(&mut self, svc: &Service) {
        let Some(key) = ServiceKey::of(svc) else {
            return;
        };
        let ownership = if is_ours(svc, &self.class) {
            Ownership::Ours
        } else if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
            Ownership::OtherClass
        } else {
            Ownership::NotLoadBalancer
        };
        let status_ips = status_ips(svc);
        if self.active {
            let freed = self.allocator.observe(&key, &status_ips);
            self.freed(freed);
        }
        let announced = announcement::current(svc);
        let previous = self.services.remove(&key);
        let (written, announced_written, last_problem, deprecated_reported) = match previous {
            Some(p) => {
                let written = p.written.filter(|w| *w != status_ips);
                let announced_written = p
                    .announced_written
                    .filter(|w| Some(w) != announced.as_ref());
                (
                    written,
                    announced_written,
                    p.last_problem,
                    p.deprecated_reported,
                )
            }
            None => (None, None, None, false),
        };
        self.services.insert(
            key.clone(),
            ServiceView {
                uid: svc.metadata.uid.clone(),
                resource_version: svc.metadata.resource_version.clone(),
                created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
                labels: svc.metadata.labels.clone().unwrap_or_default(),
                request: parse_request(svc),
                ownership,
                status_ips,
                written,
                announced,
                announced_written,
                last_problem,
                deprecated_reported,
                adopt_error: None,
            },
        );
        self.dirty.insert(key);
    }

    /// Records that a Service is gone.
    pub fn delete_service(&mut self, key: &ServiceKey) {
        self.services.remove(key);
        if self.active {
            let freed = self.allocator.observe(key, &[]);
            self.freed(freed);
        }
        self.dirty.insert(key.clone());
    }

    /// Every Service known (a relist deletes those it no longer lists).
    pub fn service_keys(&self) -> Vec<ServiceKey> {
        self.services.keys().cloned().collect()
    }

    /// Every namespace known (a relist deletes those it no longer lists).
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// Records a namespace's labels.
    pub fn apply_namespace(&mut self, ns: &Namespace) {
        let Some(name) = ns.metadata.name.clone() else {
            return;
        };
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        if self.namespaces.get(&name) == Some(&labels) {
            return;
        }
        self.namespaces.insert(name.clone(), labels);
        self.mark_namespace_dirty(&name);
    }

    /// Records that a namespace is gone.
    pub fn delete_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.mark_namespace_dirty(name);
        }
    }

    fn mark_namespace_dirty(&mut self, name: &str) {
        let keys: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        self.dirty.extend(keys);
    }

    /// Records a Node's InternalIP addresses (`None`: the Node is gone). Pool addresses equal
    /// to a Node's are never handed out; a change re-checks every Service.
    pub fn apply_node(&mut self, name: &str, addresses: Option<Vec<IpAddr>>) {
        let changed = match addresses {
            Some(ips) if !ips.is_empty() => {
                self.nodes.insert(name.to_string(), ips.clone()) != Some(ips)
            }
            _ => self.nodes.remove(name).is_some(),
        };
        if changed {
            self.pools_changed = true;
        }
    }

    /// Every Node known (a relist deletes those it no longer lists).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Records a pool. Status-only updates (our own writes) change nothing.
    pub fn apply_pool(&mut self, pool: &IPAddressPool) {
        let Some(name) = pool.metadata.name.clone() else {
            return;
        };
        if let Some(existing) = self.pools.get_mut(&name) {
            existing.uid = pool.metadata.uid.clone();
            if existing.spec == pool.spec && existing.generation == pool.metadata.generation {
                return;
            }
        }
        let (reported_overlap, reported_invalid, reported_node_addresses) = self
            .pools
            .remove(&name)
            .map(|p| {
                (
                    p.reported_overlap,
                    p.reported_invalid,
                    p.reported_node_addresses,
                )
            })
            .unwrap_or_default();
        self.pools.insert(
            name.clone(),
            PoolView {
                uid: pool.metadata.uid.clone(),
                generation: pool.metadata.generation,
                policy: PoolPolicy::from_spec(&name, &pool.spec),
                spec: pool.spec.clone(),
                reported_overlap,
                reported_invalid,
                reported_node_addresses,
            },
        );
        self.pools_changed = true;
    }

    /// Records that a pool is gone.
    pub fn delete_pool(&mut self, name: &str) {
        if self.pools.remove(name).is_some() {
            self.pools_changed = true;
        }
    }

    /// Pool names currently known.
    pub fn pool_names(&self) -> Vec<String> {
        self.pools.keys().cloned().collect()
    }

    /// Stops making decisions (leadership lost): forget the allocation; keep the caches.
    pub fn deactivate(&mut self) {
        self.active = false;
        self.allocator = Allocator::new();
        self.pending.clear();
        for view in self.services.values_mut() {
            view.written = None;
            view.announced_written = None;
        }
    }

    /// Starts making decisions: rebuild the allocation from the Services' status — every IP
    /// already held is adopted (oldest Service first) before any pending Service is served —
    /// then reconcile everything.
    pub fn activate(&mut self) -> Vec<Action> {
        self.active = true;
        self.allocator = Allocator::new();
        self.pools_changed = true;
        self.apply_pool_changes();
        let mut holders: Vec<(Option<Timestamp>, ServiceKey)> = self
            .services
            .iter()
            .filter(|(_, v)| v.ownership == Ownership::Ours && !v.status_ips.is_empty())
            .map(|(k, v)| (v.created, k.clone()))
            .collect();
        holders.sort();
        for (_, key) in holders {
            self.adopt(&key);
        }
        // What a status shows without being held (not adopted, or never ours) is given to
        // nobody else until that status is cleared.
        for (key, view) in &self.services {
            self.allocator.observe(key, &view.status_ips);
        }
        self.dirty.extend(self.services.keys().cloned());
        self.reconcile()
    }

    fn adopt(&mut self, key: &ServiceKey) {
        let Some(view) = self.services.get(key) else {
            return;
        };
        let empty = Labels::new();
        let namespace_labels = self.namespaces.get(&key.namespace).unwrap_or(&empty);
        // A Service whose annotations became garbage keeps the IP it holds (traffic keeps
        // flowing); it is checked as if it asked for nothing in particular.
        let lenient;
        let request = match &view.request {
            Ok(r) => r,
            Err(_) => {
                lenient = lenient_request(&view.status_ips);
                &lenient
            }
        };
        let ctx = ServiceContext {
            key,
            request,
            namespace_labels,
            service_labels: &view.labels,
        };
        let ips = view.status_ips.clone();
        match self.allocator.check(ctx, &ips) {
            Ok(()) => self.allocator.assign(ctx, &ips),
            Err(e) => {
                if let Some(v) = self.services.get_mut(key) {
                    v.adopt_error = Some(e.to_string());
                }
            }
        }
    }

    fn apply_pool_changes(&mut self) {
        if !self.pools_changed {
            return;
        }
        self.pools_changed = false;
        self.allocator.set_node_addresses(
            self.nodes
                .iter()
                .flat_map(|(node, ips)| ips.iter().map(move |ip| (*ip, node.clone())))
                .collect(),
        );
        self.allocator
            .set_pools(self.pools.values().map(|p| p.policy.clone()).collect());
        // Any Service may be affected: holders are re-checked, pending ones retried.
        self.dirty.extend(self.services.keys().cloned());
        for (name, pool) in self.pools.iter_mut() {
            let overlap = self
                .allocator
                .overlaps(name)
                .iter()
                .map(|o| format!("{} (also in pool {})", o.range, o.other))
                .collect::<Vec<_>>()
                .join(", ");
            if overlap != pool.reported_overlap {
                if !overlap.is_empty() {
                    self.pool_events.push(Action::Event(EventRecord {
                        regarding: Regarding::Pool {
                            name: name.clone(),
                            uid: pool.uid.clone(),
                        },
                        warning: true,
                        reason: reasons::POOL_OVERLAP,
                        message: format!("addresses {overlap} are never assigned"),
                        node: None,
                    }));
                }
                pool.reported_overlap = overlap;
            }
            let node_addresses = self
                .allocator
                .node_addresses_in(name)
                .iter()
                .map(|(ip, node)| format!("{ip} (node {node})"))
                .collect::<Vec<_>>()
                .join(", ");
            if node_addresses != pool.reported_node_addresses {
                if !node_addresses.is_empty() {
                    self.pool_events.push(Action::Event(EventRecord {
                        regarding: Regarding::Pool {
                            name: name.clone(),
                            uid: pool.uid.clone(),
                        },
                        warning: true,
                        reason: reasons::NODE_ADDRESS_IN_POOL,
                        message: format!(
                            "addresses {node_addresses} are Nodes' InternalIP addresses and are never assigned"
                        ),
                        node: None,
                    }));
                }
                pool.reported_node_addresses = node_addresses;
            }
            let invalid = pool.policy.invalid.join("; ");
            if invalid != pool.reported_invalid {
                if !invalid.is_empty() {
                    self.pool_events.push(Action::Event(EventRecord {
                        regarding: Regarding::Pool {
                            name: name.clone(),
                            uid: pool.uid.clone(),
                        },
                        warning: true,
                        reason: reasons::INVALID_ADDRESSES,
                        message: format!("ignored: {invalid}"),
                        node: None,
                    }));
                }
                pool.reported_invalid = invalid;
            }
        }
    }

    /// Whether anything waits to be reconciled.
    pub fn has_work(&self) -> bool {
        self.active && (!self.dirty.is_empty() || self.pools_changed)
    }

    /// Decides for every Service touched since the last call.
    pub fn reconcile(&mut self) -> Vec<Action> {
        if !self.active {
            return Vec::new();
        }
        self.apply_pool_changes();
        let mut actions = std::mem::take(&mut self.pool_events);
        // Freeing an IP can unblock a pending Service, which is then reconciled in this same
        // call; loop until nothing more is dirty.
        while let Some(key) = self.dirty.pop_first() {
            self.reconcile_one(&key, &mut actions);
        }
        actions
    }

    /// A status write failed: forget it so the next reconcile writes again.
    pub fn write_failed(&mut self, key: &ServiceKey) {
        if let Some(view) = self.services.get_mut(key) {
            view.written = None;
            view.announced_written = None;
            self.dirty.insert(key.clone());
        }
    }

    /// Records what a node's speaker reports it announces (`None`: the report is gone).
    /// Services whose IPs' announcer changes are decided again.
    pub fn apply_node_report(&mut self, node: &str, report: Option<&L2Announcements>) {
        let claims = report
            .map(|r| announcement::claims_of(node, r))
            .unwrap_or_default();
        let before = self.claimed_by.remove(node).unwrap_or_default();
        let mut touched: BTreeSet<IpAddr> = BTreeSet::new();
        for ip in before {
            if let Some(by_node) = self.claims.get_mut(&ip) {
                by_node.remove(node);
                if by_node.is_empty() {
                    self.claims.remove(&ip);
                }
            }
            touched.insert(ip);
        }
        if !claims.is_empty() {
            self.claimed_by
                .insert(node.to_string(), claims.keys().copied().collect());
        }
        for (ip, claim) in claims {
            let by_node = self.claims.entry(ip).or_default();
            if by_node.get(node) == Some(&claim) {
                touched.remove(&ip);
            } else {
                touched.insert(ip);
            }
            by_node.insert(node.to_string(), claim);
        }
        for ip in touched {
            self.dirty
                .extend(self.allocator.holders(ip).into_iter().cloned());
        }
    }

    /// Every node whose report is known (a relist deletes those it no longer lists).
    pub fn reporting_nodes(&self) -> Vec<String> {
        self.claimed_by.keys().cloned().collect()
    }

    /// Who announces `ip`, if any node claims it.
    pub fn announcer(&self, ip: IpAddr) -> Option<&Claim> {
        announcement::announcer(self.claims.get(&ip)?.values())
    }
}

/// A request that accepts whatever single-or-dual IPs a Service already holds.
fn lenient_request(ips: &[IpAddr]) -> ServiceRequest {
    let families: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
    let first = families.first().copied().unwrap_or(Family::V4);
    ServiceRequest {
        requested_ips: Vec::new(),
        pool: None,
        sharing_key: None,
        families: FamilyPolicy::PreferDual(first, first.other()),
        ports: Vec::new(),
        backend: Default::default(),
        deprecated_annotations: Vec::new(),
    }
}

/// IPs in the order of the Service's `ipFamilies`.
fn order_by_family(ips: &[IpAddr], policy: &FamilyPolicy) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(ips.len());
    for family in policy.families() {
        out.extend(ips.iter().filter(|ip| Family::of(**ip) == family));
    }
    out
}

mod pool_report;
mod reconcile;
#[cfg(test)]
mod tests;

pub use pool_report::{PoolCondition, PoolReport};
