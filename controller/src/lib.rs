//! Herald's controller: allocates external IPs from IPAddressPools into Service status.
//!
//! Decisions (pure): [`free_list`] and [`allocator`] (who holds which IP), [`index`] (the
//! cluster as seen, and what to write). I/O (thin): [`watches`] (the watches and their relist
//! bookkeeping), [`runtime`] (the main loop),
//! [`writer`] (status, Events, pool status), [`leader`] (Lease election), [`api`] (every
//! request bounded in time), [`metrics`]
//! (Prometheus and health endpoints), [`crds`] (generated manifests).

pub mod allocator;
pub mod api;
pub mod crds;
#[cfg(test)]
mod fake_api;
pub mod free_list;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod runtime;
pub mod watches;
pub mod writer;
