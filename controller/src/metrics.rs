//! Prometheus metrics of the controller; served by `herald_support::health` (`/metrics`,
//! `/healthz`, `/readyz`).

use std::time::Duration;

use herald_support::health::{Exposition, Liveness, Readiness, encode};
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
    readiness: Readiness,
    liveness: Liveness,
}

impl Default for Metrics {
    /// Registers every metric under the `herald` prefix.
    fn default() -> Metrics {
        Metrics::with_liveness(STUCK_AFTER)
    }
}

/// How long the main loop may go without a turn before `/healthz` fails: it turns at least at
/// every pool status tick, and rebuilding 10,000 Services takes a tenth of a second.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

impl Metrics {
    /// As [`Metrics::default`], with `/healthz` failing after `stuck_after` without a main loop
    /// turn.
    pub fn with_liveness(stuck_after: Duration) -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let addresses_total = Family::<PoolLabels, Gauge>::default();
        let addresses_in_use = Family::<PoolLabels, Gauge>::default();
        let allocation_failures = Family::<ReasonLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        let leader = Gauge::default();
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "allocator_addresses",
            "Usable addresses per pool and family (saturates at 2^63-1)",
            addresses_total.clone(),
        );
        registry.register(
            "allocator_addresses_in_use",
            "Addresses held by Services per pool and family",
            addresses_in_use.clone(),
        );
        // The names before Prometheus' conventions were followed (`_total` is for counters),
        // kept for one release so dashboards and alerts can move: the same series, same values.
        registry.register(
            "allocator_addresses_total",
            "Deprecated, removed in the next release: use herald_allocator_addresses",
            addresses_total.clone(),
        );
        registry.register(
            "allocator_addresses_in_use_total",
            "Deprecated, removed in the next release: use herald_allocator_addresses_in_use",
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
            readiness: Readiness::new("caches not synced"),
            liveness: Liveness::new(stuck_after),
        }
    }

    /// Marks the controller ready (caches synced).
    pub fn set_ready(&self, ready: bool) {
        self.readiness.set(ready);
    }

    /// The main loop turned.
    pub fn beat(&self) {
        self.liveness.beat();
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
        encode(&self.registry)
    }
}

/// Clamps a count to a gauge value.
pub fn gauge_value(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Exposition for Metrics {
    fn metrics_text(&self) -> String {
        self.encode()
    }

    fn readiness(&self) -> Result<(), &'static str> {
        self.readiness.check()
    }

    fn liveness(&self) -> Result<(), String> {
        self.liveness.check()
    }
}
