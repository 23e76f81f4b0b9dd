//! A LAN client watching who claims VIPs, to the millisecond: from the lab's client namespace
//! it asks for each VIP every few milliseconds on a raw packet socket — a broadcast ARP request
//! for an IPv4 VIP, a Neighbor Solicitation to the solicited-node group for an IPv6 one — and
//! records every frame that claims a VIP (ARP replies and Neighbor Advertisements, and the
//! gratuitous announcements of a new owner) with its time and MAC. What the end-to-end fault
//! tests and the chaos run check against: never two MACs claiming a VIP within 10 ms, how long
//! it went unclaimed, and whether a node claimed it when it must not have.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use herald_speaker::wire::ndp::{multicast_mac, solicited_node};
use herald_speaker::wire::{
    ArpRequest, EthernetHeader, Frame, MacAddr, Message, NeighborSolicitation,
};

use crate::node_lab::{Lab, enter_netns};

/// One frame claiming the VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// When it was received.
    pub at: Instant,
    /// The MAC that claims the VIP (lower case, colons).
    pub mac: String,
}

/// What a watch saw of one VIP.
#[derive(Clone, Debug)]
pub struct ArpLog {
    /// The VIP.
    pub vip: IpAddr,
    /// When the watch started.
    pub started: Instant,
    /// When it stopped.
    pub stopped: Instant,
    /// Requests sent.
    pub requests: u64,
    /// Every claim, in the order received.
    pub claims: Vec<Claim>,
}

impl ArpLog {
    /// Every two consecutive claims by different MACs less than `window` apart.
    pub fn two_macs(&self, window: Duration) -> impl Iterator<Item = (&Claim, &Claim)> {
        self.claims
            .windows(2)
            .filter(move |w| w[0].mac != w[1].mac && w[1].at.duration_since(w[0].at) < window)
            .map(|w| (&w[0], &w[1]))
    }

    /// The first two claims by different MACs less than `window` apart, if any.
    pub fn two_macs_within(&self, window: Duration) -> Option<(&Claim, &Claim)> {
        self.two_macs(window).next()
    }

    /// The longest time without a claim between `from` and `to` (both within the watch).
    pub fn longest_silence(&self, from: Instant, to: Instant) -> Duration {
        longest_silence(self.claims.iter().map(|c| c.at), from, to)
    }

    /// Claims by `mac` between `from` and `to`.
    pub fn claims_by(&self, mac: &str, from: Instant, to: Instant) -> usize {
        self.claims
            .iter()
            .filter(|c| c.mac == mac && c.at >= from && c.at <= to)
            .count()
    }

    /// The first claim by a MAC other than `not` at or after `from`.
    pub fn first_other(&self, not: &str, from: Instant) -> Option<&Claim> {
        self.claims.iter().find(|c| c.mac != not && c.at >= from)
    }

    /// The MACs that claimed the VIP.
    pub fn macs(&self) -> BTreeSet<String> {
        self.claims.iter().map(|c| c.mac.clone()).collect()
    }

    /// Fails when two MACs claimed the VIP within 10 ms.
    pub fn never_two_macs(&self, what: &str) -> anyhow::Result<()> {
        if let Some((a, b)) = self.two_macs_within(Duration::from_millis(10)) {
            anyhow::bail!(
                "{what}: {} and {} claimed the VIP {:?} apart ({:?} into the watch)",
                a.mac,
                b.mac,
                b.at.duration_since(a.at),
                a.at.duration_since(self.started)
            );
        }
        Ok(())
    }
}

/// The longest time between `from` and `to` without one of `times` (sorted), counting from
/// `from` to the first and from the last to `to`.
pub fn longest_silence(
    times: impl IntoIterator<Item = Instant>,
    from: Instant,
    to: Instant,
) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for at in times
        .into_iter()
        .skip_while(|t| *t < from)
        .take_while(|t| *t <= to)
    {
        longest = longest.max(at.duration_since(last));
        last = at;
    }
    longest.max(to.saturating_duration_since(last))
}

/// A watch running on its own thread in the client namespace.
pub struct ArpWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<ArpLog>>>,
}

/// A raw packet socket for ARP and IPv6 on one interface, closed when dropped.
struct ArpSocket(libc::c_int);

impl Drop for ArpSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

impl ArpSocket {
    /// Receives ARP only, or every frame (`all`: ARP and Neighbor Discovery among them).
    fn open(interface: &str, all: bool) -> anyhow::Result<ArpSocket> {
        const ETH_P_ARP: u16 = 0x0806;
        const ETH_P_ALL: u16 = 0x0003;
        let protocol = if all { ETH_P_ALL } else { ETH_P_ARP };
        // SAFETY: plain socket(2); the result is checked.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol.to_be())) };
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let socket = ArpSocket(fd);
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(index != 0, "no interface {interface}");
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = i32::try_from(index)?;
        // SAFETY: a valid sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                fd,
                std::ptr::from_ref(&addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>())?,
            )
        };
        ensure!(rc == 0, "bind: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 1000,
        };
        // SAFETY: a valid timeval of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                u32::try_from(std::mem::size_of::<libc::timeval>())?,
            )
        };
        ensure!(rc == 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        Ok(socket)
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: a valid buffer of its length.
        let n = unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// One frame, or `None` after the receive timeout.
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: a valid buffer of its length.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).ok()
    }
}

