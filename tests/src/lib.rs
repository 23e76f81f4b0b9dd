//! Harness for Herald's integration tests against the lab's real kube-apiserver.
//!
//! Every test gets its own namespace, its own `loadBalancerClass` and its own pool label, and
//! runs its own in-process controller(s) serving just that class and those pools, so tests run
//! in parallel on one shared control plane without seeing each other.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use herald_config::pool::{IPAddressPool, IPAddressPoolSpec};
use herald_controller::leader::LeaseSettings;
use herald_controller::metrics::Metrics;
use herald_controller::runtime::{self, ControllerSettings};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceSpec};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

pub mod arp_watch;
pub mod bench;
pub mod chaos;
pub mod lab_case;
pub mod layout;
pub mod node_lab;
pub mod pausable_proxy;
pub mod tools;

/// The label every test pool carries, valued with the test's namespace.
pub const TEST_LABEL: &str = "herald.dev/test";

static CRDS: OnceCell<()> = OnceCell::const_new();

/// A client for the lab's API server. Fails with a clear message when the lab is not up.
pub async fn lab_client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!(
            "KUBECONFIG is not set: run the integration tests through `make test` \
             (tests/lab/with-control-plane.sh starts the lab's kube-apiserver)"
        );
    }
    let client = Client::try_default()
        .await
        .context("connecting to the lab's API server")?;
    CRDS.get_or_try_init(|| install_crds(client.clone()))
        .await?;
    Ok(client)
}

