//! The controller under a slow, hung or refusing API server (issue 8, section 3), against the
//! lab's real kube-apiserver: a leader whose connection stops answering stands by before the
//! standby takes over, its main loop turning all along; status writes land only on the object
//! they were decided for; a write that takes an IP away and fails never lets the IP be given
//! to another Service.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use herald_config::service::ServiceKey;
use herald_controller::leader::Leadership;
use herald_controller::metrics::Metrics;
use herald_controller::writer::{StatusWrite, WriterContext, run_status_writer};
use herald_support::health::Exposition;
use herald_tests::pausable_proxy::{PausableProxy, apiserver_addr, client_through};
use herald_tests::{RunningController, TestEnv, init_tracing, pool_spec};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::{mpsc, watch};

async fn wait_leader(c: &RunningController, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < within {
        if c.is_leader() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{} never led within {within:?}", c.identity)
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stands_by_before_the_standby_takes_over()
-> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("hung-leader").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.216/29"])).await?;
    let proxy = PausableProxy::start(apiserver_addr()?).await?;
    // Lease 4 s, renew deadline 3 s, retry 0.5 s, API timeout 2 s (TestEnv::settings).
    let settings = env.settings("cut-off");
    let renew_deadline = settings.lease.renew_deadline;
    // Its /healthz fails after a second without a main loop turn.
    let cut_off = env.start_controller_observed(
        client_through(&proxy).await?,
        settings,
        Metrics::with_liveness(Duration::from_secs(1)),
    );
    wait_leader(&cut_off, Duration::from_secs(10)).await?;
    let standby = env.start_controller_with(env.settings("standby"));
    env.apply_service("before", &[], |_| {}).await?;
    let before = env.wait_any_ip("before").await?;

    // The leader's API connection stops answering: its Lease requests hang.
    proxy.pause();
    let cut = Instant::now();
    let mut stood_by = None;
    let mut took_over = None;
    while cut.elapsed() < Duration::from_secs(20) {
        let (old, new) = (cut_off.is_leader(), standby.is_leader());
        ensure!(
            !(old && new),
            "both replicas lead {:?} after the cut",
            cut.elapsed()
        );
        // Its requests hang, its main loop does not.
        if let Err(why) = cut_off.metrics.liveness() {
            anyhow::bail!("{:?} after the cut: {why}", cut.elapsed());
        }
        if !old && stood_by.is_none() {
            stood_by = Some(cut.elapsed());
        }
        if new {
            took_over = Some(cut.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stood_by = stood_by.context("the cut-off leader never stood by")?;
    let took_over = took_over.context("the standby never took over")?;
    ensure!(
        stood_by <= renew_deadline + Duration::from_millis(300),
        "the cut-off leader stood by {stood_by:?} after the cut, past its {renew_deadline:?} renew deadline"
    );
    ensure!(stood_by < took_over);
    eprintln!("cut-off leader stood by after {stood_by:?}; standby took over after {took_over:?}");

    // The new leader serves, and moves nothing.
    env.apply_service("during", &[], |_| {}).await?;
    let during = env.wait_any_ip("during").await?;
    ensure!(during != before);

    // The connection comes back with whatever it held: the old leader finds the Lease taken
    // and keeps standing by; nothing it had in flight changes any assignment.
    proxy.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(!cut_off.is_leader() && standby.is_leader());
    ensure!(env.ips_of("before").await? == before, "before moved");
    ensure!(env.ips_of("during").await? == during, "during moved");
    cut_off.crash().await;
    standby.stop().await;
    env.cleanup().await
}

/// Where a status writer takes its writes.
type Batches = mpsc::UnboundedSender<Vec<(ServiceKey, StatusWrite)>>;

/// A status writer of a replica that leads for the next minute: its input, the writes handed
/// back, and its term (kept alive by the caller).
fn writer(
    client: kube::Client,
) -> (
    Batches,
    mpsc::UnboundedReceiver<ServiceKey>,
    watch::Sender<Option<tokio::time::Instant>>,
) {
    let (term, term_rx) =
        watch::channel(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
    let (failures_tx, failures) = mpsc::unbounded_channel();
    let (batches, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_status_writer(
        WriterContext {
            client,
            leadership: Leadership::new(term_rx),
            api_timeout: Duration::from_secs(5),
            metrics: std::sync::Arc::new(Metrics::default()),
            failures: failures_tx,
            concurrency: 4,
        },
        rx,
    ));
    (batches, failures, term)
}

fn write_for(svc: &Service, ip: &str) -> anyhow::Result<(ServiceKey, StatusWrite)> {
    let key = ServiceKey::of(svc).context("a named Service")?;
    Ok((
        key.clone(),
        StatusWrite {
            key,
            uid: svc.metadata.uid.clone(),
            resource_version: svc.metadata.resource_version.clone(),
            ips: Some(vec![ip.parse()?]),
            announced: None,
        },
    ))
}

async fn failed(failures: &mut mpsc::UnboundedReceiver<ServiceKey>) -> Option<ServiceKey> {
    tokio::time::timeout(Duration::from_secs(10), failures.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn a_status_write_lands_only_on_the_service_it_was_decided_for() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("write-precondition").await?;
    // No controller serves this test's class: only the writer below writes.
    let first = env.apply_service("web", &[], |_| {}).await?;
    let (batches, mut failures, _term) = writer(env.client.clone());

    // Decided on the current object: it lands.
    batches.send(vec![write_for(&first, "192.0.2.10")?])?;
    let mut shown = Vec::new();
    for _ in 0..100 {
        shown = env.ips_of("web").await?;
        if !shown.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        shown == ["192.0.2.10".parse::<std::net::IpAddr>()?],
        "{shown:?}"
    );

    // Decided on the object as it was before that write: refused, handed back.
    batches.send(vec![write_for(&first, "192.0.2.11")?])?;
    ensure!(
        failed(&mut failures).await.is_some(),
        "a stale write was not refused"
    );
    ensure!(env.ips_of("web").await? == shown, "a stale write landed");

    // Deleted and recreated under the same name: a write decided for the old one is refused
    // whatever resourceVersion it names, and the new one is untouched.
    env.services()
        .delete("web", &DeleteParams::default())
        .await?;
    for _ in 0..100 {
        if env.services().get_opt("web").await?.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = env.apply_service("web", &[], |_| {}).await?;
    ensure!(second.metadata.uid != first.metadata.uid);
    batches.send(vec![write_for(&first, "192.0.2.12")?])?;
    ensure!(
        failed(&mut failures).await.is_some(),
        "the old write was not refused"
    );
    let (key, mut with_new_version) = write_for(&second, "192.0.2.13")?;
    with_new_version.uid = first.metadata.uid.clone();
    batches.send(vec![(key, with_new_version)])?;
    ensure!(
        failed(&mut failures).await.is_some(),
        "a write naming the old UID landed on the new Service"
    );
    ensure!(
        env.ips_of("web").await?.is_empty(),
        "a write for the deleted Service landed on the new one"
    );

    // Deleted: a write is not made (and does not recreate it).
    env.services()
        .delete("web", &DeleteParams::default())
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    batches.send(vec![write_for(&second, "192.0.2.14")?])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(env.services().get_opt("web").await?.is_none(), "recreated");
    env.cleanup().await
}

/// Refuses every status write to the Service `name` of `namespace` (an admission policy: the
/// write reaches the API server and fails there, as a webhook or a quota could make it fail).
async fn refuse_status_writes(
    client: &kube::Client,
    policy: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let apply = PatchParams::apply("herald-tests").force();
    let rule =
        format!("object.metadata.namespace != '{namespace}' || object.metadata.name != '{name}'");
    let p: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["services/status"]
            }]},
            "validations": [{"expression": rule, "message": "status writes refused by the test"}]
        }
    }))?;
    policies.patch(policy, &apply, &Patch::Apply(&p)).await?;
    let b: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]}
    }))?;
    bindings.patch(policy, &apply, &Patch::Apply(&b)).await?;
    Ok(())
}

