//! What a Node's status says about load balancing, read the same way by the speaker (who may
//! be elected) and the CLI (who may answer, and why not).

use k8s_openapi::api::core::v1::Node;

/// Whether the Node's `NetworkUnavailable` condition is `True`: its network is not set up, so
/// it must not answer for an IP.
pub fn network_unavailable(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};

    fn with_condition(status: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: status.map(|s| {
                    vec![NodeCondition {
                        type_: "NetworkUnavailable".into(),
                        status: s.into(),
                        ..NodeCondition::default()
                    }]
                }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn only_a_true_condition_makes_the_network_unavailable() {
        assert!(network_unavailable(&with_condition(Some("True"))));
        assert!(!network_unavailable(&with_condition(Some("False"))));
        assert!(!network_unavailable(&with_condition(Some("Unknown"))));
        assert!(!network_unavailable(&with_condition(None)));
        assert!(!network_unavailable(&Node::default()));
    }
}
