//! The membership's I/O on its own task: sends this speaker's heartbeat every interval and
//! receives the others', whatever the main loop is doing. A long election (thousands of
//! Services created at once) must never delay a heartbeat, or peers would see silence.
//!
//! Every heartbeat sent and every heartbeat accepted re-judges the fence
//! (`crate::decide::fencing`) and publishes the verdict to the [`Gate`] the ARP/NDP readers
//! check, so the gate follows the two-way contacts as they arrive rather than at the next
//! tick. The decisions are all pure (`decide::membership` and its `admission` checks,
//! `decide::fencing`, `decide::keyring`); this module moves datagrams, reads the watch caches
//! (the key's Secret, the Nodes' addresses, the speaker pods that count) and tells the main
//! loop when something an election reads changed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::decide::election::NodeName;
use crate::decide::fencing::{Evidence, Fence, Gate, Timing, Verdict};
use crate::decide::inputs;
use crate::decide::keyring::{KeyEvent, KeyRing, SecretKey};
use crate::decide::membership::admission::{Admission, Admitted, canonical};
use crate::decide::membership::datagram::{self, DatagramView};
use crate::decide::membership::{self, Change, Membership, Rejection};
use crate::decide::subnets::Link;
use crate::edge::node_events::NodeEvents;
use crate::edge::witness::Witness;
use crate::metrics::{Metrics, ReasonLabels};

/// The key in the membership Secret's data.
pub const SECRET_KEY: &str = "secretkey";

/// What the heartbeat task and the main loop share.
#[derive(Clone, Debug)]
pub struct MembershipState {
    /// Who is alive, as heard directly or reported.
    pub membership: Membership,
    /// The fence's memory: the period and since when.
    pub fence: Fence,
    /// The last verdict.
    pub verdict: Verdict,
    /// *K*: the speakers that count, as of the last tick.
    pub counted: BTreeSet<NodeName>,
    /// This node's usable interfaces with their subnets, told to the others.
    pub links: Vec<Link>,
    /// The wire version of each peer's last authentic datagram: peers that speak only an
    /// older version are written in it.
    versions: BTreeMap<NodeName, u8>,
    /// The membership keys.
    pub keys: KeyRing,
    admission: Admission,
    /// Every node's InternalIPs, to the node's name.
    sources: BTreeMap<IpAddr, NodeName>,
}

/// What the socket can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `[::]`: IPv6 and IPv4-mapped.
    Dual,
    /// An IPv4 address (or `0.0.0.0` on a node booted without IPv6).
    V4,
    /// An IPv6 address.
    V6,
}

/// Binds the membership socket: to `addr` if given, else to `[::]` (both families), falling
/// back to `0.0.0.0` when the kernel has no IPv6 (booted with `ipv6.disable=1`: the socket
/// call fails with `EAFNOSUPPORT`).
pub fn bind_membership(
    addr: Option<IpAddr>,
    port: u16,
    bind: impl Fn(SocketAddr) -> io::Result<std::net::UdpSocket>,
) -> io::Result<(std::net::UdpSocket, Family)> {
    match addr {
        Some(ip @ IpAddr::V4(_)) => Ok((bind(SocketAddr::new(ip, port))?, Family::V4)),
        Some(ip @ IpAddr::V6(v6)) if !v6.is_unspecified() => {
            Ok((bind(SocketAddr::new(ip, port))?, Family::V6))
        }
        _ => match bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
            Ok(s) => Ok((s, Family::Dual)),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                tracing::info!("no IPv6 in this kernel: membership over IPv4 only");
                Ok((
                    bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))?,
                    Family::V4,
                ))
            }
            Err(e) => Err(e),
        },
    }
}

/// Every InternalIP of a Node, IPv4 first.
pub fn node_addresses(node: &Node) -> Vec<IpAddr> {
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
    out
}

