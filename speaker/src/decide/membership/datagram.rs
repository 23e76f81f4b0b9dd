//! The membership datagram (wire version 3; 2 for older peers): a heartbeat, sealed with
//! HMAC-SHA256.
//!
//! ```text
//!  0      version (3; 2 from a speaker that predates it)
//!  1..5   key id: the first 4 octets of SHA-256(key), so the receiver picks the key (or
//!         refuses an unknown one) before computing any HMAC
//!  5      sender's node name: length (1..=253) and UTF-8 octets
//!         incarnation u64, sequence u64, the sender's own state (below)
//!         reports: count u16, then per peer the sender heard: name, incarnation u64,
//!         sequence u64 (the last one accepted from it: the echo), received u32 ms ago,
//!         span u32 ms (receipt minus the earliest moment that datagram can have been sent),
//!         and the peer's state as that datagram said
//!         echoes: count u16, then per peer heard but not (yet) accepted — it does not echo
//!         the sender yet, a new peer or one that restarted — its name, incarnation u64 and
//!         last sequence u64: only so that it can prove the sender's datagrams fresh, never
//!         a sign of life
//!  state  flags u8 (1 leaving, 2 may announce), fence period u32, member for u64 ms,
//!         links: count u8, each a length (1..=15) and the interface name, then (version 3
//!         only) its subnets: count u8 (..=16), each a family u8 (4 or 6), a prefix length u8
//!         and the network's 4 or 16 octets
//!  -32    tag: HMAC-SHA256 of everything before it
//! ```
//!
//! Version 3 added the links' subnets (`crate::decide::subnets`). A speaker reads both
//! versions — a version 2 state says its subnets are unknown — and writes version 2 to a peer
//! whose last authentic datagram was version 2, so a rolling upgrade keeps every pair of
//! speakers in contact (`edge/heartbeats.rs`).
//!
//! Integers are big-endian. Everything is length-prefixed and bounded, so [`DatagramView`]
//! checks a datagram's structure in one pass without allocating, and the receiver reads the
//! sender's name and the echo of its own sequence from it before spending an HMAC on it
//! (`admission.rs`). Truncated, oversized or trailing input is refused, never a panic.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::decide::subnets::Link;

/// The wire format version this speaker writes (first octet of every datagram).
pub const VERSION: u8 = 3;
/// The oldest version read (and written to peers that speak only it): without subnets.
pub const OLDEST_VERSION: u8 = 2;
/// Octets of the key id.
pub const KEY_ID_LEN: usize = 4;
/// Octets of the authentication tag.
pub const TAG_LEN: usize = 32;
/// Datagrams larger than this are refused before any parsing (the largest UDP payload).
pub const MAX_DATAGRAM: usize = 65_507;
/// The longest node name (a DNS subdomain).
pub const MAX_NAME: usize = 253;
/// The longest interface name (`IFNAMSIZ` - 1).
pub const MAX_LINK_NAME: usize = 15;
/// The most interfaces one state lists.
pub const MAX_LINKS: usize = 64;
/// The most subnets one interface lists.
pub const MAX_SUBNETS: usize = 16;
/// The smallest datagram: version, key id, a one-octet name, the counters, a bare state, no
/// reports, the tag.
pub const MIN_DATAGRAM: usize = 1 + KEY_ID_LEN + 2 + 16 + STATE_FIXED + 2 + 2 + TAG_LEN;
const STATE_FIXED: usize = 1 + 4 + 8 + 1;
const FLAG_LEAVING: u8 = 1;
const FLAG_MAY_ANNOUNCE: u8 = 2;

/// What a node says about itself: every fact of it the election reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberState {
    /// The node's speaker is shutting down: take its IPs over now.
    pub leaving: bool,
    /// Its fence is open: it may announce (it stops at once when this turns false).
    pub may_announce: bool,
    /// Counts the node's fence periods: a new one starts whenever its fence reopens after
    /// being closed, and with it a new hold-down.
    pub period: u32,
    /// How long the current period has lasted (0 while the fence is closed), so every
    /// speaker times the node's hold-down from the same moment.
    pub member_for_ms: u64,
    /// Its interfaces that are up with carrier and can answer, with their subnets (only it
    /// can know them).
    pub links: Vec<Link>,
    /// Whether the links' subnets were said (version 3) or not (version 2).
    pub subnets_known: bool,
}

