//! Carries out the index's decisions against the API server: Service status, Events, pool status.
//!
//! Each kind is written on its own task, so the main loop never waits for the API server.
//! Every write is made only while this replica leads, and is abandoned when the API timeout or
//! the end of the leader's term comes first, so a deposed leader has stopped writing before
//! another replica may take over. A Service status write carries the Service's UID and the
//! `resourceVersion` its decision was made on: it lands on that very object or not at all (a
//! Service deleted and recreated meanwhile, or changed meanwhile — by a new leader too — makes
//! it fail, and the index decides again from what the watch shows). Writes to one object are
//! made one at a time, newest last; a write that hangs holds up only its own object.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use herald_config::announcement;
use herald_config::pool::IPAddressPool;
use herald_config::service::ServiceKey;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{ApiCallError, within};
use crate::index::{EventRecord, PoolReport, Regarding};
use crate::leader::Leadership;
use crate::metrics::{Metrics, gauge_value};

/// The field manager recorded on every write.
pub const FIELD_MANAGER: &str = "herald-controller";

/// One Service status write: the ingress IPs, the Announced condition, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusWrite {
    /// The Service.
    pub key: ServiceKey,
    /// The UID of the Service the decision was made for.
    pub uid: Option<String>,
    /// The `resourceVersion` the decision was made on.
    pub resource_version: Option<String>,
    /// The ingress IPs to set (empty clears); `None` leaves them as they are.
    pub ips: Option<Vec<IpAddr>>,
    /// The `herald.dev/Announced` condition to set; `None` leaves it as it is.
    pub announced: Option<Announced>,
}

/// Who announces a Service, as its condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// "announced by node N on interface I".
    pub message: String,
    /// Since when (the condition's lastTransitionTime).
    pub since: Time,
}

/// A write waiting for its object absorbs a newer one.
pub trait Merge {
    /// `self` followed by `newer`, as one write.
    fn merge(self, newer: Self) -> Self;
}

impl Merge for StatusWrite {
    fn merge(self, newer: StatusWrite) -> StatusWrite {
        StatusWrite {
            ips: newer.ips.or(self.ips),
            announced: newer.announced.or(self.announced),
            ..newer
        }
    }
}

/// The strategic merge patch of a Service's status that sets what `write` carries (other
/// conditions are kept: they merge by type), on the object with this UID and resourceVersion
/// only (the API server refuses it otherwise).
pub fn status_patch(write: &StatusWrite) -> serde_json::Value {
    let mut status = serde_json::Map::new();
    if let Some(ips) = &write.ips {
        let ingress = if ips.is_empty() {
            // `null` removes the list.
            serde_json::Value::Null
        } else {
            ips.iter()
                .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                .collect()
        };
        status.insert("loadBalancer".into(), json!({ "ingress": ingress }));
    }
    if let Some(announced) = &write.announced {
        status.insert(
            "conditions".into(),
            json!([{
                "type": announcement::CONDITION,
                "status": "True",
                "reason": announcement::CONDITION_REASON,
                "message": announced.message,
                "lastTransitionTime": announced.since,
            }]),
        );
    }
    let mut metadata = serde_json::Map::new();
    if let Some(uid) = &write.uid {
        metadata.insert("uid".into(), json!(uid));
    }
    if let Some(version) = &write.resource_version {
        metadata.insert("resourceVersion".into(), json!(version));
    }
    json!({"metadata": metadata, "status": status})
}

/// Writes waiting for their object: the newest per object, started oldest first, one in flight
/// per object and at most `concurrency` in all.
#[derive(Debug)]
pub struct WriteQueue<K, W> {
    waiting: HashMap<K, W>,
    ready: VecDeque<K>,
    in_flight: HashSet<K>,
    concurrency: usize,
}

impl<K: Hash + Eq + Clone, W: Merge> WriteQueue<K, W> {
    /// An empty queue.
    pub fn new(concurrency: usize) -> Self {
        WriteQueue {
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: HashSet::new(),
            concurrency: concurrency.max(1),
        }
    }

    /// Queues a write to `key`, merged into one still waiting for it.
    pub fn push(&mut self, key: K, write: W) {
        match self.waiting.remove(&key) {
            Some(older) => {
                self.waiting.insert(key, older.merge(write));
            }
            None => {
                self.waiting.insert(key.clone(), write);
                if !self.in_flight.contains(&key) {
                    self.ready.push_back(key);
                }
            }
        }
    }

    /// The next write that may start now, marked in flight.
    pub fn start(&mut self) -> Option<(K, W)> {
        if self.in_flight.len() >= self.concurrency {
            return None;
        }
        let key = self.ready.pop_front()?;
        let write = self.waiting.remove(&key)?;
        self.in_flight.insert(key.clone());
        Some((key, write))
    }

    /// The write to `key` has ended (whatever its outcome).
    pub fn done(&mut self, key: &K) {
        self.in_flight.remove(key);
        if self.waiting.contains_key(key) {
            self.ready.push_back(key.clone());
        }
    }

