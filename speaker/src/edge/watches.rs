//! The Kubernetes watches: one reflector per kind the speaker reads, each object slimmed
//! ([`super::slim`]) before it enters its cache. The caches are read whole by the election
//! (`crate::decide::inputs`); the stream only says "something changed".

use futures::StreamExt;
use futures::stream::BoxStream;
use herald_config::l2advertisement::L2Advertisement;
use herald_config::pool::IPAddressPool;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use super::slim;

/// The watch caches the election reads.
#[derive(Clone)]
pub struct Stores {
    /// Every Node (one speaker each).
    pub nodes: Store<Node>,
    /// Every Service.
    pub services: Store<Service>,
    /// Every EndpointSlice.
    pub slices: Store<EndpointSlice>,
    /// Every IPAddressPool.
    pub pools: Store<IPAddressPool>,
    /// Every L2Advertisement.
    pub ads: Store<L2Advertisement>,
    /// The membership key's Secret only.
    pub secrets: Store<Secret>,
    /// The pods of the speaker DaemonSet (its namespace and labels): which Nodes' speakers
    /// are ready, the speakers that count for quorum.
    pub speaker_pods: Store<Pod>,
}

/// Where the speaker's own pods are: namespace and label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerPods {
    /// The DaemonSet's namespace (the speaker's own).
    pub namespace: String,
    /// A label selector matching its pods (`key=value,...`).
    pub selector: String,
}

/// One watch into a cache; every object is slimmed first.
fn watch_into<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
) -> (Store<K>, BoxStream<'static, ()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).modify(slim))
        .default_backoff()
        .map(|_| ())
        .boxed();
    (store, stream)
}

fn pool(p: &mut IPAddressPool) {
    slim::metadata_only(&mut p.metadata);
    p.status = None;
}

fn advertisement(a: &mut L2Advertisement) {
    slim::metadata_only(&mut a.metadata);
}

fn secret_key(s: &mut Secret) {
    slim::metadata_only(&mut s.metadata);
}

/// Objects per page of a watch's initial list. A page is held whole, as text and as full
/// objects, before its objects are slimmed: at kube's default of 500 Services or
/// EndpointSlices a page is several MiB, which set the speaker's peak memory at start (24-31
/// MiB with 1,000 Services against 19-20 MiB running). Pages of 50 cost 20 requests per 1,000
/// objects, once, at start.
const LIST_PAGE: u32 = 50;

/// Starts every watch; the Secret `name` in `namespace` is the only one watched, and the
/// speaker pods only in theirs. Returns the caches and one stream that yields whenever any of
/// them changed.
pub fn start(
    client: &Client,
    secret: &(String, String),
    speaker_pods: &SpeakerPods,
) -> (Stores, BoxStream<'static, ()>) {
    let all = || watcher::Config::default().page_size(LIST_PAGE);
    let (nodes, s1) = watch_into(Api::<Node>::all(client.clone()), all(), slim::node);
    let (services, s2) = watch_into(Api::<Service>::all(client.clone()), all(), slim::service);
    let (slices, s3) = watch_into(
        Api::<EndpointSlice>::all(client.clone()),
        all(),
        slim::endpoint_slice,
    );
    let (pools, s4) = watch_into(Api::<IPAddressPool>::all(client.clone()), all(), pool);
    let (ads, s5) = watch_into(
        Api::<L2Advertisement>::all(client.clone()),
        all(),
        advertisement,
    );
    let (namespace, name) = secret;
    let (secrets, s6) = watch_into(
        Api::<Secret>::namespaced(client.clone(), namespace),
        all().fields(&format!("metadata.name={name}")),
        secret_key,
    );
    let (pods, s7) = watch_into(
        Api::<Pod>::namespaced(client.clone(), &speaker_pods.namespace),
        all().labels(&speaker_pods.selector),
        slim::pod,
    );
    let changes = futures::stream::select_all([s1, s2, s3, s4, s5, s6, s7]).boxed();
    (
        Stores {
            nodes,
            services,
            slices,
            pools,
            ads,
            secrets,
            speaker_pods: pods,
        },
        changes,
    )
}
