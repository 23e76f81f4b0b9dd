//! Kubernetes objects translated into the election's inputs: pure functions over what the
//! watches cached, so the rules about which field means what (a Node's `NetworkUnavailable`,
//! an endpoint's `ready` and `serving`, `externalTrafficPolicy`, the served class) are read in
//! one place and tested without an API server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use herald_config::l2advertisement::L2Advertisement;
use herald_config::pool::IPAddressPool;
use herald_config::selection::PoolPolicy;
use herald_config::service::{ServedClass, ServiceKey, is_ours, status_ips};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::decide::cluster_view::{AdvertisementInfo, NodeInfo, PoolInfo, ServiceInfo};
use crate::decide::election::NodeName;
use crate::decide::eligibility::TrafficPolicy;

/// The label an EndpointSlice carries naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Node as far as elections care: its labels and whether `NetworkUnavailable` is `True`.
pub fn node_info(node: &Node) -> NodeInfo {
    NodeInfo {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        network_unavailable: herald_config::node::network_unavailable(node),
    }
}

/// Every Node by name.
pub fn nodes(nodes: &[Arc<Node>]) -> BTreeMap<NodeName, NodeInfo> {
    nodes
        .iter()
        .map(|n| (NodeName::new(n.name_any()), node_info(n)))
        .collect()
}

/// Whether a speaker pod counts: its containers are ready (the `ContainersReady` condition is
/// `True`, as the kubelet last reported it). A speaker is ready once it holds the membership key
/// and can answer, so by then it has been sending heartbeats and its peers hear it. When a
/// node's kubelet stops reporting, the node lifecycle controller marks its pods not `Ready` but
/// leaves `ContainersReady` as it was: the speaker that runs on there still counts.
pub fn speaker_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "ContainersReady" && c.status == "True")
        })
}

/// *K*, the speakers that count for quorum: the Nodes on which a pod of the speaker DaemonSet
/// (`pods`, from the speaker's namespace and labels) is ready ([`speaker_ready`]). Read from
/// the API, so every speaker counts the same set and two sides of a split count the same
/// majority.
///
/// - A Node added before its speaker runs (scaling 3 → 7, an image still pulling), or whose
///   speaker is starting and not heard yet, does not count: three speakers are a majority of
///   three, not a minority of seven, until the new ones are up and heard.
/// - A Node whose speaker can never run (another OS, excluded by the DaemonSet's selectors)
///   never counts.
/// - A deleted Node stops counting at once, even while its speaker still runs (its heartbeats
///   are ignored for quorum and it is never elected).
/// - A Node whose speaker is ready keeps counting when it goes silent — stopped, paused,
///   cut off, its kubelet gone: it is then a silent member, as a dead node is, and the rest
///   need a majority without it — until its kubelet reports it not ready (a crash loop, a
///   pause longer than the readiness probe allows).
///
/// The set changes one node at a time in normal operation (a pod becomes ready, a Node
/// goes), and any two majorities of two sets that differ by one node intersect, so a watch
/// that lags the other nodes' by one change cannot let two sides announce.
pub fn counted_speakers(nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> BTreeSet<NodeName> {
    let existing: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    pods.iter()
        .filter(|p| speaker_ready(p))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .filter(|n| existing.contains(n))
        .map(NodeName::new)
        .collect()
}

/// Every pool with its name, labels and address ranges.
pub fn pools(pools: &[Arc<IPAddressPool>]) -> Vec<PoolInfo> {
    pools
        .iter()
        .map(|p| PoolInfo {
            name: p.name_any(),
            labels: p.metadata.labels.clone().unwrap_or_default(),
            ranges: PoolPolicy::from_spec(&p.name_any(), &p.spec).ranges,
        })
        .collect()
}

/// Every L2Advertisement with its selectors parsed.
pub fn advertisements(ads: &[Arc<L2Advertisement>]) -> Vec<AdvertisementInfo> {
    ads.iter()
        .map(|a| AdvertisementInfo::from_spec(&a.name_any(), &a.spec))
        .collect()
}

/// The interfaces any advertisement names (used even if the default exclude list has them).
pub fn named_interfaces(ads: &[Arc<L2Advertisement>]) -> BTreeSet<String> {
    ads.iter()
        .flat_map(|a| a.spec.interfaces.iter().map(|i| i.0.clone()))
        .collect()
}

/// Per Service: the nodes with a ready endpoint, and whether any endpoint serves. An endpoint
/// without conditions is ready, and serving unless said otherwise follows ready (the
/// EndpointSlice API's defaults).
fn endpoints(slices: &[Arc<EndpointSlice>]) -> BTreeMap<ServiceKey, (BTreeSet<NodeName>, bool)> {
    let mut out: BTreeMap<ServiceKey, (BTreeSet<NodeName>, bool)> = BTreeMap::new();
    for slice in slices {
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.clone(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL).cloned()),
        ) else {
            continue;
        };
        let entry = out.entry(ServiceKey::new(ns, svc)).or_default();
        for ep in &slice.endpoints {
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            if serving {
                entry.1 = true;
            }
            if ready && let Some(node) = &ep.node_name {
                entry.0.insert(NodeName::new(node.clone()));
            }
        }
    }
    out
}

