//! Which speakers are alive, and which this one is in two-way contact with: signed heartbeats
//! over UDP, and the table they feed.
//!
//! Every speaker sends a heartbeat to every node's address every interval (100 ms by default).
//! A heartbeat says what the sender is (its fence verdict, fence period, membership age and
//! usable interfaces: [`MemberState`]) and, for every peer it heard within `dead_after`, what it
//! last accepted from that peer: the peer's incarnation and sequence (the *echo*), how long ago,
//! and the peer's state as the peer said it (a *report*). No clock is compared across nodes:
//! every time below is a duration on one node's monotonic clock, turned into an instant on the
//! receiver's clock with the receiver's own send and receive times.
//!
//! - **Freshness, not wall-clock order.** A datagram is accepted only if it echoes a sequence
//!   this speaker sent (in its current, random incarnation) within `dead_after`: it was
//!   therefore sent after that moment. To get there, every *authentic* datagram — accepted or
//!   not — records the sender's incarnation and sequence, which this speaker echoes back in a
//!   section of its own (never read as a sign of life): two speakers that just started, or a
//!   peer that restarted, prove themselves to each other within two heartbeats. A replayed old datagram cannot echo a recent sequence,
//!   so it is refused however validly signed; a peer that restarted (a new random incarnation,
//!   whatever its wall clock says) is accepted as soon as it echoes us. Per peer the echoes
//!   accepted never go backwards, and within one incarnation neither do the sequences — except
//!   that a newer echo always wins, so no single datagram (a signed one with a huge sequence)
//!   can silence a peer: its next genuine heartbeat echoes a newer sequence of ours.
//! - **Two-way contact.** The *contact* time with a peer is the send time of the newest
//!   sequence of ours it echoed: the peer heard us at or after it, and we heard the peer after
//!   that. The fence counts a peer toward quorum only while its contact is younger than the
//!   withdraw window (`crate::decide::fencing`).
//! - **Liveness, direct or reported.** A node is alive for this speaker while this speaker or
//!   any peer whose heartbeats it accepts heard it within `dead_after`, and it is not leaving.
//!   With one-way loss between two nodes, both still learn of each other through a third, so
//!   every speaker sees the same members and the same states, and elects the same owners.
//! - **Conservative estimates.** For each node the table keeps the *latest* moment it can have
//!   been heard (a report received at `r` saying "heard `a` ago" gives `r − a`, later than the
//!   truth, so a node is declared dead late, never early) and the *earliest* moment its
//!   current fence period can have started (from the send time of our sequence the datagram
//!   echoed, minus the reported ages and spans: earlier than the truth, so a node is thought
//!   past its hold-down no later than it thinks so itself, and an owner hands an IP back no
//!   later than the returning node takes it). Among several sources the freshest state wins
//!   (the highest sequence of the node's current incarnation), and the bounds are the
//!   tightest of those given for that state.
//!
//! The table is pure: the caller passes the time in. The datagram format is in
//! [`datagram`], the checks made before any HMAC in [`admission`].

pub mod admission;
pub mod datagram;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub use datagram::{EchoOnly, Heartbeat, MemberState, Report};

use crate::decide::subnets::Link;

use crate::decide::election::NodeName;

/// Per node: name, alive, may announce, period and links (what [`Membership::digest`] says).
pub type MembershipDigest = Vec<(NodeName, bool, bool, u32, Vec<Link>)>;

/// A state relayed by an older speaker (wire version 2) carries no subnets: where the node
/// still lists the same links, the subnets it said before are kept, so a mixed-version
/// cluster does not flip a node between "subnets known" and not with every relay.
fn keep_subnets(state: &mut MemberState, before: MemberState) {
    let same_links = state.links.len() == before.links.len()
        && state
            .links
            .iter()
            .zip(&before.links)
            .all(|(a, b)| a.name == b.name);
    if !state.subnets_known && before.subnets_known && same_links {
        state.links = before.links;
        state.subnets_known = true;
    }
}

