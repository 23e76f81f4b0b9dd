//! What each pool's status says: addresses assigned and available per family, and whether its
//! entries are valid and overlap another pool's, computed from the allocation.

use herald_config::pool::{CONDITION_OVERLAPPING, CONDITION_VALID};

use super::ControllerIndex;

/// One condition of a pool's status, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolCondition {
    /// The condition type (`Valid`, `Overlapping`).
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message (empty when there is nothing to say).
    pub message: String,
}

/// A pool's computed status, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolReport {
    /// Pool name.
    pub name: String,
    /// Generation the report is based on.
    pub generation: Option<i64>,
    /// Held per family (IPv4, IPv6).
    pub assigned: [u128; 2],
    /// Free per family.
    pub available: [u128; 2],
    /// Usable per family.
    pub total: [u128; 2],
    /// The `Valid` and `Overlapping` conditions.
    pub conditions: Vec<PoolCondition>,
}

impl ControllerIndex {
    /// Status of every pool, computed from the allocation (empty while inactive).
    pub fn pool_reports(&self) -> Vec<PoolReport> {
        if !self.active {
            return Vec::new();
        }
        self.pools
            .iter()
            .map(|(name, pool)| {
                let usage = self.allocator.usage(name);
                let valid = if pool.policy.invalid.is_empty() {
                    PoolCondition {
                        type_: CONDITION_VALID,
                        status: true,
                        reason: "AddressesValid",
                        message: String::new(),
                    }
                } else {
                    PoolCondition {
                        type_: CONDITION_VALID,
                        status: false,
                        reason: "InvalidAddresses",
                        message: format!("ignored: {}", pool.policy.invalid.join("; ")),
                    }
                };
                let overlapping = if pool.reported_overlap.is_empty() {
                    PoolCondition {
                        type_: CONDITION_OVERLAPPING,
                        status: false,
                        reason: "NoOverlap",
                        message: String::new(),
                    }
                } else {
                    PoolCondition {
                        type_: CONDITION_OVERLAPPING,
                        status: true,
                        reason: "OverlapsOtherPool",
                        message: format!("addresses {} are never assigned", pool.reported_overlap),
                    }
                };
                PoolReport {
                    name: name.clone(),
                    generation: pool.generation,
                    assigned: usage.assigned,
                    available: usage.available,
                    total: usage.total,
                    conditions: vec![valid, overlapping],
                }
            })
            .collect()
    }
}
