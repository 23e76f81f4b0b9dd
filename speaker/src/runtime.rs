//! The speaker's main loop: Kubernetes watches, the membership's UDP socket, interface scans and
//! packet sockets feed the pure parts (membership, cluster view, announcer); their decisions go
//! out as frames.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, StreamExt};
use herald_config::l2advertisement::L2Advertisement;
use herald_config::pool::IPAddressPool;
use herald_config::selection::PoolPolicy;
use herald_config::service::{ServedClass, ServiceKey, is_ours, status_ips};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::announcer::{Announcer, GratuitousSettings, Interface};
use crate::cluster_view::{
    AdvertisementInfo, ClusterView, MembershipView, NodeInfo, Ownership, PoolInfo, ServiceInfo,
};
use crate::election::NodeName;
use crate::eligibility::{HoldDown, Liveness, TrafficPolicy};
use crate::frame::{Frame, Message};
use crate::handover::Handover;
use crate::heartbeats::{HeartbeatSettings, Heartbeats, MembershipState, Quorum};
use crate::interfaces::{self, InterfaceState};
use crate::membership::Membership;
use crate::metrics::{IpLabels, Metrics};
use crate::ndp;
use crate::packet_socket::{PacketSocket, Protocol};
use crate::responder::{self, AnswerSnapshot, ConflictSeen};
use crate::witness::{Witness, WitnessSettings};
use crate::{service_status, slim};
use kube::runtime::events::{Recorder, Reporter};

/// How the speaker runs.
#[derive(Clone, Debug)]
pub struct SpeakerSettings {
    /// This node's name (the Node object's).
    pub node: NodeName,
    /// The `spec.loadBalancerClass` served (as the controller's flag).
    pub class: Option<String>,
    /// UDP port of the membership.
    pub membership_port: u16,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// A peer silent this long is dead and its IPs move.
    pub dead_after: Duration,
    /// A speaker that has not heard a majority within this window stops announcing. Shorter
    /// than `dead_after`, so a cut-off owner is silent before anyone takes over.
    pub withdraw_after: Duration,
    /// A node that joins or returns is eligible only after this long.
    pub hold_down: Duration,
    /// Namespace and name of the Secret holding the membership key (`secretkey`).
    pub secret: (String, String),
    /// Gratuitous announcements.
    pub gratuitous: GratuitousSettings,
    /// How often interfaces are re-read.
    pub interface_scan: Duration,
    /// A node taking an IP from a live owner announces it this much later (break before make).
    pub handover_delay: Duration,
    /// Name of the witness Lease (in the Secret's namespace) that breaks ties; `None`: ties
    /// never announce.
    pub witness_lease: Option<String>,
}

/// The key in the Secret's data.
pub use crate::heartbeats::SECRET_KEY;

/// Condition writes in flight at once: a takeover of hundreds of Services must not open
/// hundreds of API connections (each a TLS session, tens of KiB) at the same moment.
const STATUS_WRITES_IN_FLIGHT: usize = 4;

struct Sockets {
    arp: Arc<PacketSocket>,
    ndp: Arc<PacketSocket>,
    joined: BTreeSet<[u8; 6]>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Sockets {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

struct Stores {
    nodes: Store<Node>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pools: Store<IPAddressPool>,
    ads: Store<L2Advertisement>,
}

struct Members<'a> {
    membership: &'a Membership,
    hold: &'a HoldDown,
    my_links: &'a [String],
    me: &'a NodeName,
    now: Instant,
}

impl MembershipView for Members<'_> {
    fn liveness(&self, node: &NodeName) -> Liveness {
        if self.membership.is_alive(node, self.now) {
            self.hold.liveness(node, self.now)
        } else {
            Liveness::Absent
        }
    }

    fn usable_links(&self, node: &NodeName) -> Option<Vec<String>> {
        if node == self.me {
            Some(self.my_links.to_vec())
        } else {
            self.membership.links(node).map(<[String]>::to_vec)
        }
    }
}

