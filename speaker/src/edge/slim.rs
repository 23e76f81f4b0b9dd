//! What the speaker keeps of each watched object: only the fields the election, the status
//! condition and the heartbeats read. Applied to every object before it enters a reflector
//! store, so the speaker's memory follows what it needs (a few hundred bytes per Service)
//! rather than what the API server sends (managedFields, annotations, ports, endpoint
//! addresses, node images: kilobytes per object).
//!
//! Every function here is pure and keeps exactly what `decide::inputs`, the heartbeats (a
//! Node's addresses), the status condition and `herald_config::service` read; the tests below
//! check that the readers' answers do not change.

use k8s_openapi::api::core::v1::{
    Node, NodeStatus, Pod, PodCondition, PodSpec, PodStatus, Service, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::edge::service_status;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Identity and labels only: no annotations, managedFields, owners or finalizers.
fn slim_meta(meta: &mut ObjectMeta, keep_labels: bool) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        labels: if keep_labels {
            meta.labels.take()
        } else {
            None
        },
        ..ObjectMeta::default()
    };
}

/// A Service: its type and class (whether it is ours), traffic policy, labels (for
/// `serviceSelectors`), the status IPs and the `herald.dev/Announced` condition. A Service
/// that is not a LoadBalancer keeps only its identity and type.
pub fn service(svc: &mut Service) {
    let spec = svc.spec.take().unwrap_or_default();
    let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    slim_meta(&mut svc.metadata, load_balancer);
    svc.spec = Some(ServiceSpec {
        type_: spec.type_,
        load_balancer_class: spec.load_balancer_class,
        external_traffic_policy: if load_balancer {
            spec.external_traffic_policy
        } else {
            None
        },
        ..ServiceSpec::default()
    });
    let status = svc.status.take();
    svc.status = if load_balancer {
        status.map(|s| ServiceStatus {
            load_balancer: s.load_balancer,
            conditions: s.conditions.map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == service_status::CONDITION)
                    .map(|c| Condition {
                        // The transition time is not read; the message and status are.
                        observed_generation: None,
                        ..c
                    })
                    .collect()
            }),
        })
    } else {
        None
    };
}

/// An EndpointSlice: its Service's name and, per endpoint, the conditions and node.
pub fn endpoint_slice(slice: &mut EndpointSlice) {
    let service = slice
        .metadata
        .labels
        .as_mut()
        .and_then(|l| l.remove_entry(SERVICE_NAME_LABEL));
    slim_meta(&mut slice.metadata, false);
    slice.metadata.labels = service.map(|kv| [kv].into_iter().collect());
    slice.ports = None;
    slice.endpoints = std::mem::take(&mut slice.endpoints)
        .into_iter()
        .map(|ep| Endpoint {
            conditions: ep.conditions,
            node_name: ep.node_name,
            ..Endpoint::default()
        })
        .collect();
}

/// A Node: labels, InternalIP addresses and the `NetworkUnavailable` condition.
pub fn node(node: &mut Node) {
    slim_meta(&mut node.metadata, true);
    node.spec = None;
    let status = node.status.take().unwrap_or_default();
    node.status = Some(NodeStatus {
        addresses: status
            .addresses
            .map(|a| a.into_iter().filter(|a| a.type_ == "InternalIP").collect()),
        conditions: status.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "NetworkUnavailable")
                .map(|c| k8s_openapi::api::core::v1::NodeCondition {
                    type_: c.type_,
                    status: c.status,
                    ..Default::default()
                })
                .collect()
        }),
        ..NodeStatus::default()
    });
}

/// A speaker pod: its node and its `ContainersReady` condition (what
/// `crate::decide::inputs::speaker_ready` reads).
pub fn pod(pod: &mut Pod) {
    slim_meta(&mut pod.metadata, false);
    let node_name = pod.spec.take().and_then(|s| s.node_name);
    pod.spec = Some(PodSpec {
        node_name,
        ..PodSpec::default()
    });
    let conditions = pod.status.take().and_then(|s| s.conditions).map(|cs| {
        cs.into_iter()
            .filter(|c| c.type_ == "ContainersReady")
            .map(|c| PodCondition {
                type_: c.type_,
                status: c.status,
                ..PodCondition::default()
            })
            .collect()
    });
    pod.status = Some(PodStatus {
        conditions,
        ..PodStatus::default()
    });
}

