use super::*;
use crate::metrics_text::SpeakerMetrics;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).expect("valid")
}

fn time(s: i64) -> String {
    at(s).to_string()
}

fn service(
    ns: &str,
    name: &str,
    uid: &str,
    ips: &[&str],
    announced: Option<(&str, i64)>,
) -> Service {
    let conditions: Vec<_> = announced
        .into_iter()
        .map(|(node, since)| {
            json!({"type": "herald.dev/Announced", "status": "True", "reason": "Elected",
                   "message": format!("announced by node {node} on interface eth0"),
                   "lastTransitionTime": time(since)})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"type": "LoadBalancer"},
        "status": {
            "loadBalancer": {"ingress": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()},
            "conditions": conditions,
        }
    }))
    .expect("a Service")
}

fn event(ns: &str, name: &str, uid: &str, reason: &str, message: &str, t: i64) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}.{t}"), "namespace": ns},
        "involvedObject": {"kind": "Service", "namespace": ns, "name": name, "uid": uid},
        "reason": reason,
        "message": message,
        "eventTime": format!("{}", at(t)),
    }))
    .expect("an Event")
}

fn node(name: &str, labels: serde_json::Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("a Node")
}

fn speaker(node: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("speaker-{node}"), "namespace": "herald-system"},
        "spec": {"nodeName": node, "containers": []},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .expect("a Pod")
}

fn lease(holder: &str, renewed: i64) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": "herald-controller", "namespace": "herald-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": format!("{}", at(renewed).strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))}
    }))
    .expect("a Lease")
}

fn pool(name: &str, addresses: &[&str], status: serde_json::Value) -> herald_config::IPAddressPool {
    serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name},
        "spec": {"addresses": addresses},
        "status": status,
    }))
    .expect("a pool")
}

fn snapshot() -> Snapshot {
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "speaker-node-b".to_string(),
        Ok(SpeakerMetrics {
            members: Some(2),
            quorum: Some(true),
            announced: vec!["192.0.2.1".into()],
            ..Default::default()
        }),
    );
    metrics.insert(
        "speaker-node-a".to_string(),
        Err("no answer within 3 s".into()),
    );
    Snapshot {
        services: vec![
            service(
                "shop",
                "web",
                "u1",
                &["192.0.2.1", "2001:db8::1"],
                Some(("node-b", 100)),
            ),
            service("shop", "dns", "u2", &["192.0.2.1"], Some(("node-b", 90))),
            service("shop", "pending", "u3", &[], None),
            service("other", "quiet", "u4", &["192.0.2.9"], None),
        ],
        pools: vec![
            pool(
                "prod",
                &["192.0.2.0/29", "2001:db8::/126"],
                json!({"assignedIPv4": 1, "availableIPv4": 7, "assignedIPv6": 1, "availableIPv6": 3}),
            ),
            pool(
                "spare",
                &["192.0.2.8/29"],
                json!({"assignedIPv4": 1, "availableIPv4": 7, "conditions": [
                {"type": "Overlapping", "status": "True", "reason": "Overlap", "message": "shares 192.0.2.9 with x", "lastTransitionTime": time(0)}]}),
            ),
        ],
        nodes: vec![
            node("node-a", json!({})),
            node("node-b", json!({})),
            node("node-c", json!({EXCLUDE_LABEL: ""})),
            node("node-d", json!({})),
        ],
        speakers: vec![
            speaker("node-a", true),
            speaker("node-b", true),
            speaker("node-c", true),
        ],
        events: vec![
            event(
                "shop",
                "web",
                "u1",
                "AnnouncerChanged",
                "announced by node node-a on interface eth0",
                10,
            ),
            event(
                "shop",
                "web",
                "u1",
                "AnnouncerChanged",
                "announced by node node-b on interface eth0",
                100,
            ),
            // About an older Service of the same name: not this one's history.
            event(
                "shop",
                "web",
                "u0",
                "AnnouncerChanged",
                "announced by node node-d on interface eth0",
                200,
            ),
            event(
                "shop",
                "dns",
                "u2",
                "IPConflict",
                "02:00:00:00:00:09 also answers for 192.0.2.1, announced by node node-b on eth0",
                150,
            ),
        ],
        controller_lease: Some(lease("replica-1", 295)),
        speaker_metrics: metrics,
        ..Snapshot::default()
    }
}