/// Applies `deploy/crds/herald.yaml` and waits until the API serves it.
async fn install_crds(client: Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("herald-tests").force();
    for crd in [
        <IPAddressPool as kube::CustomResourceExt>::crd(),
        <herald_config::L2Advertisement as kube::CustomResourceExt>::crd(),
        <herald_config::NodeL2Status as kube::CustomResourceExt>::crd(),
    ] {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        for _ in 0..100 {
            let current = api.get(&name).await?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Discovery can trail "Established" briefly.
    let pools: Api<IPAddressPool> = Api::all(client);
    for _ in 0..100 {
        if pools.list(&ListParams::default().limit(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("IPAddressPool CRD never became usable")
}

/// A running in-process controller.
pub struct RunningController {
    task: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Its identity in the Lease.
    pub identity: String,
}

impl RunningController {
    /// Graceful stop (releases the Lease).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Hard stop: the task is dropped mid-flight and the Lease is left to expire.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Whether it currently leads (from its metrics).
    pub fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }
}

/// One test's isolated slice of the lab.
pub struct TestEnv {
    /// API client.
    pub client: Client,
    /// The test's namespace (also the class suffix, pool label value and pool name prefix).
    pub ns: String,
    /// The loadBalancerClass this test's controllers serve.
    pub class: String,
    counter: std::sync::atomic::AtomicU32,
}

impl TestEnv {
    /// Creates the test's namespace.
    pub async fn new(test: &str) -> anyhow::Result<TestEnv> {
        let client = lab_client().await?;
        let suffix = format!("{:x}", rand_u32());
        let ns = format!("{}-{suffix}", test.replace('_', "-"));
        let ns = ns.chars().take(50).collect::<String>();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        Ok(TestEnv {
            client,
            class: format!("herald.dev/{ns}"),
            ns,
            counter: Default::default(),
        })
    }

    /// Settings for a controller of this test.
    pub fn settings(&self, identity: &str) -> ControllerSettings {
        ControllerSettings {
            class: Some(self.class.clone()),
            pool_selector: Some(format!("{TEST_LABEL}={}", self.ns)),
            lease: LeaseSettings {
                name: "herald-controller".into(),
                namespace: self.ns.clone(),
                identity: identity.into(),
                lease_duration: Duration::from_secs(4),
                renew_deadline: Duration::from_secs(3),
                retry_period: Duration::from_millis(500),
            },
            api_timeout: Duration::from_secs(2),
            write_concurrency: 16,
            pool_status_interval: Duration::from_millis(200),
        }
    }

    /// Starts a controller for this test.
    pub fn start_controller(&self) -> RunningController {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.start_controller_with(self.settings(&format!("replica-{n}")))
    }

    /// Starts a controller with explicit settings.
    pub fn start_controller_with(&self, settings: ControllerSettings) -> RunningController {
        self.start_controller_as(self.client.clone(), settings)
    }

    /// Starts a controller that talks to the API server with `client` (another identity).
    pub fn start_controller_as(
        &self,
        client: Client,
        settings: ControllerSettings,
    ) -> RunningController {
        self.start_controller_observed(client, settings, Metrics::default())
    }

    /// Starts a controller with `client` that reports through `metrics` (its own liveness
    /// limit, for one).
    pub fn start_controller_observed(
        &self,
        client: Client,
        settings: ControllerSettings,
        metrics: Metrics,
    ) -> RunningController {
        let metrics = Arc::new(metrics);
        let (shutdown, rx) = watch::channel(false);
        let identity = settings.lease.identity.clone();
        let task = tokio::spawn(runtime::run(client, settings, metrics.clone(), rx));
        RunningController {
            task,
            shutdown,
            metrics,
            identity,
        }
    }

    /// The cluster-wide name of this test's pool `name`.
    pub fn pool_name(&self, name: &str) -> String {
        format!("{}-{name}", self.ns)
    }

    /// Creates or replaces a pool labelled for this test.
    pub async fn apply_pool(
        &self,
        name: &str,
        spec: IPAddressPoolSpec,
    ) -> anyhow::Result<IPAddressPool> {
        let api: Api<IPAddressPool> = Api::all(self.client.clone());
        let mut pool = IPAddressPool::new(&self.pool_name(name), spec);
        pool.metadata.labels = Some(BTreeMap::from([(TEST_LABEL.to_string(), self.ns.clone())]));
        Ok(api
            .patch(
                &self.pool_name(name),
                &PatchParams::apply("herald-tests").force(),
                &Patch::Apply(&pool),
            )
            .await?)
    }

    /// Deletes one of this test's pools.
    pub async fn delete_pool(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<IPAddressPool> = Api::all(self.client.clone());
        api.delete(&self.pool_name(name), &DeleteParams::default())
            .await?;
        Ok(())
    }

    /// Reads one of this test's pools.
    pub async fn pool(&self, name: &str) -> anyhow::Result<IPAddressPool> {
        let api: Api<IPAddressPool> = Api::all(self.client.clone());
        Ok(api.get(&self.pool_name(name)).await?)
    }

    /// Services API in the test namespace.
    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates or replaces a LoadBalancer Service of this test's class with one TCP port.
    pub async fn apply_service(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
        edit: impl FnOnce(&mut ServiceSpec),
    ) -> anyhow::Result<Service> {
        self.apply_service_in(&self.ns, name, annotations, edit)
            .await
    }

    /// Like [`TestEnv::apply_service`] in another namespace.
    pub async fn apply_service_in(
        &self,
        ns: &str,
        name: &str,
        annotations: &[(&str, &str)],
        edit: impl FnOnce(&mut ServiceSpec),
    ) -> anyhow::Result<Service> {
        let svc = herald_fixtures::service(ns, name)
            .class(&self.class)
            .selector(&[("app", name)])
            .annotations(annotations)
            .spec_with(edit)
            .build();
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .patch(
                name,
                &PatchParams::apply("herald-tests").force(),
                &Patch::Apply(&svc),
            )
            .await?)
    }

    /// Creates another namespace (deleted with the test's) with labels.
    pub async fn extra_namespace(
        &self,
        suffix: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let name = format!("{}-{suffix}", self.ns);
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
        Ok(name)
    }

    /// Waits until `check` holds for the Service's status IPs; returns them.
    pub async fn wait_ips_in(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&[IpAddr]) -> bool,
    ) -> anyhow::Result<Vec<IpAddr>> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let mut last = Vec::new();
        for _ in 0..300 {
            if let Some(svc) = api.get_opt(name).await? {
                last = ips(&svc);
                if check(&last) {
                    return Ok(last);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{ns}/{name}: timed out waiting for {what}; status IPs are {last:?}")
    }

    /// Waits for the Service to hold exactly `expected`.
    pub async fn wait_ips(&self, name: &str, expected: &[&str]) -> anyhow::Result<()> {
        let expected: Vec<IpAddr> = expected
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        self.wait_ips_in(&self.ns, name, &format!("IPs {expected:?}"), |got| {
            got == expected.as_slice()
        })
        .await
        .map(|_| ())
    }

    /// Waits for the Service to hold some IP(s).
    pub async fn wait_any_ip(&self, name: &str) -> anyhow::Result<Vec<IpAddr>> {
        self.wait_ips_in(&self.ns, name, "an IP", |got| !got.is_empty())
            .await
    }

    /// Current status IPs of a Service.
    pub async fn ips_of(&self, name: &str) -> anyhow::Result<Vec<IpAddr>> {
        Ok(ips(&self.services().get(name).await?))
    }

    /// Events about an object in `ns` (cluster-scoped objects: `default`) with this reason.
    pub async fn events_in(
        &self,
        ns: &str,
        object: &str,
        reason: &str,
    ) -> anyhow::Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
            })
            .collect())
    }

    /// Waits for an Event with this reason about a Service of the test namespace; returns its
    /// note.
    pub async fn wait_event(&self, object: &str, reason: &str) -> anyhow::Result<String> {
        self.wait_event_in(&self.ns, object, reason).await
    }

    /// Waits for an Event in `ns`.
    pub async fn wait_event_in(
        &self,
        ns: &str,
        object: &str,
        reason: &str,
    ) -> anyhow::Result<String> {
        for _ in 0..200 {
            if let Some(e) = self.events_in(ns, object, reason).await?.into_iter().next() {
                return Ok(e.note.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no {reason} event about {ns}/{object}")
    }

    /// Deletes the test's pools and namespaces.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let pools: Api<IPAddressPool> = Api::all(self.client.clone());
        pools
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("{TEST_LABEL}={}", self.ns)),
            )
            .await?;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for ns in namespaces.list(&ListParams::default()).await?.items {
            let name = ns.name_any();
            if name == self.ns || name.starts_with(&format!("{}-", self.ns)) {
                namespaces.delete(&name, &DeleteParams::default()).await?;
            }
        }
        Ok(())
    }
}

/// The status IPs of a Service.
pub use herald_config::service::status_ips as ips;

/// A pool spec with these addresses and defaults otherwise.
pub fn pool_spec(addresses: &[&str]) -> IPAddressPoolSpec {
    IPAddressPoolSpec::new(addresses)
}

/// A few random bits for unique names (no extra dependency).
pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}

/// Logs for tests (once).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Fetches `path` from a local HTTP server (tiny client for /metrics and health checks).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let code = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
