//! Carries out the index's decisions against the API server: Service status, Events and
//! pool status. Writes happen only while this replica leads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use herald_config::pool::IPAddressPool;
use herald_config::service::ServiceKey;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::index::{EventRecord, PoolReport, Regarding};
use crate::metrics::{Metrics, gauge_value};

/// The field manager recorded on every write.
pub const FIELD_MANAGER: &str = "herald-controller";

/// One Service status write.
#[derive(Clone, Debug)]
pub struct StatusWrite {
    /// The Service.
    pub key: ServiceKey,
    /// The ingress IPs (empty clears).
    pub ips: Vec<IpAddr>,
    /// Whether it takes IPs away.
    pub shrinks: bool,
}

/// The merge patch that sets `status.loadBalancer.ingress` to exactly `ips`.
pub fn ingress_patch(ips: &[IpAddr]) -> serde_json::Value {
    if ips.is_empty() {
        // `null` removes the list under JSON merge patch.
        return json!({"status": {"loadBalancer": {"ingress": null}}});
    }
    let ingress: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    json!({"status": {"loadBalancer": {"ingress": ingress}}})
}

/// Writes Service status in batches: within a batch, writes that take IPs away land before
/// those that hand IPs out, so two Services never show one IP (unless shared).
pub async fn run_status_writer(
    client: Client,
    mut batches: mpsc::UnboundedReceiver<Vec<StatusWrite>>,
    failures: mpsc::UnboundedSender<ServiceKey>,
    leading: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    concurrency: usize,
) {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    while let Some(mut batch) = batches.recv().await {
        // Coalesce whatever else is queued; only the last write per Service matters.
        while let Ok(more) = batches.try_recv() {
            batch.extend(more);
        }
        let mut latest: HashMap<ServiceKey, StatusWrite> = HashMap::new();
        let mut order = Vec::new();
        for w in batch {
            if !latest.contains_key(&w.key) {
                order.push(w.key.clone());
            }
            let shrinks = w.shrinks || latest.get(&w.key).is_some_and(|p| p.shrinks);
            latest.insert(w.key.clone(), StatusWrite { shrinks, ..w });
        }
        let (shrinking, growing): (Vec<StatusWrite>, Vec<StatusWrite>) = order
            .into_iter()
            .filter_map(|k| latest.remove(&k))
            .partition(|w| w.shrinks);
        for phase in [shrinking, growing] {
            futures::stream::iter(phase)
                .for_each_concurrent(concurrency, |w| {
                    let client = client.clone();
                    let params = params.clone();
                    let failures = failures.clone();
                    let leading = leading.clone();
                    let metrics = metrics.clone();
                    async move {
                        if !*leading.borrow() {
                            return;
                        }
                        let api: Api<Service> = Api::namespaced(client, &w.key.namespace);
                        let result = api
                            .patch_status(&w.key.name, &params, &Patch::Merge(ingress_patch(&w.ips)))
                            .await;
                        metrics.count_write("service_status", result.is_ok());
                        match result {
                            Ok(_) => {}
                            // Deleted meanwhile: the watch will tell the index.
                            Err(kube::Error::Api(e)) if e.code == 404 => {}
                            Err(e) => {
                                tracing::warn!(service = %w.key, error = %e, "status write failed; will retry");
                                let _ = failures.send(w.key);
                            }
                        }
                    }
                })
                .await;
        }
    }
}

fn reference(regarding: &Regarding) -> ObjectReference {
    match regarding {
        Regarding::Service { key, uid } => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: uid.clone(),
            ..Default::default()
        },
        Regarding::Pool { name, uid } => ObjectReference {
            api_version: Some("herald.dev/v1beta1".into()),
            kind: Some("IPAddressPool".into()),
            name: Some(name.clone()),
            uid: uid.clone(),
            ..Default::default()
        },
    }
}

/// Publishes Events through one shared Recorder, so repeats aggregate into a series.
/// Events trail status writes on purpose: they must not slow allocation down.
pub async fn run_event_writer(
    client: Client,
    identity: String,
    mut events: mpsc::UnboundedReceiver<EventRecord>,
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
            action: "Allocate".into(),
            secondary: None,
        };
        let result = recorder
            .publish(&event, &reference(&record.regarding))
            .await;
        metrics.count_write("event", result.is_ok());
        if let Err(e) = result {
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

/// Pool status writes, debounced: only pools whose report changed are written.
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

    /// Writes the reports that changed and updates the pool metrics.
    pub async fn flush(&mut self, client: &Client, reports: Vec<PoolReport>, metrics: &Metrics) {
        let api: Api<IPAddressPool> = Api::all(client.clone());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
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
                .map(|(type_, status, reason, message)| {
                    let status = if *status { "True" } else { "False" };
                    let since = previous
                        .iter()
                        .find(|c| c.type_ == *type_ && c.status == status)
                        .map(|c| c.last_transition_time.clone())
                        .unwrap_or_else(|| now.clone());
                    Condition {
                        type_: type_.to_string(),
                        status: status.into(),
                        reason: reason.to_string(),
                        message: message.clone(),
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
            let result = api
                .patch_status(&report.name, &params, &Patch::Merge(&patch))
                .await;
            metrics.count_write("pool_status", result.is_ok());
            match result {
                Ok(_) => {
                    self.conditions.insert(report.name.clone(), conditions);
                    self.written.insert(report.name.clone(), report);
                }
                Err(e) => {
                    tracing::warn!(pool = %report.name, error = %e, "pool status write failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_patch_shapes() {
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(
            ingress_patch(&ips),
            json!({"status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.1", "ipMode": "VIP"}, {"ip": "2001:db8::1", "ipMode": "VIP"}
            ]}}})
        );
        assert_eq!(
            ingress_patch(&[]),
            json!({"status": {"loadBalancer": {"ingress": null}}})
        );
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
