//! The edges: the I/O the runtime drives, each as thin as it can be. Every decision they need
//! is asked of [`crate::decide`].
//!
//! - [`watches`]: the Kubernetes watches and the slimmed caches they fill ([`slim`]).
//! - [`interfaces`] and [`link_events`]: this node's interfaces, and rtnetlink's news of them.
//! - [`packet_socket`]: AF_PACKET sockets with BPF filters; [`responder`]: the socket readers
//!   that answer ARP and NDP from a snapshot.
//! - [`heartbeats`]: the membership's UDP I/O on its own task; [`witness`]: the tie-breaking
//!   Lease.
//! - [`service_status`]: this node's report of what it announces, and the speaker's Events;
//!   [`node_events`]: the Events about this speaker's own Node (its membership key).

pub mod heartbeats;
pub mod interfaces;
pub mod link_events;
pub mod node_events;
pub mod packet_socket;
pub mod responder;
pub mod service_status;
pub mod slim;
pub mod watches;
pub mod witness;