/// The Services this speaker serves (its class, `type: LoadBalancer`) that hold IPs in their
/// status, with their endpoints.
pub fn services(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    class: &ServedClass,
) -> Vec<ServiceInfo> {
    let endpoints = endpoints(slices);
    services
        .iter()
        .filter(|svc| is_ours(svc, class))
        .filter_map(|svc| {
            let key = ServiceKey::of(svc)?;
            let ips = status_ips(svc);
            if ips.is_empty() {
                return None;
            }
            let (endpoint_nodes, has_endpoints) = endpoints.get(&key).cloned().unwrap_or_default();
            let local = svc
                .spec
                .as_ref()
                .and_then(|s| s.external_traffic_policy.as_deref())
                == Some("Local");
            Some(ServiceInfo {
                key,
                ips,
                labels: svc.metadata.labels.clone().unwrap_or_default(),
                policy: if local {
                    TrafficPolicy::Local
                } else {
                    TrafficPolicy::Cluster
                },
                endpoint_nodes,
                has_endpoints,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_fixtures::{EndpointOn, advertisement, endpoint_slice, node, pool, service};
    use std::net::IpAddr;

    fn on(node: &str, ready: Option<bool>, serving: Option<bool>) -> EndpointOn<'_> {
        EndpointOn {
            node: Some(node),
            ready,
            serving,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nodes_carry_labels_and_network_unavailable_only_when_true() {
        let list = [
            node("a").labels(&[("zone", "x")]).build(),
            node("b").condition("NetworkUnavailable", "True").build(),
            node("c").condition("NetworkUnavailable", "False").build(),
            node("d").condition("Ready", "True").build(),
        ]
        .map(Arc::new);
        let got = nodes(&list);
        assert_eq!(got.len(), 4);
        let a = &got[&NodeName::new("a")];
        assert_eq!(a.labels.get("zone").map(String::as_str), Some("x"));
        assert!(!a.network_unavailable);
        assert!(got[&NodeName::new("b")].network_unavailable);
        assert!(!got[&NodeName::new("c")].network_unavailable);
        assert!(!got[&NodeName::new("d")].network_unavailable);
    }

    #[test]
    fn only_our_services_with_status_ips_are_inputs() {
        let list = [
            service("shop", "web").ingress(&["192.0.2.1"]).build(),
            service("shop", "pending").build(),
            service("shop", "other-class")
                .class("example.com/other")
                .ingress(&["192.0.2.2"])
                .build(),
            service("shop", "cluster-ip")
                .type_("ClusterIP")
                .ingress(&["192.0.2.3"])
                .build(),
            service("shop", "dual")
                .ingress(&["192.0.2.4", "2001:db8::4"])
                .labels(&[("tier", "gold")])
                .traffic_policy("Local")
                .build(),
        ]
        .map(Arc::new);
        let got = services(&list, &[], &ServedClass(None));
        let keys: Vec<&str> = got.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(keys, ["web", "dual"]);
        assert_eq!(got[0].ips, [ip("192.0.2.1")]);
        assert_eq!(got[0].policy, TrafficPolicy::Cluster);
        assert_eq!(got[1].ips, [ip("192.0.2.4"), ip("2001:db8::4")]);
        assert_eq!(got[1].policy, TrafficPolicy::Local);
        assert_eq!(got[1].labels.get("tier").map(String::as_str), Some("gold"));
        // With a class, only that class.
        let got = services(&list, &[], &ServedClass(Some("example.com/other".into())));
        let keys: Vec<&str> = got.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(keys, ["other-class"]);
    }

    #[test]
    fn endpoints_follow_the_endpoint_slice_defaults() {
        let svcs = [
            service("shop", "web").ingress(&["192.0.2.1"]).build(),
            service("shop", "down").ingress(&["192.0.2.2"]).build(),
            service("shop", "draining").ingress(&["192.0.2.3"]).build(),
            service("shop", "none").ingress(&["192.0.2.4"]).build(),
        ]
        .map(Arc::new);
        let slices = [
            // Unset conditions: ready, and serving follows ready.
            endpoint_slice(
                "shop",
                "web",
                &[on("a", None, None), on("b", Some(true), None)],
            ),
            endpoint_slice("shop", "down", &[on("a", Some(false), None)]),
            // Terminating but still serving: serves, yet no node has a ready endpoint.
            endpoint_slice("shop", "draining", &[on("c", Some(false), Some(true))]),
            // The same name in another namespace is another Service.
            endpoint_slice("elsewhere", "none", &[on("a", None, None)]),
        ]
        .map(Arc::new);
        let got = services(&svcs, &slices, &ServedClass(None));
        let by_name = |n: &str| got.iter().find(|s| s.key.name == n).unwrap();
        let names = |list: &[&str]| {
            list.iter()
                .map(|n| NodeName::new(*n))
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(by_name("web").endpoint_nodes, names(&["a", "b"]));
        assert!(by_name("web").has_endpoints);
        assert!(by_name("down").endpoint_nodes.is_empty());
        assert!(!by_name("down").has_endpoints);
        assert!(by_name("draining").endpoint_nodes.is_empty());
        assert!(by_name("draining").has_endpoints);
        assert!(!by_name("none").has_endpoints);
    }

    /// A speaker pod on `node` with these conditions (JSON), if any.
    fn speaker_pod(node: &str, conditions: Option<serde_json::Value>) -> Arc<Pod> {
        let mut pod = serde_json::json!({
            "metadata": {"name": format!("herald-speaker-{node}"), "namespace": "herald-system"},
            "spec": {"nodeName": node, "containers": [{"name": "speaker"}]},
        });
        if let Some(c) = conditions {
            pod["status"] = serde_json::json!({"conditions": c});
        }
        Arc::new(serde_json::from_value(pod).unwrap())
    }

    #[test]
    fn the_speakers_that_count_are_nodes_whose_speaker_is_ready() {
        use serde_json::json;
        let nodes = ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "windows"]
            .map(|n| Arc::new(node(n).build()));
        let ready = json!([{"type": "ContainersReady", "status": "True"},
                           {"type": "Ready", "status": "True"}]);
        let pods = [
            speaker_pod("n1", Some(ready.clone())),
            // Its kubelet stopped: the node lifecycle controller marked the pod not Ready,
            // ContainersReady is as the kubelet last said. Counts (its speaker runs on).
            speaker_pod(
                "n2",
                Some(json!([{"type": "ContainersReady", "status": "True"},
                            {"type": "Ready", "status": "False"}])),
            ),
            // Crash-looping, or starting and not ready yet: does not count.
            speaker_pod(
                "n3",
                Some(json!([{"type": "ContainersReady", "status": "False",
                             "reason": "ContainersNotReady"}])),
            ),
            // Scaled up: the pod exists, its image is still pulling, or it is not even
            // scheduled yet.
            speaker_pod(
                "n4",
                Some(json!([{"type": "PodScheduled", "status": "True"}])),
            ),
            speaker_pod("n5", None),
            // A pod on a Node that was deleted while its speaker runs.
            speaker_pod("gone", Some(ready)),
        ];
        let counted = counted_speakers(&nodes, &pods);
        let names: Vec<&str> = counted.iter().map(NodeName::as_str).collect();
        // n6, n7: no pod yet; "windows": the DaemonSet never runs there.
        assert_eq!(names, ["n1", "n2"]);
    }

    #[test]
    fn pools_and_advertisements_keep_what_the_election_reads() {
        let mut p = pool("prod", &["192.0.2.0/30", "2001:db8::/126"], |_| {});
        p.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
        let got = pools(&[Arc::new(p)]);
        assert_eq!(got[0].name, "prod");
        assert_eq!(got[0].ranges.len(), 2);
        assert_eq!(got[0].labels.get("tier").map(String::as_str), Some("gold"));
        let ads = [
            advertisement("eth", &["eth0", "eth1"], |_| {}),
            advertisement("any", &[], |s| s.ip_address_pools = vec!["prod".into()]),
        ]
        .map(Arc::new);
        let infos = advertisements(&ads);
        assert_eq!(infos[0].interfaces, ["eth0", "eth1"]);
        assert!(infos[1].covers_pool(&got[0]));
        assert_eq!(
            named_interfaces(&ads),
            BTreeSet::from(["eth0".to_string(), "eth1".to_string()])
        );
    }
}
