//! Whether two MACs ever answered for one IP: a client-side watch on the wire, run in the client
//! namespace for the whole failover phase. Every `--interval-ms` it asks each VIP "who has"
//! (its own ARP request, from a distinct sender MAC per request, so each reply names the request
//! it answers) and it notes every frame that claims a VIP (replies, and gratuitous requests and
//! replies). Two MACs answering the same request is two stations answering at once; the MAC
//! that claims a VIP changing back and forth is a flap. Times are `CLOCK_MONOTONIC`, shared with
//! the benchmark, which places them in its trials.

use super::*;

/// Sender IP of the watch's requests (unused in the lab, like the ARP phase's .201).
pub(crate) const WATCH_SENDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 202);

/// Distinct sender MACs of the watch: 02:b5:00:00:HI:LO.
pub(crate) const WATCH_SLOTS: usize = 1024;

pub(crate) const WATCH_MAC_PREFIX: [u8; 4] = [0x02, 0xb5, 0x00, 0x00];

pub(crate) fn watch_slot_mac(slot: usize) -> MacAddr {
    let [a, b, c, d] = WATCH_MAC_PREFIX;
    MacAddr([a, b, c, d, (slot >> 8) as u8, slot as u8])
}

/// Microseconds of `CLOCK_MONOTONIC`: one clock for every process of the run.
pub(crate) fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[derive(Args, Debug)]
pub(crate) struct MacWatchOpts {
    /// The client's interface.
    #[arg(long = "if", default_value = "eth0")]
    pub(crate) iface: String,
    /// A VIP to watch (repeat for several).
    #[arg(long = "vip", required = true)]
    pub(crate) vips: Vec<Ipv4Addr>,
    /// Between two rounds of requests (one per VIP), in ms.
    #[arg(long = "interval-ms", value_name = "MS", value_parser = millis, default_value = "10")]
    pub(crate) interval: Duration,
    /// Stop by itself after this long, in seconds (SIGTERM stops it before).
    #[arg(long = "max-s", value_name = "SECS", value_parser = seconds, default_value = "10800")]
    pub(crate) max: Duration,
}

/// What the watch saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchEvent {
    /// Request `seq` for VIP `vip` sent at `t`.
    Asked { seq: u64, vip: usize, t: u64 },
    /// A reply to request `seq` from `mac`.
    Answered { seq: u64, mac: String, t: u64 },
    /// A frame claiming `vip` for `mac` that answers none of our requests (gratuitous ARP, or a
    /// reply to someone else broadcast).
    Claimed { vip: usize, mac: String, t: u64 },
}

/// The watch's findings: per VIP, requests asked and answered, those answered by two or more
/// MACs, and each change of the MAC that answers or claims it.
pub(crate) fn summarize(vips: &[Ipv4Addr], events: &[WatchEvent]) -> Vec<VipWatch> {
    struct PerVip {
        watch: VipWatch,
        current: Option<String>,
    }
    let mut per: Vec<PerVip> = vips
        .iter()
        .map(|vip| PerVip {
            watch: VipWatch {
                vip: vip.to_string(),
                ..VipWatch::default()
            },
            current: None,
        })
        .collect();
    let mut asked: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    let mut answers: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let change = |p: &mut PerVip, mac: &str, t: u64, how: &str| {
        p.watch.macs.insert(mac.to_string());
        if p.current.as_deref() != Some(mac) {
            p.watch.mac_changes.push(MacChange {
                t_us: t,
                mac: mac.to_string(),
                by: how.to_string(),
            });
            p.current = Some(mac.to_string());
        }
    };
    for e in events {
        match e {
            WatchEvent::Asked { seq, vip, t } => {
                if let Some(p) = per.get_mut(*vip) {
                    p.watch.asked += 1;
                    asked.insert(*seq, (*vip, *t));
                }
            }
            WatchEvent::Answered { seq, mac, t } => {
                let Some(&(vip, sent)) = asked.get(seq) else {
                    continue;
                };
                let Some(p) = per.get_mut(vip) else { continue };
                let macs = answers.entry(*seq).or_default();
                if macs.is_empty() {
                    p.watch.answered += 1;
                }
                if macs.insert(mac.clone()) && macs.len() == 2 {
                    p.watch.doubles.push(Double {
                        t_us: sent,
                        macs: macs.iter().cloned().collect(),
                    });
                } else if macs.len() > 2
                    && let Some(last) = p.watch.doubles.last_mut()
                {
                    last.macs = macs.iter().cloned().collect();
                }
                change(p, mac, *t, "reply");
            }
            WatchEvent::Claimed { vip, mac, t } => {
                if let Some(p) = per.get_mut(*vip) {
                    change(p, mac, *t, "claim");
                }
            }
        }
    }
    per.into_iter()
        .map(|p| VipWatch {
            answered_by_two_or_more: p.watch.doubles.len(),
            ..p.watch
        })
        .collect()
}

