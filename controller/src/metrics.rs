//! Prometheus metrics of the controller, and the HTTP endpoints `/metrics`, `/healthz`,
//! `/readyz`.

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
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-pool metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
}

/// Labels of allocation failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A bounded reason label.
    pub reason: &'static str,
}

/// Labels of API writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `service_status`, `pool_status`, `event`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    /// Usable addresses per pool and family.
    pub addresses_total: Family<PoolLabels, Gauge>,
    /// Held addresses per pool and family.
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    /// Allocation failures by reason (counted once per distinct failure of a Service).
    pub allocation_failures: Family<ReasonLabels, Counter>,
    /// Time to reconcile one batch of changes.
    pub reconcile_duration: Histogram,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// API writes by kind and result.
    pub writes: Family<WriteLabels, Counter>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `herald` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let addresses_total = Family::<PoolLabels, Gauge>::default();
        let addresses_in_use = Family::<PoolLabels, Gauge>::default();
        let allocation_failures = Family::<ReasonLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        let leader = Gauge::default();
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "allocator_addresses_total",
            "Usable addresses per pool and family (saturates at 2^63-1)",
            addresses_total.clone(),
        );
        registry.register(
            "allocator_addresses_in_use_total",
            "Addresses held by Services per pool and family",
            addresses_in_use.clone(),
        );
        registry.register(
            "allocation_failures",
            "Services that could not get an IP, by reason",
            allocation_failures.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time to reconcile one batch of changes",
            reconcile_duration.clone(),
        );
        registry.register(
            "controller_leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        registry.register(
            "controller_api_writes",
            "API writes by kind and result",
            writes.clone(),
        );
        Metrics {
            registry,
            addresses_total,
            addresses_in_use,
            allocation_failures,
            reconcile_duration,
            leader,
            writes,
            ready: AtomicBool::new(false),
        }
    }

    /// Marks the controller ready (caches synced).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Counts one API write.
    pub fn count_write(&self, kind: &'static str, ok: bool) {
        self.writes
            .get_or_create(&WriteLabels {
                kind,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
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

/// Clamps a count to a gauge value.
pub fn gauge_value(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics and health");
    axum::serve(listener, app).await
}

async fn metrics_handler(state: State<Arc<Metrics>>) -> impl IntoResponse {
    metrics(state).await
}