struct Speaker {
    settings: SpeakerSettings,
    class: ServedClass,
    metrics: Arc<Metrics>,
    stores: Stores,
    heartbeats: Arc<Heartbeats>,
    hold: HoldDown,
    handover: Handover,
    announcer: Announcer,
    interfaces: Vec<InterfaceState>,
    sockets: BTreeMap<String, Sockets>,
    /// What the socket readers answer from.
    answers: watch::Sender<Arc<AnswerSnapshot>>,
    conflicts_tx: mpsc::Sender<ConflictSeen>,
    started: Instant,
    had_quorum: bool,
    /// The live members the last election used.
    elected_alive: BTreeSet<NodeName>,
    client: Client,
    recorder: Recorder,
    status_writes: Arc<Semaphore>,
    /// Which Services use each owned IP (for Events).
    ip_services: BTreeMap<IpAddr, Vec<ServiceKey>>,
    /// The condition message last written per Service, until the watch shows it.
    announced: BTreeMap<ServiceKey, String>,
    /// Conflicts already reported, so a flood of foreign replies is one Event a minute.
    conflicts: BTreeMap<(IpAddr, [u8; 6]), Instant>,
}

fn node_info(node: &Node) -> NodeInfo {
    NodeInfo {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        network_unavailable: node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
            }),
    }
}

impl Speaker {
    fn my_links(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .filter(|i| i.usable())
            .map(|i| i.name.clone())
            .collect()
    }

