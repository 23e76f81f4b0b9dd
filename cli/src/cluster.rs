//! Everything `herald status` and `herald check` read, in one snapshot: the API reads (and, for
//! speakers, their `/metrics` through the API server's pod proxy) are here; what is made of
//! them is pure (`status.rs`, `check.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use herald_config::{IPAddressPool, L2Advertisement};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::announcer::{EVENT_CHANGED, EVENT_CONFLICT};
use crate::metrics_text::SpeakerMetrics;

/// Where Herald runs and what its objects are called (the install's defaults).
#[derive(Clone, Debug, clap::Args)]
pub struct Scope {
    /// Namespace of Herald's controller and speakers.
    #[arg(long = "herald-namespace", default_value = "herald-system")]
    pub herald_namespace: String,
    /// Label selector of the speaker pods.
    #[arg(
        long,
        default_value = "app.kubernetes.io/name=herald,app.kubernetes.io/component=speaker"
    )]
    pub speaker_selector: String,
    /// Port of the speakers' /metrics (read through the API server's pod proxy).
    #[arg(long, default_value_t = 7473)]
    pub speaker_metrics_port: u16,
    /// Name of the controller's leader-election Lease.
    #[arg(long, default_value = "herald-controller")]
    pub controller_lease: String,
    /// Name of the speakers' witness Lease.
    #[arg(long, default_value = "herald-speaker-witness")]
    pub witness_lease: String,
    /// Name of the speakers' membership Secret.
    #[arg(long, default_value = "herald-memberlist")]
    pub membership_secret: String,
}

/// A speaker's metrics, or why they could not be read.
pub type MetricsReading = Result<SpeakerMetrics, String>;

/// What the membership Secret looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum SecretState {
    /// Present with a non-empty `secretkey`.
    Present,
    /// Present without a usable `secretkey`.
    NoKey,
    /// Not there.
    Missing,
    /// Could not be read.
    Unknown {
        /// Why.
        why: String,
    },
}

/// One read of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// LoadBalancer Services.
    pub services: Vec<Service>,
    /// Herald's pools.
    pub pools: Vec<IPAddressPool>,
    /// Herald's advertisements.
    pub advertisements: Vec<L2Advertisement>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Speaker pods.
    pub speakers: Vec<Pod>,
    /// `AnnouncerChanged` and `IPConflict` Events.
    pub events: Vec<Event>,
    /// The controller's Lease.
    pub controller_lease: Option<Lease>,
    /// The witness Lease.
    pub witness_lease: Option<Lease>,
    /// Each speaker pod's metrics, by pod name.
    pub speaker_metrics: BTreeMap<String, MetricsReading>,
    /// The membership Secret (read by `check` only).
    pub membership_secret: Option<SecretState>,
    /// `kube-system/kube-proxy` (kubeadm's KubeProxyConfiguration), by `check` only.
    pub kube_proxy_config: Option<ConfigMap>,
    /// kube-proxy pods in kube-system, by `check` only.
    pub kube_proxy_pods: Vec<Pod>,
    /// The cluster's Service CIDRs, by `check` only.
    pub service_cidrs: Vec<ServiceCIDR>,
}

/// What to read beyond what `status` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// What `status` shows.
    Status,
    /// Also what `check` judges.
    Check,
}

/// A failed read, naming what was read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what}: {source}")]
pub struct ReadError {
    what: String,
    #[source]
    source: kube::Error,
}

fn read(what: &str) -> impl FnOnce(kube::Error) -> ReadError + '_ {
    move |source| ReadError {
        what: what.to_string(),
        source,
    }
}

async fn list<K>(api: Api<K>, params: &ListParams, what: &str) -> Result<Vec<K>, ReadError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.list(params).await.map_err(read(what))?.items)
}

