//! The membership's I/O on its own task: sends this speaker's heartbeat every interval and
//! receives the others', whatever the main loop is doing. A long election (thousands of
//! Services created at once) must never delay a heartbeat, or peers would see silence and the
//! speaker would see itself without quorum: the flicker that once let two nodes answer for
//! one IP under Service churn.
//!
//! The liveness table itself is pure (`membership.rs`); this module only moves datagrams and
//! tells the main loop when something election-relevant changed.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::election::NodeName;
use crate::membership::{self, Heartbeat, Membership, is_tie, may_announce};
use crate::metrics::{Metrics, ReasonLabels};
use crate::witness::Witness;

/// The key in the membership Secret's data.
pub const SECRET_KEY: &str = "secretkey";

/// What the heartbeat task and the main loop share.
#[derive(Clone, Debug)]
pub struct MembershipState {
    /// Who is alive, as heard.
    pub membership: Membership,
    /// When this speaker last (re)gained quorum: its heartbeats report the age, and every
    /// speaker times this node's hold-down from it.
    pub member_since: Instant,
    /// This node's usable interfaces, told to the others.
    pub links: Vec<String>,
    /// Since when exactly half the known speakers are heard, if they are.
    pub tie_since: Option<Instant>,
}

/// The self-fencing verdict and the counts behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// This speaker may announce.
    pub may_announce: bool,
    /// Speakers known to exist.
    pub known: usize,
    /// Speakers heard recently, this one included.
    pub heard: usize,
}

/// The heartbeat sender and receiver.
pub struct Heartbeats {
    state: Mutex<MembershipState>,
    socket: UdpSocket,
    nodes: Store<Node>,
    secrets: Store<Secret>,
    secret: (String, String),
    port: u16,
    withdraw_after: Duration,
    incarnation: u64,
    seq: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
    witness: Option<Arc<Witness>>,
    /// In a tie, how long the witness may take to answer before this speaker counts as
    /// having lost its membership (and restarts its hold-down).
    tie_grace: Duration,
}

/// How the heartbeat task is set up.
pub struct HeartbeatSettings {
    /// This node.
    pub node: NodeName,
    /// UDP port (the same on every node).
    pub port: u16,
    /// A peer silent this long is dead.
    pub dead_after: Duration,
    /// Quorum counts peers heard within this window.
    pub withdraw_after: Duration,
    /// Namespace and name of the Secret with the key.
    pub secret: (String, String),
    /// Distinguishes this run of the speaker from earlier ones (replay protection).
    pub incarnation: u64,
}

/// The first InternalIP of a Node, IPv4 before IPv6 (where its speaker listens).
pub fn node_address(node: &Node) -> Option<IpAddr> {
    let mut out: Vec<IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|ip| ip.is_ipv6());
    out.first().copied()
}

impl Heartbeats {
    /// Binds the membership port (IPv6 socket, IPv4-mapped peers too).
    pub async fn bind(
        settings: HeartbeatSettings,
        nodes: Store<Node>,
        secrets: Store<Secret>,
        metrics: Arc<Metrics>,
        witness: Option<Arc<Witness>>,
    ) -> std::io::Result<Heartbeats> {
        let socket = UdpSocket::bind(SocketAddr::new(
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            settings.port,
        ))
        .await?;
        Ok(Heartbeats {
            state: Mutex::new(MembershipState {
                membership: Membership::new(settings.node, settings.dead_after),
                member_since: Instant::now(),
                links: Vec::new(),
                tie_since: None,
            }),
            socket,
            nodes,
            secrets,
            secret: settings.secret,
            port: settings.port,
            withdraw_after: settings.withdraw_after,
            incarnation: settings.incarnation,
            seq: std::sync::atomic::AtomicU64::new(0),
            metrics,
            witness,
            tie_grace: settings.dead_after,
        })
    }

