//! Herald's controller: allocates external IPs from IPAddressPools into Service status.
//!
//! - [`free_list`], [`allocator`]: who holds which IP (pure).
//! - [`index`]: the cluster as the controller sees it, and the decisions it makes (pure).

pub mod allocator;
pub mod free_list;
pub mod index;