/// A 404 (the kind or object does not exist) as "none".
fn absent_as_none<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the cluster. `namespace` limits the Services (and their Events) to one namespace.
pub async fn snapshot(
    client: &Client,
    scope: &Scope,
    namespace: Option<&str>,
    depth: Depth,
) -> Result<Snapshot, ReadError> {
    let services: Api<Service> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let events: Api<Event> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let herald_ns = scope.herald_namespace.as_str();
    let leases: Api<Lease> = Api::namespaced(client.clone(), herald_ns);
    let all = ListParams::default();
    let speaker_params = ListParams::default().labels(&scope.speaker_selector);
    let changed_params = ListParams::default().fields(&format!("reason={EVENT_CHANGED}"));
    let conflict_params = ListParams::default().fields(&format!("reason={EVENT_CONFLICT}"));
    let (
        services,
        pools,
        advertisements,
        nodes,
        speakers,
        changed,
        conflicts,
        controller_lease,
        witness_lease,
    ) = futures::try_join!(
        list(services, &all, "Services"),
        list(
            Api::<IPAddressPool>::all(client.clone()),
            &all,
            "IPAddressPools (are Herald's CRDs installed?)"
        ),
        list(
            Api::<L2Advertisement>::all(client.clone()),
            &all,
            "L2Advertisements (are Herald's CRDs installed?)"
        ),
        list(Api::<Node>::all(client.clone()), &all, "Nodes"),
        list(
            Api::<Pod>::namespaced(client.clone(), herald_ns),
            &speaker_params,
            "speaker pods",
        ),
        list(events.clone(), &changed_params, "Events"),
        list(events, &conflict_params, "Events"),
        async {
            leases
                .get_opt(&scope.controller_lease)
                .await
                .map_err(read("the controller's Lease"))
        },
        async {
            leases
                .get_opt(&scope.witness_lease)
                .await
                .map_err(read("the witness Lease"))
        },
    )?;
    let services = services
        .into_iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
        .collect();
    let speaker_metrics =
        read_speaker_metrics(client, herald_ns, &speakers, scope.speaker_metrics_port).await;
    let mut snapshot = Snapshot {
        services,
        pools,
        advertisements,
        nodes,
        speakers,
        events: changed.into_iter().chain(conflicts).collect(),
        controller_lease,
        witness_lease,
        speaker_metrics,
        ..Snapshot::default()
    };
    if depth == Depth::Check {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), herald_ns);
        snapshot.membership_secret = Some(match secrets.get_opt(&scope.membership_secret).await {
            Ok(None) => SecretState::Missing,
            Ok(Some(secret)) => {
                let has_key = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("secretkey"))
                    .is_some_and(|k| !k.0.is_empty())
                    || secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get("secretkey"))
                        .is_some_and(|k| !k.is_empty());
                if has_key {
                    SecretState::Present
                } else {
                    SecretState::NoKey
                }
            }
            Err(e) => SecretState::Unknown { why: e.to_string() },
        });
        let system = "kube-system";
        let proxy_params = ListParams::default().labels("k8s-app=kube-proxy");
        snapshot.kube_proxy_config = Api::<ConfigMap>::namespaced(client.clone(), system)
            .get_opt("kube-proxy")
            .await
            .map_err(read("kube-system/kube-proxy"))?;
        snapshot.kube_proxy_pods = list(
            Api::<Pod>::namespaced(client.clone(), system),
            &proxy_params,
            "kube-proxy pods",
        )
        .await?;
        snapshot.service_cidrs =
            absent_as_none(Api::<ServiceCIDR>::all(client.clone()).list(&all).await)
                .map_err(read("ServiceCIDRs"))?
                .map(|l| l.items)
                .unwrap_or_default();
    }
    Ok(snapshot)
}

/// Reads each running speaker's `/metrics` through the API server (`pods/proxy`), a few
/// seconds at most each, all at once. A speaker that cannot be reached is reported, not fatal.
async fn read_speaker_metrics(
    client: &Client,
    namespace: &str,
    speakers: &[Pod],
    port: u16,
) -> BTreeMap<String, MetricsReading> {
    let reads = speakers.iter().map(|pod| {
        let name = pod.name_any();
        let client = client.clone();
        async move {
            let path = format!("/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/metrics");
            let reading = match http::Request::get(&path).body(Vec::new()) {
                Err(e) => Err(e.to_string()),
                Ok(request) => {
                    match tokio::time::timeout(Duration::from_secs(3), client.request_text(request))
                        .await
                    {
                        Err(_) => Err("no answer within 3 s".to_string()),
                        Ok(Err(kube::Error::Api(s))) => Err(format!("{} ({})", s.message, s.code)),
                        Ok(Err(e)) => Err(e.to_string()),
                        Ok(Ok(text)) => SpeakerMetrics::from_text(&text)
                            .map_err(|e| format!("unreadable metrics: {e}")),
                    }
                }
            };
            (name, reading)
        }
    });
    futures::future::join_all(reads).await.into_iter().collect()
}
