use super::*;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use serde_json::json;

fn scope() -> Scope {
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        scope: Scope,
    }
    Wrapper::parse_from(["test"]).scope
}

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("valid")
}

fn node(name: &str, labels: serde_json::Value, ip: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDRs": ["203.0.113.128/26"]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
    }))
    .expect("a Node")
}

fn speaker(node: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("speaker-{node}")},
        "spec": {"nodeName": node, "containers": []},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .expect("a Pod")
}

fn pool(name: &str, addresses: &[&str], labels: serde_json::Value) -> IPAddressPool {
    serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "labels": labels}, "spec": {"addresses": addresses}
    }))
    .expect("a pool")
}

fn ad(name: &str, spec: serde_json::Value) -> L2Advertisement {
    serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("an advertisement")
}

fn kube_proxy_config(conf: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": "kube-proxy"}, "data": {"config.conf": conf}}),
    )
    .expect("a ConfigMap")
}

fn healthy() -> Snapshot {
    Snapshot {
        nodes: vec![
            node("node-a", json!({"role": "edge"}), "192.0.2.10"),
            node("node-b", json!({"role": "edge"}), "192.0.2.11"),
            node("node-c", json!({"role": "worker"}), "192.0.2.12"),
        ],
        speakers: vec![speaker("node-a", true), speaker("node-b", true)],
        pools: vec![pool("prod", &["198.51.100.0/28"], json!({"zone": "east"}))],
        advertisements: vec![ad("edge", json!({"ipAddressPoolSelectors": [{"matchLabels": {"zone": "east"}}], "nodeSelectors": [{"matchLabels": {"role": "edge"}}]}))],
        membership_secret: Some(SecretState::Present),
        kube_proxy_config: Some(kube_proxy_config("mode: ipvs\nipvs:\n  strictARP: true\n")),
        service_cidrs: vec![serde_json::from_value::<ServiceCIDR>(json!({"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["203.0.113.0/25"]}})).expect("a ServiceCIDR")],
        controller_lease: Some(serde_json::from_value::<Lease>(json!({
            "metadata": {"name": "herald-controller"},
            "spec": {"holderIdentity": "replica-0", "leaseDurationSeconds": 15, "renewTime": "2023-11-14T22:13:18.000000Z"}
        })).expect("a Lease")),
        ..Snapshot::default()
    }
}

fn errors(findings: &[Finding]) -> Vec<(&'static str, String)> {
    findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .map(|f| (f.check, f.message.clone()))
        .collect()
}

#[test]
fn a_healthy_cluster_passes_every_check() {
    let findings = run(&healthy(), &scope(), now());
    assert!(
        findings.iter().all(|f| f.level == Level::Ok),
        "{findings:#?}"
    );
    let checks: Vec<_> = findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        [
            "kube-proxy",
            "pool-overlap",
            "advertisements",
            "membership-secret",
            "speakers",
            "controller"
        ]
    );
    assert!(findings[0].message.contains("ipvs with strictARP"));
    // The speaker on node-c is not needed: no advertisement selects it.
}

#[test]
fn ipvs_without_strict_arp_is_an_error_with_the_fix() {
    let mut s = healthy();
    s.kube_proxy_config = Some(kube_proxy_config("mode: ipvs\n"));
    let f = &run(&s, &scope(), now())[0];
    assert_eq!(f.level, Level::Error);
    assert!(
        f.fix
            .as_deref()
            .is_some_and(|x| x.contains("strictARP: true"))
    );
    // From the pods' flags when there is no ConfigMap.
    s.kube_proxy_config = None;
    s.kube_proxy_pods = vec![serde_json::from_value(json!({
        "metadata": {"name": "kube-proxy-x"},
        "spec": {"containers": [{"name": "p", "command": ["kube-proxy", "--proxy-mode", "ipvs", "--ipvs-strict-arp"]}]}
    })).expect("a Pod")];
    assert_eq!(run(&s, &scope(), now())[0].level, Level::Ok);
    s.kube_proxy_pods.clear();
    assert_eq!(
        run(&s, &scope(), now())[0].level,
        Level::Warning,
        "unknown mode is a warning"
    );
    s.kube_proxy_config = Some(kube_proxy_config("mode: nftables\n"));
    assert_eq!(run(&s, &scope(), now())[0].level, Level::Ok);
}

#[test]
fn pools_overlapping_node_pod_or_service_addresses_are_errors() {
    let mut s = healthy();
    s.pools = vec![pool(
        "bad",
        &["192.0.2.0/28", "203.0.113.120-203.0.113.130"],
        json!({"zone": "east"}),
    )];
    let errors = errors(&run(&s, &scope(), now()));
    let overlaps: Vec<&String> = errors
        .iter()
        .filter(|(c, _)| *c == "pool-overlap")
        .map(|(_, m)| m)
        .collect();
    assert!(
        overlaps
            .iter()
            .any(|m| m.contains("node node-a's InternalIP 192.0.2.10")),
        "{overlaps:#?}"
    );
    assert!(
        overlaps
            .iter()
            .any(|m| m.contains("pod CIDR 203.0.113.128/26")
                && m.contains("203.0.113.128-203.0.113.130")),
        "{overlaps:#?}"
    );
    assert!(
        overlaps
            .iter()
            .any(|m| m.contains("Service CIDR 203.0.113.0/25")
                && m.contains("203.0.113.120-203.0.113.127")),
        "{overlaps:#?}"
    );
}

#[test]
fn advertisements_that_select_no_node_and_uncovered_pools_are_errors() {
    let mut s = healthy();
    s.advertisements.push(ad("nowhere", json!({"ipAddressPools": ["prod", "ghost"], "nodeSelectors": [{"matchLabels": {"role": "gpu"}}]})));
    s.pools
        .push(pool("orphan", &["198.51.100.64/28"], json!({})));
    let findings = run(&s, &scope(), now());
    let e = errors(&findings);
    assert!(
        e.iter()
            .any(|(_, m)| m.contains("L2Advertisement nowhere selects no node")),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|(_, m)| m.contains("pool orphan is covered by no L2Advertisement")),
        "{e:#?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.level == Level::Warning && f.message.contains("names pool ghost"))
    );
    // Excluded nodes do not count.
    let mut s = healthy();
    for n in &mut s.nodes {
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(crate::status::EXCLUDE_LABEL.into(), String::new());
    }
    assert!(
        errors(&run(&s, &scope(), now()))
            .iter()
            .any(|(_, m)| m.contains("L2Advertisement edge selects no node"))
    );
}

#[test]
fn a_missing_secret_or_speaker_or_leader_is_an_error() {
    let mut s = healthy();
    s.membership_secret = Some(SecretState::Missing);
    s.speakers = vec![speaker("node-a", false)];
    s.controller_lease = None;
    let findings = run(&s, &scope(), now());
    let e = errors(&findings);
    assert!(
        e.iter().any(
            |(c, m)| *c == "membership-secret" && m.contains("herald-system/herald-memberlist")
        ),
        "{e:#?}"
    );
    assert!(findings.iter().any(|f| f.check == "membership-secret"
        && f.fix.as_deref().is_some_and(|x| x.contains("openssl rand"))));
    assert!(
        e.iter()
            .any(|(_, m)| m == "no speaker on eligible node(s) node-b"),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|(_, m)| m == "speaker not Ready on node-a (speaker-node-a)"),
        "{e:#?}"
    );
    assert!(e.iter().any(|(c, _)| *c == "controller"), "{e:#?}");
    let table = render_table(&findings);
    assert!(table.contains("ERROR   speakers"), "{table}");
    assert!(
        table.contains("fix: kubectl -n herald-system create secret generic herald-memberlist"),
        "{table}"
    );
}
