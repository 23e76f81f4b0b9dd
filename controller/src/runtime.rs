//! The controller's main loop: watches feed the index; the leader's decisions go to the
//! writers.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use herald_config::pool::IPAddressPool;
use herald_config::service::{ServedClass, ServiceKey};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, watch};

use crate::index::{Action, ControllerIndex};
use crate::leader::{self, LeaseSettings};
use crate::metrics::{Metrics, ReasonLabels};
use crate::writer::{self, PoolStatusWriter, StatusWrite};

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
    /// Concurrent Service status writes.
    pub write_concurrency: usize,
    /// How often pool status and pool metrics are refreshed (debounce).
    pub pool_status_interval: Duration,
}

// Boxed: a Service event is much larger than the others, and thousands may queue up.
enum Change {
    Service(Box<Event<Service>>),
    Pool(Event<IPAddressPool>),
    Namespace(Event<Namespace>),
}

/// The three watches, merged.
fn changes(
    client: &Client,
    settings: &ControllerSettings,
) -> impl Stream<Item = Change> + Send + use<> {
    let services = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|r| async move { log_watch_error(r).map(|e| Change::Service(Box::new(e))) });
    let mut pool_config = watcher::Config::default();
    if let Some(sel) = &settings.pool_selector {
        pool_config = pool_config.labels(sel);
    }
    let pools = watcher::watcher(Api::<IPAddressPool>::all(client.clone()), pool_config)
        .default_backoff()
        .filter_map(|r| async move { log_watch_error(r).map(Change::Pool) });
    let namespaces = watcher::watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|r| async move { log_watch_error(r).map(Change::Namespace) });
    futures::stream::select_all([services.boxed(), pools.boxed(), namespaces.boxed()])
}

fn log_watch_error<T>(r: Result<T, watcher::Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "watch error; retrying with backoff");
            None
        }
    }
}

/// Which of the three initial lists have completed, and what each relist saw.
#[derive(Default)]
struct Sync {
    services: bool,
    pools: bool,
    namespaces: bool,
    seen_services: Option<HashSet<ServiceKey>>,
    seen_pools: Option<HashSet<String>>,
    seen_namespaces: Option<HashSet<String>>,
    known_namespaces: HashSet<String>,
}

impl Sync {
    fn done(&self) -> bool {
        self.services && self.pools && self.namespaces
    }
}