    /// Writes in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// How a write ended.
#[derive(Debug)]
enum Outcome {
    Written,
    /// The object is gone: the watch tells the index.
    Gone,
    /// Not leading: nothing was sent.
    NotLeading,
    /// Refused or not answered in time: the index decides again.
    Failed(ApiCallError),
}

/// Runs one write of `kind` within the leader's term; counts it.
async fn bounded_write<T>(
    leadership: &Leadership,
    api_timeout: Duration,
    metrics: &Metrics,
    kind: &'static str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Outcome {
    let Some(limit) = leadership.remaining(api_timeout) else {
        return Outcome::NotLeading;
    };
    let result = within(limit, kind, request).await;
    metrics.count_write(kind, result.is_ok());
    match result {
        Ok(_) => Outcome::Written,
        Err(e) if e.code() == Some(404) => Outcome::Gone,
        Err(e) => Outcome::Failed(e),
    }
}

/// Where a writer sends what it writes, and what it reports back.
pub struct WriterContext<K> {
    /// The API server.
    pub client: Client,
    /// Until when this replica may write.
    pub leadership: Leadership,
    /// Every request is abandoned after this long (or at the end of the term, if sooner).
    pub api_timeout: Duration,
    /// Counts writes.
    pub metrics: Arc<Metrics>,
    /// Objects whose write failed: the index decides again.
    pub failures: mpsc::UnboundedSender<K>,
    /// Writes in flight at once.
    pub concurrency: usize,
}

/// Drives a [`WriteQueue`]: writes come in batches on `batches`; `write` makes one.
async fn run_queue<K, W, F, Fut>(
    ctx: WriterContext<K>,
    mut batches: mpsc::UnboundedReceiver<Vec<(K, W)>>,
    write: F,
) where
    K: Hash + Eq + Clone + std::fmt::Display + Send + 'static,
    W: Merge,
    F: Fn(W) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut queue = WriteQueue::new(ctx.concurrency);
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || queue.in_flight() > 0 {
        while let Some((key, w)) = queue.start() {
            let write = write(w);
            running.push(async move { (key, write.await) });
        }
        tokio::select! {
            batch = batches.recv(), if open => match batch {
                Some(batch) => {
                    for (key, w) in batch {
                        queue.push(key, w);
                    }
                }
                None => open = false,
            },
            Some((key, outcome)) = running.next() => {
                queue.done(&key);
                match outcome {
                    Outcome::Written | Outcome::Gone => {}
                    Outcome::NotLeading => {
                        let _ = ctx.failures.send(key);
                    }
                    Outcome::Failed(e) => {
                        tracing::warn!(object = %key, error = %e, "write failed; will decide again");
                        let _ = ctx.failures.send(key);
                    }
                }
            }
        }
    }
}

/// Writes Service status: each write on the object its decision was made for, at most
/// `concurrency` at once, one at a time per Service.
pub async fn run_status_writer(
    ctx: WriterContext<ServiceKey>,
    batches: mpsc::UnboundedReceiver<Vec<(ServiceKey, StatusWrite)>>,
) {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let (client, leadership, api_timeout, metrics) = (
        ctx.client.clone(),
        ctx.leadership.clone(),
        ctx.api_timeout,
        ctx.metrics.clone(),
    );
    run_queue(ctx, batches, |w: StatusWrite| {
        let api: Api<Service> = Api::namespaced(client.clone(), &w.key.namespace);
        let (params, leadership, metrics) = (params.clone(), leadership.clone(), metrics.clone());
        async move {
            let patch = status_patch(&w);
            bounded_write(
                &leadership,
                api_timeout,
                &metrics,
                "service_status",
                api.patch_status(&w.key.name, &params, &Patch::Strategic(patch)),
            )
            .await
        }
    })
    .await;
}

fn reference(regarding: &Regarding) -> ObjectReference {
    match regarding {
        Regarding::Service { key, uid } => key.object_reference(uid.clone()),
        Regarding::Pool { name, uid } => ObjectReference {
            api_version: Some("herald.dev/v1beta1".into()),
            kind: Some("IPAddressPool".into()),
            name: Some(name.clone()),
            uid: uid.clone(),
            ..Default::default()
        },
    }
}

/// Publishes Events through one shared Recorder, so repeats aggregate into a series, while
/// this replica leads. Events trail status writes on purpose: they must not slow allocation
/// down; one that hangs is abandoned after the API timeout.
pub async fn run_event_writer(
    client: Client,
    identity: String,
    mut events: mpsc::UnboundedReceiver<EventRecord>,
    leadership: Leadership,
    api_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity),
        },
    );
    while let Some(record) = events.recv().await {
        let event = Event {
            type_: if record.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: record.reason.into(),
            note: Some(truncate(&record.message, 1000)),
            action: if record.node.is_some() {
                "Announce"
            } else {
                "Allocate"
            }
            .into(),
            secondary: record.node.as_ref().map(|node| ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..Default::default()
            }),
        };
        let regarding = reference(&record.regarding);
        let outcome = bounded_write(
            &leadership,
            api_timeout,
            &metrics,
            "event",
            recorder.publish(&event, &regarding),
        )
        .await;
        if let Outcome::Failed(e) = outcome {
            tracing::warn!(error = %e, reason = record.reason, "event not published");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One pool's status write.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolWrite {
    /// The pool.
    pub name: String,
    /// The merge patch of its status.
    pub patch: serde_json::Value,
}

