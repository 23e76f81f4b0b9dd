//! The decisions, pure: plain data and the time in, verdicts out. No sockets, no API calls.
//!
//! - [`membership`]: the liveness table fed by signed heartbeats (their datagram format, and
//!   the checks made before any HMAC).
//! - [`fencing`]: the self-fencing rule, the one answer to "may this node announce now", its
//!   safety argument and the timings it needs.
//! - [`keyring`]: the membership keys: the last good one kept, rotations.
//! - [`inputs`]: Kubernetes objects translated into the election's inputs.
//! - [`eligibility`]: whether a node may own an IP; the hold-down of a (re)joining node.
//! - [`subnets`]: which interfaces face an IP's network; only nodes facing it may own it
//!   when some eligible node does.
//! - [`election`]: which eligible node owns an IP (rendezvous hashing).
//! - [`cluster_view`]: the election over the whole cluster as this node sees it.
//! - [`handover`]: break before make when an IP moves from a live owner.
//! - [`announcer`]: what to answer, the gratuitous schedule, conflicts.

pub mod announcer;
pub mod cluster_view;
pub mod election;
pub mod eligibility;
pub mod fencing;
pub mod handover;
pub mod inputs;
pub mod keyring;
pub mod membership;
pub mod subnets;

#[cfg(test)]
mod simulation;
