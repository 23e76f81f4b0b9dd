//! Events about this speaker's own Node: what an operator must know about the speaker itself
//! (its membership key), published on the Node so `kubectl describe node` shows them.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Publishes Events on one Node, each from its own task (an Event never delays the caller).
#[derive(Clone)]
pub struct NodeEvents {
    recorder: Recorder,
    node: String,
}

impl NodeEvents {
    /// Events on Node `node`, reported by `herald-speaker`.
    pub fn new(client: Client, node: String) -> NodeEvents {
        NodeEvents {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "herald-speaker".into(),
                    instance: Some(node.clone()),
                },
            ),
            node,
        }
    }

    /// A Warning Event.
    pub fn warn(&self, reason: &'static str, note: String) {
        self.publish(EventType::Warning, reason, note);
    }

    /// A Normal Event.
    pub fn normal(&self, reason: &'static str, note: String) {
        self.publish(EventType::Normal, reason, note);
    }

    fn publish(&self, type_: EventType, reason: &'static str, note: String) {
        let recorder = self.recorder.clone();
        let node = self.node.clone();
        tokio::spawn(async move {
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(note),
                action: "Membership".into(),
                secondary: None,
            };
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..Default::default()
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(%node, error = %e, "could not publish the {reason} event");
            }
        });
    }
}