    /// The shared state. Never held across an await, and only for O(nodes) work.
    pub fn lock(&self) -> MutexGuard<'_, MembershipState> {
        // A panic while holding the lock cannot leave the table half-written in a way that
        // matters (every field is replaced whole), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The membership key, once the Secret is loaded and not empty.
    pub fn key(&self) -> Option<Vec<u8>> {
        let (ns, name) = &self.secret;
        self.secrets
            .state()
            .into_iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(name)
                    && s.metadata.namespace.as_deref() == Some(ns)
            })
            .and_then(|s| s.data.as_ref()?.get(SECRET_KEY).map(|b| b.0.clone()))
            .filter(|k| !k.is_empty())
    }

    /// Speakers known to exist: one per Node (the speaker is a DaemonSet).
    pub fn known_speakers(&self) -> usize {
        self.nodes.state().len()
    }

    /// Whether this speaker may announce (it has the key, and hears a strict majority or, in
    /// a tie, the witness's holder). While it may not, its membership age restarts — except
    /// for a short grace in a tie, while the witness is asked.
    pub fn judge_quorum(&self, state: &mut MembershipState, now: Instant) -> Quorum {
        let heard = state.membership.heard_set(self.withdraw_after, now);
        let known = self.known_speakers();
        let keyed = self.key().is_some();
        let tie = keyed && is_tie(known, heard.len());
        let holder = self.witness.as_ref().and_then(|w| {
            w.set_contended(tie);
            w.holder(now)
        });
        let quorum = keyed && may_announce(known, &heard, holder.as_ref());
        state.tie_since = tie.then(|| state.tie_since.unwrap_or(now));
        let asking_witness = self.witness.is_some()
            && state
                .tie_since
                .is_some_and(|t| now.duration_since(t) < self.tie_grace);
        if !quorum && !asking_witness {
            state.member_since = now;
        }
        Quorum {
            may_announce: quorum,
            known,
            heard: heard.len(),
        }
    }

    fn heartbeat(&self, leaving: bool) -> Heartbeat {
        let now = Instant::now();
        let state = self.lock();
        Heartbeat {
            node: state.membership.me().as_str().to_string(),
            incarnation: self.incarnation,
            seq: self
                .seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .saturating_add(1),
            leaving,
            links: state.links.clone(),
            member_for_ms: u64::try_from(now.duration_since(state.member_since).as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// Sends one heartbeat to every other Node.
    pub async fn send(&self, leaving: bool) {
        let Some(key) = self.key() else { return };
        let hb = self.heartbeat(leaving);
        let datagram = membership::seal(&hb, &key);
        for node in self.nodes.state() {
            if node.name_any() == hb.node {
                continue;
            }
            let Some(ip) = node_address(&node) else {
                continue;
            };
            let target = match ip {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                IpAddr::V6(v6) => IpAddr::V6(v6),
            };
            if let Err(e) = self
                .socket
                .send_to(&datagram, SocketAddr::new(target, self.port))
                .await
            {
                tracing::debug!(node = %node.name_any(), error = %e, "heartbeat not sent");
            }
        }
    }

    /// Verifies and records a datagram. Returns whether it changed something an election reads.
    fn receive(&self, datagram: &[u8]) -> bool {
        let Some(key) = self.key() else { return false };
        let result = membership::open(datagram, &key)
            .and_then(|hb| self.lock().membership.receive(hb, Instant::now()));
        match result {
            Ok(change) => !matches!(change, membership::Change::Refreshed),
            Err(e) => {
                if e != membership::Rejection::OwnHeartbeat {
                    self.metrics
                        .heartbeats_rejected
                        .get_or_create(&ReasonLabels {
                            reason: e.metric_label(),
                        })
                        .inc();
                }
                false
            }
        }
    }

    /// Sends every `interval` and receives until dropped; notifies `changed` when a member
    /// joins, leaves or changes links, or when quorum turns. (A member going silent is the
    /// main loop's own timer, `Membership::next_expiry`.)
    pub async fn run(self: Arc<Self>, interval: Duration, changed: mpsc::Sender<()>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut datagram = vec![0u8; membership::MAX_DATAGRAM + 1];
        let mut last_quorum: Option<bool> = None;
        loop {
            let mut dirty = false;
            tokio::select! {
                _ = tick.tick() => {
                    // Judged before sending: the heartbeat carries the membership age it sets.
                    let quorum = {
                        let mut state = self.lock();
                        self.judge_quorum(&mut state, Instant::now()).may_announce
                    };
                    self.send(false).await;
                    self.metrics.set_ready(self.key().is_some());
                    dirty = last_quorum != Some(quorum);
                    last_quorum = Some(quorum);
                }
                received = self.socket.recv_from(&mut datagram) => {
                    if let Ok((n, _)) = received {
                        dirty = self.receive(&datagram[..n]);
                    }
                }
            }
            // A full channel already holds a wake-up: nothing is lost by dropping this one.
            if dirty && changed.try_send(()).is_err() && changed.is_closed() {
                return;
            }
        }
    }
}
