//! What a datagram must pass before this speaker spends an HMAC on it. The membership port is
//! reachable from any host on the node network, so a flood of garbage or replayed datagrams
//! must cost little each and never crowd out the real heartbeats:
//!
//! 1. length, version and structure (one pass, no allocation);
//! 2. the source address is an InternalIP of the node the datagram names;
//! 3. not our own name;
//! 4. the key id is one of the keys held;
//! 5. whether it claims an echo of a sequence we sent within `dead_after` — unguessable
//!    without reading our traffic (a random 64-bit incarnation and a recent sequence), and
//!    never true of a replay older than `dead_after`;
//! 6. its source has tokens left in the bucket for its kind: per known source (bounded by the
//!    node count), one bucket for datagrams that claim a fresh echo, refilled at several
//!    times the heartbeat rate so a peer's real heartbeats always fit, and a small one for
//!    those that do not (a peer that does not hear us yet: only its incarnation and
//!    sequence are kept, to echo back);
//! 7. then, and only then, the HMAC.
//!
//! A flood from an address that is no node's is refused at step 2 for the price of a map
//! lookup; one of datagrams that do not echo us, even from a spoofed node address, only ever
//! drains that address's small bucket, never the one real heartbeats use. Only a sender that
//! reads this speaker's heartbeats (and spoofs a node's address) can drain the other, and
//! then starves at most that one peer — a volumetric attack only the network can stop. Every
//! refusal is counted by reason (`herald_speaker_heartbeats_rejected_total{reason}`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::datagram::{DatagramView, KEY_ID_LEN, Malformed};
use super::{Heartbeat, Membership, Rejection};
use crate::decide::election::NodeName;

/// A key this speaker accepts, with its id.
#[derive(Clone, Copy, Debug)]
pub struct AcceptedKey<'a> {
    /// The key id ([`super::datagram::key_id`]).
    pub id: [u8; KEY_ID_LEN],
    /// The key.
    pub key: &'a [u8],
}

/// One source's token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A datagram that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Authentic and echoing a recent heartbeat of ours: for the membership.
    Fresh(Heartbeat),
    /// Authentic, but not echoing a recent heartbeat of ours (the sender does not hear us,
    /// or not yet): only its incarnation and sequence are to be kept, to echo back.
    Unproven {
        /// The sender.
        node: NodeName,
        /// Its incarnation.
        incarnation: u64,
        /// Its sequence.
        seq: u64,
    },
}

/// Which bucket a datagram draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Fresh,
    Unproven,
}

/// The admission state: two token buckets per known source.
#[derive(Clone, Debug)]
pub struct Admission {
    per_second: f64,
    buckets: HashMap<(IpAddr, Kind), Bucket>,
}

impl Admission {
    /// Heartbeats every `interval`: each source may have `AUTH_RATE_FACTOR` times that many
    /// datagrams authenticated, and a burst of `AUTH_BURST`.
    pub fn new(interval: Duration) -> Admission {
        Admission {
            per_second: 1.0 / interval.as_secs_f64().max(1e-3),
            buckets: HashMap::new(),
        }
    }

    /// Forgets the buckets of addresses that are no longer a node's.
    pub fn retain_sources(&mut self, sources: &BTreeMap<IpAddr, NodeName>) {
        self.buckets.retain(|(ip, _), _| sources.contains_key(ip));
    }