/// What a sender heard from one peer, as of its last datagram accepted from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The peer.
    pub node: String,
    /// The peer's incarnation.
    pub incarnation: u64,
    /// The last sequence accepted from the peer: for the peer itself, the echo that proves
    /// this datagram was sent after that sequence.
    pub seq: u64,
    /// Milliseconds since the sender received it, on the sender's clock.
    pub received_ago_ms: u32,
    /// Milliseconds between the earliest moment that datagram can have been sent (the send
    /// time of the sender's own sequence it echoed) and its receipt.
    pub span_ms: u32,
    /// The peer's state, as that datagram said.
    pub state: MemberState,
}

/// The incarnation and sequence a sender last heard from a peer, for the peer to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoOnly {
    /// The peer.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// The last sequence heard.
    pub seq: u64,
}

/// One heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sender's node name.
    pub node: String,
    /// Random per start of the sender: a restarted speaker's sequence numbers start over.
    pub incarnation: u64,
    /// Grows with every heartbeat of one incarnation.
    pub seq: u64,
    /// The sender's own state.
    pub state: MemberState,
    /// Every peer the sender heard recently.
    pub reports: Vec<Report>,
    /// Peers heard but not accepted (they do not echo the sender yet): echoed only.
    pub echoes: Vec<EchoOnly>,
}

