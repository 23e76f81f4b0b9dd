//! Which Service holds which IP: pools' free lists, sharing, and the rules for taking an IP.
//!
//! Pure and synchronous. The Service status is the source of truth; this is rebuilt from it
//! whenever the controller becomes leader (see `index.rs`).
//!
//! An IP taken away from a Service is not free until the Service's status, as the watch shows
//! it, no longer holds it ([`Allocator::observe`]): until then it is *draining*, and nobody else
//! is given it. So a write that takes an IP away and fails never lets the write that would give
//! the IP to another Service be made: two Services never show one IP, even briefly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use herald_config::addresses::{Family, IpRange, buggy_count_v4, ip_to_u128, is_buggy, u128_to_ip};
use herald_config::selection::{Labels, PoolPolicy};
use herald_config::service::{BackendKey, FamilyPolicy, ServiceKey, ServicePort, ServiceRequest};

use crate::free_list::FreeList;

/// What the allocator needs to know about a Service to place it.
#[derive(Clone, Copy, Debug)]
pub struct ServiceContext<'a> {
    /// The Service.
    pub key: &'a ServiceKey,
    /// What it asks for.
    pub request: &'a ServiceRequest,
    /// Labels of its namespace (for `namespaceSelectors`).
    pub namespace_labels: &'a Labels,
    /// Its own labels (for `serviceSelectors`).
    pub service_labels: &'a Labels,
}

/// Why a Service got no IP (or cannot keep one). The text ends up in Events, so it names the
/// pool, IP or rule at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// The annotation names a pool that does not exist.
    #[error("pool {0:?} does not exist")]
    UnknownPool(String),
    /// The pool's serviceAllocation excludes this Service.
    #[error("pool {0:?} does not allow this Service (serviceAllocation namespaces/selectors)")]
    PoolNotAllowed(String),
    /// No pool may serve this Service automatically.
    #[error("no pool with autoAssign allows this Service")]
    NoEligiblePool,
    /// A requested IP is in no pool.
    #[error("IP {0} is not in any IPAddressPool")]
    NotInAnyPool(IpAddr),
    /// A requested IP is in two pools' overlap, which is never used.
    #[error("IP {ip} is in addresses shared by pools {pools}; overlapping addresses are not used")]
    InOverlap {
        /// The IP.
        ip: IpAddr,
        /// The pools that overlap there.
        pools: String,
    },
    /// A requested IP is in another pool than the one requested.
    #[error("IP {ip} is in pool {actual:?}, not in the requested pool {requested:?}")]
    WrongPool {
        /// The IP.
        ip: IpAddr,
        /// Where it is.
        actual: String,
        /// What the Service asked for.
        requested: String,
    },
    /// The IP is held by Services this one may not share with.
    #[error("IP {ip} is in use by {holder} and cannot be shared: {reason}")]
    InUse {
        /// The IP.
        ip: IpAddr,
        /// One current holder.
        holder: ServiceKey,
        /// Why sharing is refused.
        reason: String,
    },
    /// Every eligible pool is full (for the families wanted).
    #[error("no available IPs for {families} in pools {pools}")]
    Exhausted {
        /// The families that could not be served.
        families: String,
        /// The pools tried.
        pools: String,
    },
    /// The assignment no longer fits what the Service asks for.
    #[error("{0}")]
    Mismatch(String),
    /// The IP is a Node's address: answering ARP or NDP for it would take the node's traffic.
    #[error("IP {ip} is node {node}'s InternalIP address and is never assigned")]
    NodeAddress {
        /// The IP.
        ip: IpAddr,
        /// The node.
        node: String,
    },
}

impl AllocationError {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AllocationError::UnknownPool(_) => "unknown_pool",
            AllocationError::PoolNotAllowed(_) => "pool_not_allowed",
            AllocationError::NoEligiblePool => "no_eligible_pool",
            AllocationError::NotInAnyPool(_) => "not_in_any_pool",
            AllocationError::InOverlap { .. } => "overlap",
            AllocationError::WrongPool { .. } => "wrong_pool",
            AllocationError::InUse { .. } => "in_use",
            AllocationError::Exhausted { .. } => "exhausted",
            AllocationError::Mismatch(_) => "mismatch",
            AllocationError::NodeAddress { .. } => "node_address",
        }
    }
}

