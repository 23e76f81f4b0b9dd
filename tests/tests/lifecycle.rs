//! Status is the truth: restarts, invalid status, frees, pending retries, pool changes,
//! overlaps, and Events that aggregate.

use std::time::Duration;

use herald_config::pool::{CONDITION_OVERLAPPING, CONDITION_VALID};
use herald_tests::{TestEnv, init_tracing, pool_spec};
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn restart_never_moves_an_ip_even_with_pending_services() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("restart").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.112/31"])).await?;
    let controller = env.start_controller();
    env.apply_service("b", &[], |_| {}).await?;
    env.apply_service("c", &[], |_| {}).await?;
    let b = env.wait_any_ip("b").await?;
    let c = env.wait_any_ip("c").await?;
    controller.crash().await;
    // While no controller runs, a Service arrives that sorts first by name; after the restart
    // the IPs held in status must win over it (MetalLB #2443).
    env.apply_service("a", &[], |_| {}).await?;
    let controller = env.start_controller();
    env.wait_event("a", "AllocationFailed").await?;
    assert_eq!(env.ips_of("b").await?, b);
    assert_eq!(env.ips_of("c").await?, c);
    assert!(env.ips_of("a").await?.is_empty());
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn invalid_status_ip_is_cleared_and_reallocated() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("invalid-status").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.116/31"])).await?;
    env.apply_service("s", &[], |_| {}).await?;
    // Someone (a previous installation) left an IP outside every pool in status.
    env.services()
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}),
            ),
        )
        .await?;
    let controller = env.start_controller();
    env.wait_ips("s", &["192.0.2.116"]).await?;
    let note = env.wait_event("s", "ClearAssignment").await?;
    assert!(note.contains("203.0.113.9"), "{note}");
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn deletion_and_type_change_free_ips_for_pending_services() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("frees").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.120"])).await?;
    let controller = env.start_controller();
    env.apply_service("first", &[], |_| {}).await?;
    env.wait_ips("first", &["192.0.2.120"]).await?;
    env.apply_service("second", &[], |_| {}).await?;
    env.wait_event("second", "AllocationFailed").await?;
    // Type changed away from LoadBalancer: freed, status cleared, the pending one gets it.
    env.apply_service("first", &[], |s| {
        s.type_ = Some("ClusterIP".into());
        s.load_balancer_class = None;
    })
    .await?;
    env.wait_ips("second", &["192.0.2.120"]).await?;
    env.wait_ips("first", &[]).await?;
    // Deleted: freed for the next.
    env.apply_service("third", &[], |_| {}).await?;
    env.wait_event("third", "AllocationFailed").await?;
    env.services().delete("second", &Default::default()).await?;
    env.wait_ips("third", &["192.0.2.120"]).await?;
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn pool_growth_shrink_and_deletion() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("pool-changes").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.124"])).await?;
    let controller = env.start_controller();
    env.apply_service("a", &[], |_| {}).await?;
    env.apply_service("b", &[], |_| {}).await?;
    env.wait_ips("a", &["192.0.2.124"]).await?;
    env.wait_event("b", "AllocationFailed").await?;
    // Growing the pool serves the pending Service at once.
    env.apply_pool("p", pool_spec(&["192.0.2.124-192.0.2.125"]))
        .await?;
    env.wait_ips("b", &["192.0.2.125"]).await?;
    // Shrinking away from a held IP: that Service moves if it can, else waits with an Event.
    env.apply_pool("p", pool_spec(&["192.0.2.125-192.0.2.126"]))
        .await?;
    env.wait_ips("a", &["192.0.2.126"]).await?;
    assert!(
        env.wait_event("a", "ClearAssignment")
            .await?
            .contains("192.0.2.124")
    );
    env.delete_pool("p").await?;
    env.wait_ips("a", &[]).await?;
    env.wait_ips("b", &[]).await?;
    assert!(
        env.wait_event("b", "ClearAssignment")
            .await?
            .contains("not in any IPAddressPool")
    );
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn overlapping_pools_are_marked_and_not_used() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("overlap").await?;
    env.apply_pool("a", pool_spec(&["192.0.2.128/30"])).await?;
    env.apply_pool("b", pool_spec(&["192.0.2.130-192.0.2.133"]))
        .await?;
    let controller = env.start_controller();
    for name in ["a", "b"] {
        let mut status = None;
        for _ in 0..100 {
            status = env.pool(name).await?.status;
            if status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == CONDITION_OVERLAPPING && c.status == "True")
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = status.unwrap_or_default();
        let overlapping = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_OVERLAPPING)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{name}: no Overlapping condition in {status:?}"))?;
        assert_eq!(overlapping.status, "True", "{name}: {status:?}");
        assert!(
            overlapping.message.contains("192.0.2.130-192.0.2.131"),
            "{}",
            overlapping.message
        );
        let valid = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_VALID)
            .cloned();
        assert_eq!(valid.map(|c| c.status).as_deref(), Some("True"));
        let note = env
            .wait_event_in("default", &env.pool_name(name), "PoolOverlap")
            .await?;
        assert!(note.contains("never assigned"), "{note}");
    }
    for i in 0..4 {
        env.apply_service(&format!("s{i}"), &[], |_| {}).await?;
    }
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(env.wait_any_ip(&format!("s{i}")).await?);
    }
    for ip in &got {
        assert!(
            !["192.0.2.130", "192.0.2.131"].contains(&ip.to_string().as_str()),
            "{got:?}"
        );
    }
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn reversed_range_is_marked_invalid_in_status() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("reversed").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.140-192.0.2.136", "192.0.2.141"]))
        .await?;
    let controller = env.start_controller();
    env.apply_service("s", &[], |_| {}).await?;
    env.wait_ips("s", &["192.0.2.141"]).await?;
    let mut valid = None;
    for _ in 0..100 {
        valid = env.pool("p").await?.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == CONDITION_VALID)
        });
        if valid.as_ref().is_some_and(|c| c.status == "False") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let valid = valid.ok_or_else(|| anyhow::anyhow!("no Valid condition"))?;
    assert_eq!(valid.status, "False");
    assert!(
        valid.message.contains("spec.addresses[0]")
            && valid.message.contains("starts after it ends"),
        "{}",
        valid.message
    );
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn events_are_aggregated_not_repeated() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("events").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.144"])).await?;
    let controller = env.start_controller();
    env.apply_service("holder", &[], |_| {}).await?;
    env.wait_any_ip("holder").await?;
    env.apply_service("waiting", &[], |_| {}).await?;
    env.wait_event("waiting", "AllocationFailed").await?;
    // Touch the waiting Service many times: every touch reconciles it.
    for i in 0..20 {
        env.apply_service("waiting", &[("example.com/touch", &i.to_string())], |_| {})
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = env
        .events_in(&env.ns, "waiting", "AllocationFailed")
        .await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].series.is_none(),
        "the same failure is not even re-published"
    );
    controller.stop().await;
    env.cleanup().await
}
