//! Whether a Pod is Ready: one reading for the CLI (is the node's speaker ready?) and the lab's
//! tests (are both controller replicas ready?).

use k8s_openapi::api::core::v1::Pod;

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn with_ready(status: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: status.map(|s| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_a_true_ready_condition_is_ready() {
        assert!(is_ready(&with_ready(Some("True"))));
        assert!(!is_ready(&with_ready(Some("False"))));
        assert!(!is_ready(&with_ready(Some("Unknown"))));
        assert!(!is_ready(&with_ready(None)));
        assert!(!is_ready(&Pod::default()));
    }
}
