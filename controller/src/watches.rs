//! The controller's watches (Services, IPAddressPools, Namespaces, Nodes, the speakers'
//! NodeL2Status reports) and how their events reach the index: each kind has a [`WatchSink`] (`apply`, `delete`, the keys it knows), and
//! the relist bookkeeping — after a restarted watch lists everything again, delete what the
//! list no longer holds — is written once, in [`Relist`], in the manner of linkerd2's
//! `kubert` index traits.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;

use futures::{Stream, StreamExt};
use herald_config::NodeL2Status;
use herald_config::pool::IPAddressPool;
use herald_config::service::ServiceKey;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};

use crate::index::ControllerIndex;
use crate::metrics::Metrics;
use crate::writer::PoolStatusWriter;

/// One event of one of the watches. Boxed: a Service event is much larger than the others,
/// and thousands may queue up.
pub enum Change {
    /// A Service event.
    Service(Box<Event<Service>>),
    /// An IPAddressPool event.
    Pool(Event<IPAddressPool>),
    /// A Namespace event.
    Namespace(Event<Namespace>),
    /// A speaker's report of what its node announces.
    NodeReport(Event<NodeL2Status>),
    /// A Node event.
    Node(Box<Event<Node>>),
}

/// The watches, merged; pools only those matching `pool_selector`.
pub fn changes(
    client: &Client,
    pool_selector: Option<&str>,
) -> impl Stream<Item = Change> + Send + use<> {
    let services = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|r| async move { log_watch_error(r).map(|e| Change::Service(Box::new(e))) });
    let mut pool_config = watcher::Config::default();
    if let Some(sel) = pool_selector {
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
    let reports = watcher::watcher(
        Api::<NodeL2Status>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|r| async move { log_watch_error(r).map(Change::NodeReport) });
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(|r| async move { log_watch_error(r).map(|e| Change::Node(Box::new(e))) });
    futures::stream::select_all([
        services.boxed(),
        pools.boxed(),
        namespaces.boxed(),
        reports.boxed(),
        nodes.boxed(),
    ])
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

/// Where one kind's watch events go.
pub trait WatchSink<K> {
    /// How objects of the kind are told apart.
    type Key: Eq + Hash + Clone;
    /// The key of an object (`None`: not one the sink can hold).
    fn key_of(object: &K) -> Option<Self::Key>;
    /// An object was created or changed.
    fn apply(&mut self, object: &K);
    /// An object is gone.
    fn delete(&mut self, key: &Self::Key);
    /// Every key the sink holds now.
    fn keys(&self) -> Vec<Self::Key>;
}

/// One watch's relist bookkeeping: what the current (re)list has shown so far, and whether a
/// first list has completed.
#[derive(Debug)]
pub struct Relist<Key> {
    listing: Option<HashSet<Key>>,
    synced: bool,
}

impl<Key> Default for Relist<Key> {
    fn default() -> Self {
        Relist {
            listing: None,
            synced: false,
        }
    }
}

impl<Key: Eq + Hash + Clone> Relist<Key> {
    /// Whether a first full list has completed.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Feeds one event to `sink`; at the end of a (re)list, deletes what it no longer holds.
    pub fn handle<K, S: WatchSink<K, Key = Key>>(&mut self, sink: &mut S, event: Event<K>) {
        match event {
            Event::Apply(object) => sink.apply(&object),
            Event::Delete(object) => {
                if let Some(key) = S::key_of(&object) {
                    sink.delete(&key);
                }
            }
            Event::Init => self.listing = Some(HashSet::new()),
            Event::InitApply(object) => {
                if let (Some(listing), Some(key)) = (self.listing.as_mut(), S::key_of(&object)) {
                    listing.insert(key);
                }
                sink.apply(&object);
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                for key in sink.keys() {
                    if !listed.contains(&key) {
                        sink.delete(&key);
                    }
                }
                self.synced = true;
            }
        }
    }
}

/// Services into the index.
pub struct Services<'a>(pub &'a mut ControllerIndex);

impl WatchSink<Service> for Services<'_> {
    type Key = ServiceKey;

    fn key_of(svc: &Service) -> Option<ServiceKey> {
        ServiceKey::of(svc)
    }

    fn apply(&mut self, svc: &Service) {
        self.0.apply_service(svc);
    }

    fn delete(&mut self, key: &ServiceKey) {
        self.0.delete_service(key);
    }

    fn keys(&self) -> Vec<ServiceKey> {
        self.0.service_keys()
    }
}

/// Namespaces (their labels) into the index.
pub struct Namespaces<'a>(pub &'a mut ControllerIndex);

impl WatchSink<Namespace> for Namespaces<'_> {
    type Key = String;

    fn key_of(ns: &Namespace) -> Option<String> {
        Some(ns.name_any())
    }

    fn apply(&mut self, ns: &Namespace) {
        self.0.apply_namespace(ns);
    }

    fn delete(&mut self, name: &String) {
        self.0.delete_namespace(name);
    }

    fn keys(&self) -> Vec<String> {
        self.0.namespace_names()
    }
}

