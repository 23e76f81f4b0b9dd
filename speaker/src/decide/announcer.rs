//! What the speaker says on the wire for the IPs it owns: answers to ARP requests and Neighbor
//! Solicitations, gratuitous announcements when it gains an IP (a short burst, then an optional
//! periodic refresh), and conflicts when another MAC claims an owned IP.
//!
//! Pure: frames and time in, frames and findings out. The sockets live in `packet_socket.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::wire::arp;
use crate::wire::ndp;
use crate::wire::{Frame, MacAddr, Message};

/// An interface the speaker listens and answers on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Name, e.g. `eth0`.
    pub name: String,
    /// Its MAC: the one we answer with.
    pub mac: MacAddr,
    /// Its IPv6 link-local address, if any (for diagnostics; advertisements are sent from
    /// the VIP itself).
    pub link_local: Option<Ipv6Addr>,
}

/// Gratuitous announcement timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GratuitousSettings {
    /// Announcements sent on gaining an IP (the first at once). MetalLB sends ~5 over 5 s.
    pub burst: u32,
    /// Time between the burst's announcements.
    pub burst_interval: Duration,
    /// Re-announce every owned IP this often, so switches whose FDB ages out before the
    /// router's ARP cache keep the path (MetalLB #1761, #2910). `None` disables it.
    pub refresh: Option<Duration>,
}

impl GratuitousSettings {
    /// The default burst: six announcements 250 ms apart span more than a second, because
    /// Linux ignores a neighbour update for `locktime` (1 s) after the last one.
    pub const DEFAULT_BURST: u32 = 6;
    /// The default time between the burst's announcements, in milliseconds.
    pub const DEFAULT_BURST_INTERVAL_MS: u64 = 250;
    /// The default refresh period, in seconds.
    pub const DEFAULT_REFRESH_S: u64 = 60;
}

/// The speaker's defaults (the command line's).
impl Default for GratuitousSettings {
    fn default() -> Self {
        GratuitousSettings {
            burst: Self::DEFAULT_BURST,
            burst_interval: Duration::from_millis(Self::DEFAULT_BURST_INTERVAL_MS),
            refresh: Some(Duration::from_secs(Self::DEFAULT_REFRESH_S)),
        }
    }
}

#[derive(Clone, Debug)]
struct Owned {
    /// Interfaces allowed (empty: every interface).
    interfaces: Vec<String>,
    /// Announcements of the burst still to send.
    burst_left: u32,
    next: Option<Instant>,
}

/// What to do with a received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this frame back out of the interface it came in on.
    Reply(Frame),
    /// Another station claims an IP we own.
    Conflict {
        /// The IP.
        ip: IpAddr,
        /// The other station's MAC.
        mac: MacAddr,
    },
    /// Nothing to do: not an owned IP, not addressed to us, or not allowed on this interface.
    Ignore,
}

/// The announcer's state: the owned IPs and their announcement schedule.
#[derive(Clone, Debug, Default)]
pub struct Announcer {
    settings: GratuitousSettings,
    owned: BTreeMap<IpAddr, Owned>,
}

impl Announcer {
    /// An announcer owning nothing.
    pub fn new(settings: GratuitousSettings) -> Announcer {
        Announcer {
            settings,
            owned: BTreeMap::new(),
        }
    }

