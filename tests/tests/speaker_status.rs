//! Who announces, against the real API server: a speaker writes only its own node's
//! `NodeL2Status` report (owned by its Node), and the controller mirrors the latest claim into
//! the Service's `herald.dev/Announced` condition with an `AnnouncerChanged` Event — once per
//! change of announcer.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use herald_config::NodeL2Status;
use herald_config::announcement;
use herald_speaker::edge::service_status;
use herald_tests::{TestEnv, init_tracing, pool_spec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};

async fn create_node(client: &kube::Client, name: &str) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?)
}

/// What `node`'s speaker reports when it announces `ip` on eth0 since `since`.
async fn report(
    env: &TestEnv,
    node: &str,
    ip: std::net::IpAddr,
    since: Timestamp,
) -> anyhow::Result<()> {
    let announced = BTreeMap::from([(ip, ("eth0".to_string(), MicroTime(since)))]);
    service_status::publish_report(env.client.clone(), node, &announcement::report(&announced))
        .await?;
    Ok(())
}

async fn wait_announced(env: &TestEnv, service: &str, node: &str) -> anyhow::Result<()> {
    let want = service_status::message(node, "eth0");
    let mut last = None;
    for _ in 0..100 {
        last = service_status::current(&env.services().get(service).await?);
        if last.as_deref() == Some(want.as_str()) {
            let notes: Vec<String> = env
                .events_in(&env.ns, service, announcement::EVENT_CHANGED)
                .await?
                .into_iter()
                .filter_map(|e| e.note)
                .collect();
            if notes.contains(&want) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{service}: condition {last:?}, wanted {want:?} with its Event")
}

#[tokio::test]
async fn the_speakers_reports_are_mirrored_into_the_announced_condition() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("speaker-status").await?;
    let (a, b) = (format!("{}-a", env.ns), format!("{}-b", env.ns));
    let result = async {
        env.apply_pool("p", pool_spec(&["203.0.113.40/30"])).await?;
        let controller = env.start_controller();
        env.apply_service("web", &[], |_| {}).await?;
        let ip = env.wait_any_ip("web").await?[0];
        let node_a = create_node(&env.client, &a).await?;
        create_node(&env.client, &b).await?;

        // a announces: its report (created on its first write, owned by its Node) is mirrored.
        report(&env, &a, ip, Timestamp::now()).await?;
        wait_announced(&env, "web", &a).await?;
        let reports: Api<NodeL2Status> = Api::all(env.client.clone());
        let owners = reports
            .get(&a)
            .await?
            .metadata
            .owner_references
            .unwrap_or_default();
        ensure!(
            owners.len() == 1 && Some(&owners[0].uid) == node_a.metadata.uid.as_ref(),
            "the report is not owned by its Node: {owners:?}"
        );

        // Failover: b takes the IP while a's report (a dead node's) still claims it.
        report(&env, &b, ip, Timestamp::now()).await?;
        wait_announced(&env, "web", &b).await?;
        // A report older than b's claim changes nothing.
        report(&env, &a, ip, Timestamp::from_second(1_000_000_000)?).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(
            service_status::current(&env.services().get("web").await?)
                == Some(service_status::message(&b, "eth0")),
            "an older claim won"
        );
        controller.stop().await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    for n in [&a, &b] {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
    result.context("mirroring the reports")?;
    env.cleanup().await
}