/// A MAC as `aa:bb:..` text.
fn parse_mac(text: &str) -> anyhow::Result<MacAddr> {
    let octets: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("not a MAC: {text}"))?;
    let octets: [u8; 6] = octets
        .try_into()
        .map_err(|_| anyhow::anyhow!("not a MAC: {text}"))?;
    Ok(MacAddr(octets))
}

impl ArpWatch {
    /// Starts asking for `vip` every `every` from the lab's client.
    pub fn start(lab: &Lab, vip: Ipv4Addr, every: Duration) -> anyhow::Result<ArpWatch> {
        Self::start_many(lab, &[IpAddr::V4(vip)], every)
    }

    /// Starts asking for each of `vips` (IPv4 by ARP, IPv6 by Neighbor Solicitation) every
    /// `every` from the lab's client.
    pub fn start_many(lab: &Lab, vips: &[IpAddr], every: Duration) -> anyhow::Result<ArpWatch> {
        let netns = PathBuf::from("/run/netns").join(lab.client_ns()?);
        let interface = lab.var("HERALD_CLIENT_IF")?.to_string();
        let mac = parse_mac(lab.var("HERALD_CLIENT_MAC")?)?;
        let client_ip4: Ipv4Addr = lab.var("HERALD_CLIENT_IP4")?.parse()?;
        let client_ip6: Ipv6Addr = lab.var("HERALD_CLIENT_IP6")?.parse()?;
        let requests: Vec<Vec<u8>> = vips
            .iter()
            .map(|vip| request(*vip, mac, client_ip4, client_ip6))
            .collect();
        let vips = vips.to_vec();
        let all = vips.iter().any(IpAddr::is_ipv6);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::spawn(move || -> anyhow::Result<Vec<ArpLog>> {
            let opened = enter_netns(&netns).and_then(|()| ArpSocket::open(&interface, all));
            let socket = match opened {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let started = Instant::now();
            let mut logs: Vec<ArpLog> = vips
                .iter()
                .map(|vip| ArpLog {
                    vip: *vip,
                    started,
                    stopped: started,
                    requests: 0,
                    claims: Vec::new(),
                })
                .collect();
            let mut next = started;
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    for (log, request) in logs.iter_mut().zip(&requests) {
                        socket.send(request).context("sending a request")?;
                        log.requests += 1;
                    }
                    next += every;
                }
                let Some(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let at = Instant::now();
                let Some((ip, claimant)) = claim_in(&buf[..n]) else {
                    continue;
                };
                if let Some(log) = logs.iter_mut().find(|l| l.vip == ip) {
                    log.claims.push(Claim {
                        at,
                        mac: claimant.to_string().to_lowercase(),
                    });
                }
            }
            let now = Instant::now();
            for log in &mut logs {
                log.stopped = now;
            }
            Ok(logs)
        });
        ready_rx
            .recv()
            .context("the ARP watch thread ended before it started")??;
        Ok(ArpWatch { stop, thread })
    }

    /// Stops and returns what was seen of the first VIP.
    pub fn stop(self) -> anyhow::Result<ArpLog> {
        self.stop_all()?
            .into_iter()
            .next()
            .context("the watch had no VIP")
    }

    /// Stops and returns what was seen of each VIP, in the order given.
    pub fn stop_all(self) -> anyhow::Result<Vec<ArpLog>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the ARP watch thread panicked"))?
    }
}

/// The frame asking for `vip` from the client.
fn request(vip: IpAddr, mac: MacAddr, client_ip4: Ipv4Addr, client_ip6: Ipv6Addr) -> Vec<u8> {
    match vip {
        IpAddr::V4(vip) => Frame {
            eth: EthernetHeader {
                dst: MacAddr::BROADCAST,
                src: mac,
            },
            message: Message::ArpRequest(ArpRequest {
                sender_mac: mac,
                sender_ip: client_ip4,
                target_mac: MacAddr::ZERO,
                target_ip: vip,
            }),
        },
        IpAddr::V6(vip) => {
            let group = solicited_node(vip);
            Frame {
                eth: EthernetHeader {
                    dst: multicast_mac(group),
                    src: mac,
                },
                message: Message::NeighborSolicitation(NeighborSolicitation {
                    source: client_ip6,
                    destination: group,
                    target: vip,
                    source_mac: Some(mac),
                }),
            }
        }
    }
    .to_bytes()
}