    /// Replaces the owned set. Gained IPs start a burst at once; lost IPs are forgotten at
    /// once (we stop answering: the new owner's announcements move the neighbours). Returns
    /// (gained, lost).
    pub fn set_owned(
        &mut self,
        owned: BTreeMap<IpAddr, Vec<String>>,
        now: Instant,
    ) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let lost: Vec<IpAddr> = self
            .owned
            .keys()
            .filter(|ip| !owned.contains_key(ip))
            .copied()
            .collect();
        for ip in &lost {
            self.owned.remove(ip);
        }
        let mut gained = Vec::new();
        for (ip, interfaces) in owned {
            match self.owned.get_mut(&ip) {
                Some(o) => o.interfaces = interfaces,
                None => {
                    gained.push(ip);
                    self.owned.insert(
                        ip,
                        Owned {
                            interfaces,
                            burst_left: self.settings.burst,
                            next: (self.settings.burst > 0).then_some(now),
                        },
                    );
                }
            }
        }
        (gained, lost)
    }

    /// The owned IPs.
    pub fn owned(&self) -> impl Iterator<Item = &IpAddr> {
        self.owned.keys()
    }

    fn allowed(&self, ip: IpAddr, interface: &str) -> bool {
        self.owned
            .get(&ip)
            .is_some_and(|o| o.interfaces.is_empty() || o.interfaces.iter().any(|i| i == interface))
    }

    /// Whether `ip` is announced on `interface`.
    pub fn announces(&self, ip: IpAddr, interface: &str) -> bool {
        self.allowed(ip, interface)
    }

    /// The interfaces of `ifaces` that `ip` is announced on, in their order: what the
    /// metrics and the Announced condition name.
    pub fn announced_on(&self, ip: IpAddr, ifaces: &[Interface]) -> Vec<String> {
        ifaces
            .iter()
            .filter(|i| self.allowed(ip, &i.name))
            .map(|i| i.name.clone())
            .collect()
    }

    /// Decides what to do with a frame received on `iface`.
    pub fn handle(&self, iface: &Interface, frame: &Frame) -> Outcome {
        match frame.message {
            Message::ArpRequest(req) => {
                let target = IpAddr::V4(req.target_ip);
                if req.is_announcement() {
                    // Someone announces an address: a conflict if it is ours and not us.
                    if self.owned.contains_key(&target) && req.sender_mac != iface.mac {
                        return Outcome::Conflict {
                            ip: target,
                            mac: req.sender_mac,
                        };
                    }
                    return Outcome::Ignore;
                }
                if self.allowed(target, &iface.name) && frame.eth.addressed_to(iface.mac) {
                    Outcome::Reply(req.answer(iface.mac).widen())
                } else {
                    Outcome::Ignore
                }
            }
            Message::ArpReply(reply) => {
                let ip = IpAddr::V4(reply.sender_ip);
                if self.owned.contains_key(&ip) && reply.sender_mac != iface.mac {
                    Outcome::Conflict {
                        ip,
                        mac: reply.sender_mac,
                    }
                } else {
                    Outcome::Ignore
                }
            }
            Message::NeighborSolicitation(ns) => {
                // The advertisement's source is the VIP itself, as the kernel does for its own
                // addresses; tools such as ndisc6 ignore advertisements from other sources.
                if self.allowed(IpAddr::V6(ns.target), &iface.name) {
                    Outcome::Reply(ns.answer(frame.eth.src, iface.mac, ns.target).widen())
                } else {
                    Outcome::Ignore
                }
            }
            Message::NeighborAdvertisement(na) => {
                let ip = IpAddr::V6(na.target);
                match na.target_mac.or(Some(frame.eth.src)) {
                    Some(mac) if self.owned.contains_key(&ip) && mac != iface.mac => {
                        Outcome::Conflict { ip, mac }
                    }
                    _ => Outcome::Ignore,
                }
            }
        }
    }

    /// The gratuitous announcements due at `now` on `ifaces`, advancing the schedule.
    pub fn due(&mut self, ifaces: &[Interface], now: Instant) -> Vec<(String, Frame)> {
        let mut out = Vec::new();
        let settings = self.settings;
        for (ip, owned) in self.owned.iter_mut() {
            let Some(at) = owned.next else { continue };
            if at > now {
                continue;
            }
            // Only where the IP is answered: the election chose these interfaces (those facing
            // the IP when any node faces it).
            for iface in ifaces {
                if !(owned.interfaces.is_empty() || owned.interfaces.contains(&iface.name)) {
                    continue;
                }
                match ip {
                    IpAddr::V4(v4) => {
                        let (request, reply) = arp::gratuitous(*v4, iface.mac);
                        out.push((iface.name.clone(), request.widen()));
                        out.push((iface.name.clone(), reply.widen()));
                    }
                    IpAddr::V6(v6) => {
                        let announcement = ndp::unsolicited(*v6, iface.mac, *v6);
                        out.push((iface.name.clone(), announcement.widen()));
                    }
                }
            }
            owned.burst_left = owned.burst_left.saturating_sub(1);
            owned.next = if owned.burst_left > 0 {
                Some(now + settings.burst_interval)
            } else {
                settings.refresh.map(|r| now + r)
            };
        }
        out
    }

    /// When the next announcement is due (for a timer).
    pub fn next_due(&self) -> Option<Instant> {
        self.owned.values().filter_map(|o| o.next).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EthernetHeader;
    use crate::wire::arp::ArpRequest;
    use crate::wire::ndp::NeighborSolicitation;
    use std::net::Ipv4Addr;

    const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const CLIENT: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc8]);

    fn eth0() -> Interface {
        Interface {
            name: "eth0".into(),
            mac: OURS,
            link_local: Some("fe80::1".parse().unwrap()),
        }
    }

    fn arp_request(target: &str, dst: MacAddr) -> Frame {
        Frame {
            eth: EthernetHeader { dst, src: CLIENT },
            message: Message::ArpRequest(ArpRequest {
                sender_mac: CLIENT,
                sender_ip: "192.0.2.200".parse().unwrap(),
                target_mac: MacAddr::ZERO,
                target_ip: target.parse().unwrap(),
            }),
        }
    }

    fn owned(ips: &[&str], ifaces: &[&str]) -> BTreeMap<IpAddr, Vec<String>> {
        ips.iter()
            .map(|ip| {
                (
                    ip.parse().unwrap(),
                    ifaces.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn answers_only_owned_ips_on_allowed_interfaces() {
        let mut a = Announcer::new(GratuitousSettings::default());
        let now = Instant::now();
        a.set_owned(owned(&["192.0.2.100"], &[]), now);
        let Outcome::Reply(reply) =
            a.handle(&eth0(), &arp_request("192.0.2.100", MacAddr::BROADCAST))
        else {
            panic!("no reply");
        };
        assert_eq!(reply.eth.dst, CLIENT);
        assert_eq!(reply.eth.src, OURS);
        assert_eq!(
            a.handle(&eth0(), &arp_request("192.0.2.101", MacAddr::BROADCAST)),
            Outcome::Ignore
        );
        // Unicast to another station: reached us by flooding, not ours to answer.
        assert_eq!(
            a.handle(
                &eth0(),
                &arp_request("192.0.2.100", MacAddr([2, 0, 0, 0, 0, 9]))
            ),
            Outcome::Ignore
        );
        a.set_owned(owned(&["192.0.2.100"], &["eth1"]), now);
        assert_eq!(
            a.handle(&eth0(), &arp_request("192.0.2.100", MacAddr::BROADCAST)),
            Outcome::Ignore
        );
        // Lost: silent at once.
        let (_, lost) = a.set_owned(BTreeMap::new(), now);
        assert_eq!(lost, vec!["192.0.2.100".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn answers_neighbor_solicitations() {
        let mut a = Announcer::new(GratuitousSettings::default());
        a.set_owned(owned(&["2001:db8::100"], &[]), Instant::now());
        let target: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let ns = Frame {
            eth: EthernetHeader {
                dst: ndp::multicast_mac(ndp::solicited_node(target)),
                src: CLIENT,
            },
            message: Message::NeighborSolicitation(NeighborSolicitation {
                source: "2001:db8::200".parse().unwrap(),
                destination: ndp::solicited_node(target),
                target,
                source_mac: Some(CLIENT),
            }),
        };
        let Outcome::Reply(na) = a.handle(&eth0(), &ns) else {
            panic!("no NA")
        };
        let Message::NeighborAdvertisement(na) = na.message else {
            panic!("not an NA")
        };
        assert!(na.solicited && na.override_);
        assert_eq!(na.target_mac, Some(OURS));
    }

    #[test]
    fn conflicts_are_reported() {
        let mut a = Announcer::new(GratuitousSettings::default());
        a.set_owned(owned(&["192.0.2.100"], &[]), Instant::now());
        let other = MacAddr([2, 0, 0, 0, 0, 7]);
        let announce: Frame = arp::gratuitous(Ipv4Addr::new(192, 0, 2, 100), other)
            .0
            .widen();
        assert_eq!(
            a.handle(&eth0(), &announce),
            Outcome::Conflict {
                ip: "192.0.2.100".parse().unwrap(),
                mac: other
            }
        );
        let mine: Frame = arp::gratuitous(Ipv4Addr::new(192, 0, 2, 100), OURS)
            .0
            .widen();
        assert_eq!(a.handle(&eth0(), &mine), Outcome::Ignore);
    }

    #[test]
    fn burst_then_refresh() {
        let settings = GratuitousSettings {
            burst: 3,
            burst_interval: Duration::from_millis(200),
            refresh: Some(Duration::from_secs(30)),
        };
        let mut a = Announcer::new(settings);
        let t0 = Instant::now();
        a.set_owned(owned(&["192.0.2.100", "2001:db8::100"], &[]), t0);
        let ifaces = [eth0()];
        // ARP: request + reply; IPv6: one NA.
        assert_eq!(a.due(&ifaces, t0).len(), 3);
        assert!(a.due(&ifaces, t0).is_empty());
        assert_eq!(a.next_due(), Some(t0 + Duration::from_millis(200)));
        assert_eq!(a.due(&ifaces, t0 + Duration::from_millis(200)).len(), 3);
        assert_eq!(a.due(&ifaces, t0 + Duration::from_millis(400)).len(), 3);
        assert_eq!(
            a.next_due(),
            Some(t0 + Duration::from_millis(400) + Duration::from_secs(30))
        );
        let mut quiet = Announcer::new(GratuitousSettings {
            refresh: None,
            ..settings
        });
        quiet.set_owned(owned(&["192.0.2.100"], &[]), t0);
        for i in 0..3 {
            assert_eq!(
                quiet
                    .due(&ifaces, t0 + Duration::from_millis(200 * i))
                    .len(),
                2
            );
        }
        assert_eq!(quiet.next_due(), None);
    }
}
