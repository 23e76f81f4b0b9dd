//! Address entries of a pool (`CIDR`, `a-b`, single IP) and the arithmetic on them.
//!
//! Addresses of one family are numbered as `u128` so that ranges, counts and free lists work the
//! same way for IPv4 and IPv6.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    /// Kubernetes' name for it (`IPv4`, `IPv6`).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// Parses Kubernetes' name (`IPv4`, `IPv6`).
    pub fn from_k8s(name: &str) -> Option<Family> {
        match name {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number of an address within its family.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address with this number in `family`. IPv4 numbers are truncated to 32 bits.
pub fn u128_to_ip(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Whether some old equipment mistakes this address for a network or broadcast address
/// (MetalLB's `avoidBuggyIPs`: any IPv4 address ending in `.0` or `.255`).
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// How many IPv4 addresses numbered `start..=end` end in `.0` or `.255`, in constant time.
pub fn buggy_count_v4(start: u128, end: u128) -> u128 {
    if start > end {
        return 0;
    }
    // Addresses <= n ending in .0: floor(n/256)+1; ending in .255: floor((n+1)/256).
    let upto = |n: u128| (n / 256 + 1) + (n + 1) / 256;
    let below = if start == 0 { 0 } else { upto(start - 1) };
    upto(end) - below
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    family: Family,
    start: u128,
    end: u128,
}

/// Why a pool's address entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not a CIDR, range or IP.
    #[error("{entry:?} is not a CIDR, an IP, or a range 'a-b'")]
    Malformed {
        /// The entry as written.
        entry: String,
    },
    /// The two ends of a range are of different families.
    #[error("range {entry:?} mixes IPv4 and IPv6")]
    MixedFamilies {
        /// The entry as written.
        entry: String,
    },
    /// The start of a range lies after its end.
    #[error("range {entry:?} starts after it ends")]
    Reversed {
        /// The entry as written.
        entry: String,
    },
    /// The entry holds addresses that are never a load balancer's.
    #[error("{entry:?} holds {kind} addresses ({block}), which are never handed out")]
    Reserved {
        /// The entry as written.
        entry: String,
        /// What they are: multicast, broadcast, loopback, link-local, unspecified.
        kind: &'static str,
        /// The block they belong to.
        block: &'static str,
    },
}

/// Addresses no LoadBalancer Service may have: a host answering ARP or NDP for them would
/// break its own or its neighbours' networking. The CRD's schema refuses entries that are or
/// contain them (see `pool::RESERVED_RULE`); ranges that span one are refused here.
pub const RESERVED: &[(&str, &str)] = &[
    ("0.0.0.0/32", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

impl IpRange {
    /// The first reserved block the range touches, as (block, kind).
    pub fn reserved(&self) -> Option<(&'static str, &'static str)> {
        RESERVED
            .iter()
            .copied()
            .find(|(block, _)| IpRange::parse(block).is_ok_and(|b| b.intersection(self).is_some()))
    }

    /// Parses an entry and refuses one that holds reserved addresses ([`RESERVED`]).
    pub fn parse_usable(entry: &str) -> Result<IpRange, AddressError> {
        let range = IpRange::parse(entry)?;
        match range.reserved() {
            None => Ok(range),
            Some((block, kind)) => Err(AddressError::Reserved {
                entry: entry.to_string(),
                kind,
                block,
            }),
        }
    }
}

impl IpRange {
    /// The range `start..=end`; `None` if the families differ or start > end.
    pub fn new(start: IpAddr, end: IpAddr) -> Option<IpRange> {
        let family = Family::of(start);
        if family != Family::of(end) || ip_to_u128(start) > ip_to_u128(end) {
            return None;
        }
        Some(IpRange {
            family,
            start: ip_to_u128(start),
            end: ip_to_u128(end),
        })
    }

    /// The range holding only `ip`.
    pub fn single(ip: IpAddr) -> IpRange {
        let n = ip_to_u128(ip);
        IpRange {
            family: Family::of(ip),
            start: n,
            end: n,
        }
    }

    /// A range from numbers within `family`; the caller keeps `start <= end`.
    pub fn from_numbers(family: Family, start: u128, end: u128) -> IpRange {
        debug_assert!(start <= end);
        IpRange { family, start, end }
    }

    /// Parses one `addresses` entry of a pool. A CIDR with host bits set means its network,
    /// as in MetalLB (Go's `net.ParseCIDR`).
    pub fn parse(entry: &str) -> Result<IpRange, AddressError> {
        let text = entry.trim();
        let malformed = || AddressError::Malformed {
            entry: entry.to_string(),
        };
        if let Some((a, b)) = text.split_once('-') {
            let start = IpAddr::from_str(a.trim()).map_err(|_| malformed())?;
            let end = IpAddr::from_str(b.trim()).map_err(|_| malformed())?;
            if Family::of(start) != Family::of(end) {
                return Err(AddressError::MixedFamilies {
                    entry: entry.to_string(),
                });
            }
            return IpRange::new(start, end).ok_or_else(|| AddressError::Reversed {
                entry: entry.to_string(),
            });
        }
        if text.contains('/') {
            let net = IpNet::from_str(text).map_err(|_| malformed())?.trunc();
            return IpRange::new(net.network(), net.broadcast()).ok_or_else(malformed);
        }
        IpAddr::from_str(text)
            .map(IpRange::single)
            .map_err(|_| malformed())
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The first address's number.
    pub fn start(&self) -> u128 {
        self.start
    }

    /// The last address's number.
    pub fn end(&self) -> u128 {
        self.end
    }

    /// The first address.
    pub fn first(&self) -> IpAddr {
        u128_to_ip(self.family, self.start)
    }

    /// The last address.
    pub fn last(&self) -> IpAddr {
        u128_to_ip(self.family, self.end)
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.start..=self.end).contains(&ip_to_u128(ip))
    }

    /// The number of addresses, saturating at `u128::MAX` for all of IPv6.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Ranges are never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The addresses in both ranges, if any.
    pub fn intersection(&self, other: &IpRange) -> Option<IpRange> {
        if self.family != other.family {
            return None;
        }
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start <= end).then_some(IpRange {
            family: self.family,
            start,
            end,
        })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.first())
        } else {
            write!(f, "{}-{}", self.first(), self.last())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cidr_range_and_single() {
        let r = IpRange::parse("192.0.2.0/28").unwrap();
        assert_eq!(
            (r.first(), r.last(), r.len()),
            (ip("192.0.2.0"), ip("192.0.2.15"), 16)
        );
        let r = IpRange::parse("192.0.2.10 - 192.0.2.20").unwrap();
        assert_eq!(
            (r.first(), r.last(), r.len()),
            (ip("192.0.2.10"), ip("192.0.2.20"), 11)
        );
        let r = IpRange::parse("2001:db8::5").unwrap();
        assert_eq!((r.family(), r.len()), (Family::V6, 1));
        let r = IpRange::parse("2001:db8::/64").unwrap();
        assert_eq!(r.len(), 1u128 << 64);
        // Host bits are dropped, as Go's net.ParseCIDR does.
        let r = IpRange::parse("192.0.2.77/24").unwrap();
        assert_eq!(r.first(), ip("192.0.2.0"));
        assert_eq!(IpRange::parse("::/0").unwrap().len(), u128::MAX);
    }

    #[test]
    fn refuses_bad_entries_with_reason() {
        assert!(matches!(
            IpRange::parse("192.0.2.0/33"),
            Err(AddressError::Malformed { .. })
        ));
        assert!(matches!(
            IpRange::parse("not-an-ip"),
            Err(AddressError::Malformed { .. })
        ));
        assert!(matches!(
            IpRange::parse(""),
            Err(AddressError::Malformed { .. })
        ));
        assert!(matches!(
            IpRange::parse("192.0.2.20-192.0.2.10"),
            Err(AddressError::Reversed { .. })
        ));
        assert!(matches!(
            IpRange::parse("192.0.2.1-2001:db8::1"),
            Err(AddressError::MixedFamilies { .. })
        ));
        let msg = IpRange::parse("192.0.2.20-192.0.2.10")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("starts after it ends"), "{msg}");
    }

    #[test]
    fn buggy_addresses() {
        assert!(is_buggy(ip("192.0.2.0")));
        assert!(is_buggy(ip("192.0.2.255")));
        assert!(!is_buggy(ip("192.0.2.1")));
        assert!(!is_buggy(ip("2001:db8::")));
        let r = IpRange::parse("198.51.100.0/23").unwrap();
        assert_eq!(buggy_count_v4(r.start(), r.end()), 4);
        let r = IpRange::parse("192.0.2.1-192.0.2.254").unwrap();
        assert_eq!(buggy_count_v4(r.start(), r.end()), 0);
        assert_eq!(buggy_count_v4(0, 0), 1);
    }

    #[test]
    fn reserved_addresses_are_refused_naming_what_they_are() {
        for (entry, kind) in [
            ("224.0.0.1", "multicast"),
            ("239.0.0.0/8", "multicast"),
            ("223.255.255.250-224.0.0.5", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("255.255.255.0/24", "broadcast"),
            ("127.0.0.1", "loopback"),
            ("126.0.0.0/7", "loopback"),
            ("169.254.1.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.0.0.0/0", "unspecified"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1-fe80::9", "link-local"),
            ("ff02::1", "multicast"),
        ] {
            match IpRange::parse_usable(entry) {
                Err(AddressError::Reserved { kind: k, .. }) => assert_eq!(k, kind, "{entry}"),
                other => panic!("{entry}: {other:?}"),
            }
        }
        for entry in [
            "192.0.2.0/24",
            "198.51.100.1-198.51.100.9",
            "2001:db8::/64",
            "203.0.113.255",
        ] {
            assert!(IpRange::parse_usable(entry).is_ok(), "{entry}");
        }
        let msg = IpRange::parse_usable("224.0.0.0/24")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "\"224.0.0.0/24\" holds multicast addresses (224.0.0.0/4), which are never handed out"
        );
    }

    proptest! {
        #[test]
        fn buggy_count_matches_enumeration(start in 0u128..5000, len in 0u128..2000) {
            let end = start + len;
            let expected = (start..=end)
                .filter(|n| is_buggy(u128_to_ip(Family::V4, *n)))
                .count() as u128;
            prop_assert_eq!(buggy_count_v4(start, end), expected);
        }

        #[test]
        fn parse_never_panics(s in ".{0,60}") {
            let _ = IpRange::parse(&s);
        }

        #[test]
        fn range_display_round_trips(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (a.min(b), a.max(b));
            let r = IpRange::from_numbers(Family::V4, a.into(), b.into());
            prop_assert_eq!(IpRange::parse(&r.to_string()).unwrap(), r);
        }
    }
}
