//! Which speakers are alive: signed heartbeats over UDP, and the liveness table they feed.
//!
//! Every speaker sends a heartbeat to every other node's address every `interval` (100 ms by
//! default). A peer not heard from for `dead_after` is dead. This is deliberately simpler than
//! SWIM: detection time is one timeout, with no suspicion phase stretching it (memberlist's
//! suspicion multiplier is why MetalLB needs ≥ 4 s), at the price of O(nodes²) datagrams —
//! small for the tens of nodes a layer-2 segment holds (30 nodes: 9 000 datagrams/s of ~150
//! bytes cluster-wide).
//!
//! Every datagram carries an HMAC-SHA256 tag with the key from a Secret, so nothing without
//! the key can join, and a replayed heartbeat is refused by its (incarnation, sequence): nobody
//! can forge a death (a `leaving` heartbeat) or keep a dead node alive.
//!
//! The table is pure: the caller passes the time in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::election::NodeName;

/// The wire format version (first byte of every datagram).
pub const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// Datagrams larger than this are refused before any parsing.
pub const MAX_DATAGRAM: usize = 4096;

/// One heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's node name.
    pub node: String,
    /// Grows with every restart of the sender (its start time in ns since the epoch), so a
    /// restarted speaker's sequence numbers start over without looking like replays.
    pub incarnation: u64,
    /// Grows with every heartbeat of one incarnation.
    pub seq: u64,
    /// The sender is shutting down: take its IPs over now.
    pub leaving: bool,
    /// The sender's interfaces that are up with carrier (only it can know them).
    pub links: Vec<String>,
    /// How long the sender has been a member, so every speaker times its hold-down from the
    /// same moment.
    pub member_for_ms: u64,
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    /// Shorter than a version byte and a tag, or longer than [`MAX_DATAGRAM`].
    #[error("truncated or oversized datagram")]
    BadLength,
    /// Unknown wire version.
    #[error("unknown version")]
    BadVersion,
    /// The tag does not match: wrong key, or forged.
    #[error("bad authentication tag")]
    BadTag,
    /// Authentic, but not a heartbeat we understand.
    #[error("malformed heartbeat")]
    Malformed,
    /// Authentic, but not newer than what we already have: a replay or reordering.
    #[error("replayed or stale heartbeat")]
    Stale,
    /// Our own heartbeat came back.
    #[error("own heartbeat")]
    OwnHeartbeat,
}

impl Rejection {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Rejection::BadLength => "bad_length",
            Rejection::BadVersion => "bad_version",
            Rejection::BadTag => "bad_tag",
            Rejection::Malformed => "malformed",
            Rejection::Stale => "stale",
            Rejection::OwnHeartbeat => "own",
        }
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// Encodes and signs a heartbeat.
pub fn seal(heartbeat: &Heartbeat, key: &[u8]) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serializing a struct of strings and integers cannot fail.
    out.extend(serde_json::to_vec(heartbeat).unwrap_or_default());
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// Verifies and decodes a datagram.
pub fn open(datagram: &[u8], key: &[u8]) -> Result<Heartbeat, Rejection> {
    if datagram.len() < 1 + TAG_LEN || datagram.len() > MAX_DATAGRAM {
        return Err(Rejection::BadLength);
    }
    if datagram[0] != VERSION {
        return Err(Rejection::BadVersion);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let mut m = mac(key);
    m.update(body);
    // Constant-time comparison.
    m.verify_slice(tag).map_err(|_| Rejection::BadTag)?;
    serde_json::from_slice(&body[1..]).map_err(|_| Rejection::Malformed)
}

#[derive(Clone, Debug)]
struct Peer {
    incarnation: u64,
    seq: u64,
    last_heard: Instant,
    leaving: bool,
    links: Vec<String>,
    member_since: Instant,
}

/// What a heartbeat changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A node we did not consider alive is now.
    Joined,
    /// A node announced it is leaving.
    Left,
    /// Its interfaces changed.
    LinksChanged,
    /// Nothing that affects elections.
    Refreshed,
}

