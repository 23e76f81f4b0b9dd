//! Herald's layer-2 speaker: the pure, I/O-free core. Frames and membership facts come in;
//! decisions and frames go out. Sockets, rtnetlink, gossip and the Kubernetes API live at the
//! edge and only feed these modules.
//!
//! - [`frame`]: an Ethernet frame decoded into the messages the speaker acts on, or dropped
//!   with a [`DropReason`]; [`MacAddr`].
//! - [`arp`]: ARP requests and replies, answers and gratuitous announcements (RFC 826, 5227).
//! - [`ndp`]: Neighbor Solicitations and Advertisements, solicited-node groups (RFC 4861).
//! - [`election`]: which eligible node owns an IP — rendezvous hashing.
//! - [`eligibility`]: whether a node may own an IP, and the hold-down that keeps a flapping
//!   node from pulling IPs back and forth.

pub mod announcer;
pub mod arp;
pub mod cluster_view;
pub mod election;
pub mod eligibility;
pub mod frame;
pub mod handover;
pub mod heartbeats;
pub mod interfaces;
pub mod link_events;
pub mod membership;
pub mod metrics;
pub mod ndp;
pub mod packet_socket;
pub mod responder;
pub mod runtime;
pub mod service_status;
pub mod slim;
pub mod witness;

pub use arp::{ArpReply, ArpRequest};
pub use election::{Candidate, ElectionKey, NodeName};
pub use eligibility::{Exclusion, HoldDown, Liveness};
pub use frame::{DropReason, EthernetHeader, Frame, MacAddr, Message};
pub use ndp::{NeighborAdvertisement, NeighborSolicitation};