/// Removes what [`refuse_status_writes`] made (whatever of it exists).
async fn allow_status_writes(client: &kube::Client, policy: &str) -> anyhow::Result<()> {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for deleted in [
        bindings
            .delete(policy, &DeleteParams::default())
            .await
            .map(|_| ()),
        policies
            .delete(policy, &DeleteParams::default())
            .await
            .map(|_| ()),
    ] {
        match deleted {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_shrink_never_lets_the_grow_that_depends_on_it_be_made() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("failed-shrink").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.224/29"])).await?;
    let controller = env.start_controller();
    let ask = |ip: &'static str| [("herald.dev/loadBalancerIPs", ip)];
    env.apply_service("a", &ask("192.0.2.225"), |_| {}).await?;
    env.wait_ips("a", &["192.0.2.225"]).await?;

    // a's status can no longer be written.
    let policy = format!("{}-refuse-a", env.ns);
    let refused = async {
        refuse_status_writes(&env.client, &policy, &env.ns, "a").await?;
        let probe = env.services();
        let mut refusing = false;
        for _ in 0..100 {
            let patch = json!({"status": {"conditions": [{"type": "herald.dev/Probe", "status": "True",
                "reason": "Probe", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
            if probe
                .patch_status("a", &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .is_err()
            {
                refusing = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(refusing, "the admission policy never took effect");

        // a moves to .226 (its write that takes .225 away fails); b asks for .225 meanwhile.
        env.apply_service("a", &ask("192.0.2.226"), |_| {}).await?;
        env.apply_service("b", &ask("192.0.2.225"), |_| {}).await?;
        let watched = Instant::now();
        while watched.elapsed() < Duration::from_secs(4) {
            let (a, b) = (env.ips_of("a").await?, env.ips_of("b").await?);
            ensure!(
                !a.iter().any(|ip| b.contains(ip)),
                "a {a:?} and b {b:?} show one IP at once"
            );
            ensure!(
                b.is_empty(),
                "b was given {b:?} while a's status still shows it"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // The policy goes whatever happened: a failed run must not refuse writes for later ones.
    allow_status_writes(&env.client, &policy).await?;
    refused?;

    // a's write lands at last: then, and only then, b gets .225.
    env.wait_ips("a", &["192.0.2.226"]).await?;
    env.wait_ips("b", &["192.0.2.225"]).await?;
    controller.stop().await;
    env.cleanup().await
}