/// Why a datagram was refused, by check, cheapest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    /// Shorter than the smallest heartbeat, or longer than the largest UDP payload.
    #[error("truncated or oversized datagram")]
    BadLength,
    /// Unknown wire version.
    #[error("unknown version")]
    BadVersion,
    /// Its fields do not add up.
    #[error("malformed heartbeat")]
    Malformed,
    /// The source address is not an InternalIP of the node the datagram names.
    #[error("source address is not the named node's")]
    UnknownSource,
    /// Signed with a key this speaker does not hold (or not yet, or no longer).
    #[error("unknown key")]
    UnknownKey,
    /// Our own heartbeat came back.
    #[error("own heartbeat")]
    OwnHeartbeat,
    /// It does not echo a sequence we sent within `dead_after`: old, replayed, or from a
    /// peer that does not hear us.
    #[error("no echo of a recent heartbeat of ours")]
    Unproven,
    /// Its source sent more than its share of datagrams to authenticate.
    #[error("rate limited")]
    RateLimited,
    /// The tag does not match: wrong key, or forged.
    #[error("bad authentication tag")]
    BadTag,
    /// Authentic and fresh, but not newer than what was accepted from the peer: a replay or
    /// a reordering.
    #[error("replayed or stale heartbeat")]
    Stale,
}

impl Rejection {
    /// Every reason, in the order checked.
    pub const ALL: [Rejection; 10] = [
        Rejection::BadLength,
        Rejection::BadVersion,
        Rejection::Malformed,
        Rejection::UnknownSource,
        Rejection::UnknownKey,
        Rejection::OwnHeartbeat,
        Rejection::Unproven,
        Rejection::RateLimited,
        Rejection::BadTag,
        Rejection::Stale,
    ];

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Rejection::BadLength => "bad_length",
            Rejection::BadVersion => "bad_version",
            Rejection::Malformed => "malformed",
            Rejection::UnknownSource => "unknown_source",
            Rejection::UnknownKey => "unknown_key",
            Rejection::OwnHeartbeat => "own",
            Rejection::Unproven => "unproven",
            Rejection::RateLimited => "rate_limited",
            Rejection::BadTag => "bad_tag",
            Rejection::Stale => "stale",
        }
    }
}

/// What a node is known to be, from the freshest source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    /// Its incarnation.
    pub incarnation: u64,
    /// The sequence this knowledge comes from.
    pub seq: u64,
    /// Its state as of that heartbeat.
    pub state: MemberState,
    /// The latest moment it can have been heard (by us or a peer).
    pub heard_at: Instant,
    /// The earliest moment its current fence period can have started.
    pub since: Instant,
    /// When the source of `state` heard it (the latest moment).
    pub state_at: Instant,
}

/// What this speaker accepted directly from a peer.
#[derive(Clone, Debug)]
struct Peer {
    incarnation: u64,
    seq: u64,
    /// The newest sequence of ours its heartbeats echoed.
    echo: u64,
    /// When we sent the newest sequence of ours it reported (it accepted our heartbeats): it
    /// heard us at or after it. `None` while it only echoes us.
    contact: Option<Instant>,
    /// When we received its last accepted heartbeat.
    heard_at: Instant,
    /// The earliest moment that heartbeat can have been sent: when we sent the sequence it
    /// echoed.
    sent_after: Instant,
    state: MemberState,
}

/// What a heartbeat changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Some node's liveness or a fact the election reads (fence, period, links, leaving).
    Election,
    /// Only timestamps moved.
    Refreshed,
}

/// The sequences this speaker sent within the freshness window, with their send times.
#[derive(Clone, Debug, Default)]
struct SentLog {
    sent: VecDeque<(u64, Instant)>,
}

impl SentLog {
    fn record(&mut self, seq: u64, at: Instant, keep: Duration) {
        self.sent.push_back((seq, at));
        while self
            .sent
            .front()
            .is_some_and(|&(_, t)| at.saturating_duration_since(t) >= keep)
        {
            self.sent.pop_front();
        }
    }