/// The IP a frame claims and the MAC claiming it: an ARP reply or request whose sender is the
/// IP (a gratuitous one is a request), or a Neighbor Advertisement.
fn claim_in(frame: &[u8]) -> Option<(IpAddr, MacAddr)> {
    match Frame::decode(frame).ok()?.message {
        Message::ArpReply(r) => Some((r.sender_ip.into(), r.sender_mac)),
        Message::ArpRequest(r) => Some((r.sender_ip.into(), r.sender_mac)),
        Message::NeighborAdvertisement(a) => Some((a.target.into(), a.target_mac?)),
        Message::NeighborSolicitation(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(claims: &[(u64, &str)]) -> ArpLog {
        let t0 = Instant::now();
        ArpLog {
            vip: "192.0.2.1".parse().unwrap(),
            started: t0,
            stopped: t0 + Duration::from_millis(1000),
            requests: 0,
            claims: claims
                .iter()
                .map(|(ms, mac)| Claim {
                    at: t0 + Duration::from_millis(*ms),
                    mac: mac.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn two_macs_are_found_only_within_the_window() {
        let a = "02:00:00:00:00:01";
        let b = "02:00:00:00:00:02";
        let clean = log(&[(0, a), (5, a), (300, b), (305, b)]);
        assert!(clean.two_macs_within(Duration::from_millis(10)).is_none());
        assert!(clean.never_two_macs("clean").is_ok());
        let overlap = log(&[(0, a), (5, b), (8, a)]);
        let (x, y) = overlap
            .two_macs_within(Duration::from_millis(10))
            .expect("an overlap");
        assert_eq!((x.mac.as_str(), y.mac.as_str()), (a, b));
        assert!(overlap.never_two_macs("overlap").is_err());
    }

    #[test]
    fn silences_and_claims_by_a_mac() {
        let a = "02:00:00:00:00:01";
        let b = "02:00:00:00:00:02";
        let l = log(&[(0, a), (100, a), (700, b), (710, b)]);
        let end = l.stopped;
        assert_eq!(
            l.longest_silence(l.started, end),
            Duration::from_millis(600)
        );
        assert_eq!(l.claims_by(a, l.started, end), 2);
        assert_eq!(
            l.first_other(a, l.started)
                .map(|c| c.at.duration_since(l.started)),
            Some(Duration::from_millis(700))
        );
        assert_eq!(l.macs().len(), 2);
        assert_eq!(
            parse_mac("02:00:00:00:00:0A").unwrap(),
            MacAddr([2, 0, 0, 0, 0, 10])
        );
        assert!(parse_mac("02:00").is_err());
    }

    #[test]
    fn requests_ask_and_announcements_claim_in_both_families() {
        let mac = MacAddr([2, 0, 0, 0, 0, 0xc8]);
        let owner = MacAddr([2, 0, 0, 0, 0, 1]);
        let (ip4, ip6): (Ipv4Addr, Ipv6Addr) = (
            "192.0.2.200".parse().unwrap(),
            "2001:db8::200".parse().unwrap(),
        );
        let vip6: Ipv6Addr = "2001:db8::140".parse().unwrap();
        let vip4: Ipv4Addr = "192.0.2.140".parse().unwrap();
        // Our own requests claim nothing for the VIPs.
        let ask4 = request(vip4.into(), mac, ip4, ip6);
        assert_eq!(claim_in(&ask4), Some((ip4.into(), mac)));
        let ask6 = request(vip6.into(), mac, ip4, ip6);
        match Frame::decode(&ask6).map(|f| f.message) {
            Ok(Message::NeighborSolicitation(ns)) => {
                assert_eq!(ns.target, vip6);
                assert_eq!(ns.destination, solicited_node(vip6));
            }
            other => panic!("not a solicitation: {other:?}"),
        }
        assert_eq!(claim_in(&ask6), None);
        // An owner's announcements claim the VIPs.
        let na = Frame {
            eth: herald_speaker::wire::ndp::unsolicited(vip6, owner, "fe80::1".parse().unwrap())
                .eth,
            message: Message::NeighborAdvertisement(
                herald_speaker::wire::ndp::unsolicited(vip6, owner, "fe80::1".parse().unwrap())
                    .message,
            ),
        };
        assert_eq!(claim_in(&na.to_bytes()), Some((vip6.into(), owner)));
        let garp = request(vip4.into(), owner, vip4, ip6);
        assert_eq!(claim_in(&garp), Some((vip4.into(), owner)));
        assert_eq!(claim_in(&[0u8; 10]), None);
    }

    #[test]
    fn silences_count_from_the_window_edges() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let times = [at(100), at(120), at(900), at(950)];
        assert_eq!(
            longest_silence(times, at(0), at(1000)),
            Duration::from_millis(780)
        );
        assert_eq!(
            longest_silence(times, at(930), at(1000)),
            Duration::from_millis(50)
        );
        assert_eq!(
            longest_silence([], at(0), at(300)),
            Duration::from_millis(300)
        );
    }
}
