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
use herald_config::pool::{
    CONDITION_OVERLAPPING, CONDITION_VALID, IPAddressPool, IPAddressPoolSpec,
};
use herald_config::selection::{Labels, PoolPolicy};
use herald_config::service::{
    FamilyPolicy, ServedClass, ServiceInputError, ServiceKey, ServiceRequest, is_ours,
    parse_request, status_ips,
};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::jiff::Timestamp;

use crate::allocator::{AllocationError, Allocator, ServiceContext};

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
}

/// What the writer must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set `status.loadBalancer.ingress` of a Service to exactly these IPs (empty clears it).
    WriteIngress {
        /// The Service.
        key: ServiceKey,
        /// The IPs, in the Service's family order.
        ips: Vec<IpAddr>,
        /// The write takes IPs away (it must land before IPs are given to others).
        shrinks: bool,
    },
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
    created: Option<Timestamp>,
    labels: Labels,
    ownership: Ownership,
    request: Result<ServiceRequest, ServiceInputError>,
    /// `status.loadBalancer.ingress[].ip` as last observed.
    status_ips: Vec<IpAddr>,
    /// What we last wrote and have not seen echoed by the watch yet.
    written: Option<Vec<IpAddr>>,
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
}

/// A pool's computed status, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolReport {
    /// Pool name.
    pub name: String,
    /// Generation the report is based on.
    pub generation: Option<i64>,
    /// Held / free / usable counts per family (IPv4, IPv6).
    pub assigned: [u128; 2],
    /// Free per family.
    pub available: [u128; 2],
    /// Usable per family.
    pub total: [u128; 2],
    /// (type, status, reason, message) for each condition.
    pub conditions: Vec<(&'static str, bool, &'static str, String)>,
}

