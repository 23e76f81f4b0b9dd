//! Prometheus metrics of the speaker; served by `herald_support::health` (`/metrics`, `/healthz`,
//! `/readyz`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use herald_support::health::{Exposition, encode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Per-IP labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabels {
    /// The announced IP.
    pub ip: String,
}

/// An announced IP and an interface it is announced on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnnouncedLabels {
    /// The announced IP.
    pub ip: String,
    /// The interfaces it is answered on, joined by commas (`eth0`, `eth0,eth1`).
    pub interface: String,
}

/// Per-interface labels (a node has a handful of interfaces).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    /// The interface.
    pub interface: String,
}

/// A bounded reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

/// Every metric of the speaker.
pub struct Metrics {
    registry: Registry,
    /// ARP requests / Neighbor Solicitations received for owned IPs.
    pub requests_received: Family<IpLabels, Counter>,
    /// Replies sent.
    pub responses_sent: Family<IpLabels, Counter>,
    /// Gratuitous ARP / unsolicited NA sent.
    pub gratuitous_sent: Family<IpLabels, Counter>,
    /// Another MAC answered for an owned IP.
    pub conflicts: Family<IpLabels, Counter>,
    /// 1 for each IP this node announces, labelled with the interfaces it answers on
    /// ([`Metrics::set_announced`]).
    announced: Family<AnnouncedLabels, Gauge>,
    /// The `interface` label of each announced IP's series.
    announced_on: Mutex<BTreeMap<IpAddr, String>>,
    /// Frames dropped, by reason.
    pub frames_dropped: Family<ReasonLabels, Counter>,
    /// Membership datagrams refused, by reason.
    pub heartbeats_rejected: Family<ReasonLabels, Counter>,
    /// Heartbeats accepted (authentic, fresh, newer than what was had).
    pub heartbeats_accepted: Counter,
    /// Speakers that count for quorum (*K*: Nodes whose speaker has run).
    pub counted_speakers: Gauge,
    /// Peers in two-way contact within the withdraw window.
    pub two_way_peers: Gauge,
    /// Fence periods started (the first, and one after every closure longer than the grace:
    /// each starts a hold-down).
    pub fence_periods: Counter,
    /// At every judgement with the fence open: how long it would stay open if nothing more
    /// were heard (what is left of the withdraw window; near 0 means the fence nearly closed).
    pub fence_margin: Histogram,
    /// How late each heartbeat tick ran after it was due (a starved or stalled speaker).
    pub heartbeat_lateness: Histogram,
    /// Membership keys accepted now (2 during a rotation window).
    pub keys_accepted: Gauge,
    /// Membership key rotations seen.
    pub key_rotations: Counter,
    /// Problems with the membership key's Secret (missing, empty, too short), each counted
    /// once when it appears.
    pub key_problems: Family<ReasonLabels, Counter>,
    /// Live members, this node included.
    pub members: Gauge,
    /// 1 while this speaker's fence is open: it is in two-way contact with a majority (or the
    /// witness breaks a tie) and may announce.
    pub quorum: Gauge,
    /// IPs this node took over from another owner or gained.
    pub ips_gained: Counter,
    /// IPs this node stopped announcing.
    pub ips_lost: Counter,
    /// Interfaces with packet sockets open: where this node can answer.
    pub interfaces_answering: Gauge,
    /// Attempts to open an interface's packet sockets that failed.
    pub packet_socket_errors: Family<InterfaceLabels, Counter>,
    /// The membership key is loaded.
    key_loaded: AtomicBool,
    /// At least one interface can answer.
    answering: AtomicBool,
}