    fn services(&self) -> Vec<ServiceInfo> {
        let mut endpoints: BTreeMap<ServiceKey, (BTreeSet<NodeName>, bool)> = BTreeMap::new();
        for slice in self.stores.slices.state() {
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.clone(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name").cloned()),
            ) else {
                continue;
            };
            let entry = endpoints.entry(ServiceKey::new(ns, svc)).or_default();
            for ep in &slice.endpoints {
                let conditions = ep.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                if serving {
                    entry.1 = true;
                }
                if ready && let Some(node) = &ep.node_name {
                    entry.0.insert(NodeName::new(node.clone()));
                }
            }
        }
        self.stores
            .services
            .state()
            .iter()
            .filter(|svc| is_ours(svc, &self.class))
            .filter_map(|svc| {
                let key = ServiceKey::of(svc)?;
                let ips = status_ips(svc);
                if ips.is_empty() {
                    return None;
                }
                let (endpoint_nodes, has_endpoints) =
                    endpoints.get(&key).cloned().unwrap_or_default();
                let local = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.external_traffic_policy.as_deref())
                    == Some("Local");
                Some(ServiceInfo {
                    key,
                    ips,
                    labels: svc.metadata.labels.clone().unwrap_or_default(),
                    policy: if local {
                        TrafficPolicy::Local
                    } else {
                        TrafficPolicy::Cluster
                    },
                    endpoint_nodes,
                    has_endpoints,
                })
            })
            .collect()
    }

    /// Re-runs the elections and applies this node's share.
    fn recompute(&mut self) {
        let now = Instant::now();
        let nodes: BTreeMap<NodeName, NodeInfo> = self
            .stores
            .nodes
            .state()
            .iter()
            .map(|n| (NodeName::new(n.name_any()), node_info(n)))
            .collect();
        // A copy (O(nodes)): the heartbeat task keeps receiving while the election runs.
        let (
            Quorum {
                may_announce: quorum,
                known,
                heard,
            },
            MembershipState {
                membership,
                member_since,
                ..
            },
        ) = {
            let mut state = self.heartbeats.lock();
            // Without quorum this node is not a member: its membership age (which its
            // heartbeats carry, and from which every speaker times its hold-down) restarts.
            let quorum = self.heartbeats.judge_quorum(&mut state, now);
            (quorum, state.clone())
        };
        let alive: BTreeMap<NodeName, Instant> = membership.alive(now).into_iter().collect();
        for name in nodes.keys() {
            // Every node's hold-down runs from the membership age it reports itself, so all
            // speakers agree on who is held down.
            self.hold.down(name);
            match alive.get(name) {
                Some(_) if *name == self.settings.node => self.hold.up(name, member_since),
                Some(since) => self.hold.up(name, *since),
                None => {}
            }
        }
        if quorum != self.had_quorum {
            tracing::info!(quorum, known, heard, "quorum changed");
        }
        self.had_quorum = quorum;
        self.metrics.quorum.set(i64::from(quorum));
        self.metrics.members.set(alive.len() as i64);
        self.elected_alive = alive.keys().cloned().collect();

        let pools: Vec<PoolInfo> = self
            .stores
            .pools
            .state()
            .iter()
            .map(|p| PoolInfo {
                name: p.name_any(),
                labels: p.metadata.labels.clone().unwrap_or_default(),
                ranges: PoolPolicy::from_spec(&p.name_any(), &p.spec).ranges,
            })
            .collect();
        let ads: Vec<AdvertisementInfo> = self
            .stores
            .ads
            .state()
            .iter()
            .map(|a| AdvertisementInfo::from_spec(&a.name_any(), &a.spec))
            .collect();
        let services = self.services();
        let my_links = self.my_links();
        let view = ClusterView {
            nodes: &nodes,
            pools: &pools,
            advertisements: &ads,
            services: &services,
            membership: &Members {
                membership: &membership,
                hold: &self.hold,
                my_links: &my_links,
                me: &self.settings.node,
                now,
            },
        };
        let all: Vec<Ownership> = if quorum { view.elect() } else { Vec::new() };
        let owners: BTreeMap<IpAddr, Option<NodeName>> =
            all.iter().map(|o| (o.ip, o.owner.clone())).collect();
        let announcing: BTreeSet<IpAddr> = self.announcer.owned().copied().collect();
        let admitted = self.handover.admit(
            &self.settings.node,
            &owners,
            &self.elected_alive,
            &announcing,
            now,
        );
        let elected: Vec<Ownership> = all
            .into_iter()
            .filter(|o| admitted.contains(&o.ip))
            .collect();
        let mine: BTreeMap<IpAddr, Vec<String>> = elected
            .iter()
            .map(|o| (o.ip, o.interfaces.clone()))
            .collect();
        self.ip_services = elected.iter().map(|o| (o.ip, o.services.clone())).collect();
        self.report_owned(&elected);
        let (gained, lost) = self.announcer.set_owned(mine, now);
        for ip in &gained {
            tracing::info!(%ip, "announcing");
            self.metrics.ips_gained.inc();
            self.metrics
                .announced
                .get_or_create(&IpLabels { ip: ip.to_string() })
                .set(1);
        }
        for ip in &lost {
            tracing::info!(%ip, "no longer announcing");
            self.metrics.ips_lost.inc();
            self.metrics.forget_ip(*ip);
        }
        self.sync_multicast();
        self.publish_answers();
    }

    /// Hands the socket readers what they answer from now.
    fn publish_answers(&self) {
        let interfaces = self
            .announce_interfaces()
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        self.answers.send_replace(Arc::new(AnswerSnapshot {
            announcer: self.announcer.clone(),
            interfaces,
        }));
    }

    /// Tells users which node announces each Service this node owns: a status condition and
    /// an Event, written only when the condition does not already say so.
    fn report_owned(&mut self, elected: &[Ownership]) {
        let services: BTreeMap<ServiceKey, Arc<Service>> = self
            .stores
            .services
            .state()
            .into_iter()
            .filter_map(|s| Some((ServiceKey::of(&s)?, s)))
            .collect();
        let ifaces = self.announce_interfaces();
        let mut done = BTreeSet::new();
        for o in elected {
            let interface = ifaces
                .iter()
                .find(|i| o.interfaces.is_empty() || o.interfaces.contains(&i.name))
                .map(|i| i.name.clone())
                .unwrap_or_else(|| "none".into());
            let message = service_status::message(self.settings.node.as_str(), &interface);
            for key in &o.services {
                if !done.insert(key.clone()) {
                    continue;
                }
                let Some(svc) = services.get(key) else {
                    continue;
                };
                let shown = service_status::current(svc);
                if shown.as_deref() == Some(message.as_str()) {
                    self.announced.remove(key);
                    continue;
                }
                if self.announced.get(key) == Some(&message) {
                    continue;
                }
                // Without a UID the write could not be tied to this Service (it may be gone
                // and recreated); the next event brings one.
                let Some(uid) = svc.metadata.uid.clone() else {
                    continue;
                };
                self.announced.insert(key.clone(), message.clone());
                let write = service_status::announce(
                    self.client.clone(),
                    self.recorder.clone(),
                    key.clone(),
                    uid,
                    self.settings.node.as_str().to_string(),
                    message.clone(),
                );
                let permits = self.status_writes.clone();
                tokio::spawn(async move {
                    // The semaphore is never closed.
                    let _permit = permits.acquire_owned().await;
                    write.await;
                });
            }
        }
        self.announced.retain(|k, _| done.contains(k));
    }

    /// Joins the solicited-node group of every owned IPv6 address on every socket, and leaves
    /// the others.
    fn sync_multicast(&mut self) {
        let wanted: BTreeSet<[u8; 6]> = self
            .announcer
            .owned()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(ndp::multicast_mac(ndp::solicited_node(*v6)).0),
                IpAddr::V4(_) => None,
            })
            .collect();
        for (name, s) in self.sockets.iter_mut() {
            for mac in wanted.difference(&s.joined.clone()) {
                match s.ndp.join(crate::frame::MacAddr(*mac)) {
                    Ok(()) => {
                        s.joined.insert(*mac);
                    }
                    Err(e) => {
                        tracing::warn!(interface = %name, error = %e, "joining a multicast group failed")
                    }
                }
            }
            for mac in s.joined.clone().difference(&wanted) {
                let _ = s.ndp.leave(crate::frame::MacAddr(*mac));
                s.joined.remove(mac);
            }
        }
    }

    /// Re-reads interfaces; opens sockets on new usable ones and closes the rest. Returns
    /// whether anything election-relevant changed.
    fn scan_interfaces(&mut self) -> bool {
        let Ok(scanned) = interfaces::scan() else {
            return false;
        };
        let named: BTreeSet<String> = self
            .stores
            .ads
            .state()
            .iter()
            .flat_map(|a| {
                a.spec
                    .interfaces
                    .iter()
                    .map(|i| i.0.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
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
        for (name, index) in wanted {
            if self.sockets.contains_key(&name) {
                continue;
            }
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
                                self.metrics.clone(),
                                self.conflicts_tx.clone(),
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
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(interface = %name, error = %e, "cannot open packet sockets (CAP_NET_RAW?)");
                }
            }
        }
        if changed {
            self.sync_multicast();
            self.heartbeats.lock().links = self.my_links();
        }
        if changed || !self.sockets.keys().eq(listening.iter()) {
            self.publish_answers();
        }
        changed
    }

    fn announce_interfaces(&self) -> Vec<Interface> {
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

    async fn send_frame(&self, interface: &str, frame: &Frame) -> bool {
        let Some(s) = self.sockets.get(interface) else {
            return false;
        };
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

    /// Another station answered for an IP this node announces: a metric, a log line and (at
    /// most once a minute per MAC) a Warning Event on every Service using the IP.
    fn handle_conflict(&mut self, seen: ConflictSeen) {
        let ConflictSeen { ip, mac, interface } = seen;
        // The reader judged from its snapshot; the IP may have moved on since.
        if !self.announcer.owned().any(|o| *o == ip) {
            return;
        }
        tracing::warn!(%ip, %mac, %interface, "another station claims an IP this node announces");
        self.metrics
            .conflicts
            .get_or_create(&IpLabels { ip: ip.to_string() })
            .inc();
        let now = Instant::now();
        let recent = self
            .conflicts
            .get(&(ip, mac.0))
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60));
        if recent {
            return;
        }
        self.conflicts.insert((ip, mac.0), now);
        self.conflicts
            .retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
        let uids: BTreeMap<ServiceKey, Option<String>> = self
            .stores
            .services
            .state()
            .iter()
            .filter_map(|s| Some((ServiceKey::of(s)?, s.metadata.uid.clone())))
            .collect();
        for key in self.ip_services.get(&ip).cloned().unwrap_or_default() {
            let note = format!(
                "{mac} also answers for {ip}, announced by node {} on {interface}",
                self.settings.node
            );
            tokio::spawn(service_status::conflict(
                self.recorder.clone(),
                key.clone(),
                uids.get(&key).cloned().flatten(),
                note,
            ));
        }
    }

    async fn send_due(&mut self) {
        let ifaces = self.announce_interfaces();
        for (interface, frame) in self.announcer.due(&ifaces, Instant::now()) {
            let ip = match frame.message {
                Message::ArpRequest(r) => IpAddr::V4(r.sender_ip),
                Message::ArpReply(r) => IpAddr::V4(r.sender_ip),
                Message::NeighborAdvertisement(na) => IpAddr::V6(na.target),
                Message::NeighborSolicitation(_) => continue,
            };
            if self.send_frame(&interface, &frame).await {
                self.metrics
                    .gratuitous_sent
                    .get_or_create(&IpLabels { ip: ip.to_string() })
                    .inc();
            }
        }
    }
}