impl Merge for PoolWrite {
    /// The newer report says everything.
    fn merge(self, newer: PoolWrite) -> PoolWrite {
        newer
    }
}

/// Pool status, debounced: only pools whose report changed are written (by
/// [`run_pool_status_writer`]); the per-pool metrics are set here.
#[derive(Default)]
pub struct PoolStatusWriter {
    written: HashMap<String, PoolReport>,
    conditions: HashMap<String, Vec<Condition>>,
}

impl PoolStatusWriter {
    /// Remembers the conditions a pool shows (from the watch), to keep transition times.
    pub fn observe(&mut self, pool: &IPAddressPool) {
        if let (Some(name), Some(status)) = (&pool.metadata.name, &pool.status) {
            self.conditions
                .insert(name.clone(), status.conditions.clone());
        }
    }

    /// Forgets a deleted pool.
    pub fn forget(&mut self, name: &str, metrics: &Metrics) {
        self.written.remove(name);
        self.conditions.remove(name);
        for family in ["ipv4", "ipv6"] {
            let labels = crate::metrics::PoolLabels {
                pool: name.to_string(),
                family,
            };
            metrics.addresses_total.remove(&labels);
            metrics.addresses_in_use.remove(&labels);
        }
    }

    /// Forgets what was written (leadership changed hands): write everything again.
    pub fn reset(&mut self) {
        self.written.clear();
    }

    /// A write failed: write that pool again next time.
    pub fn failed(&mut self, name: &str) {
        self.written.remove(name);
    }

    /// Updates the pool metrics; returns the writes for the reports that changed.
    pub fn flush(&mut self, reports: Vec<PoolReport>, metrics: &Metrics) -> Vec<PoolWrite> {
        let mut writes = Vec::new();
        for report in reports {
            for (i, family) in ["ipv4", "ipv6"].into_iter().enumerate() {
                let labels = crate::metrics::PoolLabels {
                    pool: report.name.clone(),
                    family,
                };
                metrics
                    .addresses_total
                    .get_or_create(&labels)
                    .set(gauge_value(report.total[i]));
                metrics
                    .addresses_in_use
                    .get_or_create(&labels)
                    .set(gauge_value(report.assigned[i]));
            }
            if self.written.get(&report.name) == Some(&report) {
                continue;
            }
            let previous = self
                .conditions
                .get(&report.name)
                .cloned()
                .unwrap_or_default();
            let now = Time(Timestamp::now());
            let conditions: Vec<Condition> = report
                .conditions
                .iter()
                .map(|c| {
                    let status = if c.status { "True" } else { "False" };
                    let since = previous
                        .iter()
                        .find(|p| p.type_ == c.type_ && p.status == status)
                        .map(|p| p.last_transition_time.clone())
                        .unwrap_or_else(|| now.clone());
                    Condition {
                        type_: c.type_.to_string(),
                        status: status.into(),
                        reason: c.reason.to_string(),
                        message: c.message.clone(),
                        last_transition_time: since,
                        observed_generation: report.generation,
                    }
                })
                .collect();
            let patch = json!({"status": {
                "assignedIPv4": gauge_value(report.assigned[0]),
                "assignedIPv6": gauge_value(report.assigned[1]),
                "availableIPv4": gauge_value(report.available[0]),
                "availableIPv6": gauge_value(report.available[1]),
                "conditions": conditions,
            }});
            self.conditions.insert(report.name.clone(), conditions);
            writes.push(PoolWrite {
                name: report.name.clone(),
                patch,
            });
            self.written.insert(report.name.clone(), report);
        }
        writes
    }
}

/// Writes pool status on its own task: a pool whose write hangs holds up neither allocation
/// nor the other pools.
pub async fn run_pool_status_writer(
    ctx: WriterContext<String>,
    batches: mpsc::UnboundedReceiver<Vec<(String, PoolWrite)>>,
) {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let api: Api<IPAddressPool> = Api::all(ctx.client.clone());
    let (leadership, api_timeout, metrics) =
        (ctx.leadership.clone(), ctx.api_timeout, ctx.metrics.clone());
    run_queue(ctx, batches, |w: PoolWrite| {
        let (api, params, leadership, metrics) = (
            api.clone(),
            params.clone(),
            leadership.clone(),
            metrics.clone(),
        );
        async move {
            bounded_write(
                &leadership,
                api_timeout,
                &metrics,
                "pool_status",
                api.patch_status(&w.name, &params, &Patch::Merge(&w.patch)),
            )
            .await
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
