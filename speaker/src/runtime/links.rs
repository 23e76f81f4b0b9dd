//! This node's links: interfaces scanned (on rtnetlink news, and a periodic safety net) with
//! their subnets, one
//! pair of packet sockets per usable interface with its reader task, the solicited-node groups
//! joined for owned IPv6 addresses, and the snapshot the readers answer from.
//!
//! interfaces → which may announce (`decide::eligibility`) → open or close sockets, join or
//! leave groups, publish the readers' snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::decide::announcer::{Announcer, Interface};
use crate::decide::fencing::Gate;
use crate::decide::membership::datagram::MAX_SUBNETS;
use crate::decide::subnets::Link;
use crate::edge::interfaces::{self, InterfaceState};
use crate::edge::link_events;
use crate::edge::packet_socket::{PacketSocket, Protocol};
use crate::edge::responder::{self, AnswerSnapshot, ConflictSeen};
use crate::metrics::{InterfaceLabels, Metrics};
use crate::wire::{Frame, MacAddr, Message, ndp};

/// The sockets of one interface, and their reader tasks (stopped when dropped).
struct Sockets {
    arp: Arc<PacketSocket>,
    ndp: Arc<PacketSocket>,
    joined: BTreeSet<MacAddr>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Sockets {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// What a scan changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ScanOutcome {
    /// The interfaces, or those this node can answer on, changed: something the election
    /// reads.
    pub interfaces_changed: bool,
    /// The interfaces or the sockets listening changed: the readers need a new snapshot.
    pub answers_stale: bool,
    /// Interfaces whose packet sockets failed to open, with the error, reported once per
    /// interface and error (a scan retries every few seconds).
    pub new_socket_failures: Vec<(String, String)>,
}

/// The interfaces, their sockets and readers.
pub(super) struct Links {
    interfaces: Vec<InterfaceState>,
    sockets: BTreeMap<String, Sockets>,
    /// What the socket readers answer from.
    answers: watch::Sender<Arc<AnswerSnapshot>>,
    /// The fence as the readers check it.
    gate: Arc<Gate>,
    conflicts: mpsc::Sender<ConflictSeen>,
    metrics: Arc<Metrics>,
    /// Interfaces whose sockets did not open, and why (until they do).
    failed: BTreeMap<String, String>,
    /// The rtnetlink connection the subnets are read over (made at the first scan).
    netlink: Option<rtnetlink::Handle>,
}

impl Links {
    /// No interfaces yet; readers answer while `gate` allows and report conflicts on
    /// `conflicts`.
    pub fn new(
        metrics: Arc<Metrics>,
        gate: Arc<Gate>,
        conflicts: mpsc::Sender<ConflictSeen>,
    ) -> Links {
        Links {
            interfaces: Vec::new(),
            sockets: BTreeMap::new(),
            answers: watch::channel(Arc::new(AnswerSnapshot::default())).0,
            gate,
            conflicts,
            metrics,
            failed: BTreeMap::new(),
            netlink: None,
        }
    }

    /// The interfaces this node can answer on: up with carrier and its packet sockets open,
    /// with their subnets. Told to the peers and used for its own eligibility, so a node whose
    /// sockets do not open (no CAP_NET_RAW) is never elected for an IP nobody would then
    /// answer, and one without an interface in an IP's subnet is not elected where another
    /// node has one (`crate::decide::subnets`).
    pub fn usable(&self) -> Vec<Link> {
        self.interfaces
            .iter()
            .filter(|i| self.sockets.contains_key(&i.name))
            .map(|i| Link {
                name: i.name.clone(),
                // What the heartbeat carries (distinct subnets, sorted); more would make the
                // heartbeat unencodable, and a silent node loses everything.
                subnets: i.subnets.iter().take(MAX_SUBNETS).copied().collect(),
            })
            .collect()
    }

    /// The interfaces this node can announce on: those with sockets open.
    pub fn announcing(&self) -> Vec<Interface> {
        self.interfaces
            .iter()
            .filter(|i| self.sockets.contains_key(&i.name))
            .map(|i| Interface {
                name: i.name.clone(),
                mac: i.mac,
                link_local: i.link_local,
            })
            .collect()
    }