/// A custom resource whose spec is all we read (pools, advertisements): identity, labels, spec.
pub fn metadata_only(meta: &mut ObjectMeta) {
    slim_meta(meta, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_config::service::{ServedClass, is_ours, status_ips};
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec};
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn heavy_meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("uid-1".into()),
            labels: labels(&[("app", "web")]),
            annotations: labels(&[("kubectl.kubernetes.io/last-applied-configuration", "{}")]),
            managed_fields: Some(vec![ManagedFieldsEntry::default(); 3]),
            finalizers: Some(vec!["f".into()]),
            ..ObjectMeta::default()
        }
    }

    fn lb_service(type_: &str) -> Service {
        let mut svc = herald_fixtures::service("shop", "web")
            .type_(type_)
            .class("herald.dev/l2")
            .traffic_policy("Local")
            .spec_with(|s| s.cluster_ip = Some("10.0.0.1".into()))
            .ingress(&["192.0.2.240"])
            .build();
        svc.metadata = heavy_meta();
        if let Some(status) = svc.status.as_mut() {
            status.conditions = Some(vec![
                Condition {
                    type_: service_status::CONDITION.into(),
                    status: "True".into(),
                    reason: "Elected".into(),
                    message: service_status::message("hl-node1", "eth0"),
                    last_transition_time: Time(Timestamp::now()),
                    observed_generation: Some(4),
                },
                Condition {
                    type_: "Other".into(),
                    status: "True".into(),
                    reason: "X".into(),
                    message: "y".into(),
                    last_transition_time: Time(Timestamp::now()),
                    observed_generation: None,
                },
            ]);
        }
        svc
    }

    #[test]
    fn a_load_balancer_service_keeps_what_the_election_reads() {
        let before = lb_service("LoadBalancer");
        let mut after = before.clone();
        service(&mut after);
        let class = ServedClass(Some("herald.dev/l2".into()));
        assert!(is_ours(&after, &class));
        assert_eq!(status_ips(&after), status_ips(&before));
        assert_eq!(
            service_status::current(&after),
            service_status::current(&before)
        );
        assert_eq!(after.metadata.labels, before.metadata.labels);
        assert_eq!(after.metadata.uid.as_deref(), Some("uid-1"));
        let spec = after.spec.as_ref().expect("spec kept");
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert!(spec.ports.is_none() && spec.cluster_ip.is_none());
        assert!(after.metadata.managed_fields.is_none());
        assert!(after.metadata.annotations.is_none());
        let conditions = after
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .expect("conditions kept");
        assert_eq!(conditions.len(), 1, "only Herald's condition is kept");
    }

    #[test]
    fn another_service_keeps_only_identity_and_type() {
        let mut svc = lb_service("ClusterIP");
        service(&mut svc);
        assert!(!is_ours(&svc, &ServedClass(Some("herald.dev/l2".into()))));
        assert!(svc.status.is_none() && svc.metadata.labels.is_none());
        assert_eq!(svc.metadata.name.as_deref(), Some("web"));
    }

    #[test]
    fn a_service_without_spec_or_status_is_kept_harmlessly() {
        let mut svc = Service::default();
        service(&mut svc);
        assert!(!is_ours(&svc, &ServedClass(None)));
    }

    #[test]
    fn an_endpoint_slice_keeps_its_service_and_endpoint_nodes() {
        let mut meta = heavy_meta();
        meta.labels = labels(&[(SERVICE_NAME_LABEL, "web"), ("other", "x")]);
        let mut slice = EndpointSlice {
            metadata: meta,
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["203.0.113.11".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("hl-node1".into()),
                hostname: Some("pod".into()),
                ..Endpoint::default()
            }],
            ports: Some(vec![EndpointPort::default()]),
        };
        endpoint_slice(&mut slice);
        assert_eq!(
            slice.metadata.labels,
            labels(&[(SERVICE_NAME_LABEL, "web")])
        );
        assert_eq!(slice.metadata.namespace.as_deref(), Some("shop"));
        assert!(slice.ports.is_none());
        let ep = &slice.endpoints[0];
        assert!(ep.addresses.is_empty() && ep.hostname.is_none());
        assert_eq!(ep.node_name.as_deref(), Some("hl-node1"));
        assert_eq!(ep.conditions.as_ref().and_then(|c| c.ready), Some(true));
    }

    #[test]
    fn a_pod_keeps_its_node_and_whether_its_containers_are_ready() {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "herald-speaker-x", "namespace": "herald-system",
                         "annotations": {"a": "b"}, "labels": {"app": "x"}},
            "spec": {"nodeName": "hl-node1", "containers": [{"name": "speaker", "image": "i",
                     "args": ["--a", "--b"]}]},
            "status": {"phase": "Running", "podIP": "192.0.2.11",
                "conditions": [
                    {"type": "ContainersReady", "status": "True", "reason": "x", "message": "long"},
                    {"type": "Ready", "status": "False"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [{"name": "speaker", "image": "i", "imageID": "sha256:0",
                    "ready": true, "restartCount": 2, "state": {"running": {}}}]}
        }))
        .unwrap();
        let before = crate::decide::inputs::speaker_ready(&p);
        pod(&mut p);
        assert!(before && crate::decide::inputs::speaker_ready(&p));
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("hl-node1")
        );
        assert!(p.spec.as_ref().is_some_and(|s| s.containers.is_empty()));
        assert!(p.metadata.annotations.is_none() && p.metadata.labels.is_none());
        let status = p.status.as_ref().unwrap();
        assert!(status.phase.is_none() && status.pod_ip.is_none());
        assert!(status.container_statuses.is_none());
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert!(conditions[0].message.is_none());
    }

    #[test]
    fn a_node_keeps_labels_internal_addresses_and_network_unavailable() {
        let mut n = Node {
            metadata: heavy_meta(),
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "192.0.2.11".into(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "hl-node1".into(),
                    },
                ]),
                conditions: Some(vec![
                    NodeCondition {
                        type_: "NetworkUnavailable".into(),
                        status: "True".into(),
                        message: Some("long text".into()),
                        ..NodeCondition::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..NodeCondition::default()
                    },
                ]),
                images: Some(vec![Default::default(); 10]),
                ..NodeStatus::default()
            }),
        };
        node(&mut n);
        let status = n.status.as_ref().expect("status kept");
        assert_eq!(status.addresses.as_ref().map(Vec::len), Some(1));
        let conditions = status.conditions.as_ref().expect("conditions kept");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "True");
        assert!(status.images.is_none() && n.spec.is_none());
        assert_eq!(n.metadata.labels, labels(&[("app", "web")]));
    }
}