/// The 4-octet id of a key: the receiver's way to choose the key before any HMAC.
pub fn key_id(key: &[u8]) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::digest(key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// Why a heartbeat cannot be encoded: a field beyond what the format carries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A node name empty or longer than [`MAX_NAME`].
    #[error("node name {0:?} is empty or longer than {MAX_NAME} octets")]
    Name(String),
    /// An interface name empty or longer than [`MAX_LINK_NAME`], more than [`MAX_LINKS`], or
    /// more than [`MAX_SUBNETS`] subnets on one.
    #[error("interface list {0:?} does not fit the format")]
    Links(Vec<Link>),
    /// A version this speaker does not write.
    #[error("wire version {0} is not written")]
    Version(u8),
    /// More reports, or a larger datagram, than the format carries.
    #[error("heartbeat of {0} octets is larger than {MAX_DATAGRAM}")]
    TooLarge(usize),
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), EncodeError> {
    let len = u8::try_from(name.len())
        .ok()
        .filter(|l| (1..=MAX_NAME as u8).contains(l))
        .ok_or_else(|| EncodeError::Name(name.to_string()))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_state(out: &mut Vec<u8>, state: &MemberState, version: u8) -> Result<(), EncodeError> {
    let flags = if state.leaving { FLAG_LEAVING } else { 0 }
        | if state.may_announce {
            FLAG_MAY_ANNOUNCE
        } else {
            0
        };
    out.push(flags);
    out.extend_from_slice(&state.period.to_be_bytes());
    out.extend_from_slice(&state.member_for_ms.to_be_bytes());
    let bad = || EncodeError::Links(state.links.clone());
    if state.links.len() > MAX_LINKS
        || state.links.iter().any(|l| {
            l.name.is_empty() || l.name.len() > MAX_LINK_NAME || l.subnets.len() > MAX_SUBNETS
        })
    {
        return Err(bad());
    }
    out.push(u8::try_from(state.links.len()).map_err(|_| bad())?);
    for link in &state.links {
        out.push(u8::try_from(link.name.len()).map_err(|_| bad())?);
        out.extend_from_slice(link.name.as_bytes());
        if version < 3 {
            continue;
        }
        out.push(u8::try_from(link.subnets.len()).map_err(|_| bad())?);
        for net in &link.subnets {
            match net.network() {
                IpAddr::V4(a) => {
                    out.extend_from_slice(&[4, net.prefix_len()]);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.extend_from_slice(&[6, net.prefix_len()]);
                    out.extend_from_slice(&a.octets());
                }
            }
        }
    }
    Ok(())
}

/// Encodes and signs a heartbeat with `key`, in [`VERSION`].
pub fn seal(heartbeat: &Heartbeat, key: &[u8]) -> Result<Vec<u8>, EncodeError> {
    seal_version(heartbeat, key, VERSION)
}

/// Encodes and signs a heartbeat with `key` in `version` ([`OLDEST_VERSION`] leaves the
/// subnets out).
pub fn seal_version(
    heartbeat: &Heartbeat,
    key: &[u8],
    version: u8,
) -> Result<Vec<u8>, EncodeError> {
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(EncodeError::Version(version));
    }
    let mut out = Vec::with_capacity(64 + heartbeat.reports.len() * 64);
    out.push(version);
    out.extend_from_slice(&key_id(key));
    put_name(&mut out, &heartbeat.node)?;
    out.extend_from_slice(&heartbeat.incarnation.to_be_bytes());
    out.extend_from_slice(&heartbeat.seq.to_be_bytes());
    put_state(&mut out, &heartbeat.state, version)?;
    let count =
        u16::try_from(heartbeat.reports.len()).map_err(|_| EncodeError::TooLarge(usize::MAX))?;
    out.extend_from_slice(&count.to_be_bytes());
    for r in &heartbeat.reports {
        put_name(&mut out, &r.node)?;
        out.extend_from_slice(&r.incarnation.to_be_bytes());
        out.extend_from_slice(&r.seq.to_be_bytes());
        out.extend_from_slice(&r.received_ago_ms.to_be_bytes());
        out.extend_from_slice(&r.span_ms.to_be_bytes());
        put_state(&mut out, &r.state, version)?;
    }
    let count =
        u16::try_from(heartbeat.echoes.len()).map_err(|_| EncodeError::TooLarge(usize::MAX))?;
    out.extend_from_slice(&count.to_be_bytes());
    for e in &heartbeat.echoes {
        put_name(&mut out, &e.node)?;
        out.extend_from_slice(&e.incarnation.to_be_bytes());
        out.extend_from_slice(&e.seq.to_be_bytes());
    }
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    if out.len() > MAX_DATAGRAM {
        return Err(EncodeError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Why a datagram's structure is refused (before any key is involved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than [`MIN_DATAGRAM`] or longer than [`MAX_DATAGRAM`].
    Length,
    /// Neither [`VERSION`] nor [`OLDEST_VERSION`].
    Version,
    /// Fields that do not add up: truncated, trailing octets, a bad length or name.
    Structure,
}

/// A cursor over the datagram's body that never reads out of bounds.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The datagram's version: whether states carry subnets.
    version: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).ok_or(Malformed::Structure)?;
        let slice = self.bytes.get(self.at..end).ok_or(Malformed::Structure)?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn name(&mut self, max: usize) -> Result<&'a str, Malformed> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > max {
            return Err(Malformed::Structure);
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| Malformed::Structure)
    }

    /// Skips a state, checking it.
    fn skip_state(&mut self) -> Result<(), Malformed> {
        self.take(1 + 4 + 8)?;
        let links = usize::from(self.u8()?);
        if links > MAX_LINKS {
            return Err(Malformed::Structure);
        }
        for _ in 0..links {
            self.name(MAX_LINK_NAME)?;
            self.subnets(|_| {})?;
        }
        Ok(())
    }

    /// Reads a link's subnets (none before version 3), handing each to `each`.
    fn subnets(&mut self, mut each: impl FnMut(IpNet)) -> Result<(), Malformed> {
        if self.version < 3 {
            return Ok(());
        }
        let count = usize::from(self.u8()?);
        if count > MAX_SUBNETS {
            return Err(Malformed::Structure);
        }
        for _ in 0..count {
            let family = self.u8()?;
            let len = self.u8()?;
            let address = match family {
                4 => {
                    let b = self.take(4)?;
                    IpAddr::from([b[0], b[1], b[2], b[3]])
                }
                6 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(self.take(16)?);
                    IpAddr::from(a)
                }
                _ => return Err(Malformed::Structure),
            };
            each(IpNet::new(address, len).map_err(|_| Malformed::Structure)?);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<MemberState, Malformed> {
        let flags = self.u8()?;
        let period = self.u32()?;
        let member_for_ms = self.u64()?;
        let count = usize::from(self.u8()?);
        if count > MAX_LINKS {
            return Err(Malformed::Structure);
        }
        let mut links = Vec::with_capacity(count);
        for _ in 0..count {
            let mut link = Link::named(self.name(MAX_LINK_NAME)?);
            self.subnets(|net| link.subnets.push(net))?;
            links.push(link);
        }
        Ok(MemberState {
            leaving: flags & FLAG_LEAVING != 0,
            may_announce: flags & FLAG_MAY_ANNOUNCE != 0,
            period,
            member_for_ms,
            links,
            subnets_known: self.version >= 3,
        })
    }
}

