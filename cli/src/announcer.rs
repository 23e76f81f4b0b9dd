//! Who announces a Service's IPs, read from the API. This is the one place that knows where
//! it is reported: the `herald.dev/Announced` condition on the Service's status ("announced by
//! node N on interface I"), which the controller mirrors from the speakers' per-node
//! `NodeL2Status` reports (the speakers cannot write Service status), and the
//! `AnnouncerChanged` Events it publishes with it.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// The condition type (written by the controller).
pub use herald_config::announcement::CONDITION;
/// The Event reason published when the announcing node changes.
pub use herald_config::announcement::EVENT_CHANGED;
/// The Event reason of another MAC answering for an owned IP.
pub const EVENT_CONFLICT: &str = "IPConflict";

/// The node (and interface) answering for a Service's IPs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Announcement {
    /// The node.
    pub node: String,
    /// The interface, when the report names it.
    pub interface: Option<String>,
    /// Since when this node announces.
    pub since: Option<Timestamp>,
}

/// Reads the announcer from the condition's message.
pub fn parse_message(message: &str) -> Option<(String, Option<String>)> {
    let rest = message.strip_prefix("announced by node ")?;
    let (node, interface) = match rest.split_once(" on interface ") {
        Some((node, interface)) => (node, Some(interface.trim().to_string())),
        None => (rest, None),
    };
    let node = node.trim();
    (!node.is_empty()).then(|| (node.to_string(), interface))
}

/// Who announces `svc`, if a speaker said so.
pub fn announcer_of(svc: &Service) -> Option<Announcement> {
    let condition = svc
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == CONDITION && c.status == "True")?;
    let (node, interface) = parse_message(&condition.message)?;
    Some(Announcement {
        node,
        interface,
        since: Some(condition.last_transition_time.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_speakers_message() {
        assert_eq!(
            parse_message("announced by node hl-node2 on interface eth0"),
            Some(("hl-node2".into(), Some("eth0".into())))
        );
        assert_eq!(
            parse_message("announced by node n1"),
            Some(("n1".into(), None))
        );
        assert_eq!(parse_message("announced by node "), None);
        assert_eq!(parse_message("something else"), None);
    }
}
