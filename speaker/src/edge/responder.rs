//! Answers ARP requests and Neighbor Solicitations in the packet socket's own reader task,
//! from a snapshot of what this node announces. A request never waits behind the main loop
//! (an election, an API event): the reply goes out of the socket it came in on, as the
//! kernel's own neighbour code does. Conflicts, which need the API, go to the main loop.
//!
//! The fence is applied here, where the answer is sent: the snapshot carries the fence period
//! it was computed in, and a reply goes out only while the [`Gate`] allows that period at the
//! moment of sending. A speaker whose process stalled past its gate's deadline, or whose period
//! ended since the snapshot, answers nothing from it — not even the requests that queued up in
//! the socket while it was stopped.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::decide::announcer::{Announcer, Interface, Outcome};
use crate::decide::fencing::Gate;
use crate::edge::packet_socket::PacketSocket;
use crate::metrics::{IpLabels, Metrics, ReasonLabels};
use crate::wire::{Frame, MacAddr, Message};

/// What the readers answer from: the owned IPs (with their allowed interfaces), the
/// interfaces' MACs and the fence period they were elected in. Replaced whole by the main loop
/// after every election or interface change.
#[derive(Clone, Debug, Default)]
pub struct AnswerSnapshot {
    /// The owned IPs.
    pub announcer: Announcer,
    /// Interfaces by name.
    pub interfaces: BTreeMap<String, Interface>,
    /// The fence period the owned IPs were elected in.
    pub period: u32,
}

/// Another station claims an IP this node announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictSeen {
    /// The IP.
    pub ip: IpAddr,
    /// The other station's MAC.
    pub mac: MacAddr,
    /// Where it was seen.
    pub interface: String,
}

/// What one received frame leads to (pure, for tests): the reply to send, or a conflict.
/// Replies only while `gate` allows the snapshot's period at `now`.
pub fn respond(
    snapshot: &AnswerSnapshot,
    gate: &Gate,
    now: Instant,
    interface: &str,
    bytes: &[u8],
    metrics: &Metrics,
) -> Option<Result<(IpAddr, Frame), ConflictSeen>> {
    let frame = match Frame::decode(bytes) {
        Ok(f) => f,
        Err(reason) => {
            metrics
                .frames_dropped
                .get_or_create(&ReasonLabels {
                    reason: reason.metric_label(),
                })
                .inc();
            return None;
        }
    };
    let iface = snapshot.interfaces.get(interface)?;
    match snapshot.announcer.handle(iface, &frame) {
        Outcome::Reply(_) if !gate.allows(snapshot.period, now) => {
            metrics
                .frames_dropped
                .get_or_create(&ReasonLabels { reason: "fenced" })
                .inc();
            None
        }
        Outcome::Reply(reply) => {
            let ip = match frame.message {
                Message::ArpRequest(r) => IpAddr::V4(r.target_ip),
                Message::NeighborSolicitation(ns) => IpAddr::V6(ns.target),
                _ => return None,
            };
            Some(Ok((ip, reply)))
        }
        Outcome::Conflict { ip, mac } => Some(Err(ConflictSeen {
            ip,
            mac,
            interface: interface.to_string(),
        })),
        Outcome::Ignore => None,
    }
}

