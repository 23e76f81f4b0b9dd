//! The node's interfaces, read from sysfs and procfs: which may announce, their MACs, carrier
//! and IPv6 link-local addresses; their subnets come from rtnetlink (`link_events.rs`).
//!
//! The rules are MetalLB's: every interface that is up, not a bond or bridge member, not NOARP,
//! not loopback, and not matching the default exclude list (container and tunnel plumbing),
//! unless an advertisement names interfaces explicitly. Carrier matters too: an interface that
//! is up without carrier answers nobody, so its IPs move (MetalLB and Cilium keep them).
//!
//! So a bond announces, never its members (they have a master); a VLAN sub-interface
//! (`eth0.100`, `vlan100`) announces like any interface, with its own subnets; a bridge
//! announces when it has carrier (a port up) and is not on the exclude list (`virbr`, `cni`,
//! `docker`, … are), while its ports never do. A bridge reaches the clients of an IP only when
//! its ports include the uplink to their segment (the usual `br0` holding `eth0` and the
//! node's address, VMs attached beside): then it also holds the address whose subnet makes it
//! face the IP (`crate::decide::subnets`). A bridge of VMs only, without the uplink, has no
//! address in a client subnet and so never faces one.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;

use crate::decide::eligibility::is_default_candidate;
use crate::wire::MacAddr;

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;

/// One interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceState {
    /// Name.
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// Hardware address.
    pub mac: MacAddr,
    /// `IFF_UP`.
    pub up: bool,
    /// Carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// Loopback or NOARP: never announces.
    pub no_arp: bool,
    /// Enslaved to a bridge or bond: the master answers, never the member.
    pub enslaved: bool,
    /// Its IPv6 link-local address, if any.
    pub link_local: Option<Ipv6Addr>,
    /// The subnets of its addresses ([`subnet`]), from rtnetlink.
    pub subnets: Vec<IpNet>,
}

impl InterfaceState {
    /// Whether it may announce at all (explicitly named or not).
    pub fn usable(&self) -> bool {
        self.up && self.carrier && !self.no_arp && !self.enslaved
    }

    /// Whether it is used when no advertisement names interfaces.
    pub fn default_candidate(&self) -> bool {
        is_default_candidate(&self.name)
    }
}

/// The subnet an interface address of `prefix_len` bits stands for: its network. Link-local
/// addresses stand for none (every IPv6 interface has `fe80::/64`; `169.254.0.0/16` is no
/// client's network), nor does a prefix longer than the family allows.
pub fn subnet(address: IpAddr, prefix_len: u8) -> Option<IpNet> {
    let link_local = match address {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.is_unicast_link_local(),
    };
    if link_local || address.is_loopback() || address.is_multicast() {
        return None;
    }
    IpNet::new(address, prefix_len).ok().map(|n| n.trunc())
}

/// Parses a MAC as sysfs prints it (`02:00:00:00:00:01`).
pub fn parse_mac(text: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(out))
}

/// Link-local IPv6 addresses per interface from `/proc/net/if_inet6` lines
/// (`fe800000000000000000000000000001 02 40 20 80 eth0`: address, index, prefix, scope, flags,
/// name). Scope 0x20 is link. Tentative addresses (flag 0x40) are skipped: they cannot be used
/// as a source yet.
pub fn parse_if_inet6(text: &str) -> Vec<(String, Ipv6Addr)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [addr, _, _, scope, flags, name] = f.as_slice() else {
                return None;
            };
            let scope = u32::from_str_radix(scope, 16).ok()?;
            let flags = u32::from_str_radix(flags, 16).ok()?;
            if scope != 0x20 || flags & 0x40 != 0 || addr.len() != 32 {
                return None;
            }
            let n = u128::from_str_radix(addr, 16).ok()?;
            Some((name.to_string(), Ipv6Addr::from(n)))
        })
        .collect()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads every interface from `/sys/class/net` and `/proc/net/if_inet6`.
pub fn scan() -> std::io::Result<Vec<InterfaceState>> {
    let link_locals = std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let dir = entry.path();
        let Some(index) = read(&dir.join("ifindex")).and_then(|s| s.parse().ok()) else {
            continue;
        };
        let flags = read(&dir.join("flags"))
            .and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        // Reading `carrier` fails with EINVAL while the interface is down.
        let carrier = read(&dir.join("carrier")).as_deref() == Some("1");
        out.push(InterfaceState {
            mac: read(&dir.join("address"))
                .and_then(|s| parse_mac(&s))
                .unwrap_or(MacAddr::ZERO),
            up: flags & IFF_UP != 0,
            carrier,
            no_arp: flags & (IFF_NOARP | IFF_LOOPBACK) != 0,
            enslaved: dir.join("master").exists(),
            link_local: link_locals
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, a)| *a),
            subnets: Vec::new(),
            name,
            index,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_and_procfs_text() {
        assert_eq!(
            parse_mac("02:00:00:00:00:0a\n"),
            Some(MacAddr([2, 0, 0, 0, 0, 10]))
        );
        assert_eq!(parse_mac("02:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:00:00"), None);
        let text = "fe800000000000000000000000000001 02 40 20 80 eth0\n\
                    20010db8000000000000000000000011 02 40 00 80 eth0\n\
                    fe800000000000000000000000000002 03 40 20 c0 eth1\n\
                    garbage\n";
        assert_eq!(
            parse_if_inet6(text),
            vec![("eth0".to_string(), "fe80::1".parse().unwrap())]
        );
    }

    #[test]
    fn usability_rules() {
        let eth0 = InterfaceState {
            name: "eth0".into(),
            index: 2,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            up: true,
            carrier: true,
            no_arp: false,
            enslaved: false,
            link_local: None,
            subnets: Vec::new(),
        };
        assert!(eth0.usable() && eth0.default_candidate());
        assert!(
            !InterfaceState {
                carrier: false,
                ..eth0.clone()
            }
            .usable()
        );
        assert!(
            !InterfaceState {
                enslaved: true,
                ..eth0.clone()
            }
            .usable()
        );
        assert!(
            !InterfaceState {
                name: "veth12".into(),
                ..eth0.clone()
            }
            .default_candidate()
        );
        assert!(
            !InterfaceState {
                name: "lo".into(),
                ..eth0
            }
            .default_candidate()
        );
    }

    #[test]
    fn an_address_stands_for_its_network_unless_link_local() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            subnet(ip("198.51.100.11"), 24),
            Some(net("198.51.100.0/24"))
        );
        assert_eq!(
            subnet(ip("2001:db8:b::11"), 64),
            Some(net("2001:db8:b::/64"))
        );
        assert_eq!(subnet(ip("203.0.113.5"), 32), Some(net("203.0.113.5/32")));
        assert_eq!(subnet(ip("fe80::1"), 64), None);
        assert_eq!(subnet(ip("169.254.3.4"), 16), None);
        assert_eq!(subnet(ip("127.0.0.1"), 8), None);
        assert_eq!(subnet(ip("192.0.2.1"), 33), None);
    }

    #[test]
    fn scan_reads_this_machine() {
        let all = scan().expect("sysfs is readable");
        assert!(all.iter().any(|i| i.name == "lo" && i.no_arp));
    }
}
