//! Who announces a Service, told to the user: a condition on the Service's status naming the
//! node and interface, and an Event when the announcing node changes. Written by the new owner
//! only, once per change — never per reconcile (MetalLB's `nodeAssigned` Event repeated ×1342,
//! MetalLB #800) — so API writes grow with failovers, not with Services.

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::json;

use herald_config::service::ServiceKey;

/// The condition type.
pub const CONDITION: &str = "herald.dev/Announced";
/// The field manager of the condition.
pub const FIELD_MANAGER: &str = "herald-speaker";

/// The condition's message for this node and interface: what users read, and what tells a
/// speaker whether the condition is already current.
pub fn message(node: &str, interface: &str) -> String {
    format!("announced by node {node} on interface {interface}")
}

/// The message of the Service's current `herald.dev/Announced` condition, if True.
pub fn current(svc: &Service) -> Option<String> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == CONDITION && c.status == "True")
        .map(|c| c.message.clone())
}

/// Writes the condition (server-side apply: only this condition's entry is ours) and publishes
/// the owner-change Event.
pub async fn announce(
    client: kube::Client,
    recorder: Recorder,
    key: ServiceKey,
    uid: String,
    node: String,
    message: String,
) {
    let api: Api<Service> = Api::namespaced(client, &key.namespace);
    // The UID makes the write conditional on this very Service: a deleted one is not recreated
    // from the patch (the API server refuses it: "uid mismatch"), a recreated one not touched.
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": key.name, "namespace": key.namespace, "uid": uid},
        "status": {"conditions": [{
            "type": CONDITION,
            "status": "True",
            "reason": "Elected",
            "message": message,
            "lastTransitionTime": Time(Timestamp::now()),
        }]}
    });
    if let Err(e) = api
        .patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        // Gone or replaced meanwhile: nothing to tell, and no Event either.
        if matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
            tracing::debug!(service = %key, error = %e, "Service gone before its Announced condition was written");
            return;
        }
        tracing::warn!(service = %key, error = %e, "could not write the Announced condition");
    }
    let event = Event {
        type_: EventType::Normal,
        reason: "AnnouncerChanged".into(),
        note: Some(message),
        action: "Announce".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference(&key, Some(uid))).await {
        tracing::warn!(service = %key, error = %e, node, "could not publish the AnnouncerChanged event");
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
    if let Err(e) = recorder.publish(&event, &reference(&key, uid)).await {
        tracing::warn!(service = %key, error = %e, "could not publish the IPConflict event");
    }
}

fn reference(key: &ServiceKey, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

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
