//! Answers ARP requests and Neighbor Solicitations in the packet socket's own reader task,
//! from a snapshot of what this node announces. A request never waits behind the main loop
//! (an election, an API event): the reply goes out of the socket it came in on, as the
//! kernel's own neighbour code does. Conflicts, which need the API, go to the main loop.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::announcer::{Announcer, Interface, Outcome};
use crate::frame::{Frame, MacAddr, Message};
use crate::metrics::{IpLabels, Metrics, ReasonLabels};
use crate::packet_socket::PacketSocket;

/// What the readers answer from: the owned IPs (with their allowed interfaces) and the
/// interfaces' MACs. Replaced whole by the main loop after every election or interface change.
#[derive(Clone, Debug, Default)]
pub struct AnswerSnapshot {
    /// The owned IPs.
    pub announcer: Announcer,
    /// Interfaces by name.
    pub interfaces: BTreeMap<String, Interface>,
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
pub fn respond(
    snapshot: &AnswerSnapshot,
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

/// Reads `socket` until aborted, answering from `snapshot`.
pub fn spawn_reader(
    interface: String,
    socket: Arc<PacketSocket>,
    snapshot: watch::Receiver<Arc<AnswerSnapshot>>,
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
            match respond(&current, &interface, &buf[..n], &metrics) {
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
    use crate::arp::ArpRequest;
    use crate::frame::EthernetHeader;
    use std::net::Ipv4Addr;
    use std::time::Instant;

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
        }
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
        let metrics = Metrics::new();
        let out = respond(&snapshot(true), "eth0", &request(VIP), &metrics);
        let Some(Ok((ip, reply))) = out else {
            panic!("expected a reply, got {out:?}");
        };
        assert_eq!(ip, IpAddr::V4(VIP));
        assert_eq!(reply.eth.src, OURS);
        assert_eq!(reply.eth.dst, CLIENT);
    }

    #[test]
    fn stays_silent_for_an_ip_not_owned_or_an_unknown_interface() {
        let metrics = Metrics::new();
        assert!(respond(&snapshot(false), "eth0", &request(VIP), &metrics).is_none());
        assert!(respond(&snapshot(true), "eth1", &request(VIP), &metrics).is_none());
        let other = Ipv4Addr::new(192, 0, 2, 241);
        assert!(respond(&snapshot(true), "eth0", &request(other), &metrics).is_none());
    }

    #[test]
    fn garbage_is_dropped_and_counted() {
        let metrics = Metrics::new();
        assert!(respond(&snapshot(true), "eth0", &[0xff; 7], &metrics).is_none());
        let dropped: u64 = crate::frame::DropReason::ALL
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
}