    fn take_token(&mut self, source: IpAddr, kind: Kind, now: Instant) -> bool {
        let (burst, factor) = match kind {
            Kind::Fresh => (AUTH_BURST, AUTH_RATE_FACTOR),
            Kind::Unproven => (UNPROVEN_BURST, UNPROVEN_RATE_FACTOR),
        };
        let bucket = self.buckets.entry((source, kind)).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill =
            now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second * factor;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Runs every check, cheapest first, and decodes the heartbeat once its tag is right.
    /// `sources` maps each node's InternalIPs to its name.
    pub fn admit(
        &mut self,
        bytes: &[u8],
        source: IpAddr,
        sources: &BTreeMap<IpAddr, NodeName>,
        keys: &[AcceptedKey<'_>],
        membership: &Membership,
        now: Instant,
    ) -> Result<Admitted, Rejection> {
        let view = DatagramView::new_checked(bytes).map_err(|e| match e {
            Malformed::Length => Rejection::BadLength,
            Malformed::Version => Rejection::BadVersion,
            Malformed::Structure => Rejection::Malformed,
        })?;
        let source = canonical(source);
        match sources.get(&source) {
            Some(node) if node.as_str() == view.node() => {}
            _ => return Err(Rejection::UnknownSource),
        }
        if view.node() == membership.me().as_str() {
            return Err(Rejection::OwnHeartbeat);
        }
        let id = view.key_id();
        let key = keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(Rejection::UnknownKey)?;
        let fresh = view
            .echoes_for(membership.me().as_str())
            .iter()
            .any(|echo| {
                membership
                    .proves_fresh(echo.incarnation, echo.seq, now)
                    .is_some()
            });
        let kind = if fresh { Kind::Fresh } else { Kind::Unproven };
        if !self.take_token(source, kind, now) {
            return Err(Rejection::RateLimited);
        }
        if !view.verify(key.key) {
            return Err(Rejection::BadTag);
        }
        if !fresh {
            let sender = view.sender();
            return Ok(Admitted::Unproven {
                node: NodeName::new(view.node()),
                incarnation: sender.incarnation,
                seq: sender.seq,
            });
        }
        view.heartbeat()
            .map(Admitted::Fresh)
            .map_err(|_| Rejection::Malformed)
    }
}

/// Datagrams claiming a fresh echo each source may have authenticated per heartbeat interval,
/// on average: a real peer sends one.
pub const AUTH_RATE_FACTOR: f64 = 5.0;
/// Of those, how many at once.
pub const AUTH_BURST: f64 = 20.0;
/// Datagrams not claiming a fresh echo each source may have authenticated per heartbeat
/// interval: a peer that does not hear us yet sends one.
pub const UNPROVEN_RATE_FACTOR: f64 = 2.0;
/// Of those, how many at once.
pub const UNPROVEN_BURST: f64 = 5.0;

/// An IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4 peer) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::super::datagram::{key_id, seal};
    use super::super::{MemberState, Report};
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OLD_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    struct Setup {
        me: Membership,
        sources: BTreeMap<IpAddr, NodeName>,
        admission: Admission,
        now: Instant,
    }

    fn setup() -> Setup {
        let now = Instant::now();
        let mut me = Membership::new(NodeName::new("a"), 77, Duration::from_millis(700), now);
        me.outgoing(MemberState::default(), now);
        Setup {
            me,
            sources: [
                (ip("192.0.2.1"), NodeName::new("a")),
                (ip("192.0.2.2"), NodeName::new("b")),
                (ip("2001:db8::2"), NodeName::new("b")),
            ]
            .into(),
            admission: Admission::new(Duration::from_millis(100)),
            now,
        }
    }

    /// A heartbeat from b echoing a's sequence `seq` in incarnation `incarnation`.
    fn from_b(incarnation: u64, seq: u64, key: &[u8]) -> Vec<u8> {
        seal(
            &Heartbeat {
                node: "b".into(),
                incarnation: 5,
                seq: 1,
                state: MemberState::default(),
                reports: vec![Report {
                    node: "a".into(),
                    incarnation,
                    seq,
                    received_ago_ms: 0,
                    span_ms: 0,
                    state: MemberState::default(),
                }],
                echoes: vec![],
            },
            key,
        )
        .unwrap()
    }

    fn node_of(admitted: Result<Admitted, Rejection>) -> Result<String, Rejection> {
        admitted.map(|a| match a {
            Admitted::Fresh(hb) => hb.node,
            Admitted::Unproven { node, .. } => format!("unproven {node}"),
        })
    }

    fn keys() -> Vec<AcceptedKey<'static>> {
        vec![
            AcceptedKey {
                id: key_id(KEY),
                key: KEY,
            },
            AcceptedKey {
                id: key_id(OLD_KEY),
                key: OLD_KEY,
            },
        ]
    }

    #[test]
    fn a_real_heartbeat_passes_with_either_key_and_from_a_mapped_address() {
        let mut s = setup();
        for key in [KEY, OLD_KEY] {
            let got = s.admission.admit(
                &from_b(77, 1, key),
                ip("::ffff:192.0.2.2"),
                &s.sources,
                &keys(),
                &s.me,
                s.now,
            );
            assert_eq!(node_of(got), Ok("b".to_string()));
        }
    }