/// Where to send a node's heartbeats from a socket of `family`: its first InternalIP that
/// family can reach (IPv4 first; IPv4 as a mapped address on a dual-stack socket).
pub fn target(addresses: &[IpAddr], family: Family) -> Option<IpAddr> {
    addresses.iter().find_map(|ip| match (family, ip) {
        (Family::Dual, IpAddr::V4(v4)) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        (Family::Dual | Family::V6, IpAddr::V6(v6)) => Some(IpAddr::V6(*v6)),
        (Family::V4, IpAddr::V4(v4)) => Some(IpAddr::V4(*v4)),
        _ => None,
    })
}

/// The heartbeat sender and receiver.
pub struct Heartbeats {
    state: Mutex<MembershipState>,
    socket: UdpSocket,
    family: Family,
    nodes: Store<Node>,
    secrets: Store<Secret>,
    speaker_pods: Store<Pod>,
    secret: (String, String),
    port: u16,
    timing: Timing,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    witness: Option<Arc<Witness>>,
    events: NodeEvents,
}

/// How the heartbeat task is set up.
pub struct HeartbeatSettings {
    /// This node.
    pub node: NodeName,
    /// Address to bind (`None`: every address).
    pub address: Option<IpAddr>,
    /// UDP port (the same on every node).
    pub port: u16,
    /// The membership's timings.
    pub timing: Timing,
    /// Namespace and name of the Secret with the key.
    pub secret: (String, String),
    /// How long both keys are accepted after a rotation.
    pub key_rotation: Duration,
    /// Random per start: distinguishes this run of the speaker from earlier ones.
    pub incarnation: u64,
}

/// The caches the heartbeat task reads.
pub struct HeartbeatInputs {
    /// Every Node (addresses, and *K*).
    pub nodes: Store<Node>,
    /// The key's Secret.
    pub secrets: Store<Secret>,
    /// The speaker pods (*K*).
    pub speaker_pods: Store<Pod>,
}

impl Heartbeats {
    /// Binds the membership port.
    pub fn bind(
        settings: HeartbeatSettings,
        inputs: HeartbeatInputs,
        gate: Arc<Gate>,
        metrics: Arc<Metrics>,
        witness: Option<Arc<Witness>>,
        events: NodeEvents,
    ) -> io::Result<Heartbeats> {
        let (socket, family) =
            bind_membership(settings.address, settings.port, std::net::UdpSocket::bind)?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let now = Instant::now();
        let fence = Fence::new(settings.timing, now);
        Ok(Heartbeats {
            state: Mutex::new(MembershipState {
                membership: Membership::new(
                    settings.node,
                    settings.incarnation,
                    settings.timing.dead_after,
                    now,
                ),
                verdict: fence.current(now),
                fence,
                counted: BTreeSet::new(),
                links: Vec::new(),
                versions: BTreeMap::new(),
                keys: KeyRing::new(settings.key_rotation),
                admission: Admission::new(settings.timing.interval),
                sources: BTreeMap::new(),
            }),
            socket,
            family,
            nodes: inputs.nodes,
            secrets: inputs.secrets,
            speaker_pods: inputs.speaker_pods,
            secret: settings.secret,
            port: settings.port,
            timing: settings.timing,
            gate,
            metrics,
            witness,
            events,
        })
    }