/// A datagram whose structure is checked (not yet its tag): the sender's name, the key id and
/// the echo of one peer are read from it without allocating.
#[derive(Clone, Copy, Debug)]
pub struct DatagramView<'a> {
    bytes: &'a [u8],
    node: &'a str,
    incarnation: u64,
    seq: u64,
    reports_at: usize,
}

/// The echo a datagram carries for one peer: the incarnation and last sequence it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The peer's incarnation, as the sender knows it.
    pub incarnation: u64,
    /// The last sequence of that incarnation the sender accepted.
    pub seq: u64,
}

impl<'a> DatagramView<'a> {
    /// Checks the length, the version and every field's bounds, in one pass.
    pub fn new_checked(bytes: &'a [u8]) -> Result<DatagramView<'a>, Malformed> {
        if bytes.len() < MIN_DATAGRAM || bytes.len() > MAX_DATAGRAM {
            return Err(Malformed::Length);
        }
        if !(OLDEST_VERSION..=VERSION).contains(&bytes[0]) {
            return Err(Malformed::Version);
        }
        let body = &bytes[..bytes.len() - TAG_LEN];
        let mut r = Reader {
            bytes: body,
            at: 1 + KEY_ID_LEN,
            version: bytes[0],
        };
        let node = r.name(MAX_NAME)?;
        let incarnation = r.u64()?;
        let seq = r.u64()?;
        r.skip_state()?;
        let reports_at = r.at;
        let count = r.u16()?;
        for _ in 0..count {
            r.name(MAX_NAME)?;
            r.take(8 + 8 + 4 + 4)?;
            r.skip_state()?;
        }
        let echoes = r.u16()?;
        for _ in 0..echoes {
            r.name(MAX_NAME)?;
            r.take(16)?;
        }
        if r.at != body.len() {
            return Err(Malformed::Structure);
        }
        Ok(DatagramView {
            bytes,
            node,
            incarnation,
            seq,
            reports_at,
        })
    }

    /// Its wire version.
    pub fn version(&self) -> u8 {
        self.bytes[0]
    }

    /// The key id it claims.
    pub fn key_id(&self) -> [u8; KEY_ID_LEN] {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&self.bytes[1..1 + KEY_ID_LEN]);
        id
    }