/// Addresses shared by two pools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// The other pool.
    pub other: String,
    /// The shared addresses.
    pub range: IpRange,
}

/// Counts for a pool's status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Held IPv4 / IPv6 addresses.
    pub assigned: [u128; 2],
    /// Free IPv4 / IPv6 addresses (saturating).
    pub available: [u128; 2],
    /// All usable IPv4 / IPv6 addresses (saturating).
    pub total: [u128; 2],
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

#[derive(Clone, Debug)]
struct PoolState {
    policy: PoolPolicy,
    /// Every address the pool declares, per family.
    declared: [FreeList; 2],
    /// Declared minus what other pools also declare: what may be handed out.
    usable: [FreeList; 2],
    /// Usable minus held.
    free: [FreeList; 2],
    overlaps: Vec<Overlap>,
    /// Held addresses attributed to this pool, per family.
    assigned: [u128; 2],
}

impl PoolState {
    fn skip_buggy(&self, family: Family) -> bool {
        self.policy.avoid_buggy_ips && family == Family::V4
    }

    fn free_count(&self, family: Family) -> u128 {
        let free = &self.free[family_index(family)];
        let mut n = free.len();
        if self.skip_buggy(family) {
            let buggy: u128 = free.spans().map(|(s, e)| buggy_count_v4(s, e)).sum();
            n -= buggy;
        }
        n
    }

    fn usable_count(&self, family: Family) -> u128 {
        let usable = &self.usable[family_index(family)];
        let mut n = usable.len();
        if self.skip_buggy(family) {
            let buggy: u128 = usable.spans().map(|(s, e)| buggy_count_v4(s, e)).sum();
            n -= buggy;
        }
        n
    }

    fn lowest_free(&self, family: Family) -> Option<IpAddr> {
        let skip = self.skip_buggy(family);
        self.free[family_index(family)]
            .lowest(|n| skip && is_buggy(u128_to_ip(family, n)))
            .map(|n| u128_to_ip(family, n))
    }
}

/// Who holds one IP, and who still shows it.
#[derive(Clone, Debug)]
struct IpUse {
    pool: Option<String>,
    sharing_key: Option<String>,
    backend: BackendKey,
    holders: BTreeMap<ServiceKey, Vec<ServicePort>>,
    /// Services whose status shows the IP though they do not hold it (it was taken away and
    /// the write has not been seen to land, or it was never theirs): nobody else gets it.
    draining: BTreeSet<ServiceKey>,
}

impl IpUse {
    fn unused(&self) -> bool {
        self.holders.is_empty() && self.draining.is_empty()
    }
}

/// The allocation state of the whole cluster.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    pools: BTreeMap<String, PoolState>,
    ips: HashMap<IpAddr, IpUse>,
    services: HashMap<ServiceKey, Vec<IpAddr>>,
    /// IPs held under each (pool, sharing key), so a sharer finds its partner without a scan.
    shared: HashMap<(String, String), BTreeSet<IpAddr>>,
    /// The IPs each Service's status shows, as last observed.
    shown: HashMap<ServiceKey, Vec<IpAddr>>,
    /// The Nodes' addresses, by IP: never handed out.
    node_addresses: BTreeMap<IpAddr, String>,
}

/// Why `key` may not take (or share) the IP `existing` describes: one Service in the way, and
/// the reason.
fn sharing_refusal(
    existing: &IpUse,
    key: &ServiceKey,
    request: &ServiceRequest,
) -> Option<(ServiceKey, String)> {
    if !existing.holders.contains_key(key)
        && let Some(other) = existing.draining.iter().find(|k| *k != key)
    {
        return Some((
            other.clone(),
            "its status still shows the IP until the write that takes it away is seen to land"
                .into(),
        ));
    }
    let others: Vec<(&ServiceKey, &Vec<ServicePort>)> =
        existing.holders.iter().filter(|(k, _)| *k != key).collect();
    let (first, _) = *others.first()?;
    let refuse = |reason: String| Some((first.clone(), reason));
    match (&existing.sharing_key, &request.sharing_key) {
        (Some(a), Some(b)) if a == b => {}
        (Some(a), Some(b)) => return refuse(format!("sharing keys differ ({a:?} vs {b:?})")),
        _ => return refuse("both Services need the same allow-shared-ip annotation".into()),
    }
    if existing.backend != request.backend {
        return refuse(
            "externalTrafficPolicy Local needs the same policy and selector on every sharer".into(),
        );
    }
    for (other, ports) in others {
        if let Some(p) = ports.iter().find(|p| request.ports.contains(p)) {
            return refuse(format!(
                "port {}/{} is also used by {other}",
                p.port, p.protocol
            ));
        }
    }
    None
}