    #[test]
    fn each_check_refuses_with_its_reason() {
        let mut s = setup();
        let good = from_b(77, 1, KEY);
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut v1 = good.clone();
        v1[0] = 1;
        let other_key = b"an entirely different key, 32 oc";
        let own = seal(
            &Heartbeat {
                node: "a".into(),
                incarnation: 77,
                seq: 9,
                state: MemberState::default(),
                reports: vec![],
                echoes: vec![],
            },
            KEY,
        )
        .unwrap();
        let cases: Vec<(Vec<u8>, &str, Rejection)> = vec![
            (vec![2; 10], "192.0.2.2", Rejection::BadLength),
            (v1, "192.0.2.2", Rejection::BadVersion),
            (
                {
                    let mut m = good.clone();
                    m.insert(20, 0);
                    m
                },
                "192.0.2.2",
                Rejection::Malformed,
            ),
            (good.clone(), "198.51.100.7", Rejection::UnknownSource),
            // The right address, but another node's.
            (good.clone(), "192.0.2.1", Rejection::UnknownSource),
            (own, "192.0.2.1", Rejection::OwnHeartbeat),
            (from_b(77, 1, other_key), "192.0.2.2", Rejection::UnknownKey),
            (tampered, "192.0.2.2", Rejection::BadTag),
        ];
        for (bytes, from, why) in cases {
            assert_eq!(
                node_of(
                    s.admission
                        .admit(&bytes, ip(from), &s.sources, &keys(), &s.me, s.now)
                ),
                Err(why),
                "{why:?}"
            );
        }
        // Authentic but echoing another incarnation of a, or a sequence a never sent: only
        // the sender's incarnation and sequence are kept.
        for bytes in [from_b(76, 1, KEY), from_b(77, 2, KEY)] {
            assert_eq!(
                s.admission
                    .admit(&bytes, ip("192.0.2.2"), &s.sources, &keys(), &s.me, s.now),
                Ok(Admitted::Unproven {
                    node: NodeName::new("b"),
                    incarnation: 5,
                    seq: 1
                })
            );
        }
    }

    #[test]
    fn a_flood_from_one_source_is_cut_and_never_reaches_the_hmac_of_others() {
        let mut s = setup();
        let forged = {
            let mut f = from_b(77, 1, KEY);
            let last = f.len() - 1;
            f[last] ^= 1;
            f
        };
        // A burst of forgeries that pass every cheap check (the sender reads our traffic).
        let mut tags = 0;
        let mut limited = 0;
        for _ in 0..1000 {
            match s
                .admission
                .admit(&forged, ip("192.0.2.2"), &s.sources, &keys(), &s.me, s.now)
            {
                Err(Rejection::BadTag) => tags += 1,
                Err(Rejection::RateLimited) => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(tags, AUTH_BURST as usize);
        assert_eq!(limited, 1000 - tags);
        // A second later the bucket has refilled: b's next real heartbeat is authenticated.
        let later = s.now + Duration::from_millis(200);
        let got = s.admission.admit(
            &from_b(77, 1, KEY),
            ip("192.0.2.2"),
            &s.sources,
            &keys(),
            &s.me,
            later,
        );
        assert!(got.is_ok(), "{got:?}");
        // A flood of datagrams that do not echo us drains only the small bucket: b's real
        // heartbeats are still authenticated.
        let mut fresh = Admission::new(Duration::from_millis(100));
        let mut limited = 0;
        for _ in 0..1000 {
            if fresh.admit(
                &from_b(77, 99, KEY),
                ip("192.0.2.2"),
                &s.sources,
                &keys(),
                &s.me,
                s.now,
            ) == Err(Rejection::RateLimited)
            {
                limited += 1;
            }
        }
        assert_eq!(limited, 1000 - UNPROVEN_BURST as usize);
        assert!(matches!(
            fresh.admit(
                &from_b(77, 1, KEY),
                ip("192.0.2.2"),
                &s.sources,
                &keys(),
                &s.me,
                s.now
            ),
            Ok(Admitted::Fresh(_))
        ));
    }

    #[test]
    fn buckets_are_kept_only_for_node_addresses() {
        let mut s = setup();
        let _ = s.admission.admit(
            &from_b(77, 1, KEY),
            ip("192.0.2.2"),
            &s.sources,
            &keys(),
            &s.me,
            s.now,
        );
        assert_eq!(s.admission.buckets.len(), 1);
        s.sources.remove(&ip("192.0.2.2"));
        s.admission.retain_sources(&s.sources);
        assert!(s.admission.buckets.is_empty());
    }
}