/// The liveness table.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeName,
    dead_after: Duration,
    peers: BTreeMap<NodeName, Peer>,
}

impl Membership {
    /// A table for speaker `me`; peers silent for `dead_after` are dead.
    pub fn new(me: NodeName, dead_after: Duration) -> Membership {
        Membership {
            me,
            dead_after,
            peers: BTreeMap::new(),
        }
    }

    /// This speaker's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// Records a verified heartbeat.
    pub fn receive(&mut self, hb: Heartbeat, now: Instant) -> Result<Change, Rejection> {
        let node = NodeName::new(hb.node.clone());
        if node == self.me {
            return Err(Rejection::OwnHeartbeat);
        }
        let was_alive = self.is_alive(&node, now);
        let since = now
            .checked_sub(Duration::from_millis(hb.member_for_ms))
            .unwrap_or(now);
        match self.peers.get_mut(&node) {
            Some(p) if (hb.incarnation, hb.seq) <= (p.incarnation, p.seq) => Err(Rejection::Stale),
            Some(p) => {
                let links_changed = p.links != hb.links;
                p.incarnation = hb.incarnation;
                p.seq = hb.seq;
                p.last_heard = now;
                p.leaving = hb.leaving;
                p.links = hb.links;
                // The sender says how long it has been a member (it restarts the count while it
                // lacks quorum), so every speaker times its hold-down from the same moment.
                p.member_since = since;
                Ok(if hb.leaving {
                    Change::Left
                } else if !was_alive {
                    Change::Joined
                } else if links_changed {
                    Change::LinksChanged
                } else {
                    Change::Refreshed
                })
            }
            None => {
                self.peers.insert(
                    node,
                    Peer {
                        incarnation: hb.incarnation,
                        seq: hb.seq,
                        last_heard: now,
                        leaving: hb.leaving,
                        links: hb.links,
                        member_since: since,
                    },
                );
                Ok(if hb.leaving {
                    Change::Left
                } else {
                    Change::Joined
                })
            }
        }
    }

    /// Whether `node` (not us) is a live member.
    pub fn is_alive(&self, node: &NodeName, now: Instant) -> bool {
        if *node == self.me {
            return true;
        }
        self.peers.get(node).is_some_and(|p| {
            !p.leaving && now.saturating_duration_since(p.last_heard) < self.dead_after
        })
    }

    /// Live peers heard from within `window`, plus ourselves.
    pub fn heard_within(&self, window: Duration, now: Instant) -> usize {
        self.heard_set(window, now).len()
    }

    /// The names behind [`Membership::heard_within`]: ourselves and every live peer heard
    /// from within `window`.
    pub fn heard_set(&self, window: Duration, now: Instant) -> BTreeSet<NodeName> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.leaving && now.saturating_duration_since(p.last_heard) < window)
            .map(|(n, _)| n.clone())
            .chain(std::iter::once(self.me.clone()))
            .collect()
    }

    /// Live members (ourselves included), with the moment each became a member.
    pub fn alive(&self, now: Instant) -> Vec<(NodeName, Instant)> {
        let mut out: Vec<(NodeName, Instant)> = self
            .peers
            .iter()
            .filter(|(n, _)| self.is_alive(n, now))
            .map(|(n, p)| (n.clone(), p.member_since))
            .collect();
        out.push((self.me.clone(), now));
        out
    }

    /// The interfaces a live peer reported usable.
    pub fn links(&self, node: &NodeName) -> Option<&[String]> {
        self.peers.get(node).map(|p| p.links.as_slice())
    }

    /// When the next live peer would be declared dead if it stays silent (for a timer).
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| !p.leaving)
            .map(|p| p.last_heard + self.dead_after)
            .filter(|t| *t > now)
            .min()
    }
}

/// The self-fencing rule: announce only while we hear from a strict majority of the speakers
/// known to exist (ourselves included). A speaker cut off from the majority stops at once; the
/// majority side takes its IPs over only after `dead_after`, which is longer than the
/// window used here, so the two never answer at the same time. A tie (half, e.g. one of two)
/// is not a majority: two-node clusters keep announcing only while both speakers hear each
/// other (see the README for the trade-off). Knowing of no speaker at all (the Node list not
/// loaded yet) is no quorum either.
pub fn has_quorum(known: usize, heard: usize) -> bool {
    known > 0 && heard * 2 > known
}