    /// The sender's name as it claims it.
    pub fn node(&self) -> &'a str {
        self.node
    }

    /// The sender's incarnation and sequence as it claims them.
    pub fn sender(&self) -> Echo {
        Echo {
            incarnation: self.incarnation,
            seq: self.seq,
        }
    }

    fn reports(&self) -> Reader<'a> {
        Reader {
            bytes: &self.bytes[..self.bytes.len() - TAG_LEN],
            at: self.reports_at,
            version: self.version(),
        }
    }

    /// The echoes it claims for `peer`: from its report of the peer, and from its echoes.
    pub fn echoes_for(&self, peer: &str) -> Vec<Echo> {
        let mut out = Vec::new();
        let mut r = self.reports();
        // The structure was checked: these reads succeed.
        let mut read = || -> Result<(), Malformed> {
            for _ in 0..r.u16()? {
                let name = r.name(MAX_NAME)?;
                let echo = Echo {
                    incarnation: r.u64()?,
                    seq: r.u64()?,
                };
                r.take(8)?;
                r.skip_state()?;
                if name == peer {
                    out.push(echo);
                }
            }
            for _ in 0..r.u16()? {
                let name = r.name(MAX_NAME)?;
                let echo = Echo {
                    incarnation: r.u64()?,
                    seq: r.u64()?,
                };
                if name == peer {
                    out.push(echo);
                }
            }
            Ok(())
        };
        let _ = read();
        out
    }

    /// Whether the tag is right for `key` (constant-time comparison).
    pub fn verify(&self, key: &[u8]) -> bool {
        let (body, tag) = self.bytes.split_at(self.bytes.len() - TAG_LEN);
        let mut m = mac(key);
        m.update(body);
        m.verify_slice(tag).is_ok()
    }

    /// The heartbeat, decoded (call after [`DatagramView::verify`]). The structure was
    /// checked by [`DatagramView::new_checked`], so this fails only if the two disagree.
    pub fn heartbeat(&self) -> Result<Heartbeat, Malformed> {
        let mut r = Reader {
            bytes: &self.bytes[..self.bytes.len() - TAG_LEN],
            at: 1 + KEY_ID_LEN,
            version: self.version(),
        };
        let node = r.name(MAX_NAME)?.to_string();
        let incarnation = r.u64()?;
        let seq = r.u64()?;
        let state = r.state()?;
        let count = r.u16()?;
        let mut reports = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            reports.push(Report {
                node: r.name(MAX_NAME)?.to_string(),
                incarnation: r.u64()?,
                seq: r.u64()?,
                received_ago_ms: r.u32()?,
                span_ms: r.u32()?,
                state: r.state()?,
            });
        }
        let count = r.u16()?;
        let mut echoes = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            echoes.push(EchoOnly {
                node: r.name(MAX_NAME)?.to_string(),
                incarnation: r.u64()?,
                seq: r.u64()?,
            });
        }
        Ok(Heartbeat {
            node,
            incarnation,
            seq,
            state,
            reports,
            echoes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn state(links: &[&str]) -> MemberState {
        MemberState {
            leaving: false,
            may_announce: true,
            period: 3,
            member_for_ms: 12_345,
            links: links
                .iter()
                .map(|l| Link {
                    name: l.to_string(),
                    subnets: vec![
                        "192.0.2.0/24".parse().unwrap(),
                        "2001:db8::/64".parse().unwrap(),
                    ],
                })
                .collect(),
            subnets_known: true,
        }
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            node: "hl-node1".into(),
            incarnation: 0xdead_beef_0000_0001,
            seq: 42,
            state: state(&["eth0", "eth1"]),
            reports: vec![
                Report {
                    node: "hl-node2".into(),
                    incarnation: 7,
                    seq: 99,
                    received_ago_ms: 30,
                    span_ms: 120,
                    state: MemberState {
                        leaving: true,
                        may_announce: false,
                        ..state(&[])
                    },
                },
                Report {
                    node: "hl-node3".into(),
                    incarnation: 8,
                    seq: 5,
                    received_ago_ms: 1,
                    span_ms: 2,
                    state: state(&["eth0"]),
                },
            ],
            echoes: vec![EchoOnly {
                node: "hl-node4".into(),
                incarnation: 9,
                seq: 1,
            }],
        }
    }

    #[test]
    fn seal_and_read_back() {
        let hb = heartbeat();
        let sealed = seal(&hb, KEY).unwrap();
        let view = DatagramView::new_checked(&sealed).unwrap();
        assert_eq!(view.node(), "hl-node1");
        assert_eq!(view.key_id(), key_id(KEY));
        assert!(view.verify(KEY));
        assert!(!view.verify(b"another key of thirty-two octets"));
        assert_eq!(view.heartbeat(), Ok(hb.clone()));
        assert_eq!(
            view.echoes_for("hl-node3"),
            [Echo {
                incarnation: 8,
                seq: 5
            }]
        );
        assert_eq!(
            view.echoes_for("hl-node4"),
            [Echo {
                incarnation: 9,
                seq: 1
            }]
        );
        assert_eq!(view.echoes_for("hl-node9"), []);
        assert_eq!(
            view.sender(),
            Echo {
                incarnation: hb.incarnation,
                seq: 42
            }
        );
    }

    fn pinned() -> Heartbeat {
        Heartbeat {
            node: "a".into(),
            incarnation: 1,
            seq: 2,
            state: MemberState {
                leaving: true,
                may_announce: true,
                period: 4,
                member_for_ms: 5,
                links: vec![Link {
                    name: "e".into(),
                    subnets: vec![
                        "198.51.100.0/24".parse().unwrap(),
                        "2001:db8:b::/64".parse().unwrap(),
                    ],
                }],
                subnets_known: true,
            },
            reports: vec![],
            echoes: vec![],
        }
    }

    /// The octets before the state's links, for `version`.
    fn pinned_head(version: u8) -> Vec<u8> {
        let mut want = vec![version];
        want.extend_from_slice(&key_id(KEY));
        want.extend_from_slice(&[1, b'a']);
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&[3, 0, 0, 0, 4]);
        want.extend_from_slice(&5u64.to_be_bytes());
        want
    }

    #[test]
    fn the_layout_is_pinned() {
        let sealed = seal(&pinned(), KEY).unwrap();
        let body = &sealed[..sealed.len() - TAG_LEN];
        let mut want = pinned_head(3);
        want.extend_from_slice(&[1, 1, b'e', 2, 4, 24, 198, 51, 100, 0, 6, 64]);
        want.extend_from_slice(
            &"2001:db8:b::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(body, want.as_slice());
    }

    #[test]
    fn version_2_is_written_and_read_without_subnets() {
        let sealed = seal_version(&pinned(), KEY, 2).unwrap();
        let body = &sealed[..sealed.len() - TAG_LEN];
        let mut want = pinned_head(2);
        want.extend_from_slice(&[1, 1, b'e', 0, 0, 0, 0]);
        assert_eq!(body, want.as_slice());
        assert_eq!(sealed.len(), MIN_DATAGRAM + 2);
        let view = DatagramView::new_checked(&sealed).unwrap();
        assert_eq!(view.version(), 2);
        let read = view.heartbeat().unwrap();
        assert!(!read.state.subnets_known);
        assert_eq!(read.state.links, [Link::named("e")]);
        assert_eq!(
            seal_version(&pinned(), KEY, 1),
            Err(EncodeError::Version(1))
        );
        assert_eq!(
            seal_version(&pinned(), KEY, 4),
            Err(EncodeError::Version(4))
        );
    }

    #[test]
    fn a_subnet_that_cannot_be_is_refused() {
        let sealed = seal(&pinned(), KEY).unwrap();
        // The IPv4 prefix length (24) made 33.
        let at = pinned_head(3).len() + 5;
        assert_eq!(sealed[at], 24);
        let mut long = sealed.clone();
        long[at] = 33;
        assert_eq!(
            DatagramView::new_checked(&long).err(),
            Some(Malformed::Structure)
        );
        // A family that is neither 4 nor 6.
        let mut family = sealed;
        family[at - 1] = 5;
        assert_eq!(
            DatagramView::new_checked(&family).err(),
            Some(Malformed::Structure)
        );
    }

    #[test]
    fn bad_input_is_refused_not_panicked_on() {
        let sealed = seal(&heartbeat(), KEY).unwrap();
        assert_eq!(
            DatagramView::new_checked(&sealed[..10]).err(),
            Some(Malformed::Length)
        );
        let mut v1 = sealed.clone();
        v1[0] = 1;
        assert_eq!(
            DatagramView::new_checked(&v1).err(),
            Some(Malformed::Version)
        );
        v1[0] = 4;
        assert_eq!(
            DatagramView::new_checked(&v1).err(),
            Some(Malformed::Version)
        );
        // One octet more or less in the body: the fields no longer add up.
        let mut longer = sealed.clone();
        longer.insert(sealed.len() - TAG_LEN, 0);
        assert_eq!(
            DatagramView::new_checked(&longer).err(),
            Some(Malformed::Structure)
        );
        let mut shorter = sealed.clone();
        shorter.remove(sealed.len() - TAG_LEN - 1);
        assert_eq!(
            DatagramView::new_checked(&shorter).err(),
            Some(Malformed::Structure)
        );
        // A name of length zero.
        let mut unnamed = sealed;
        unnamed[1 + KEY_ID_LEN] = 0;
        assert_eq!(
            DatagramView::new_checked(&unnamed).err(),
            Some(Malformed::Structure)
        );
    }

    #[test]
    fn what_does_not_fit_is_not_encoded() {
        let mut hb = heartbeat();
        hb.node = "x".repeat(254);
        assert!(matches!(seal(&hb, KEY), Err(EncodeError::Name(_))));
        let mut hb = heartbeat();
        hb.state.links = vec![Link::named("a-very-long-interface-name")];
        assert!(matches!(seal(&hb, KEY), Err(EncodeError::Links(_))));
        let mut hb = heartbeat();
        hb.state.links[0].subnets = vec!["192.0.2.0/24".parse().unwrap(); MAX_SUBNETS + 1];
        assert!(matches!(seal(&hb, KEY), Err(EncodeError::Links(_))));
    }

    fn arb_state() -> impl Strategy<Value = MemberState> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(
                (
                    "[a-z0-9]{1,15}",
                    proptest::collection::vec(
                        prop_oneof![
                            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| IpNet::new(
                                IpAddr::from(a),
                                l
                            )
                            .unwrap()),
                            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| IpNet::new(
                                IpAddr::from(a),
                                l
                            )
                            .unwrap()),
                        ],
                        0..3,
                    ),
                ),
                0..4,
            ),
        )
            .prop_map(|(leaving, may_announce, period, member_for_ms, links)| {
                MemberState {
                    leaving,
                    may_announce,
                    period,
                    member_for_ms,
                    links: links
                        .into_iter()
                        .map(|(name, subnets)| Link {
                            name,
                            // The wire carries networks.
                            subnets: subnets.iter().map(IpNet::trunc).collect(),
                        })
                        .collect(),
                    subnets_known: true,
                }
            })
    }

    proptest! {
        #[test]
        fn any_heartbeat_round_trips(
            node in "[a-z][a-z0-9.-]{0,40}",
            incarnation in any::<u64>(),
            seq in any::<u64>(),
            own in arb_state(),
            reports in proptest::collection::vec(
                ("[a-z][a-z0-9-]{0,20}", any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), arb_state()),
                0..8,
            ),
            echoes in proptest::collection::vec(("[a-z][a-z0-9-]{0,20}", any::<u64>(), any::<u64>()), 0..4),
        ) {
            let hb = Heartbeat {
                node,
                incarnation,
                seq,
                state: own,
                reports: reports
                    .into_iter()
                    .map(|(node, incarnation, seq, received_ago_ms, span_ms, state)| Report {
                        node, incarnation, seq, received_ago_ms, span_ms, state,
                    })
                    .collect(),
                echoes: echoes
                    .into_iter()
                    .map(|(node, incarnation, seq)| EchoOnly { node, incarnation, seq })
                    .collect(),
            };
            let sealed = seal(&hb, KEY).unwrap();
            let view = DatagramView::new_checked(&sealed).unwrap();
            prop_assert!(view.verify(KEY));
            prop_assert_eq!(view.heartbeat(), Ok(hb.clone()));
            // Written for an older peer: the same heartbeat without subnets.
            let old = seal_version(&hb, KEY, OLDEST_VERSION).unwrap();
            let view = DatagramView::new_checked(&old).unwrap();
            prop_assert!(view.verify(KEY));
            let without = |s: &MemberState| MemberState {
                links: s.links.iter().map(|l| Link::named(l.name.clone())).collect(),
                subnets_known: false,
                ..s.clone()
            };
            let mut want = hb;
            want.state = without(&want.state);
            for r in &mut want.reports {
                r.state = without(&r.state);
            }
            prop_assert_eq!(view.heartbeat(), Ok(want));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(view) = DatagramView::new_checked(&bytes) {
                let _ = view.echoes_for("a");
                let _ = view.verify(KEY);
                let _ = view.heartbeat();
            }
        }

        #[test]
        fn any_flipped_octet_is_caught(index in 0usize..200, bit in 0u8..8) {
            let sealed = seal(&heartbeat(), KEY).unwrap();
            let mut forged = sealed.clone();
            let i = index % forged.len();
            forged[i] ^= 1 << bit;
            let caught = match DatagramView::new_checked(&forged) {
                Err(_) => true,
                Ok(view) => !view.verify(KEY) || view.key_id() != key_id(KEY),
            };
            prop_assert!(caught);
        }
    }
}