    /// The shared state. Never held across an await, and only for O(nodes) work.
    pub fn lock(&self) -> MutexGuard<'_, MembershipState> {
        // A panic while holding the lock cannot leave the table half-written in a way that
        // matters (every field is replaced whole), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The membership key as the Secret holds it now.
    fn secret_key(&self) -> Option<Vec<u8>> {
        let (ns, name) = &self.secret;
        self.secrets
            .state()
            .into_iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(name)
                    && s.metadata.namespace.as_deref() == Some(ns)
            })
            .and_then(|s| s.data.as_ref()?.get(SECRET_KEY).map(|b| b.0.clone()))
    }

    /// Re-reads the caches: the key, the nodes' addresses, *K*. Returns whether *K* changed
    /// (the election reads it too).
    fn refresh(&self, state: &mut MembershipState, now: Instant) -> bool {
        // Until the Secret watch has listed, an empty cache says nothing about the Secret: judged
        // then, every start would report the key missing (a Warning Event and a key problem
        // counted) a few hundred milliseconds before loading it. Unkeyed meanwhile, as before.
        if secrets_listed(&self.secrets) {
            let secret = self.secret_key();
            let observed = match &secret {
                Some(k) => SecretKey::Present(k),
                None => SecretKey::Missing,
            };
            if let Some(event) = state.keys.observe(observed, now) {
                self.key_event(event);
            }
        }
        self.metrics.set_key_loaded(state.keys.is_keyed());
        self.metrics
            .keys_accepted
            .set(i64::try_from(state.keys.accepted(now).len()).unwrap_or(0));
        let nodes = self.nodes.state();
        state.sources = nodes
            .iter()
            .flat_map(|n| {
                let name = NodeName::new(n.name_any());
                node_addresses(n)
                    .into_iter()
                    .map(move |ip| (canonical(ip), name.clone()))
            })
            .collect();
        state.admission.retain_sources(&state.sources);
        let sources = &state.sources;
        state
            .versions
            .retain(|node, _| sources.values().any(|n| n == node));
        let counted = inputs::counted_speakers(&nodes, &self.speaker_pods.state());
        self.metrics
            .counted_speakers
            .set(i64::try_from(counted.len()).unwrap_or(i64::MAX));
        if counted == state.counted {
            return false;
        }
        tracing::info!(
            counted = ?counted.iter().map(NodeName::as_str).collect::<Vec<_>>(),
            "speakers that count for quorum changed"
        );
        state.counted = counted;
        true
    }

    fn key_event(&self, event: KeyEvent) {
        let secret = format!("{}/{}", self.secret.0, self.secret.1);
        match event {
            KeyEvent::Loaded => tracing::info!(%secret, "membership key loaded"),
            KeyEvent::Rotated => {
                tracing::info!(%secret, "membership key rotated: both keys accepted for the rotation window");
                self.metrics.key_rotations.inc();
                self.events.normal(
                    "MembershipKeyRotated",
                    format!("the membership key in Secret {secret} changed: herald-speaker signs with the old key for half the rotation window, then with the new one, and accepts both meanwhile"),
                );
            }
            KeyEvent::Problem { problem, kept } => {
                let note = problem.note(&secret, kept);
                tracing::warn!(%secret, kept, "{note}");
                self.metrics
                    .key_problems
                    .get_or_create(&ReasonLabels {
                        reason: problem.metric_label(),
                    })
                    .inc();
                self.events.warn(problem.reason(), note);
            }
        }
    }

    /// Judges the fence at `now` and publishes the verdict to the gate. Returns whether it
    /// changed something the election reads (the period's life or number).
    fn judge(&self, state: &mut MembershipState, now: Instant) -> bool {
        let contacts: Vec<(NodeName, Instant)> = state
            .membership
            .contacts()
            .map(|(n, c)| (n.clone(), c))
            .collect();
        let holder = self.witness.as_ref().and_then(|w| w.holder_until(now));
        let before = state.verdict;
        let verdict = state.fence.judge(
            Evidence {
                me: state.membership.me(),
                known: &state.counted,
                contacts: &contacts,
                keyed: state.keys.is_keyed(),
                witness: holder.as_ref().map(|(n, until)| (n, *until)),
            },
            now,
        );
        self.gate.publish(&verdict);
        if let Some(until) = verdict.open_until {
            self.metrics
                .fence_margin
                .observe(until.saturating_duration_since(now).as_secs_f64());
        }
        if let Some(w) = &self.witness {
            w.set_contended(verdict.tie);
        }
        state.verdict = verdict;
        self.metrics.quorum.set(i64::from(verdict.gate_open(now)));
        self.metrics
            .two_way_peers
            .set(i64::try_from(verdict.heard.saturating_sub(1)).unwrap_or(0));
        let changed =
            before.period_alive != verdict.period_alive || before.period != verdict.period;
        if changed {
            if verdict.period_alive {
                self.metrics.fence_periods.inc();
            }
            tracing::info!(
                period = verdict.period,
                alive = verdict.period_alive,
                known = verdict.known,
                two_way = verdict.heard,
                "fence period {}",
                if verdict.period_alive {
                    "started"
                } else {
                    "ended"
                }
            );
        }
        changed
    }

    /// Sends one heartbeat to every other Node (a `leaving` one on shutdown), in the newest
    /// wire version each peer was last heard speaking.
    pub async fn send(&self, leaving: bool) {
        let now = Instant::now();
        let (sealed, versions, me) = {
            let mut state = self.lock();
            let Some(key) = state.keys.signing(now).map(<[u8]>::to_vec) else {
                return;
            };
            let own = state.verdict.own_state(state.links.clone(), leaving, now);
            let hb = state.membership.outgoing(own, now);
            let mut sealed = BTreeMap::new();
            let wanted: BTreeSet<u8> = std::iter::once(datagram::VERSION)
                .chain(state.versions.values().copied())
                .collect();
            for version in wanted {
                match datagram::seal_version(&hb, &key, version) {
                    Ok(d) => {
                        sealed.insert(version, d);
                    }
                    Err(e) => tracing::warn!(error = %e, version, "heartbeat not encoded"),
                }
            }
            (sealed, state.versions.clone(), hb.node)
        };
        for node in self.nodes.state() {
            let name = node.name_any();
            if name == me {
                continue;
            }
            let version = versions
                .get(&NodeName::new(name.clone()))
                .copied()
                .unwrap_or(datagram::VERSION);
            let Some(datagram) = sealed.get(&version) else {
                continue;
            };
            let Some(ip) = target(&node_addresses(&node), self.family) else {
                continue;
            };
            if let Err(e) = self
                .socket
                .send_to(datagram, SocketAddr::new(ip, self.port))
                .await
            {
                tracing::debug!(node = %node.name_any(), error = %e, "heartbeat not sent");
            }
        }
    }

    /// Checks and records a datagram. Returns whether it changed something an election reads.
    fn receive(&self, datagram: &[u8], source: IpAddr, now: Instant) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let keys = state.keys.accepted(now);
        let admitted = state.admission.admit(
            datagram,
            source,
            &state.sources,
            &keys,
            &state.membership,
            now,
        );
        drop(keys);
        // An authentic datagram tells which version the sender speaks.
        let sender = match &admitted {
            Ok(Admitted::Fresh(hb)) => Some(NodeName::new(hb.node.clone())),
            Ok(Admitted::Unproven { node, .. }) => Some(node.clone()),
            Err(_) => None,
        };
        if let (Some(node), Ok(view)) = (sender, DatagramView::new_checked(datagram)) {
            state.versions.insert(node, view.version());
        }
        let result = match admitted {
            Ok(Admitted::Fresh(hb)) => state.membership.receive(hb, now),
            Ok(Admitted::Unproven {
                node,
                incarnation,
                seq,
            }) => {
                // Authentic, but the sender does not echo us (yet): echo it back, so it can
                // prove itself next time.
                state
                    .membership
                    .heard_unproven(&node, incarnation, seq, now);
                Err(Rejection::Unproven)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(change) => {
                self.metrics.heartbeats_accepted.inc();
                let fence_changed = self.judge(state, now);
                change == Change::Election || fence_changed
            }
            Err(e) => {
                if e != Rejection::OwnHeartbeat {
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

    /// Sends every interval and receives until dropped; notifies `changed` when something an
    /// election reads changed (a member joined, left, changed links, fence or period; this
    /// node's own period). A member going silent is the main loop's own timer.
    pub async fn run(self: Arc<Self>, changed: mpsc::Sender<()>) {
        let mut tick = tokio::time::interval(self.timing.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut datagram = vec![0u8; membership::datagram::MAX_DATAGRAM + 1];
        let witness = self.witness.clone();
        loop {
            let dirty;
            tokio::select! {
                due = tick.tick() => {
                    // Judged before sending: the heartbeat carries the verdict.
                    let now = Instant::now();
                    self.metrics
                        .heartbeat_lateness
                        .observe(now.saturating_duration_since(due.into_std()).as_secs_f64());
                    dirty = {
                        let mut state = self.lock();
                        let counted_changed = self.refresh(&mut state, now);
                        self.judge(&mut state, now) || counted_changed
                    };
                    self.send(false).await;
                }
                received = self.socket.recv_from(&mut datagram) => {
                    dirty = match received {
                        Ok((n, from)) => self.receive(&datagram[..n], from.ip(), Instant::now()),
                        Err(e) => {
                            tracing::debug!(error = %e, "membership socket read failed");
                            false
                        }
                    };
                }
                () = witness_changed(witness.as_deref()) => {
                    let mut state = self.lock();
                    dirty = self.judge(&mut state, Instant::now());
                }
            }
            // A full channel already holds a wake-up: nothing is lost by dropping this one.
            if dirty && changed.try_send(()).is_err() && changed.is_closed() {
                return;
            }
        }
    }
}

/// Whether a watch's cache has had its first complete list (its store is ready).
fn secrets_listed(store: &Store<Secret>) -> bool {
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|ready| ready.is_ok())
}

/// Resolves when the witness holder relied upon changes; never without a witness.
async fn witness_changed(witness: Option<&Witness>) {
    match witness {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_ipv6_the_membership_binds_ipv4() {
        let no_v6 = |addr: SocketAddr| {
            if addr.is_ipv6() {
                Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
            } else {
                std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
            }
        };
        let (socket, family) = bind_membership(None, 7947, no_v6).unwrap();
        assert_eq!(family, Family::V4);
        assert!(socket.local_addr().unwrap().is_ipv4());
        // Any other error is not hidden.
        let refused = |_: SocketAddr| -> io::Result<std::net::UdpSocket> {
            Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
        };
        assert!(bind_membership(None, 7947, refused).is_err());
    }

    #[test]
    fn a_chosen_address_is_bound_as_is() {
        let (socket, family) = bind_membership(
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            0,
            std::net::UdpSocket::bind,
        )
        .unwrap();
        assert_eq!(family, Family::V4);
        assert_eq!(
            socket.local_addr().unwrap().ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn a_secret_cache_counts_as_listed_only_after_its_first_complete_list() {
        use kube::runtime::watcher::Event;
        let (store, mut writer) = kube::runtime::reflector::store::<Secret>();
        assert!(!secrets_listed(&store));
        writer.apply_watcher_event(&Event::Init);
        assert!(!secrets_listed(&store), "listing, not yet listed");
        writer.apply_watcher_event(&Event::InitDone);
        assert!(secrets_listed(&store), "listed, even with no Secret");
    }

    #[test]
    fn targets_follow_the_socket_family() {
        let v4: IpAddr = "192.0.2.11".parse().unwrap();
        let v6: IpAddr = "2001:db8::11".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.11".parse().unwrap();
        assert_eq!(target(&[v4, v6], Family::Dual), Some(mapped));
        assert_eq!(target(&[v4, v6], Family::V4), Some(v4));
        assert_eq!(target(&[v4, v6], Family::V6), Some(v6));
        assert_eq!(target(&[v6], Family::V4), None);
        assert_eq!(target(&[], Family::Dual), None);
    }
}