impl Default for Metrics {
    /// Registers every metric under `herald_speaker`.
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("herald_speaker");
        let m = Metrics {
            requests_received: Family::default(),
            responses_sent: Family::default(),
            gratuitous_sent: Family::default(),
            conflicts: Family::default(),
            announced: Family::default(),
            announced_on: Mutex::new(BTreeMap::new()),
            frames_dropped: Family::default(),
            heartbeats_rejected: Family::default(),
            heartbeats_accepted: Counter::default(),
            counted_speakers: Gauge::default(),
            two_way_peers: Gauge::default(),
            fence_periods: Counter::default(),
            fence_margin: Histogram::new([0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3]),
            heartbeat_lateness: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0,
            ]),
            keys_accepted: Gauge::default(),
            key_rotations: Counter::default(),
            key_problems: Family::default(),
            members: Gauge::default(),
            quorum: Gauge::default(),
            ips_gained: Counter::default(),
            ips_lost: Counter::default(),
            interfaces_answering: Gauge::default(),
            packet_socket_errors: Family::default(),
            key_loaded: AtomicBool::new(false),
            answering: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "requests_received",
            "ARP requests and Neighbor Solicitations for owned IPs",
            m.requests_received.clone(),
        );
        registry.register(
            "responses_sent",
            "ARP replies and Neighbor Advertisements sent",
            m.responses_sent.clone(),
        );
        registry.register(
            "gratuitous_sent",
            "Gratuitous ARP and unsolicited NA sent",
            m.gratuitous_sent.clone(),
        );
        registry.register(
            "conflicts",
            "Another MAC claimed an owned IP",
            m.conflicts.clone(),
        );
        registry.register(
            "announced",
            "1 for each IP this node announces; interface: the interfaces it answers on",
            m.announced.clone(),
        );
        registry.register(
            "frames_dropped",
            "Received frames dropped, by reason",
            m.frames_dropped.clone(),
        );
        registry.register(
            "heartbeats_rejected",
            "Membership datagrams refused, by reason",
            m.heartbeats_rejected.clone(),
        );
        registry.register(
            "heartbeats_accepted",
            "Membership heartbeats accepted",
            m.heartbeats_accepted.clone(),
        );
        registry.register(
            "counted_speakers",
            "Speakers that count for quorum: Nodes whose speaker has run",
            m.counted_speakers.clone(),
        );
        registry.register(
            "two_way_peers",
            "Peers in two-way contact within the withdraw window",
            m.two_way_peers.clone(),
        );
        registry.register(
            "fence_periods",
            "Fence periods started: the first, and one after every closure longer than the grace (each with a hold-down)",
            m.fence_periods.clone(),
        );
        registry.register(
            "fence_margin_seconds",
            "At each judgement with the fence open, how long it would stay open if nothing more were heard",
            m.fence_margin.clone(),
        );
        registry.register(
            "heartbeat_lateness_seconds",
            "How late each heartbeat tick ran after it was due",
            m.heartbeat_lateness.clone(),
        );
        registry.register(
            "keys_accepted",
            "Membership keys accepted now (2 during a rotation window)",
            m.keys_accepted.clone(),
        );
        registry.register(
            "key_rotations",
            "Membership key rotations seen",
            m.key_rotations.clone(),
        );
        registry.register(
            "key_problems",
            "Problems with the membership key Secret, by reason (missing, empty, too_short)",
            m.key_problems.clone(),
        );
        registry.register(
            "members",
            "Live speakers, this one included",
            m.members.clone(),
        );
        registry.register(
            "quorum",
            "1 while this speaker hears a majority and may announce",
            m.quorum.clone(),
        );
        registry.register(
            "ips_gained",
            "IPs this node started announcing",
            m.ips_gained.clone(),
        );
        registry.register(
            "ips_lost",
            "IPs this node stopped announcing",
            m.ips_lost.clone(),
        );
        registry.register(
            "interfaces_answering",
            "Interfaces with packet sockets open, where this node can answer ARP and NDP",
            m.interfaces_answering.clone(),
        );
        registry.register(
            "packet_socket_errors",
            "Attempts to open an interface's packet sockets that failed (CAP_NET_RAW missing?)",
            m.packet_socket_errors.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Drops every per-IP series of an IP this node no longer announces, so the metrics
    /// follow the IPs that exist rather than every IP ever held.
    pub fn forget_ip(&self, ip: IpAddr) {
        self.set_announced(ip, &[]);
        let labels = IpLabels { ip: ip.to_string() };
        self.requests_received.remove(&labels);
        self.responses_sent.remove(&labels);
        self.gratuitous_sent.remove(&labels);
        self.conflicts.remove(&labels);
    }

    /// Says that `ip` is announced on exactly `interfaces` (none: not announced): one series
    /// per IP, its `interface` label the interfaces joined by commas, so that counting series
    /// by IP still counts the nodes announcing it.
    pub fn set_announced(&self, ip: IpAddr, interfaces: &[String]) {
        let mut on = self.announced_on.lock().unwrap_or_else(|p| p.into_inner());
        let labels = |interface: String| AnnouncedLabels {
            ip: ip.to_string(),
            interface,
        };
        let now = interfaces.join(",");
        match on.remove(&ip) {
            Some(before) if before == now => {}
            Some(before) => {
                self.announced.remove(&labels(before));
            }
            None => {}
        }
        if !interfaces.is_empty() {
            self.announced.get_or_create(&labels(now.clone())).set(1);
            on.insert(ip, now);
        }
    }

    /// Whether the membership key is loaded (half of being ready).
    pub fn set_key_loaded(&self, loaded: bool) {
        self.key_loaded.store(loaded, Ordering::Relaxed);
    }

    /// Whether some interface has its packet sockets open (the other half).
    pub fn set_answering(&self, answering: bool) {
        self.answering.store(answering, Ordering::Relaxed);
    }

    /// Ready means "this speaker can answer": the key is loaded and some interface has its
    /// sockets open. Otherwise, why not.
    pub fn can_answer(&self) -> Result<(), &'static str> {
        if !self.key_loaded.load(Ordering::Relaxed) {
            Err("no membership key yet")
        } else if !self.answering.load(Ordering::Relaxed) {
            Err("no interface can answer: packet sockets not open (see the node's Events)")
        } else {
            Ok(())
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

impl Exposition for Metrics {
    fn metrics_text(&self) -> String {
        self.encode()
    }

    fn readiness(&self) -> Result<(), &'static str> {
        self.can_answer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_a_key_and_an_interface_that_can_answer() {
        let m = Metrics::default();
        assert!(m.can_answer().is_err(), "nothing yet");
        m.set_key_loaded(true);
        assert_eq!(
            m.can_answer(),
            Err("no interface can answer: packet sockets not open (see the node's Events)"),
            "a key but no socket (no CAP_NET_RAW) is not ready"
        );
        m.set_answering(true);
        assert_eq!(m.can_answer(), Ok(()));
        m.set_key_loaded(false);
        assert!(m.can_answer().is_err());
    }

    #[test]
    fn socket_failures_are_exposed_per_interface() {
        let m = Metrics::default();
        m.packet_socket_errors
            .get_or_create(&InterfaceLabels {
                interface: "eth0".into(),
            })
            .inc();
        m.interfaces_answering.set(0);
        let text = m.encode();
        assert!(text.contains("herald_speaker_packet_socket_errors_total{interface=\"eth0\"} 1"));
        assert!(text.contains("herald_speaker_interfaces_answering 0"));
    }

    #[test]
    fn an_announced_ip_is_one_series_naming_its_interfaces() {
        let m = Metrics::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        m.set_announced(ip, &["eth1".into()]);
        m.set_announced(ip, &["eth1".into()]);
        assert!(
            m.encode()
                .contains("herald_speaker_announced{ip=\"198.51.100.7\",interface=\"eth1\"} 1")
        );
        m.set_announced(ip, &["eth0".into(), "eth1".into()]);
        let text = m.encode();
        assert_eq!(
            text.matches("herald_speaker_announced{").count(),
            1,
            "{text}"
        );
        assert!(text.contains("interface=\"eth0,eth1\"} 1"));
        m.forget_ip(ip);
        assert!(!m.encode().contains("herald_speaker_announced{"));
    }
}
