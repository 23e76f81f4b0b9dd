//! Prometheus metrics of the speaker and its `/metrics`, `/healthz`, `/readyz` endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Per-IP labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabels {
    /// The announced IP.
    pub ip: String,
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
    /// 1 for each IP this node announces.
    pub announced: Family<IpLabels, Gauge>,
    /// Frames dropped, by reason.
    pub frames_dropped: Family<ReasonLabels, Counter>,
    /// Membership datagrams refused, by reason.
    pub heartbeats_rejected: Family<ReasonLabels, Counter>,
    /// Live members, this node included.
    pub members: Gauge,
    /// 1 while this speaker hears a majority and may announce.
    pub quorum: Gauge,
    /// IPs this node took over from another owner or gained.
    pub ips_gained: Counter,
    /// IPs this node stopped announcing.
    pub ips_lost: Counter,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under `herald_speaker`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herald_speaker");
        let m = Metrics {
            requests_received: Family::default(),
            responses_sent: Family::default(),
            gratuitous_sent: Family::default(),
            conflicts: Family::default(),
            announced: Family::default(),
            frames_dropped: Family::default(),
            heartbeats_rejected: Family::default(),
            members: Gauge::default(),
            quorum: Gauge::default(),
            ips_gained: Counter::default(),
            ips_lost: Counter::default(),
            ready: AtomicBool::new(false),
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
            "1 for each IP this node announces",
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
        Metrics { registry, ..m }
    }

    /// Drops every per-IP series of an IP this node no longer announces, so the metrics
    /// follow the IPs that exist rather than every IP ever held.
    pub fn forget_ip(&self, ip: std::net::IpAddr) {
        let labels = IpLabels { ip: ip.to_string() };
        self.announced.remove(&labels);
        self.requests_received.remove(&labels);
        self.responses_sent.remove(&labels);
        self.gratuitous_sent.remove(&labels);
        self.conflicts.remove(&labels);
    }

    /// Marks the speaker ready (caches synced, key loaded).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not synced")
    }
}

/// Serves the endpoints on `addr`.
pub async fn serve(addr: SocketAddr, m: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
