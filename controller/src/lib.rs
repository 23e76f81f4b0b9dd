//! Herald's controller: allocates external IPs from IPAddressPools into Service status.
//!
//! Decisions (pure): [`free_list`] and [`allocator`] (who holds which IP), [`index`] (the
//! cluster as seen, and what to write). I/O (thin): [`runtime`] (watches and main loop),
//! [`writer`] (status, Events, pool status), [`leader`] (Lease election), [`metrics`]
//! (Prometheus and health endpoints), [`crds`] (generated manifests).

pub mod allocator;
pub mod crds;
pub mod free_list;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod runtime;
pub mod writer;