pub(crate) async fn macwatch(o: MacWatchOpts) -> anyhow::Result<()> {
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", o.iface))
        .with_context(|| format!("no interface {}", o.iface))?
        .trim()
        .parse()?;
    let sock = PacketSocket::open(ifindex, Protocol::Arp).context("AF_PACKET socket")?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(o.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep(o.max);
    tokio::pin!(deadline);
    let mut events: Vec<WatchEvent> = Vec::new();
    let mut slot_seq = vec![u64::MAX; WATCH_SLOTS];
    let mut seq = 0u64;
    let mut buf = vec![0u8; 2048];
    let started = mono_us();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for (vip, ip) in o.vips.iter().enumerate() {
                    let slot = (seq % WATCH_SLOTS as u64) as usize;
                    let mac = watch_slot_mac(slot);
                    let frame = Frame {
                        eth: EthernetHeader { dst: MacAddr::BROADCAST, src: mac },
                        message: Message::ArpRequest(ArpRequest {
                            sender_mac: mac,
                            sender_ip: WATCH_SENDER,
                            target_mac: MacAddr::ZERO,
                            target_ip: *ip,
                        }),
                    }
                    .to_bytes();
                    slot_seq[slot] = seq;
                    events.push(WatchEvent::Asked { seq, vip, t: mono_us() });
                    sock.send(&frame).await.context("sending a request")?;
                    seq += 1;
                }
            }
            n = sock.recv(&mut buf) => {
                let n = n.context("receiving")?;
                let t = mono_us();
                let Ok(frame) = Frame::decode(&buf[..n]) else { continue };
                let (sender_mac, sender_ip, target_mac) = match frame.message {
                    Message::ArpReply(r) => (r.sender_mac, r.sender_ip, Some(r.target_mac)),
                    Message::ArpRequest(r) if r.is_announcement() => (r.sender_mac, r.sender_ip, None),
                    _ => continue,
                };
                let Some(vip) = o.vips.iter().position(|v| *v == sender_ip) else { continue };
                let mac = sender_mac.to_string();
                match target_mac {
                    Some(m) if m.0[..4] == WATCH_MAC_PREFIX => {
                        let slot = (usize::from(m.0[4]) << 8) | usize::from(m.0[5]);
                        match slot_seq.get(slot) {
                            Some(&s) if s != u64::MAX => events.push(WatchEvent::Answered { seq: s, mac, t }),
                            _ => {}
                        }
                    }
                    _ => events.push(WatchEvent::Claimed { vip, mac, t }),
                }
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut deadline => break,
        }
    }
    // Replies to the last requests.
    let grace = tokio::time::sleep(Duration::from_millis(100));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            n = sock.recv(&mut buf) => {
                let Ok(n) = n else { break };
                let t = mono_us();
                if let Ok(Frame { message: Message::ArpReply(r), .. }) = Frame::decode(&buf[..n])
                    && r.target_mac.0[..4] == WATCH_MAC_PREFIX
                {
                    let slot = (usize::from(r.target_mac.0[4]) << 8) | usize::from(r.target_mac.0[5]);
                    if let Some(&s) = slot_seq.get(slot).filter(|s| **s != u64::MAX) {
                        events.push(WatchEvent::Answered { seq: s, mac: r.sender_mac.to_string(), t });
                    }
                }
            }
            _ = &mut grace => break,
        }
    }
    let out = WatchReport {
        vips: summarize(&o.vips, &events),
        started_us: started,
        stopped_us: mono_us(),
        interval_ms: o.interval.as_millis() as u64,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// What the watch saw inside the time windows `[from, to)` (µs, monotonic): requests answered by
/// two or more MACs, and changes of the claiming MAC.
pub(crate) fn in_windows(vips: &[VipWatch], windows: &[(u64, u64)]) -> (usize, usize) {
    let inside = |t: u64| windows.iter().any(|(a, b)| t >= *a && t < *b);
    let mut doubles = 0;
    let mut changes = 0;
    for v in vips {
        doubles += v.doubles.iter().filter(|d| inside(d.t_us)).count();
        changes += v.mac_changes.iter().filter(|c| inside(c.t_us)).count();
    }
    (doubles, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "02:00:00:00:00:01";
    const B: &str = "02:00:00:00:00:02";

    fn answered(seq: u64, mac: &str, t: u64) -> WatchEvent {
        WatchEvent::Answered {
            seq,
            mac: mac.into(),
            t,
        }
    }

    #[test]
    fn a_clean_failover_has_no_double_and_one_change_each_way() {
        let vips = [Ipv4Addr::new(192, 0, 2, 150)];
        let events = vec![
            WatchEvent::Asked {
                seq: 0,
                vip: 0,
                t: 0,
            },
            answered(0, A, 50),
            WatchEvent::Asked {
                seq: 1,
                vip: 0,
                t: 10_000,
            },
            // Nobody answers during the outage, then B's gratuitous ARP and its answers.
            WatchEvent::Claimed {
                vip: 0,
                mac: B.into(),
                t: 15_000,
            },
            WatchEvent::Asked {
                seq: 2,
                vip: 0,
                t: 20_000,
            },
            answered(2, B, 20_050),
            WatchEvent::Asked {
                seq: 3,
                vip: 0,
                t: 30_000,
            },
            answered(3, A, 30_050),
        ];
        let s = summarize(&vips, &events);
        let v = &s[0];
        assert_eq!(v.asked, 4);
        assert_eq!(v.answered, 3);
        assert_eq!(v.answered_by_two_or_more, 0);
        let changes: Vec<&str> = v.mac_changes.iter().map(|c| c.mac.as_str()).collect();
        assert_eq!(changes, [A, B, A]);
        assert_eq!(v.mac_changes[1].by, "claim");
    }

    #[test]
    fn two_macs_answering_one_request_is_a_double() {
        let vips = [Ipv4Addr::new(192, 0, 2, 150), Ipv4Addr::new(192, 0, 2, 151)];
        let events = vec![
            WatchEvent::Asked {
                seq: 0,
                vip: 0,
                t: 100,
            },
            WatchEvent::Asked {
                seq: 1,
                vip: 1,
                t: 110,
            },
            answered(0, A, 150),
            answered(0, B, 160),
            // The same MAC twice is not a double.
            answered(1, B, 170),
            answered(1, B, 171),
            // A reply to a request never asked is ignored.
            answered(9, A, 200),
        ];
        let s = summarize(&vips, &events);
        assert_eq!(s[0].answered_by_two_or_more, 1);
        assert_eq!(s[0].doubles[0].t_us, 100);
        assert_eq!(s[0].doubles[0].macs, [A, B]);
        assert_eq!(s[1].answered_by_two_or_more, 0);
        assert_eq!(s[1].answered, 1);
        // Inside a window that holds the double, and outside.
        assert_eq!(in_windows(&s, &[(90, 120)]), (1, 0));
        assert_eq!(in_windows(&s, &[(90, 165)]), (1, 2));
        assert_eq!(in_windows(&s, &[(1000, 2000)]), (0, 0));
    }

    #[test]
    fn watch_macs_name_their_slot() {
        assert_eq!(watch_slot_mac(0x3ff).to_string(), "02:b5:00:00:03:ff");
    }
}