    /// When `seq` was sent, if within `window` of `now`.
    fn sent_at(&self, seq: u64, now: Instant, window: Duration) -> Option<Instant> {
        // Sequences are recorded in increasing order: a binary search finds it.
        let i = self.sent.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
        let at = self.sent[i].1;
        (now.saturating_duration_since(at) < window).then_some(at)
    }
}

/// Milliseconds, rounded down and capped (a reported age: rounding down makes the receiver's
/// "latest heard" later, the safe side).
fn millis_down(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Milliseconds, rounded up (a span or a membership age: rounding up makes the receiver's
/// "earliest period start" earlier, the safe side).
pub fn millis_up(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The liveness table.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeName,
    incarnation: u64,
    dead_after: Duration,
    /// Before anything this speaker knows: earliest-bounds that would fall before it are
    /// clamped here (a speaker is itself held down for a while after it starts).
    epoch: Instant,
    seq: u64,
    sent: SentLog,
    peers: BTreeMap<NodeName, Peer>,
    known: BTreeMap<NodeName, Known>,
    /// The incarnation and sequence last heard in an authentic datagram that was not accepted
    /// (it did not echo us), with when: echoed back so the sender can prove itself.
    unproven: BTreeMap<NodeName, (u64, u64, Instant)>,
}

impl Membership {
    /// A table for speaker `me` in its `incarnation`; nodes silent for `dead_after` are dead
    /// (and a datagram must echo a sequence sent within it).
    pub fn new(me: NodeName, incarnation: u64, dead_after: Duration, now: Instant) -> Membership {
        Membership {
            me,
            incarnation,
            dead_after,
            epoch: now,
            seq: 0,
            sent: SentLog::default(),
            peers: BTreeMap::new(),
            known: BTreeMap::new(),
            unproven: BTreeMap::new(),
        }
    }

    /// This speaker's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// This speaker's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The sequence of the last heartbeat this speaker built.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn earliest(&self, from: Instant, minus: Duration) -> Instant {
        from.checked_sub(minus).unwrap_or(self.epoch).min(from)
    }

    /// This speaker's next heartbeat, saying `state`, recorded as sent at `now` (before it is
    /// actually sent: the contact times derived from it are then never later than the truth).
    pub fn outgoing(&mut self, state: MemberState, now: Instant) -> Heartbeat {
        self.seq = self.seq.saturating_add(1);
        self.sent.record(self.seq, now, self.dead_after);
        let reports = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.heard_at) < self.dead_after)
            .map(|(name, p)| Report {
                node: name.as_str().to_string(),
                incarnation: p.incarnation,
                seq: p.seq,
                received_ago_ms: millis_down(now.saturating_duration_since(p.heard_at)),
                span_ms: u32::try_from(
                    millis_up(p.heard_at.saturating_duration_since(p.sent_after)).saturating_add(1),
                )
                .unwrap_or(u32::MAX),
                state: p.state.clone(),
            })
            .collect();
        let recent = |at: Instant| now.saturating_duration_since(at) < self.dead_after;
        // Echoed besides the reports: peers heard but not accepted, and peers heard since in
        // a newer datagram that was not accepted (a restart, or a bogus sequence in what was
        // accepted): whichever proves our heartbeats fresh to them.
        let echoes = self
            .unproven
            .iter()
            .filter(|(name, (incarnation, seq, at))| {
                recent(*at)
                    && self.peers.get(*name).is_none_or(|p| {
                        !recent(p.heard_at)
                            || (p.incarnation == *incarnation && p.seq < *seq)
                            || (p.incarnation != *incarnation && p.heard_at < *at)
                    })
            })
            .map(|(name, (incarnation, seq, _))| EchoOnly {
                node: name.as_str().to_string(),
                incarnation: *incarnation,
                seq: *seq,
            })
            .collect();
        // Forget what is too old to matter: a datagram is accepted only with an echo sent
        // within dead_after, so older records protect against nothing.
        let keep = self.dead_after * 2;
        self.unproven
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < keep);
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.heard_at) < keep);
        self.known
            .retain(|_, k| now.saturating_duration_since(k.heard_at) < keep);
        Heartbeat {
            node: self.me.as_str().to_string(),
            incarnation: self.incarnation,
            seq: self.seq,
            state,
            reports,
            echoes,
        }
    }

    /// Records an authentic datagram from `node` that was not accepted (it does not echo a
    /// recent heartbeat of ours): its incarnation and sequence, to echo back. A newer
    /// sequence of the same incarnation, or another incarnation, replaces what was heard.
    pub fn heard_unproven(&mut self, node: &NodeName, incarnation: u64, seq: u64, now: Instant) {
        if *node == self.me {
            return;
        }
        let newer = self
            .unproven
            .get(node)
            .is_none_or(|(i, s, _)| *i != incarnation || *s < seq);
        if newer {
            self.unproven.insert(node.clone(), (incarnation, seq, now));
        }
    }

    /// Whether `echo` (an incarnation and sequence claimed for us) proves a datagram fresh:
    /// the send time of that sequence, if so.
    pub fn proves_fresh(&self, incarnation: u64, seq: u64, now: Instant) -> Option<Instant> {
        (incarnation == self.incarnation)
            .then(|| self.sent.sent_at(seq, now, self.dead_after))
            .flatten()
    }

    /// Records an authenticated heartbeat received at `now`.
    pub fn receive(&mut self, hb: Heartbeat, now: Instant) -> Result<Change, Rejection> {
        let node = NodeName::new(hb.node.clone());
        if node == self.me {
            return Err(Rejection::OwnHeartbeat);
        }
        // The echo of us: in its reports when it accepted our heartbeats (two-way contact),
        // or among its echoes when it heard them but does not accept them yet (fresh, but
        // not contact: it does not report us, so it cannot vouch for us to others).
        let reported = hb
            .reports
            .iter()
            .find(|r| r.node == self.me.as_str())
            .map(|r| (r.incarnation, r.seq, true));
        let echoed = hb
            .echoes
            .iter()
            .find(|e| e.node == self.me.as_str())
            .map(|e| (e.incarnation, e.seq, false));
        let proving: Vec<(u64, Instant, bool)> = reported
            .into_iter()
            .chain(echoed)
            .filter_map(|(incarnation, seq, contact)| {
                Some((seq, self.proves_fresh(incarnation, seq, now)?, contact))
            })
            .collect();
        // The newest echo orders the datagram; only a reported one is contact.
        let (echo_seq, sent_at) = proving
            .iter()
            .map(|&(seq, at, _)| (seq, at))
            .max()
            .ok_or(Rejection::Unproven)?;
        let reported_at = proving
            .iter()
            .filter(|(_, _, contact)| *contact)
            .map(|&(_, at, _)| at)
            .max();
        let previous = self.peers.get(&node);
        if let Some(p) = previous {
            let newer = echo_seq > p.echo
                || (echo_seq == p.echo && hb.incarnation == p.incarnation && hb.seq > p.seq);
            if !newer {
                return Err(Rejection::Stale);
            }
        }
        let contact = reported_at.or(previous.and_then(|p| p.contact));
        let before = self.digest(now);
        self.unproven.remove(&node);
        self.peers.insert(
            node.clone(),
            Peer {
                incarnation: hb.incarnation,
                seq: hb.seq,
                echo: echo_seq,
                contact,
                heard_at: now,
                sent_after: sent_at,
                state: hb.state.clone(),
            },
        );
        let direct = Known {
            incarnation: hb.incarnation,
            seq: hb.seq,
            since: self.earliest(sent_at, Duration::from_millis(hb.state.member_for_ms)),
            state: hb.state,
            heard_at: now,
            state_at: now,
        };
        self.merge(node.clone(), direct, true);
        for r in hb.reports {
            let about = NodeName::new(r.node);
            let ago = Duration::from_millis(u64::from(r.received_ago_ms));
            if about == self.me || about == node || ago >= self.dead_after {
                continue;
            }
            let back = ago
                .saturating_add(Duration::from_millis(u64::from(r.span_ms)))
                .saturating_add(Duration::from_millis(r.state.member_for_ms));
            let heard_at = now.checked_sub(ago).unwrap_or(self.epoch);
            let relayed = Known {
                incarnation: r.incarnation,
                seq: r.seq,
                since: self.earliest(sent_at, back),
                heard_at,
                state_at: heard_at,
                state: r.state,
            };
            self.merge(about, relayed, false);
        }
        Ok(if self.digest(now) == before {
            Change::Refreshed
        } else {
            Change::Election
        })
    }

    /// Folds one source's knowledge of `node` into the table. What the node itself said
    /// (`direct`) passed the per-peer ordering rules of [`Membership::receive`] and always
    /// replaces the state; a report replaces it when newer in the same incarnation, or when
    /// what is held is older than `dead_after` (so no single bogus sequence freezes it).
    fn merge(&mut self, node: NodeName, c: Known, direct: bool) {
        let Some(k) = self.known.get_mut(&node) else {
            self.known.insert(node, c);
            return;
        };
        if c.incarnation != k.incarnation {
            // A restart: the incarnation heard last is the current one.
            if direct || c.heard_at > k.heard_at {
                *k = c;
            }
            return;
        }
        let stale = c.heard_at.saturating_duration_since(k.state_at) > self.dead_after;
        if direct || c.seq > k.seq || stale {
            let same_period = c.state.period == k.state.period;
            k.since = if same_period {
                k.since.max(c.since)
            } else {
                c.since
            };
            k.seq = c.seq;
            let said_subnets = std::mem::replace(&mut k.state, c.state);
            k.state_at = c.heard_at;
            if !direct {
                keep_subnets(&mut k.state, said_subnets);
            }
        } else if c.seq == k.seq {
            k.since = k.since.max(c.since);
        }
        k.heard_at = k.heard_at.max(c.heard_at);
    }

    /// Everything the election reads about the other nodes (liveness, fence, period, links),
    /// to tell a change from a refresh.
    pub fn digest(&self, now: Instant) -> MembershipDigest {
        self.known
            .iter()
            .map(|(n, k)| {
                (
                    n.clone(),
                    self.is_alive(n, now),
                    k.state.may_announce,
                    k.state.period,
                    k.state.links.clone(),
                )
            })
            .collect()
    }

    /// Whether `node` (not us) is a live member: heard within `dead_after` by us or a peer,
    /// and not leaving.
    pub fn is_alive(&self, node: &NodeName, now: Instant) -> bool {
        if *node == self.me {
            return true;
        }
        self.known.get(node).is_some_and(|k| {
            !k.state.leaving && now.saturating_duration_since(k.heard_at) < self.dead_after
        })
    }

    /// What is known of `node` (not us), alive or not.
    pub fn known(&self, node: &NodeName) -> Option<&Known> {
        self.known.get(node)
    }

    /// The live nodes other than us.
    pub fn alive(&self, now: Instant) -> impl Iterator<Item = (&NodeName, &Known)> {
        self.known
            .iter()
            .filter(move |(n, _)| self.is_alive(n, now))
    }

    /// Per peer heard directly, the contact time: the send time of the newest sequence of
    /// ours it echoed (it heard us at or after it, and we heard it after that).
    pub fn contacts(&self) -> impl Iterator<Item = (&NodeName, Instant)> {
        self.peers.iter().filter_map(|(n, p)| Some((n, p.contact?)))
    }

    /// When the next live node would be declared dead if nothing more is heard (for a timer).
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.known
            .values()
            .filter(|k| !k.state.leaving)
            .map(|k| k.heard_at + self.dead_after)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests;