/// Nodes (their InternalIP addresses, never handed out) into the index.
pub struct Nodes<'a>(pub &'a mut ControllerIndex);

/// A Node's InternalIP addresses.
pub fn internal_ips(node: &Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

impl WatchSink<Node> for Nodes<'_> {
    type Key = String;

    fn key_of(node: &Node) -> Option<String> {
        Some(node.name_any())
    }

    fn apply(&mut self, node: &Node) {
        self.0
            .apply_node(&node.name_any(), Some(internal_ips(node)));
    }

    fn delete(&mut self, name: &String) {
        self.0.apply_node(name, None);
    }

    fn keys(&self) -> Vec<String> {
        self.0.node_names()
    }
}

/// The speakers' reports into the index.
pub struct NodeReports<'a>(pub &'a mut ControllerIndex);

impl WatchSink<NodeL2Status> for NodeReports<'_> {
    type Key = String;

    fn key_of(report: &NodeL2Status) -> Option<String> {
        Some(report.name_any())
    }

    fn apply(&mut self, report: &NodeL2Status) {
        self.0
            .apply_node_report(&report.name_any(), report.status.as_ref());
    }

    fn delete(&mut self, node: &String) {
        self.0.apply_node_report(node, None);
    }

    fn keys(&self) -> Vec<String> {
        self.0.reporting_nodes()
    }
}

/// Pools into the index, and their shown conditions into the pool status writer.
pub struct Pools<'a> {
    /// The index.
    pub index: &'a mut ControllerIndex,
    /// The pool status writer (keeps condition transition times).
    pub writer: &'a mut PoolStatusWriter,
    /// Per-pool metrics are dropped with the pool.
    pub metrics: &'a Metrics,
}

impl WatchSink<IPAddressPool> for Pools<'_> {
    type Key = String;

    fn key_of(pool: &IPAddressPool) -> Option<String> {
        Some(pool.name_any())
    }

    fn apply(&mut self, pool: &IPAddressPool) {
        self.writer.observe(pool);
        self.index.apply_pool(pool);
    }

    fn delete(&mut self, name: &String) {
        self.writer.forget(name, self.metrics);
        self.index.delete_pool(name);
    }

    fn keys(&self) -> Vec<String> {
        self.index.pool_names()
    }
}

/// The relist bookkeeping of the watches.
#[derive(Debug, Default)]
pub struct Sync {
    services: Relist<ServiceKey>,
    pools: Relist<String>,
    namespaces: Relist<String>,
    reports: Relist<String>,
    nodes: Relist<String>,
}

impl Sync {
    /// Every watch has completed its first list.
    pub fn done(&self) -> bool {
        self.services.synced()
            && self.pools.synced()
            && self.namespaces.synced()
            && self.reports.synced()
            && self.nodes.synced()
    }

    /// Feeds one change to the index (and pool changes to the pool status writer).
    pub fn apply(
        &mut self,
        change: Change,
        index: &mut ControllerIndex,
        pools: &mut PoolStatusWriter,
        metrics: &Metrics,
    ) {
        match change {
            Change::Service(ev) => self.services.handle(&mut Services(index), *ev),
            Change::Pool(ev) => self.pools.handle(
                &mut Pools {
                    index,
                    writer: pools,
                    metrics,
                },
                ev,
            ),
            Change::Namespace(ev) => self.namespaces.handle(&mut Namespaces(index), ev),
            Change::NodeReport(ev) => self.reports.handle(&mut NodeReports(index), ev),
            Change::Node(ev) => self.nodes.handle(&mut Nodes(index), *ev),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that only records.
    #[derive(Default)]
    struct Recorded {
        held: std::collections::BTreeSet<String>,
        deleted: Vec<String>,
    }

    impl WatchSink<String> for Recorded {
        type Key = String;
        fn key_of(object: &String) -> Option<String> {
            Some(object.clone())
        }
        fn apply(&mut self, object: &String) {
            self.held.insert(object.clone());
        }
        fn delete(&mut self, key: &String) {
            self.held.remove(key);
            self.deleted.push(key.clone());
        }
        fn keys(&self) -> Vec<String> {
            self.held.iter().cloned().collect()
        }
    }

    #[test]
    fn a_relist_deletes_what_it_no_longer_lists() {
        let mut relist = Relist::default();
        let mut sink = Recorded::default();
        for ev in [
            Event::Init,
            Event::InitApply("a".to_string()),
            Event::InitApply("b".into()),
        ] {
            relist.handle(&mut sink, ev);
        }
        assert!(!relist.synced());
        relist.handle(&mut sink, Event::InitDone);
        assert!(relist.synced());
        relist.handle(&mut sink, Event::Apply("c".into()));
        relist.handle(&mut sink, Event::Delete("a".into()));
        // The watch restarts: only c is listed now, so b goes.
        for ev in [
            Event::Init,
            Event::InitApply("c".to_string()),
            Event::InitDone,
        ] {
            relist.handle(&mut sink, ev);
        }
        assert_eq!(sink.keys(), ["c"]);
        assert_eq!(sink.deleted, ["a", "b"]);
        assert!(relist.synced());
    }
}