/// Exactly half the known speakers are heard: neither side of an even split is a majority.
pub fn is_tie(known: usize, heard: usize) -> bool {
    known > 0 && heard * 2 == known
}

/// The whole self-fencing rule (DESIGN.md): announce while a strict majority is heard, or in a
/// tie while the holder of the witness Lease is among those heard. Only one side of a split can
/// hear the holder, so only one side announces; a two-node cluster's survivor announces once it
/// holds the witness.
pub fn may_announce(known: usize, heard: &BTreeSet<NodeName>, witness: Option<&NodeName>) -> bool {
    has_quorum(known, heard.len())
        || (is_tie(known, heard.len()) && witness.is_some_and(|w| heard.contains(w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hb(node: &str, incarnation: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            incarnation,
            seq,
            leaving: false,
            links: vec!["eth0".into()],
            member_for_ms: 0,
        }
    }

    const KEY: &[u8] = b"lab-key";

    fn names(list: &[&str]) -> BTreeSet<NodeName> {
        list.iter().map(|n| NodeName::new(*n)).collect()
    }

    #[test]
    fn the_witness_breaks_only_ties_and_only_for_the_side_that_hears_it() {
        let a = NodeName::new("a");
        let c = NodeName::new("c");
        // Majority: the witness does not matter.
        assert!(may_announce(3, &names(&["a", "b"]), None));
        // Minority: the witness does not help.
        assert!(!may_announce(3, &names(&["a"]), Some(&a)));
        assert!(!may_announce(5, &names(&["a", "b"]), Some(&a)));
        // Two nodes, one heard: only the holder announces.
        assert!(may_announce(2, &names(&["a"]), Some(&a)));
        assert!(!may_announce(2, &names(&["b"]), Some(&a)));
        assert!(!may_announce(2, &names(&["a"]), None));
        // Four nodes split 2/2: the side with the holder.
        assert!(may_announce(4, &names(&["a", "b"]), Some(&a)));
        assert!(!may_announce(4, &names(&["c", "d"]), Some(&a)));
        assert!(may_announce(4, &names(&["c", "d"]), Some(&c)));
        // Nothing known: never.
        assert!(!may_announce(0, &names(&["a"]), Some(&a)));
        assert!(is_tie(2, 1) && is_tie(4, 2) && !is_tie(3, 1) && !is_tie(0, 0));
    }

    proptest! {
        /// Whatever the split, two disjoint sides never both may announce (the holder is one
        /// node, heard by at most one side).
        #[test]
        fn two_disjoint_sides_never_both_announce(
            (known, side_a, side_b) in (2usize..10)
                .prop_flat_map(|k| (Just(k), 1..k))
                .prop_flat_map(|(k, a)| (Just(k), Just(a), 1..=k - a)),
            holder in proptest::option::of(0usize..10),
        ) {
            let a: BTreeSet<NodeName> = (0..side_a).map(|i| NodeName::new(format!("n{i}"))).collect();
            let b: BTreeSet<NodeName> =
                (side_a..side_a + side_b).map(|i| NodeName::new(format!("n{i}"))).collect();
            let witness = holder.map(|h| NodeName::new(format!("n{h}")));
            prop_assert!(!(may_announce(known, &a, witness.as_ref())
                && may_announce(known, &b, witness.as_ref())));
        }
    }

    #[test]
    fn seal_and_open() {
        let h = hb("hl-node2", 7, 1);
        let sealed = seal(&h, KEY);
        assert_eq!(open(&sealed, KEY), Ok(h));
        assert_eq!(open(&sealed, b"other"), Err(Rejection::BadTag));
        let mut forged = sealed.clone();
        let i = forged.len() / 2;
        forged[i] ^= 1;
        assert_eq!(open(&forged, KEY), Err(Rejection::BadTag));
        assert_eq!(open(&sealed[..10], KEY), Err(Rejection::BadLength));
        let mut v2 = sealed;
        v2[0] = 2;
        assert_eq!(open(&v2, KEY), Err(Rejection::BadVersion));
    }

    #[test]
    fn replays_and_restarts() {
        let t0 = Instant::now();
        let mut m = Membership::new(NodeName::new("hl-node1"), Duration::from_millis(500));
        assert_eq!(m.receive(hb("hl-node2", 7, 1), t0), Ok(Change::Joined));
        assert_eq!(m.receive(hb("hl-node2", 7, 2), t0), Ok(Change::Refreshed));
        assert_eq!(m.receive(hb("hl-node2", 7, 2), t0), Err(Rejection::Stale));
        assert_eq!(m.receive(hb("hl-node2", 6, 99), t0), Err(Rejection::Stale));
        // A restart: new incarnation, sequence starts over.
        assert_eq!(m.receive(hb("hl-node2", 8, 1), t0), Ok(Change::Refreshed));
        assert_eq!(
            m.receive(hb("hl-node1", 1, 1), t0),
            Err(Rejection::OwnHeartbeat)
        );
    }

    #[test]
    fn silence_kills_and_leaving_is_immediate() {
        let t0 = Instant::now();
        let dead = Duration::from_millis(500);
        let mut m = Membership::new(NodeName::new("hl-node1"), dead);
        m.receive(hb("hl-node2", 1, 1), t0).unwrap();
        m.receive(hb("hl-node3", 1, 1), t0).unwrap();
        let n2 = NodeName::new("hl-node2");
        assert!(m.is_alive(&n2, t0 + Duration::from_millis(499)));
        assert!(!m.is_alive(&n2, t0 + dead));
        assert_eq!(m.next_expiry(t0), Some(t0 + dead));
        let mut leaving = hb("hl-node3", 1, 2);
        leaving.leaving = true;
        assert_eq!(m.receive(leaving, t0), Ok(Change::Left));
        assert!(!m.is_alive(&NodeName::new("hl-node3"), t0));
        assert_eq!(m.alive(t0).len(), 2);
        assert_eq!(m.heard_within(Duration::from_millis(100), t0), 2);
    }

    #[test]
    fn membership_age_is_the_senders() {
        let t0 = Instant::now();
        let mut m = Membership::new(NodeName::new("hl-node1"), Duration::from_millis(500));
        let mut h = hb("hl-node2", 1, 1);
        h.member_for_ms = 60_000;
        let now = t0 + Duration::from_secs(61);
        m.receive(h.clone(), now).unwrap();
        let since = |m: &Membership, at| {
            m.alive(at)
                .into_iter()
                .find(|(n, _)| n.as_str() == "hl-node2")
                .unwrap()
                .1
        };
        assert_eq!(since(&m, now), now - Duration::from_secs(60));
        // The sender lost quorum and counts again from zero: so does everyone.
        h.seq = 2;
        h.member_for_ms = 0;
        let later = now + Duration::from_millis(100);
        m.receive(h, later).unwrap();
        assert_eq!(since(&m, later), later);
    }

    #[test]
    fn quorum() {
        assert!(has_quorum(3, 2));
        assert!(!has_quorum(3, 1));
        assert!(!has_quorum(2, 1));
        assert!(has_quorum(2, 2));
        assert!(has_quorum(1, 1));
        assert!(!has_quorum(4, 2));
        assert!(!has_quorum(0, 1));
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open(&bytes, KEY);
        }

        #[test]
        fn only_newer_heartbeats_count(seqs in proptest::collection::vec((0u64..4, 0u64..20), 1..40)) {
            let t0 = Instant::now();
            let mut m = Membership::new(NodeName::new("a"), Duration::from_secs(1));
            let mut best: Option<(u64, u64)> = None;
            for (inc, seq) in seqs {
                let accepted = m.receive(hb("b", inc, seq), t0).is_ok();
                let newer = best.is_none_or(|b| (inc, seq) > b);
                prop_assert_eq!(accepted, newer);
                if newer { best = Some((inc, seq)); }
            }
        }
    }
}
