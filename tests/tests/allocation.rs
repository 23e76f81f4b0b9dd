//! Allocation behaviour on the real API server: pools, Service inputs, families, sharing.

use herald_config::pool::ServiceAllocation;
use herald_tests::{TestEnv, init_tracing, pool_spec};
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

fn selector(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn cidr_range_and_single_ip_pools() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("pool-forms").await?;
    env.apply_pool("cidr", pool_spec(&["192.0.2.16/31"]))
        .await?;
    env.apply_pool("range", pool_spec(&["192.0.2.20-192.0.2.20"]))
        .await?;
    env.apply_pool("single", pool_spec(&["192.0.2.24"])).await?;
    let controller = env.start_controller();
    for i in 0..4 {
        env.apply_service(&format!("s{i}"), &[], |_| {}).await?;
    }
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(env.wait_any_ip(&format!("s{i}")).await?);
    }
    got.sort();
    let want: Vec<std::net::IpAddr> = ["192.0.2.16", "192.0.2.17", "192.0.2.20", "192.0.2.24"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(got, want);
    // Every address is taken: the fifth waits, with an AllocationFailed event saying why.
    env.apply_service("s4", &[], |_| {}).await?;
    let note = env.wait_event("s4", "AllocationFailed").await?;
    assert!(note.contains("no available IPs"), "{note}");
    assert!(env.ips_of("s4").await?.is_empty());
    let metrics = controller.metrics.encode();
    assert!(
        metrics.contains("herald_allocation_failures_total{reason=\"exhausted\"} 1"),
        "{metrics}"
    );
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn auto_assign_false_and_avoid_buggy_ips() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("auto-assign").await?;
    let mut manual = pool_spec(&["192.0.2.32/30"]);
    manual.auto_assign = false;
    env.apply_pool("manual", manual).await?;
    let mut buggy = pool_spec(&["192.0.2.255", "198.51.100.0-198.51.100.1"]);
    buggy.avoid_buggy_ips = true;
    env.apply_pool("buggy", buggy).await?;
    let controller = env.start_controller();
    // Only the non-buggy address of the auto-assign pool is handed out unasked.
    env.apply_service("auto", &[], |_| {}).await?;
    env.wait_ips("auto", &["198.51.100.1"]).await?;
    env.apply_service("auto2", &[], |_| {}).await?;
    env.wait_event("auto2", "AllocationFailed").await?;
    // The manual pool serves only those who ask for it.
    env.apply_service(
        "asks",
        &[("herald.dev/address-pool", &env.pool_name("manual"))],
        |_| {},
    )
    .await?;
    env.wait_ips("asks", &["192.0.2.32"]).await?;
    let pool = env.pool("buggy").await?;
    // Status counts follow (debounced writes).
    for _ in 0..100 {
        let p = env.pool("buggy").await?;
        if p.status
            .as_ref()
            .is_some_and(|s| s.assigned_ipv4 == 1 && s.available_ipv4 == 0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = env.pool("buggy").await?.status.unwrap_or_default();
    assert_eq!(
        (status.assigned_ipv4, status.available_ipv4),
        (1, 0),
        "{pool:?}"
    );
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn service_allocation_priority_namespaces_and_selectors() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("svc-alloc").await?;
    let gold = env.extra_namespace("gold", &[("tier", "gold")]).await?;
    env.apply_pool("general", pool_spec(&["192.0.2.40/30"]))
        .await?;
    let mut low = pool_spec(&["192.0.2.44/30"]);
    low.service_allocation = Some(ServiceAllocation {
        priority: Some(50),
        namespaces: vec![env.ns.clone()],
        ..Default::default()
    });
    env.apply_pool("low", low).await?;
    let mut high = pool_spec(&["192.0.2.48/30"]);
    high.service_allocation = Some(ServiceAllocation {
        priority: Some(10),
        namespace_selectors: vec![selector("tier", "gold")],
        ..Default::default()
    });
    env.apply_pool("high", high).await?;
    let mut labelled = pool_spec(&["192.0.2.52/30"]);
    labelled.service_allocation = Some(ServiceAllocation {
        priority: Some(1),
        service_selectors: vec![selector("wants", "labelled")],
        ..Default::default()
    });
    env.apply_pool("labelled", labelled).await?;
    let controller = env.start_controller();

    env.apply_service_in(&gold, "g", &[], |_| {}).await?;
    env.wait_ips_in(&gold, "g", "the gold pool", |ips| {
        ips == ["192.0.2.48".parse::<std::net::IpAddr>().unwrap()]
    })
    .await?;
    env.apply_service("mine", &[], |_| {}).await?;
    env.wait_ips("mine", &["192.0.2.44"]).await?;
    // A Service selected by label gets the priority-1 pool.
    let services = env.services();
    env.apply_service("lab", &[], |_| {}).await?;
    let mut svc = services.get("lab").await?;
    let _ = svc
        .metadata
        .labels
        .insert(BTreeMap::from([("wants".into(), "labelled".into())]));
    // Label before the controller decides: recreate with the label.
    services.delete("lab", &Default::default()).await?;
    svc.metadata.resource_version = None;
    svc.metadata.uid = None;
    svc.status = None;
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = None;
    spec.cluster_ips = None;
    for _ in 0..50 {
        if services.get_opt("lab").await?.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    services.create(&Default::default(), &svc).await?;
    env.wait_ips("lab", &["192.0.2.52"]).await?;
    // Asking for a pool that does not allow the Service is refused with a reason.
    env.apply_service(
        "nope",
        &[("herald.dev/address-pool", &env.pool_name("high"))],
        |_| {},
    )
    .await?;
    let note = env.wait_event("nope", "AllocationFailed").await?;
    assert!(note.contains("does not allow this Service"), "{note}");
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn requested_ips_pools_and_annotation_prefixes() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("requests").await?;
    env.apply_pool("a", pool_spec(&["192.0.2.64/29", "2001:db8::40/125"]))
        .await?;
    env.apply_pool("b", pool_spec(&["192.0.2.72/29"])).await?;
    let controller = env.start_controller();
    env.apply_service("spec-ip", &[], |s| {
        s.load_balancer_ip = Some("192.0.2.70".into())
    })
    .await?;
    env.wait_ips("spec-ip", &["192.0.2.70"]).await?;
    env.apply_service(
        "herald",
        &[("herald.dev/loadBalancerIPs", "192.0.2.69")],
        |_| {},
    )
    .await?;
    env.wait_ips("herald", &["192.0.2.69"]).await?;
    env.apply_service(
        "metallb",
        &[("metallb.io/loadBalancerIPs", "192.0.2.68")],
        |_| {},
    )
    .await?;
    env.wait_ips("metallb", &["192.0.2.68"]).await?;
    env.apply_service(
        "old",
        &[("metallb.universe.tf/address-pool", &env.pool_name("b"))],
        |_| {},
    )
    .await?;
    env.wait_ips("old", &["192.0.2.72"]).await?;
    let note = env.wait_event("old", "DeprecatedAnnotation").await?;
    assert!(note.contains("metallb.universe.tf/address-pool"), "{note}");
    env.apply_service(
        "pool-io",
        &[("metallb.io/address-pool", &env.pool_name("b"))],
        |_| {},
    )
    .await?;
    env.wait_ips("pool-io", &["192.0.2.73"]).await?;
    // The requested IP is moved when the request changes.
    env.apply_service(
        "herald",
        &[("herald.dev/loadBalancerIPs", "192.0.2.67")],
        |_| {},
    )
    .await?;
    env.wait_ips("herald", &["192.0.2.67"]).await?;
    env.wait_event("herald", "ClearAssignment").await?;
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn load_balancer_class_decides_who_serves() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("lb-class").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.80/30"])).await?;
    let controller = env.start_controller();
    env.apply_service("other-class", &[], |s| {
        s.load_balancer_class = Some("example.com/other".into())
    })
    .await?;
    env.apply_service("mine", &[], |_| {}).await?;
    env.wait_ips("mine", &["192.0.2.80"]).await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(env.ips_of("other-class").await?.is_empty());
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn dual_stack_policies() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("dual-stack").await?;
    env.apply_pool("dual", pool_spec(&["192.0.2.88/30", "2001:db8::58/126"]))
        .await?;
    env.apply_pool("v6", pool_spec(&["2001:db8::60/126"]))
        .await?;
    let controller = env.start_controller();
    env.apply_service("require", &[], |s| {
        s.ip_family_policy = Some("RequireDualStack".into());
        s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    })
    .await?;
    env.wait_ips("require", &["192.0.2.88", "2001:db8::58"])
        .await?;
    env.apply_service("prefer", &[], |s| {
        s.ip_family_policy = Some("PreferDualStack".into());
        s.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
    })
    .await?;
    // IPv6 first (the Service's order); both from the first pool able to give both.
    env.wait_ips("prefer", &["2001:db8::59", "192.0.2.89"])
        .await?;
    env.apply_service("single6", &[], |s| {
        s.ip_family_policy = Some("SingleStack".into());
        s.ip_families = Some(vec!["IPv6".into()]);
    })
    .await?;
    env.wait_ips("single6", &["2001:db8::5a"]).await?;
    // PreferDualStack with no IPv4 left takes IPv6 now and adds IPv4 when one is freed.
    env.apply_service("fill-a", &[], |_| {}).await?;
    env.apply_service("fill-b", &[], |_| {}).await?;
    env.wait_any_ip("fill-a").await?;
    env.wait_any_ip("fill-b").await?;
    env.apply_service(
        "later",
        &[("herald.dev/address-pool", &env.pool_name("dual"))],
        |s| {
            s.ip_family_policy = Some("PreferDualStack".into());
            s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        },
    )
    .await?;
    env.wait_ips("later", &["2001:db8::5b"]).await?;
    env.services().delete("fill-a", &Default::default()).await?;
    env.wait_ips_in(&env.ns, "later", "IPv4 added", |ips| {
        ips.len() == 2 && ips[0].is_ipv4()
    })
    .await?;
    controller.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn sharing_rules() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("sharing").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.96/29"])).await?;
    let controller = env.start_controller();
    let port = |p: i32| ServicePort {
        name: Some(format!("p{p}")),
        port: p,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    env.apply_service("web", &[("herald.dev/allow-shared-ip", "k")], |s| {
        s.ports = Some(vec![port(80)])
    })
    .await?;
    let ip = env.wait_any_ip("web").await?;
    env.apply_service("tls", &[("metallb.io/allow-shared-ip", "k")], |s| {
        s.ports = Some(vec![port(443)])
    })
    .await?;
    let shared = env.wait_any_ip("tls").await?;
    assert_eq!(shared, ip, "same key, different ports: one IP");
    env.apply_service("clash", &[("herald.dev/allow-shared-ip", "k")], |s| {
        s.ports = Some(vec![port(80)])
    })
    .await?;
    assert_ne!(
        env.wait_any_ip("clash").await?,
        ip,
        "port clash: another IP"
    );
    // Explicitly requesting a held IP with another key is refused with a reason.
    let want = ip[0].to_string();
    env.apply_service(
        "thief",
        &[
            ("herald.dev/loadBalancerIPs", &want),
            ("herald.dev/allow-shared-ip", "other"),
        ],
        |s| s.ports = Some(vec![port(8080)]),
    )
    .await?;
    let note = env.wait_event("thief", "AllocationFailed").await?;
    assert!(note.contains("cannot be shared"), "{note}");
    // Local policy: sharers need the same selector.
    env.apply_service("local-a", &[("herald.dev/allow-shared-ip", "loc")], |s| {
        s.external_traffic_policy = Some("Local".into());
        s.selector = Some(BTreeMap::from([("app".into(), "x".into())]));
        s.ports = Some(vec![port(81)]);
    })
    .await?;
    let local_ip = env.wait_any_ip("local-a").await?;
    env.apply_service("local-b", &[("herald.dev/allow-shared-ip", "loc")], |s| {
        s.external_traffic_policy = Some("Local".into());
        s.selector = Some(BTreeMap::from([("app".into(), "y".into())]));
        s.ports = Some(vec![port(82)]);
    })
    .await?;
    assert_ne!(env.wait_any_ip("local-b").await?, local_ip);
    controller.stop().await;
    env.cleanup().await
}

/// A pool address equal to a Node's InternalIP is never handed out, and the pool's Event says
/// whose address it is.
#[tokio::test]
async fn a_nodes_internal_ip_is_never_handed_out() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    init_tracing();
    let env = TestEnv::new("node-address").await?;
    let node = format!("{}-n", env.ns);
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": node}}))?,
        )
        .await?;
    nodes
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": "192.0.2.240"},
                {"type": "Hostname", "address": node},
            ]}})),
        )
        .await?;
    let result = async {
        env.apply_pool("p", pool_spec(&["192.0.2.240/31"])).await?;
        let controller = env.start_controller();
        env.apply_service("s", &[], |_| {}).await?;
        env.wait_ips("s", &["192.0.2.241"]).await?;
        let note = env
            .wait_event_in("default", &env.pool_name("p"), "NodeAddressInPool")
            .await;
        controller.stop().await;
        let note = note?;
        anyhow::ensure!(
            note.contains(&format!("192.0.2.240 (node {node})")),
            "{note}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = nodes.delete(&node, &DeleteParams::default()).await;
    result?;
    env.cleanup().await
}