impl Allocator {
    /// An allocator with no pools and no holders.
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// Records the Nodes' addresses (IP → node), which are never handed out; takes effect at
    /// the next [`Allocator::set_pools`].
    pub fn set_node_addresses(&mut self, addresses: BTreeMap<IpAddr, String>) {
        self.node_addresses = addresses;
    }

    /// The Nodes' addresses a pool declares, as (IP, node).
    pub fn node_addresses_in(&self, pool: &str) -> Vec<(IpAddr, &str)> {
        let Some(p) = self.pools.get(pool) else {
            return Vec::new();
        };
        self.node_addresses
            .iter()
            .filter(|(ip, _)| p.declared[family_index(Family::of(**ip))].contains(ip_to_u128(**ip)))
            .map(|(ip, node)| (*ip, node.as_str()))
            .collect()
    }

    /// Replaces the pools. Held IPs stay held (the index decides whether they are still valid);
    /// free lists are recomputed. Returns nothing: callers re-check every Service afterwards.
    pub fn set_pools(&mut self, policies: Vec<PoolPolicy>) {
        let mut pools: BTreeMap<String, PoolState> = policies
            .into_iter()
            .map(|policy| {
                let mut declared = [FreeList::new(), FreeList::new()];
                for r in &policy.ranges {
                    declared[family_index(r.family())].insert_range(r.start(), r.end());
                }
                let state = PoolState {
                    usable: declared.clone(),
                    free: [FreeList::new(), FreeList::new()],
                    declared,
                    policy,
                    overlaps: Vec::new(),
                    assigned: [0, 0],
                };
                (state.policy.name.clone(), state)
            })
            .collect();

        // Overlaps: pairwise intersections of declared spans. Pools are few; this runs only when
        // a pool changes.
        let names: Vec<String> = pools.keys().cloned().collect();
        let mut overlaps: Vec<(String, Overlap)> = Vec::new();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                for family in [Family::V4, Family::V6] {
                    let fi = family_index(family);
                    let spans_b: Vec<(u128, u128)> = pools[b].declared[fi].spans().collect();
                    for (sa, ea) in pools[a].declared[fi].spans() {
                        for &(sb, eb) in &spans_b {
                            let (s, e) = (sa.max(sb), ea.min(eb));
                            if s <= e {
                                let range = IpRange::from_numbers(family, s, e);
                                overlaps.push((
                                    a.clone(),
                                    Overlap {
                                        other: b.clone(),
                                        range,
                                    },
                                ));
                                overlaps.push((
                                    b.clone(),
                                    Overlap {
                                        other: a.clone(),
                                        range,
                                    },
                                ));
                            }
                        }
                    }
                }
            }
        }
        for (name, overlap) in overlaps {
            if let Some(p) = pools.get_mut(&name) {
                let fi = family_index(overlap.range.family());
                p.usable[fi].remove_range(overlap.range.start(), overlap.range.end());
                p.overlaps.push(overlap);
            }
        }
        for p in pools.values_mut() {
            for ip in self.node_addresses.keys() {
                p.usable[family_index(Family::of(*ip))].remove(ip_to_u128(*ip));
            }
            p.free = p.usable.clone();
        }
        self.pools = pools;

        // Re-attribute held IPs; drop them from free lists.
        let held: Vec<IpAddr> = self.ips.keys().copied().collect();
        self.shared.clear();
        for ip in held {
            let previous = self.ips.get(&ip).and_then(|u| u.pool.clone());
            let pool = previous
                .filter(|p| self.declares(p, ip))
                .or_else(|| self.declaring_pool(ip).map(str::to_string));
            self.take_from_pool(pool.as_deref(), ip);
            if let Some(u) = self.ips.get_mut(&ip) {
                u.pool = pool.clone();
                if let (Some(pool), Some(key)) = (pool, u.sharing_key.clone()) {
                    self.shared.entry((pool, key)).or_default().insert(ip);
                }
            }
        }
    }

    fn declares(&self, pool: &str, ip: IpAddr) -> bool {
        self.pools
            .get(pool)
            .is_some_and(|p| p.declared[family_index(Family::of(ip))].contains(ip_to_u128(ip)))
    }

    /// The first pool (by name) that declares `ip`.
    fn declaring_pool(&self, ip: IpAddr) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, p)| p.declared[family_index(Family::of(ip))].contains(ip_to_u128(ip)))
            .map(|(n, _)| n.as_str())
    }

    fn take_from_pool(&mut self, pool: Option<&str>, ip: IpAddr) {
        if let Some(p) = pool.and_then(|p| self.pools.get_mut(p)) {
            let fi = family_index(Family::of(ip));
            p.free[fi].remove(ip_to_u128(ip));
            p.assigned[fi] += 1;
        }
    }

    /// The IPs a Service holds.
    pub fn ips_of(&self, key: &ServiceKey) -> &[IpAddr] {
        self.services.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The pool an IP is attributed to while held, or the pool that declares it.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        match self.ips.get(&ip) {
            Some(u) => u.pool.as_deref(),
            None => self.declaring_pool(ip),
        }
    }

    /// The Services holding `ip`.
    pub fn holders(&self, ip: IpAddr) -> Vec<&ServiceKey> {
        self.ips
            .get(&ip)
            .map(|u| u.holders.keys().collect())
            .unwrap_or_default()
    }

    /// Pool names.
    pub fn pool_names(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }

    /// Addresses a pool shares with others.
    pub fn overlaps(&self, pool: &str) -> &[Overlap] {
        self.pools
            .get(pool)
            .map(|p| p.overlaps.as_slice())
            .unwrap_or(&[])
    }

    /// Counts for a pool's status and metrics.
    pub fn usage(&self, pool: &str) -> PoolUsage {
        let Some(p) = self.pools.get(pool) else {
            return PoolUsage::default();
        };
        let mut usage = PoolUsage {
            assigned: p.assigned,
            ..Default::default()
        };
        for f in [Family::V4, Family::V6] {
            usage.available[family_index(f)] = p.free_count(f);
            usage.total[family_index(f)] = p.usable_count(f);
        }
        usage
    }

    /// Whether `ips`, held or about to be held by this Service, fit what it asks for. Used to
    /// re-adopt status IPs and to re-check holders when anything changes.
    pub fn check(&self, ctx: ServiceContext<'_>, ips: &[IpAddr]) -> Result<(), AllocationError> {
        let wanted = ctx.request.families.families();
        let mut seen = Vec::new();
        for ip in ips {
            let family = Family::of(*ip);
            if !wanted.contains(&family) {
                return Err(AllocationError::Mismatch(format!(
                    "IP {ip} is {family}, which the Service no longer asks for"
                )));
            }
            if seen.contains(&family) {
                return Err(AllocationError::Mismatch(format!(
                    "the Service holds two {family} addresses"
                )));
            }
            seen.push(family);
        }
        if !ctx.request.requested_ips.is_empty() {
            let requested: BTreeSet<&IpAddr> = ctx.request.requested_ips.iter().collect();
            let held: BTreeSet<&IpAddr> = ips.iter().collect();
            if requested != held {
                return Err(AllocationError::Mismatch(format!(
                    "the Service now requests {}",
                    ctx.request
                        .requested_ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )));
            }
        }
        for ip in ips {
            if let Some(node) = self.node_addresses.get(ip) {
                return Err(AllocationError::NodeAddress {
                    ip: *ip,
                    node: node.clone(),
                });
            }
            self.fitting_pool(ctx, *ip)?;
            if let Some(u) = self.ips.get(ip)
                && let Some((holder, reason)) = sharing_refusal(u, ctx.key, ctx.request)
            {
                return Err(AllocationError::InUse {
                    ip: *ip,
                    holder,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// The pool that makes `ip` valid for this Service: any pool declaring it (addresses in an
    /// overlap are declared by several; the pool it is counted in comes first) that allows the
    /// Service and is the one it asked for, if it asked. Validity is per Service, so sharers
    /// from different namespaces may each be covered by a different overlapping pool.
    fn fitting_pool(&self, ctx: ServiceContext<'_>, ip: IpAddr) -> Result<String, AllocationError> {
        let fi = family_index(Family::of(ip));
        let counted_in = self.ips.get(&ip).and_then(|u| u.pool.as_deref());
        let mut candidates: Vec<&str> = self
            .pools
            .iter()
            .filter(|(_, p)| p.declared[fi].contains(ip_to_u128(ip)))
            .map(|(n, _)| n.as_str())
            .collect();
        if let Some(i) = candidates.iter().position(|p| Some(*p) == counted_in) {
            let p = candidates.remove(i);
            candidates.insert(0, p);
        }
        let mut first_error = AllocationError::NotInAnyPool(ip);
        for (i, pool) in candidates.iter().enumerate() {
            let fits = self
                .check_pool(ctx, pool)
                .and_then(|()| match &ctx.request.pool {
                    Some(requested) if requested != pool => Err(AllocationError::WrongPool {
                        ip,
                        actual: pool.to_string(),
                        requested: requested.clone(),
                    }),
                    _ => Ok(()),
                });
            match fits {
                Ok(()) => return Ok(pool.to_string()),
                Err(e) if i == 0 => first_error = e,
                Err(_) => {}
            }
        }
        Err(first_error)
    }

    fn check_pool(&self, ctx: ServiceContext<'_>, pool: &str) -> Result<(), AllocationError> {
        let state = self
            .pools
            .get(pool)
            .ok_or_else(|| AllocationError::UnknownPool(pool.to_string()))?;
        if state
            .policy
            .allows(&ctx.key.namespace, ctx.namespace_labels, ctx.service_labels)
        {
            Ok(())
        } else {
            Err(AllocationError::PoolNotAllowed(pool.to_string()))
        }
    }

    /// Records that the Service holds `ips` (after [`Allocator::check`]). Any earlier holding
    /// of this Service is released first.
    pub fn assign(&mut self, ctx: ServiceContext<'_>, ips: &[IpAddr]) {
        self.release(ctx.key);
        for ip in ips {
            self.hold(ctx, *ip);
        }
    }

    fn hold(&mut self, ctx: ServiceContext<'_>, ip: IpAddr) {
        if !self.ips.contains_key(&ip) {
            let pool = self
                .fitting_pool(ctx, ip)
                .ok()
                .or_else(|| self.declaring_pool(ip).map(str::to_string));
            self.take(pool, ip);
        }
        if let Some(u) = self.ips.get_mut(&ip) {
            // The first holder (of a new IP, or of one only its own status still showed) sets
            // the terms on which others may share it.
            if u.holders.is_empty() {
                u.sharing_key = ctx.request.sharing_key.clone();
                u.backend = ctx.request.backend.clone();
                if let (Some(pool), Some(key)) = (&u.pool, &u.sharing_key) {
                    self.shared
                        .entry((pool.clone(), key.clone()))
                        .or_default()
                        .insert(ip);
                }
            }
            u.draining.remove(ctx.key);
            u.holders.insert(ctx.key.clone(), ctx.request.ports.clone());
        }
        let held = self.services.entry(ctx.key.clone()).or_default();
        if !held.contains(&ip) {
            held.push(ip);
        }
    }

    /// Takes `ip` out of `pool`'s free addresses, held by nobody yet.
    fn take(&mut self, pool: Option<String>, ip: IpAddr) {
        self.take_from_pool(pool.as_deref(), ip);
        self.ips.insert(
            ip,
            IpUse {
                pool,
                sharing_key: None,
                backend: BackendKey::default(),
                holders: BTreeMap::new(),
                draining: BTreeSet::new(),
            },
        );
    }

    /// Takes every IP the Service holds away from it; returns those now free. An IP its status
    /// still shows drains instead (see [`Allocator::observe`]).
    pub fn release(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        let Some(ips) = self.services.remove(key) else {
            return Vec::new();
        };
        let shown = self.shown.get(key).cloned().unwrap_or_default();
        let mut freed = Vec::new();
        for ip in ips {
            let Some(u) = self.ips.get_mut(&ip) else {
                continue;
            };
            u.holders.remove(key);
            if shown.contains(&ip) {
                u.draining.insert(key.clone());
            }
            if u.holders.is_empty() {
                // Nobody shares under its key any more.
                if let (Some(pool), Some(sharing)) = (&u.pool, u.sharing_key.take()) {
                    let slot = (pool.clone(), sharing);
                    if let Some(set) = self.shared.get_mut(&slot) {
                        set.remove(&ip);
                        if set.is_empty() {
                            self.shared.remove(&slot);
                        }
                    }
                }
            }
            if self.free_if_unused(ip) {
                freed.push(ip);
            }
        }
        freed
    }

    /// Returns `ip` to its pool when nobody holds or shows it any more.
    fn free_if_unused(&mut self, ip: IpAddr) -> bool {
        if !self.ips.get(&ip).is_some_and(IpUse::unused) {
            return false;
        }
        let Some(u) = self.ips.remove(&ip) else {
            return false;
        };
        if let Some(p) = u.pool.as_ref().and_then(|pool| self.pools.get_mut(pool)) {
            let fi = family_index(Family::of(ip));
            p.assigned[fi] = p.assigned[fi].saturating_sub(1);
            if p.usable[fi].contains(ip_to_u128(ip)) {
                p.free[fi].insert(ip_to_u128(ip));
            }
        }
        true
    }

    /// Records what a Service's status shows now (empty: nothing, or the Service is gone).
    /// An IP it shows without holding is kept from everyone else until its status no longer
    /// shows it; returns the IPs this frees.
    pub fn observe(&mut self, key: &ServiceKey, ips: &[IpAddr]) -> Vec<IpAddr> {
        let before = if ips.is_empty() {
            self.shown.remove(key)
        } else {
            self.shown.insert(key.clone(), ips.to_vec())
        }
        .unwrap_or_default();
        let mut freed = Vec::new();
        for ip in before.iter().filter(|ip| !ips.contains(ip)) {
            if let Some(u) = self.ips.get_mut(ip)
                && u.draining.remove(key)
                && self.free_if_unused(*ip)
            {
                freed.push(*ip);
            }
        }
        for ip in ips.iter().filter(|ip| !before.contains(ip)) {
            if !self.ips.contains_key(ip) {
                let pool = self.declaring_pool(*ip).map(str::to_string);
                self.take(pool, *ip);
            }
            if let Some(u) = self.ips.get_mut(ip)
                && !u.holders.contains_key(key)
            {
                u.draining.insert(key.clone());
            }
        }
        freed
    }

    /// Finds and takes IPs for a Service that holds none: requested IPs, else the requested
    /// pool, else pools by `serviceAllocation` priority, then the general auto-assign pools.
    pub fn allocate(&mut self, ctx: ServiceContext<'_>) -> Result<Vec<IpAddr>, AllocationError> {
        let ips = if ctx.request.requested_ips.is_empty() {
            self.choose(ctx, &ctx.request.families, None)?
        } else {
            for ip in &ctx.request.requested_ips {
                self.check_requested(*ip)?;
            }
            ctx.request.requested_ips.clone()
        };
        self.check(ctx, &ips)?;
        self.assign(ctx, &ips);
        Ok(ips)
    }

    /// For PreferDualStack Services holding one family: takes the other if a pool now has it.
    /// Returns the added IP.
    pub fn extend(&mut self, ctx: ServiceContext<'_>) -> Option<IpAddr> {
        let FamilyPolicy::PreferDual(a, b) = ctx.request.families else {
            return None;
        };
        if !ctx.request.requested_ips.is_empty() {
            return None;
        }
        let held: Vec<IpAddr> = self.ips_of(ctx.key).to_vec();
        let held_families: Vec<Family> = held.iter().map(|ip| Family::of(*ip)).collect();
        let missing = [a, b].into_iter().find(|f| !held_families.contains(f))?;
        let prefer = held
            .first()
            .and_then(|ip| self.pool_of(*ip))
            .map(str::to_string);
        let ips = self
            .choose(ctx, &FamilyPolicy::Single(missing), prefer.as_deref())
            .ok()?;
        let ip = *ips.first()?;
        let mut all = held;
        all.push(ip);
        self.check(ctx, &all).ok()?;
        self.hold(ctx, ip);
        Some(ip)
    }

    fn check_requested(&self, ip: IpAddr) -> Result<(), AllocationError> {
        let fi = family_index(Family::of(ip));
        let n = ip_to_u128(ip);
        let declaring: Vec<&str> = self
            .pools
            .iter()
            .filter(|(_, p)| p.declared[fi].contains(n))
            .map(|(name, _)| name.as_str())
            .collect();
        match declaring.as_slice() {
            [] => Err(AllocationError::NotInAnyPool(ip)),
            [_] => Ok(()),
            many if !self.ips.contains_key(&ip) => Err(AllocationError::InOverlap {
                ip,
                pools: many.join(", "),
            }),
            // Already held in an overlap (kept from before the overlap appeared): may be shared.
            _ => Ok(()),
        }
    }

    /// Candidate pools in the order they are tried.
    fn candidates(
        &self,
        ctx: ServiceContext<'_>,
        prefer: Option<&str>,
    ) -> Result<Vec<String>, AllocationError> {
        if let Some(pool) = &ctx.request.pool {
            self.check_pool(ctx, pool)?;
            return Ok(vec![pool.clone()]);
        }
        let mut ranked: Vec<((u8, i32), &str)> = self
            .pools
            .iter()
            .filter(|(_, p)| {
                p.policy
                    .allows(&ctx.key.namespace, ctx.namespace_labels, ctx.service_labels)
            })
            .filter_map(|(name, p)| p.policy.auto_rank().map(|rank| (rank, name.as_str())))
            .collect();
        ranked.sort();
        let mut names: Vec<String> = ranked.into_iter().map(|(_, n)| n.to_string()).collect();
        if let Some(prefer) = prefer
            && let Some(i) = names.iter().position(|n| *n == prefer)
        {
            let p = names.remove(i);
            names.insert(0, p);
        }
        if names.is_empty() {
            return Err(AllocationError::NoEligiblePool);
        }
        Ok(names)
    }

    /// An IP of `family` in `pool` for this Service: a compatible IP already shared under the
    /// Service's key, else the lowest free one.
    fn pick(&self, ctx: ServiceContext<'_>, pool: &str, family: Family) -> Option<IpAddr> {
        if let Some(key) = &ctx.request.sharing_key
            && let Some(ips) = self.shared.get(&(pool.to_string(), key.clone()))
            && let Some(ip) = ips.iter().find(|ip| {
                Family::of(**ip) == family
                    && self
                        .ips
                        .get(ip)
                        .is_some_and(|u| sharing_refusal(u, ctx.key, ctx.request).is_none())
            })
        {
            return Some(*ip);
        }
        self.pools.get(pool)?.lowest_free(family)
    }

    fn choose(
        &self,
        ctx: ServiceContext<'_>,
        policy: &FamilyPolicy,
        prefer: Option<&str>,
    ) -> Result<Vec<IpAddr>, AllocationError> {
        let pools = self.candidates(ctx, prefer)?;
        let from_one = |families: &[Family]| {
            pools.iter().find_map(|pool| {
                families
                    .iter()
                    .map(|f| self.pick(ctx, pool, *f))
                    .collect::<Option<Vec<IpAddr>>>()
            })
        };
        let found = match *policy {
            FamilyPolicy::Single(f) => from_one(&[f]),
            FamilyPolicy::RequireDual(a, b) => from_one(&[a, b]),
            FamilyPolicy::PreferDual(a, b) => from_one(&[a, b])
                .or_else(|| from_one(&[a]))
                .or_else(|| from_one(&[b])),
        };
        found.ok_or_else(|| AllocationError::Exhausted {
            families: policy
                .families()
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            pools: pools.join(", "),
        })
    }
}

#[cfg(test)]
mod tests;