/// The controller's view of the cluster.
#[derive(Debug)]
pub struct ControllerIndex {
    class: ServedClass,
    services: HashMap<ServiceKey, ServiceView>,
    namespaces: HashMap<String, Labels>,
    pools: BTreeMap<String, PoolView>,
    allocator: Allocator,
    active: bool,
    dirty: BTreeSet<ServiceKey>,
    pending: BTreeSet<ServiceKey>,
    pools_changed: bool,
    pool_events: Vec<Action>,
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
            pools: BTreeMap::new(),
            allocator: Allocator::new(),
            active: false,
            dirty: BTreeSet::new(),
            pending: BTreeSet::new(),
            pools_changed: false,
            pool_events: Vec::new(),
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
        let previous = self.services.remove(&key);
        let (written, last_problem, deprecated_reported) = match previous {
            Some(p) => {
                let written = p.written.filter(|w| *w != status_ips);
                (written, p.last_problem, p.deprecated_reported)
            }
            None => (None, None, false),
        };
        self.services.insert(
            key.clone(),
            ServiceView {
                uid: svc.metadata.uid.clone(),
                created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
                labels: svc.metadata.labels.clone().unwrap_or_default(),
                request: parse_request(svc),
                ownership,
                status_ips,
                written,
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
        self.dirty.insert(key.clone());
    }

    /// Forgets every Service (a watch restarted with a fresh list).
    pub fn service_keys(&self) -> Vec<ServiceKey> {
        self.services.keys().cloned().collect()
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
        let (reported_overlap, reported_invalid) = self
            .pools
            .remove(&name)
            .map(|p| (p.reported_overlap, p.reported_invalid))
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
                    }));
                }
                pool.reported_overlap = overlap;
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
            self.dirty.insert(key.clone());
        }
    }

    fn freed(&mut self, freed: Vec<IpAddr>) {
        if !freed.is_empty() {
            self.dirty.extend(self.pending.iter().cloned());
        }
    }

    fn reconcile_one(&mut self, key: &ServiceKey, actions: &mut Vec<Action>) {
        let Some(view) = self.services.get(key) else {
            self.pending.remove(key);
            let freed = self.allocator.release(key);
            self.freed(freed);
            return;
        };
        match view.ownership {
            Ownership::Ours => {}
            Ownership::OtherClass => {
                self.pending.remove(key);
                let freed = self.allocator.release(key);
                self.freed(freed);
                return;
            }
            Ownership::NotLoadBalancer => {
                self.pending.remove(key);
                let freed = self.allocator.release(key);
                let had_ours = !freed.is_empty()
                    || view
                        .status_ips
                        .iter()
                        .any(|ip| self.allocator.pool_of(*ip).is_some());
                if had_ours && !view.status_ips.is_empty() {
                    self.write(key, Vec::new(), actions);
                }
                self.freed(freed);
                return;
            }
        }

        if !view
            .request
            .as_ref()
            .map_or(true, |r| r.deprecated_annotations.is_empty())
            && !view.deprecated_reported
        {
            let keys = view
                .request
                .as_ref()
                .map(|r| r.deprecated_annotations.join(", "))
                .unwrap_or_default();
            actions.push(self.event(
                key,
                true,
                reasons::DEPRECATED_ANNOTATION,
                format!("{keys}: the metallb.universe.tf/ prefix is deprecated; use herald.dev/ (or metallb.io/)"),
            ));
            if let Some(v) = self.services.get_mut(key) {
                v.deprecated_reported = true;
            }
        }

        let Some(view) = self.services.get(key) else {
            return;
        };
        let request = match &view.request {
            Ok(r) => r.clone(),
            Err(e) => {
                // Keep whatever it holds; tell the user what is wrong, once.
                let message = e.to_string();
                let held = self.allocator.ips_of(key).to_vec();
                if !held.is_empty() {
                    self.write(key, held, actions);
                }
                self.problem(key, reasons::INVALID_REQUEST, message, actions);
                return;
            }
        };
        let empty = Labels::new();
        let namespace_labels = self
            .namespaces
            .get(&key.namespace)
            .unwrap_or(&empty)
            .clone();
        let service_labels = view.labels.clone();
        let status_ips = view.status_ips.clone();
        let adopt_error = view.adopt_error.clone();
        let ctx = ServiceContext {
            key,
            request: &request,
            namespace_labels: &namespace_labels,
            service_labels: &service_labels,
        };

        let held = self.allocator.ips_of(key).to_vec();
        if !held.is_empty() {
            match self.allocator.check(ctx, &held) {
                Ok(()) => {
                    self.pending.remove(key);
                    // Re-hold so the allocator sees the Service's current ports and sharing key.
                    self.allocator.assign(ctx, &held);
                    let mut ips = held;
                    if let Some(added) = self.allocator.extend(ctx) {
                        ips.push(added);
                        actions.push(self.event(
                            key,
                            false,
                            reasons::IP_ALLOCATED,
                            format!("Assigned IP [{}] (added {added})", join_ips(&ips)),
                        ));
                    }
                    // PreferDualStack holding one family waits for the other like a pending
                    // Service: it is retried whenever an IP is freed or a pool changes.
                    let held_families: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
                    if !request.families.is_complete(&held_families) {
                        self.pending.insert(key.clone());
                    }
                    let ips = order_by_family(&ips, &request.families);
                    self.write(key, ips, actions);
                    self.clear_problem(key);
                    return;
                }
                Err(e) => {
                    let freed = self.allocator.release(key);
                    actions.push(self.event(
                        key,
                        true,
                        reasons::CLEAR_ASSIGNMENT,
                        format!("clearing IP [{}]: {e}", join_ips(&held)),
                    ));
                    self.freed(freed);
                }
            }
        } else if !status_ips.is_empty() {
            // The status holds IPs we did not adopt (or someone else wrote): they are replaced.
            let why = adopt_error.unwrap_or_else(|| "not assigned by this controller".into());
            actions.push(self.event(
                key,
                true,
                reasons::CLEAR_ASSIGNMENT,
                format!("clearing IP [{}]: {why}", join_ips(&status_ips)),
            ));
            if let Some(v) = self.services.get_mut(key) {
                v.adopt_error = None;
            }
        }

        match self.allocator.allocate(ctx) {
            Ok(ips) => {
                let held_families: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
                if request.families.is_complete(&held_families) {
                    self.pending.remove(key);
                } else {
                    self.pending.insert(key.clone());
                }
                let ips = order_by_family(&ips, &request.families);
                actions.push(self.event(
                    key,
                    false,
                    reasons::IP_ALLOCATED,
                    format!("Assigned IP [{}]", join_ips(&ips)),
                ));
                self.write(key, ips, actions);
                self.clear_problem(key);
            }
            Err(e) => {
                self.pending.insert(key.clone());
                if !status_ips.is_empty() {
                    self.write(key, Vec::new(), actions);
                }
                let label = e.metric_label();
                if self.problem(
                    key,
                    reasons::ALLOCATION_FAILED,
                    format!("Failed to allocate IP for {key}: {e}"),
                    actions,
                ) {
                    actions.push(Action::CountFailure(label));
                }
                if matches!(e, AllocationError::Exhausted { .. }) {
                    tracing::debug!(service = %key, "waiting for a free IP");
                }
            }
        }
    }

    fn event(
        &self,
        key: &ServiceKey,
        warning: bool,
        reason: &'static str,
        message: String,
    ) -> Action {
        Action::Event(EventRecord {
            regarding: Regarding::Service {
                key: key.clone(),
                uid: self.services.get(key).and_then(|v| v.uid.clone()),
            },
            warning,
            reason,
            message,
        })
    }

    /// Emits a Warning once per distinct problem. Returns whether it was new.
    fn problem(
        &mut self,
        key: &ServiceKey,
        reason: &'static str,
        message: String,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(view) = self.services.get(key) else {
            return false;
        };
        if view.last_problem.as_ref() == Some(&(reason, message.clone())) {
            return false;
        }
        actions.push(self.event(key, true, reason, message.clone()));
        if let Some(view) = self.services.get_mut(key) {
            view.last_problem = Some((reason, message));
        }
        true
    }

    fn clear_problem(&mut self, key: &ServiceKey) {
        if let Some(view) = self.services.get_mut(key) {
            view.last_problem = None;
        }
    }

    fn write(&mut self, key: &ServiceKey, ips: Vec<IpAddr>, actions: &mut Vec<Action>) {
        let Some(view) = self.services.get_mut(key) else {
            return;
        };
        if view.written.as_ref() == Some(&ips) || (view.written.is_none() && view.status_ips == ips)
        {
            return;
        }
        let shrinks = view.status_ips.iter().any(|ip| !ips.contains(ip));
        view.written = Some(ips.clone());
        actions.push(Action::WriteIngress {
            key: key.clone(),
            ips,
            shrinks,
        });
    }

    /// Status of every pool, computed from the allocation (empty while inactive).
    pub fn pool_reports(&self) -> Vec<PoolReport> {
        if !self.active {
            return Vec::new();
        }
        self.pools
            .iter()
            .map(|(name, pool)| {
                let usage = self.allocator.usage(name);
                let mut conditions = Vec::new();
                if pool.policy.invalid.is_empty() {
                    conditions.push((CONDITION_VALID, true, "AddressesValid", String::new()));
                } else {
                    conditions.push((
                        CONDITION_VALID,
                        false,
                        "InvalidAddresses",
                        format!("ignored: {}", pool.policy.invalid.join("; ")),
                    ));
                }
                if pool.reported_overlap.is_empty() {
                    conditions.push((CONDITION_OVERLAPPING, false, "NoOverlap", String::new()));
                } else {
                    conditions.push((
                        CONDITION_OVERLAPPING,
                        true,
                        "OverlapsOtherPool",
                        format!("addresses {} are never assigned", pool.reported_overlap),
                    ));
                }
                PoolReport {
                    name: name.clone(),
                    generation: pool.generation,
                    assigned: usage.assigned,
                    available: usage.available,
                    total: usage.total,
                    conditions,
                }
            })
            .collect()
    }

    /// The uid of a pool (for Events).
    pub fn pool_uid(&self, name: &str) -> Option<String> {
        self.pools.get(name).and_then(|p| p.uid.clone())
    }

    /// The IPs the allocation gives a Service (for tests and diagnostics).
    pub fn assigned(&self, key: &ServiceKey) -> Vec<IpAddr> {
        self.allocator.ips_of(key).to_vec()
    }

    /// Services waiting for an IP.
    pub fn pending(&self) -> impl Iterator<Item = &ServiceKey> {
        self.pending.iter()
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

#[cfg(test)]
mod tests;