    /// Re-reads interfaces; opens sockets on new usable ones (those of the default candidates
    /// and those `named` by an advertisement) and closes the rest.
    pub async fn scan(&mut self, named: &BTreeSet<String>) -> ScanOutcome {
        let Ok(mut scanned) = interfaces::scan() else {
            return ScanOutcome::default();
        };
        match self.subnets().await {
            Ok(mut by_index) => {
                for i in &mut scanned {
                    i.subnets = by_index.remove(&i.index).unwrap_or_default();
                }
            }
            Err(error) => {
                // Keep what was read last rather than tell the peers "no subnets".
                tracing::warn!(%error, "cannot read the interfaces' addresses");
                for i in &mut scanned {
                    if let Some(before) = self.interfaces.iter().find(|b| b.index == i.index) {
                        i.subnets = before.subnets.clone();
                    }
                }
            }
        }
        let changed = scanned != self.interfaces;
        self.interfaces = scanned;
        let wanted: BTreeMap<String, u32> = self
            .interfaces
            .iter()
            .filter(|i| i.usable() && (i.default_candidate() || named.contains(&i.name)))
            .map(|i| (i.name.clone(), i.index))
            .collect();
        let listening: Vec<String> = self.sockets.keys().cloned().collect();
        self.sockets.retain(|name, _| wanted.contains_key(name));
        self.failed.retain(|name, _| wanted.contains_key(name));
        let mut new_socket_failures = Vec::new();
        for (name, index) in wanted {
            if self.sockets.contains_key(&name) {
                continue;
            }
            match self.open(name.clone(), index) {
                Ok(()) => {
                    self.failed.remove(&name);
                }
                Err(error) => {
                    if self.failed.get(&name) != Some(&error) {
                        tracing::warn!(interface = %name, %error, "cannot open packet sockets: this node cannot answer there (CAP_NET_RAW?)");
                        self.failed.insert(name.clone(), error.clone());
                        new_socket_failures.push((name, error));
                    }
                }
            }
        }
        let answering = self.sockets.len();
        self.metrics
            .interfaces_answering
            .set(i64::try_from(answering).unwrap_or(i64::MAX));
        self.metrics.set_answering(answering > 0);
        let sockets_changed = !self.sockets.keys().eq(listening.iter());
        ScanOutcome {
            interfaces_changed: changed || sockets_changed,
            answers_stale: changed || sockets_changed,
            new_socket_failures,
        }
    }

    /// Every address's subnet by interface index, over the rtnetlink connection (made now if
    /// there is none; dropped on an error, to be made again at the next scan).
    async fn subnets(&mut self) -> Result<BTreeMap<u32, Vec<ipnet::IpNet>>, String> {
        let handle = match &self.netlink {
            Some(h) => h.clone(),
            None => {
                let h = link_events::connect().map_err(|e| e.to_string())?;
                self.netlink = Some(h.clone());
                h
            }
        };
        let read = link_events::subnets(&handle)
            .await
            .map_err(|e| e.to_string());
        if read.is_err() {
            self.netlink = None;
        }
        read
    }

    /// Opens `name`'s ARP and NDP sockets and starts their readers, or says why not.
    fn open(&mut self, name: String, index: u32) -> Result<(), String> {
        match (
            PacketSocket::open(index, Protocol::Arp),
            PacketSocket::open(index, Protocol::Ndp),
        ) {
            (Ok(arp), Ok(ndp)) => {
                let (arp, ndp) = (Arc::new(arp), Arc::new(ndp));
                let readers = [arp.clone(), ndp.clone()]
                    .into_iter()
                    .map(|sock| {
                        responder::spawn_reader(
                            name.clone(),
                            sock,
                            self.answers.subscribe(),
                            self.gate.clone(),
                            self.metrics.clone(),
                            self.conflicts.clone(),
                        )
                    })
                    .collect();
                tracing::info!(interface = %name, "listening for ARP and NDP");
                self.sockets.insert(
                    name,
                    Sockets {
                        arp,
                        ndp,
                        joined: BTreeSet::new(),
                        readers,
                    },
                );
                Ok(())
            }
            (Err(e), _) | (_, Err(e)) => {
                self.metrics
                    .packet_socket_errors
                    .get_or_create(&InterfaceLabels { interface: name })
                    .inc();
                Err(e.to_string())
            }
        }
    }

    /// Joins the solicited-node group of every `owned` IPv6 address on every socket, and
    /// leaves the others.
    pub fn sync_multicast<'a>(&mut self, owned: impl Iterator<Item = &'a IpAddr>) {
        let wanted: BTreeSet<MacAddr> = owned
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(ndp::multicast_mac(ndp::solicited_node(*v6))),
                IpAddr::V4(_) => None,
            })
            .collect();
        for (name, s) in self.sockets.iter_mut() {
            for mac in wanted.difference(&s.joined.clone()) {
                match s.ndp.join(*mac) {
                    Ok(()) => {
                        s.joined.insert(*mac);
                    }
                    Err(e) => {
                        tracing::warn!(interface = %name, error = %e, "joining a multicast group failed")
                    }
                }
            }
            for mac in s.joined.clone().difference(&wanted) {
                let _ = s.ndp.leave(*mac);
                s.joined.remove(mac);
            }
        }
    }

    /// Hands the socket readers what they answer from now: `announcer`'s IPs, elected in
    /// fence period `period`.
    pub fn publish(&self, announcer: &Announcer, period: u32) {
        let interfaces = self
            .announcing()
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        self.answers.send_replace(Arc::new(AnswerSnapshot {
            announcer: announcer.clone(),
            interfaces,
            period,
        }));
    }

    /// Sends `frame` on `interface` if the gate allows `period` now; whether it went out.
    pub async fn send(&self, interface: &str, frame: &Frame, period: u32) -> bool {
        let Some(s) = self.sockets.get(interface) else {
            return false;
        };
        if !self.gate.allows(period, std::time::Instant::now()) {
            return false;
        }
        let socket = match frame.message {
            Message::ArpRequest(_) | Message::ArpReply(_) => &s.arp,
            _ => &s.ndp,
        };
        match socket.send(&frame.to_bytes()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(interface, error = %e, "send failed");
                false
            }
        }
    }
}