fn sleep_until(at: Option<Instant>) -> tokio::time::Sleep {
    let at = at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
    tokio::time::sleep_until(tokio::time::Instant::from_std(at))
}

/// Runs the speaker until `shutdown` turns true; then hands its IPs over and returns.
pub async fn run(
    client: Client,
    settings: SpeakerSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Every object is slimmed before it is stored: the stores hold only what the election reads.
    macro_rules! watch_into {
        ($api:expr, $config:expr, $slim:expr) => {{
            let (store, writer) = reflector::store();
            let stream =
                reflector::reflector(writer, watcher::watcher($api, $config).modify($slim))
                    .default_backoff()
                    .map(|_| ())
                    .boxed();
            (store, stream)
        }};
    }
    let (nodes, s1) = watch_into!(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        slim::node
    );
    let (services, s2) = watch_into!(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        slim::service
    );
    let (slices, s3) = watch_into!(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        slim::endpoint_slice
    );
    let (pools, s4) = watch_into!(
        Api::<IPAddressPool>::all(client.clone()),
        watcher::Config::default(),
        |p: &mut IPAddressPool| {
            slim::metadata_only(&mut p.metadata);
            p.status = None;
        }
    );
    let (ads, s5) = watch_into!(
        Api::<L2Advertisement>::all(client.clone()),
        watcher::Config::default(),
        |a: &mut L2Advertisement| slim::metadata_only(&mut a.metadata)
    );
    let (secrets, s6) = watch_into!(
        Api::<Secret>::namespaced(client.clone(), &settings.secret.0),
        watcher::Config::default().fields(&format!("metadata.name={}", settings.secret.1)),
        |s: &mut Secret| slim::metadata_only(&mut s.metadata)
    );
    let mut changes = futures::stream::select_all([s1, s2, s3, s4, s5, s6]);

    let witness = settings.witness_lease.as_ref().map(|name| {
        Witness::new(WitnessSettings::new(
            name.clone(),
            settings.secret.0.clone(),
            settings.node.clone(),
        ))
    });
    let witness_task = witness.clone().map(|w| tokio::spawn(w.run(client.clone())));
    let heartbeats = Arc::new(
        Heartbeats::bind(
            HeartbeatSettings {
                node: settings.node.clone(),
                port: settings.membership_port,
                dead_after: settings.dead_after,
                withdraw_after: settings.withdraw_after,
                secret: settings.secret.clone(),
                incarnation: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                    .unwrap_or(0),
            },
            nodes.clone(),
            secrets,
            metrics.clone(),
            witness.clone(),
        )
        .await?,
    );
    let (membership_tx, mut membership_changed) = mpsc::channel::<()>(1);
    let heartbeat_task = tokio::spawn(
        heartbeats
            .clone()
            .run(settings.heartbeat_interval, membership_tx),
    );
    let (conflicts_tx, mut conflicts_rx) = mpsc::channel::<ConflictSeen>(256);
    let (answers, _) = watch::channel(Arc::new(AnswerSnapshot::default()));
    let now = Instant::now();
    let mut speaker = Speaker {
        class: ServedClass(settings.class.clone()),
        hold: HoldDown::new(settings.hold_down),
        handover: Handover::new(settings.handover_delay),
        announcer: Announcer::new(settings.gratuitous),
        settings,
        metrics: metrics.clone(),
        stores: Stores {
            nodes,
            services,
            slices,
            pools,
            ads,
        },
        heartbeats: heartbeats.clone(),
        interfaces: Vec::new(),
        sockets: BTreeMap::new(),
        answers,
        conflicts_tx,
        started: now,
        had_quorum: false,
        elected_alive: BTreeSet::new(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: service_status::FIELD_MANAGER.into(),
                instance: None,
            },
        ),
        client: client.clone(),
        status_writes: Arc::new(Semaphore::new(STATUS_WRITES_IN_FLIGHT)),
        ip_services: BTreeMap::new(),
        announced: BTreeMap::new(),
        conflicts: BTreeMap::new(),
    };
    tracing::info!(node = %speaker.settings.node, started = ?speaker.started, "speaker starting");
    let mut scan = tokio::time::interval(speaker.settings.interface_scan);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Interface changes arrive as rtnetlink events; the periodic scan is only a safety net.
    let mut link_events: std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send>> =
        match crate::link_events::subscribe() {
            Ok(events) => Box::pin(events),
            Err(e) => {
                tracing::warn!(error = %e, "no rtnetlink events; interfaces are only polled");
                Box::pin(futures::stream::pending())
            }
        };

    let mut last_election = Instant::now();
    // Silences already judged up to here (see the expiry arm).
    let mut expiries_checked = last_election;
    loop {
        // Deadlines are taken from the last election, not from now: one that passes while
        // another event is handled must still fire (at once), or the election never re-runs.
        let expiry = heartbeats
            .lock()
            .membership
            .next_expiry(last_election.max(expiries_checked));
        let hold_change = speaker.hold.next_change(last_election);
        let handover_due = speaker.handover.next_due();
        let due = speaker.announcer.next_due();
        let mut dirty = false;
        tokio::select! {
            Some(()) = changes.next() => {
                dirty = true;
                while let Some(Some(())) = changes.next().now_or_never() {}
            }
            Some(()) = membership_changed.recv() => { dirty = true; }
            Some(seen) = conflicts_rx.recv() => {
                speaker.handle_conflict(seen);
            }
            _ = scan.tick() => {
                dirty = speaker.scan_interfaces();
            }
            Some(()) = link_events.next() => {
                while let Some(Some(())) = link_events.next().now_or_never() {}
                dirty = speaker.scan_interfaces();
            }
            _ = sleep_until(expiry) => {
                // The earliest possible silence; usually the peer was heard meanwhile. Only a
                // member actually gone re-runs the election (not every dead_after at idle).
                let now = Instant::now();
                let alive: BTreeSet<NodeName> = heartbeats
                    .lock()
                    .membership
                    .alive(now)
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                dirty = alive != speaker.elected_alive;
                expiries_checked = now;
            }
            _ = sleep_until(hold_change) => { dirty = true; }
            _ = sleep_until(handover_due) => { dirty = true; }
            _ = sleep_until(due) => {
                speaker.send_due().await;
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
        if dirty {
            last_election = Instant::now();
            speaker.recompute();
            speaker.send_due().await;
        }
    }
    // Graceful handover: stop answering, then tell the others at once (a few times, UDP).
    tracing::info!("shutting down: handing IPs over");
    heartbeat_task.abort();
    speaker.announcer.set_owned(BTreeMap::new(), Instant::now());
    speaker.publish_answers();
    if let Some(w) = &witness {
        if let Some(task) = witness_task {
            task.abort();
        }
        w.release(client.clone(), Duration::from_millis(500)).await;
    }
    for _ in 0..3 {
        heartbeats.send(true).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