fn apply(
    change: Change,
    index: &mut ControllerIndex,
    sync: &mut Sync,
    pools: &mut PoolStatusWriter,
    metrics: &Metrics,
) {
    match change {
        Change::Service(ev) => match *ev {
            Event::Apply(s) => index.apply_service(&s),
            Event::Delete(s) => {
                if let Some(k) = ServiceKey::of(&s) {
                    index.delete_service(&k);
                }
            }
            Event::Init => sync.seen_services = Some(HashSet::new()),
            Event::InitApply(s) => {
                if let (Some(seen), Some(k)) = (sync.seen_services.as_mut(), ServiceKey::of(&s)) {
                    seen.insert(k);
                }
                index.apply_service(&s);
            }
            Event::InitDone => {
                let seen = sync.seen_services.take().unwrap_or_default();
                for k in index.service_keys() {
                    if !seen.contains(&k) {
                        index.delete_service(&k);
                    }
                }
                sync.services = true;
            }
        },
        Change::Pool(ev) => match ev {
            Event::Apply(p) => {
                pools.observe(&p);
                index.apply_pool(&p);
            }
            Event::Delete(p) => {
                pools.forget(&p.name_any(), metrics);
                index.delete_pool(&p.name_any());
            }
            Event::Init => sync.seen_pools = Some(HashSet::new()),
            Event::InitApply(p) => {
                if let Some(seen) = sync.seen_pools.as_mut() {
                    seen.insert(p.name_any());
                }
                pools.observe(&p);
                index.apply_pool(&p);
            }
            Event::InitDone => {
                let seen = sync.seen_pools.take().unwrap_or_default();
                for name in index.pool_names() {
                    if !seen.contains(&name) {
                        pools.forget(&name, metrics);
                        index.delete_pool(&name);
                    }
                }
                sync.pools = true;
            }
        },
        Change::Namespace(ev) => match ev {
            Event::Apply(n) => {
                sync.known_namespaces.insert(n.name_any());
                index.apply_namespace(&n);
            }
            Event::Delete(n) => {
                sync.known_namespaces.remove(&n.name_any());
                index.delete_namespace(&n.name_any());
            }
            Event::Init => sync.seen_namespaces = Some(HashSet::new()),
            Event::InitApply(n) => {
                if let Some(seen) = sync.seen_namespaces.as_mut() {
                    seen.insert(n.name_any());
                }
                sync.known_namespaces.insert(n.name_any());
                index.apply_namespace(&n);
            }
            Event::InitDone => {
                let seen = sync.seen_namespaces.take().unwrap_or_default();
                let gone: Vec<String> = sync.known_namespaces.difference(&seen).cloned().collect();
                for name in gone {
                    sync.known_namespaces.remove(&name);
                    index.delete_namespace(&name);
                }
                sync.namespaces = true;
            }
        },
    }
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Runs the controller until `shutdown` turns true.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (leading_tx, leading) = watch::channel(false);
    let election = tokio::spawn(leader::run(
        client.clone(),
        settings.lease.clone(),
        leading_tx,
        shutdown.clone(),
    ));
    let (status_tx, status_rx) = mpsc::unbounded_channel::<Vec<StatusWrite>>();
    let (failure_tx, mut failure_rx) = mpsc::unbounded_channel::<ServiceKey>();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let status_writer = tokio::spawn(writer::run_status_writer(
        client.clone(),
        status_rx,
        failure_tx,
        leading.clone(),
        metrics.clone(),
        settings.write_concurrency.max(1),
    ));
    let event_writer = tokio::spawn(writer::run_event_writer(
        client.clone(),
        settings.lease.identity.clone(),
        event_rx,
        metrics.clone(),
    ));

    // Aborting `run` (a crash, in tests) must stop the election and writers with it.
    let _tasks = AbortOnDrop(vec![
        election.abort_handle(),
        status_writer.abort_handle(),
        event_writer.abort_handle(),
    ]);
    let mut index = ControllerIndex::new(ServedClass(settings.class.clone()));
    let mut sync = Sync::default();
    let mut pool_writer = PoolStatusWriter::default();
    let mut retry: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut changes = Box::pin(changes(&client, &settings));
    let mut leading_rx = leading.clone();
    let mut tick = tokio::time::interval(settings.pool_status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { break };
                apply(change, &mut index, &mut sync, &mut pool_writer, &metrics);
                // Batch whatever else is already here before deciding.
                for _ in 0..10_000 {
                    match changes.next().now_or_never() {
                        Some(Some(change)) => apply(change, &mut index, &mut sync, &mut pool_writer, &metrics),
                        _ => break,
                    }
                }
            }
            _ = leading_rx.changed() => {}
            Some(key) = failure_rx.recv() => { retry.insert(key); }
            _ = tick.tick() => {
                for key in std::mem::take(&mut retry) {
                    index.write_failed(&key);
                }
                if index.is_active() {
                    pool_writer.flush(&client, index.pool_reports(), &metrics).await;
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break }
            }
        }
        metrics.set_ready(sync.done());
        let leader = *leading.borrow();
        metrics.leader.set(i64::from(leader));
        let started = Instant::now();
        let actions = if leader && sync.done() && !index.is_active() {
            tracing::info!("leading: rebuilding the allocation from Service status");
            pool_writer.reset();
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
                Action::WriteIngress { key, ips, shrinks } => {
                    writes.push(StatusWrite { key, ips, shrinks })
                }
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
    drop(status_tx);
    drop(event_tx);
    let _ = election.await;
    status_writer.abort();
    event_writer.abort();
}