/// Reads `socket` until aborted, answering from `snapshot` while `gate` allows it.
pub fn spawn_reader(
    interface: String,
    socket: Arc<PacketSocket>,
    snapshot: watch::Receiver<Arc<AnswerSnapshot>>,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    conflicts: mpsc::Sender<ConflictSeen>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let n = match socket.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(%interface, error = %e, "packet socket read failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let current = snapshot.borrow().clone();
            // The time is taken after the read returns: a request that waited in the socket
            // through a stall is judged by the gate as of now.
            match respond(
                &current,
                &gate,
                Instant::now(),
                &interface,
                &buf[..n],
                &metrics,
            ) {
                Some(Ok((ip, reply))) => {
                    let labels = IpLabels { ip: ip.to_string() };
                    metrics.requests_received.get_or_create(&labels).inc();
                    match socket.send(&reply.to_bytes()).await {
                        Ok(()) => {
                            metrics.responses_sent.get_or_create(&labels).inc();
                        }
                        Err(e) => tracing::warn!(%interface, error = %e, "reply not sent"),
                    }
                }
                Some(Err(conflict)) => {
                    // Full: the main loop is already behind on conflicts; they repeat anyway.
                    let _ = conflicts.try_send(conflict);
                }
                None => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fencing::Verdict;
    use crate::wire::EthernetHeader;
    use crate::wire::arp::ArpRequest;
    use std::net::Ipv4Addr;

    const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const CLIENT: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 240);

    fn snapshot(owned: bool) -> AnswerSnapshot {
        let mut announcer = Announcer::new(Default::default());
        if owned {
            announcer.set_owned(
                [(IpAddr::V4(VIP), Vec::new())].into_iter().collect(),
                Instant::now(),
            );
        }
        let eth0 = Interface {
            name: "eth0".into(),
            mac: OURS,
            link_local: None,
        };
        AnswerSnapshot {
            announcer,
            interfaces: [("eth0".to_string(), eth0)].into_iter().collect(),
            period: 1,
        }
    }

    /// A gate open for period 1 for the next second.
    fn open_gate(now: Instant) -> Gate {
        let gate = Gate::new(now);
        gate.publish(&Verdict {
            open_until: Some(now + Duration::from_secs(1)),
            period_alive: true,
            period: 1,
            member_since: now,
            tie: false,
            known: 1,
            heard: 1,
        });
        gate
    }

    fn request(target: Ipv4Addr) -> Vec<u8> {
        Frame {
            eth: EthernetHeader {
                dst: MacAddr::BROADCAST,
                src: CLIENT,
            },
            message: Message::ArpRequest(ArpRequest {
                sender_mac: CLIENT,
                sender_ip: Ipv4Addr::new(192, 0, 2, 50),
                target_mac: MacAddr([0; 6]),
                target_ip: target,
            }),
        }
        .to_bytes()
    }

    #[test]
    fn answers_an_owned_ip_with_the_interface_mac() {
        let metrics = Metrics::default();
        let now = Instant::now();
        let out = respond(
            &snapshot(true),
            &open_gate(now),
            now,
            "eth0",
            &request(VIP),
            &metrics,
        );
        let Some(Ok((ip, reply))) = out else {
            panic!("expected a reply, got {out:?}");
        };
        assert_eq!(ip, IpAddr::V4(VIP));
        assert_eq!(reply.eth.src, OURS);
        assert_eq!(reply.eth.dst, CLIENT);
    }

    #[test]
    fn stays_silent_for_an_ip_not_owned_or_an_unknown_interface() {
        let metrics = Metrics::default();
        let now = Instant::now();
        let gate = open_gate(now);
        let answer = |snap: &AnswerSnapshot, iface: &str, target: Ipv4Addr| {
            respond(snap, &gate, now, iface, &request(target), &metrics)
        };
        assert!(answer(&snapshot(false), "eth0", VIP).is_none());
        assert!(answer(&snapshot(true), "eth1", VIP).is_none());
        assert!(answer(&snapshot(true), "eth0", Ipv4Addr::new(192, 0, 2, 241)).is_none());
    }

    #[test]
    fn garbage_is_dropped_and_counted() {
        let metrics = Metrics::default();
        let now = Instant::now();
        assert!(
            respond(
                &snapshot(true),
                &open_gate(now),
                now,
                "eth0",
                &[0xff; 7],
                &metrics
            )
            .is_none()
        );
        let dropped: u64 = crate::wire::DropReason::ALL
            .iter()
            .map(|r| {
                metrics
                    .frames_dropped
                    .get_or_create(&ReasonLabels {
                        reason: r.metric_label(),
                    })
                    .get()
            })
            .sum();
        assert_eq!(dropped, 1);
    }

    #[test]
    fn nothing_is_answered_past_the_gate_or_from_another_period() {
        // The owner's process was stopped for two seconds with requests queued in its socket:
        // when it resumes, its snapshot still says it owns the VIP, but the gate has closed.
        let metrics = Metrics::default();
        let t0 = Instant::now();
        let gate = open_gate(t0);
        let owned = snapshot(true);
        let resumed = t0 + Duration::from_secs(2);
        assert!(respond(&owned, &gate, resumed, "eth0", &request(VIP), &metrics).is_none());
        // A new period opened meanwhile (after a hold-down): the old snapshot is still not
        // answered from; only one elected in the new period would be.
        gate.publish(&Verdict {
            open_until: Some(resumed + Duration::from_secs(1)),
            period_alive: true,
            period: 2,
            member_since: resumed,
            tie: false,
            known: 3,
            heard: 2,
        });
        assert!(respond(&owned, &gate, resumed, "eth0", &request(VIP), &metrics).is_none());
        let fresh = AnswerSnapshot { period: 2, ..owned };
        assert!(matches!(
            respond(&fresh, &gate, resumed, "eth0", &request(VIP), &metrics),
            Some(Ok(_))
        ));
        let fenced = metrics
            .frames_dropped
            .get_or_create(&ReasonLabels { reason: "fenced" })
            .get();
        assert_eq!(fenced, 2);
    }
}
