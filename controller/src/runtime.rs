//! The controller's main loop: watches (`watches.rs`) feed the index; the leader's decisions go
//! to the writers.
//!
//! The loop itself never waits for the API server: Service status, pool status and Events are
//! written by tasks of their own (`writer.rs`), each request bounded in time. It turns at least
//! at every pool status tick and beats the liveness check on every turn, so `/healthz` fails if
//! it ever stops turning. It stands by the moment the leader's term ends, even when the election
//! is stuck in a request.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use herald_config::service::{ServedClass, ServiceKey};
use kube::Client;
use tokio::sync::{mpsc, watch};

use crate::index::{Action, ControllerIndex};
use crate::leader::{self, Leadership, LeaseSettings};
use crate::metrics::{Metrics, ReasonLabels};
use crate::watches::{self, Sync};
use crate::writer::{self, PoolStatusWriter, WriterContext};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// The `spec.loadBalancerClass` served (`None`: Services without a class).
    pub class: Option<String>,
    /// Only pools matching this label selector are used, so that several controllers (one per
    /// class) can each keep their own pools.
    pub pool_selector: Option<String>,
    /// Leader election.
    pub lease: LeaseSettings,
    /// Every API request other than a watch is abandoned after this long.
    pub api_timeout: Duration,
    /// Concurrent Service status writes.
    pub write_concurrency: usize,
    /// How often pool status and pool metrics are refreshed (debounce).
    pub pool_status_interval: Duration,
}

/// Pool status writes in flight at once.
const POOL_WRITES_IN_FLIGHT: usize = 4;

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn sleep_until(at: Option<tokio::time::Instant>) -> tokio::time::Sleep {
    tokio::time::sleep_until(
        at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
    )
}

/// Runs the controller until `shutdown` turns true.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (term_tx, term) = watch::channel(None);
    let mut leadership = Leadership::new(term);
    let election = tokio::spawn(leader::run(
        client.clone(),
        settings.lease.clone(),
        settings.api_timeout,
        term_tx,
        shutdown.clone(),
    ));
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let (failure_tx, mut failure_rx) = mpsc::unbounded_channel::<ServiceKey>();
    let (pool_tx, pool_rx) = mpsc::unbounded_channel();
    let (pool_failure_tx, mut pool_failure_rx) = mpsc::unbounded_channel::<String>();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let status_writer = tokio::spawn(writer::run_status_writer(
        WriterContext {
            client: client.clone(),
            leadership: leadership.clone(),
            api_timeout: settings.api_timeout,
            metrics: metrics.clone(),
            failures: failure_tx,
            concurrency: settings.write_concurrency.max(1),
        },
        status_rx,
    ));
    let pool_status_writer = tokio::spawn(writer::run_pool_status_writer(
        WriterContext {
            client: client.clone(),
            leadership: leadership.clone(),
            api_timeout: settings.api_timeout,
            metrics: metrics.clone(),
            failures: pool_failure_tx,
            concurrency: POOL_WRITES_IN_FLIGHT,
        },
        pool_rx,
    ));
    let event_writer = tokio::spawn(writer::run_event_writer(
        client.clone(),
        settings.lease.identity.clone(),
        event_rx,
        leadership.clone(),
        settings.api_timeout,
        metrics.clone(),
    ));

    // Aborting `run` (a crash, in tests) must stop the election and writers with it.
    let _tasks = AbortOnDrop(vec![
        election.abort_handle(),
        status_writer.abort_handle(),
        pool_status_writer.abort_handle(),
        event_writer.abort_handle(),
    ]);
    let mut index = ControllerIndex::new(ServedClass(settings.class.clone()));
    let mut sync = Sync::default();
    let mut pool_status = PoolStatusWriter::default();
    let mut retry: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut changes = Box::pin(watches::changes(&client, settings.pool_selector.as_deref()));
    let mut tick = tokio::time::interval(settings.pool_status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        metrics.beat();
        let term_ends = leadership.until();
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { break };
                sync.apply(change, &mut index, &mut pool_status, &metrics);
                // Batch whatever else is already here before deciding.
                for _ in 0..10_000 {
                    match changes.next().now_or_never() {
                        Some(Some(change)) => sync.apply(change, &mut index, &mut pool_status, &metrics),
                        _ => break,
                    }
                }
            }
            _ = leadership.changed() => {}
            // The term ends by itself when no renewal extends it.
            _ = sleep_until(term_ends), if term_ends.is_some() => {}
            Some(key) = failure_rx.recv() => { retry.insert(key); }
            Some(pool) = pool_failure_rx.recv() => { pool_status.failed(&pool); }
            _ = tick.tick() => {
                for key in std::mem::take(&mut retry) {
                    index.write_failed(&key);
                }
                if index.is_active() {
                    let writes = pool_status.flush(index.pool_reports(), &metrics);
                    if !writes.is_empty() {
                        let _ = pool_tx.send(writes.into_iter().map(|w| (w.name.clone(), w)).collect());
                    }
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break }
            }
        }
        metrics.set_ready(sync.done());
        let leader = leadership.leads();
        metrics.leader.set(i64::from(leader));
        let started = Instant::now();
        let actions = if leader && sync.done() && !index.is_active() {
            tracing::info!("leading: rebuilding the allocation from Service status");
            pool_status.reset();
            index.activate()
        } else if !leader && index.is_active() {
            tracing::info!("no longer leading: standing by");
            index.deactivate();
            Vec::new()
        } else if index.has_work() {
            index.reconcile()
        } else {
            continue;
        };
        metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        let mut writes = Vec::new();
        for action in actions {
            match action {
                Action::WriteStatus(write) => writes.push((write.key.clone(), write)),
                Action::Event(e) => {
                    let _ = event_tx.send(e);
                }
                Action::CountFailure(reason) => {
                    metrics
                        .allocation_failures
                        .get_or_create(&ReasonLabels { reason })
                        .inc();
                }
            }
        }
        if !writes.is_empty() {
            let _ = status_tx.send(writes);
        }
    }
    metrics.leader.set(0);
    drop(status_tx);
    drop(pool_tx);
    drop(event_tx);
    let _ = election.await;
    status_writer.abort();
    pool_status_writer.abort();
    event_writer.abort();
}
