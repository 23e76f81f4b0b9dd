//! The wire formats, pure: bytes in, typed messages out, and back. No sockets here.
//!
//! One module owns the Ethernet frame and the others build on it, never the other way round:
//! [`drop_reason`] ← [`ethernet`] ← [`arp`], [`ndp`] ← [`frame`] (the dispatch by ethertype,
//! and [`Message`], the sum of what the speaker acts on).

pub mod arp;
pub mod drop_reason;
pub mod ethernet;
pub mod frame;
pub mod ndp;

pub use arp::{ArpReply, ArpRequest};
pub use drop_reason::DropReason;
pub use ethernet::{EthernetFrame, EthernetHeader, MacAddr};
pub use frame::{Frame, Message};
pub use ndp::{NeighborAdvertisement, NeighborSolicitation};
