//! Who announces, told to the user: this node's `NodeL2Status` report (the IPs it answers for,
//! by interface and since when), which the controller mirrors into each Service's
//! `herald.dev/Announced` condition and `AnnouncerChanged` Event; and the speaker's Warning
//! Events. The speaker writes nothing on Services — its RBAC cannot change any Service's
//! status — and writes its report once per change of what it announces, not per Service
//! (MetalLB's `nodeAssigned` Event repeated ×1342, MetalLB #800).

use std::time::Duration;

use herald_config::NodeL2Status;
use herald_config::announcement::L2Announcements;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::json;

use herald_config::service::ServiceKey;

pub use herald_config::announcement::{CONDITION, current, message};

/// The field manager of the speaker's writes.
pub const FIELD_MANAGER: &str = "herald-speaker";

/// Any request of the speaker's is abandoned after this long.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a report was not written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The API server refused it, or the connection failed.
    #[error("writing the NodeL2Status of {node}: {source}")]
    Api {
        /// This node.
        node: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// No answer in time.
    #[error("writing the NodeL2Status of {node}: no answer within {API_TIMEOUT:?}")]
    TimedOut {
        /// This node.
        node: String,
    },
}

/// Writes this node's report of what it announces (server-side apply of its status: the
/// whole list is this speaker's). The first write creates the object, owned by the Node so it
/// is deleted with it.
pub async fn publish_report(
    client: kube::Client,
    node: &str,
    report: &L2Announcements,
) -> Result<(), ReportError> {
    let api_error = |source| ReportError::Api {
        node: node.to_string(),
        source,
    };
    let write = async {
        let api: Api<NodeL2Status> = Api::all(client.clone());
        let patch = json!({
            "apiVersion": "herald.dev/v1beta1",
            "kind": "NodeL2Status",
            "metadata": {"name": node},
            "status": report,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(node, &params, &Patch::Apply(&patch)).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            other => return other.map(|_| ()),
        }
        let owner = Api::<Node>::all(client.clone()).get(node).await?;
        let object = NodeL2Status {
            metadata: ObjectMeta {
                name: Some(node.to_string()),
                owner_references: owner.metadata.uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: node.to_string(),
                        uid,
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Default::default(),
            status: None,
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            // Created meanwhile (a restart racing its predecessor's write).
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        api.patch_status(node, &params, &Patch::Apply(&patch))
            .await
            .map(|_| ())
    };
    match tokio::time::timeout(API_TIMEOUT, write).await {
        Ok(result) => result.map_err(api_error),
        Err(_) => Err(ReportError::TimedOut {
            node: node.to_string(),
        }),
    }
}

/// Publishes a Warning Event: another station answers for an IP of this Service.
pub async fn conflict(recorder: Recorder, key: ServiceKey, uid: Option<String>, note: String) {
    let event = Event {
        type_: EventType::Warning,
        reason: "IPConflict".into(),
        note: Some(note),
        action: "Announce".into(),
        secondary: None,
    };
    let reference = key.object_reference(uid);
    match tokio::time::timeout(API_TIMEOUT, recorder.publish(&event, &reference)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(service = %key, error = %e, "could not publish the IPConflict event")
        }
        Err(_) => tracing::warn!(service = %key, "the IPConflict event got no answer in time"),
    }
}

/// A Warning Event about this node (not a Service): what stops its speaker from answering.
pub async fn node_warning(recorder: Recorder, node: String, reason: &'static str, note: String) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Listen".into(),
        secondary: None,
    };
    let node_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.clone()),
        ..Default::default()
    };
    match tokio::time::timeout(API_TIMEOUT, recorder.publish(&event, &node_ref)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%node, error = %e, "could not publish the {reason} event"),
        Err(_) => tracing::warn!(%node, "the {reason} event got no answer in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn reads_the_current_condition() {
        let mut svc = Service::default();
        assert_eq!(current(&svc), None);
        svc.status = Some(ServiceStatus {
            conditions: Some(vec![Condition {
                type_: CONDITION.into(),
                status: "True".into(),
                reason: "Elected".into(),
                message: message("hl-node2", "eth0"),
                last_transition_time: Time(Timestamp::now()),
                observed_generation: None,
            }]),
            load_balancer: None,
        });
        assert_eq!(
            current(&svc).as_deref(),
            Some("announced by node hl-node2 on interface eth0")
        );
    }
}