#[test]
fn each_ip_shows_services_pool_owner_and_last_change() {
    let report = build(&snapshot(), at(300));
    let ips: Vec<String> = report.ips.iter().map(|i| i.ip.to_string()).collect();
    assert_eq!(ips, ["192.0.2.1", "192.0.2.9", "2001:db8::1"]);
    let shared = &report.ips[0];
    assert_eq!(shared.services, ["shop/web", "shop/dns"]);
    assert_eq!(shared.pools, ["prod"]);
    assert_eq!(shared.node.as_deref(), Some("node-b"));
    assert_eq!(shared.interface.as_deref(), Some("eth0"));
    assert_eq!(
        shared.since,
        Some(at(100)),
        "the newest report of the sharers"
    );
    assert_eq!(
        shared.last_change,
        Some(OwnerChange {
            at: Some(at(100)),
            from: Some("node-a".into()),
            to: "node-b".into()
        })
    );
    assert_eq!(shared.announced_by_metrics, ["node-b"]);
    assert_eq!(shared.conflicts.len(), 1);
    let quiet = &report.ips[1];
    assert_eq!(quiet.node, None);
    assert_eq!(quiet.pools, ["spare"]);
    assert_eq!(
        report.ips[2].node.as_deref(),
        Some("node-b"),
        "dual-stack IPs share the owner"
    );
}

#[test]
fn pools_show_usage_and_problems() {
    let report = build(&snapshot(), at(300));
    let prod = &report.pools[0];
    assert_eq!(
        (prod.name.as_str(), prod.ipv4, prod.ipv6),
        ("prod", (1, 7), (1, 3))
    );
    assert_eq!(prod.used_percent.map(|u| u.round()), Some(17.0));
    assert!(prod.problems.is_empty());
    assert_eq!(
        report.pools[1].problems,
        ["Overlapping=True: shares 192.0.2.9 with x"]
    );
}

#[test]
fn nodes_show_membership_quorum_and_whether_they_can_answer() {
    let report = build(&snapshot(), at(300));
    let by_name: BTreeMap<&str, &NodeStatus> =
        report.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let b = by_name["node-b"];
    assert_eq!(
        (b.quorum, b.member, b.members_heard, b.members_known),
        (Some(true), Some(true), Some(2), 4)
    );
    assert_eq!(b.can_answer, CanAnswer::Yes);
    assert_eq!(b.announces, 2);
    assert!(
        matches!(&by_name["node-a"].can_answer, CanAnswer::Unknown { why } if why.contains("no answer within 3 s"))
    );
    assert!(
        matches!(&by_name["node-c"].can_answer, CanAnswer::No { why } if why.contains(EXCLUDE_LABEL))
    );
    assert!(
        matches!(&by_name["node-d"].can_answer, CanAnswer::No { why } if why.contains("no speaker pod"))
    );
}

#[test]
fn the_leader_is_the_holder_of_an_unexpired_lease() {
    let mut s = snapshot();
    assert_eq!(
        build(&s, at(300)).controller.leader.as_deref(),
        Some("replica-1")
    );
    let expired = build(&s, at(400)).controller;
    assert_eq!(expired.leader, None);
    assert!(
        expired
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("expired"))
    );
    s.controller_lease = None;
    assert!(build(&s, at(300)).controller.problem.is_some());
}

#[test]
fn the_table_names_every_column() {
    let now = at(300);
    let table = render_table(&build(&snapshot(), now), now);
    for expected in [
        "Controller leader: replica-1 (renewed 5s ago)",
        "LAST OWNER CHANGE",
        "192.0.2.1     shop/web,shop/dns",
        "3m ago node-a -> node-b",
        "node-b CONFLICT",
        "prod    1/8",
        "unknown: speaker metrics not read: no answer within 3 s",
    ] {
        assert!(
            table.contains(expected),
            "{expected:?} missing from:\n{table}"
        );
    }
}

#[test]
fn a_speaker_with_no_interface_open_cannot_answer() {
    let mut s = snapshot();
    if let Some(Ok(m)) = s.speaker_metrics.get_mut("speaker-node-b") {
        m.interfaces_answering = Some(0);
    }
    let report = build(&s, at(300));
    let b = report
        .nodes
        .iter()
        .find(|n| n.name == "node-b")
        .expect("node-b");
    assert!(matches!(&b.can_answer, CanAnswer::No { why } if why.contains("packet sockets")));
}
