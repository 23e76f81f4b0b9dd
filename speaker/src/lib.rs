//! Herald's layer-2 speaker, grouped by role. Frames and membership facts come in; decisions
//! and frames go out.
//!
//! - [`wire`]: the wire formats, pure — Ethernet, ARP (RFC 826, 5227), NDP (RFC 4861), and the
//!   frame that dispatches between them.
//! - [`decide`]: the decisions, pure — the membership table, self-fencing, the translation of
//!   Kubernetes objects into the election's inputs, eligibility, the election, the hand-over
//!   delay and the announcer's state.
//! - [`edge`]: the I/O the runtime drives — watch caches, interfaces, packet sockets and their
//!   readers, heartbeat datagrams, the witness Lease, Service status writes.
//! - [`runtime`]: the main loop that wires the edges to the decisions.
//! - [`metrics`]: the speaker's Prometheus metrics.

pub mod decide;
pub mod edge;
pub mod metrics;
pub mod runtime;
pub mod wire;

pub use decide::election::{Candidate, ElectionKey, NodeName};
pub use decide::eligibility::{Exclusion, HoldDown, Liveness};
pub use wire::{DropReason, EthernetHeader, Frame, MacAddr, Message};
