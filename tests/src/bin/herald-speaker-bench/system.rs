//! The load balancer under test: Herald, or MetalLB beside it in the same lab. Everything the
//! benchmark does differently for the two is here: where their pods and processes are, how their
//! speakers say what they announce, how their pools and advertisements are written, and which
//! API clients are theirs.

use super::*;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

/// Which system the run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum System {
    Herald,
    Metallb,
}

/// One kind of configuration object (pool or advertisement) of a system.
pub(crate) struct Kind {
    pub(crate) resource: ApiResource,
    /// Namespaced objects live in the system's namespace; Herald's are cluster-scoped.
    pub(crate) namespaced: bool,
}

impl System {
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Herald => "herald",
            System::Metallb => "metallb",
        }
    }

    /// Where its pods run.
    pub(crate) fn namespace(self) -> &'static str {
        match self {
            System::Herald => "herald-system",
            System::Metallb => "metallb-system",
        }
    }

    /// The speaker's process name (`comm`: the binary's first 15 bytes).
    pub(crate) fn speaker_comm(self) -> &'static str {
        match self {
            System::Herald => "herald-speaker",
            System::Metallb => "metallb-speaker",
        }
    }

    /// The label selector of its speaker pods.
    pub(crate) fn speaker_selector(self) -> &'static str {
        match self {
            System::Herald => "app.kubernetes.io/name=herald,app.kubernetes.io/component=speaker",
            System::Metallb => "app=metallb,component=speaker",
        }
    }

    /// The speaker's metrics, as reached from inside its node's network namespace (both are
    /// hostNetwork). MetalLB's endpoint is HTTPS and wants a bearer token.
    pub(crate) fn speaker_metrics_url(self) -> &'static str {
        match self {
            System::Herald => "http://127.0.0.1:7473/metrics",
            System::Metallb => "https://127.0.0.1:9120/metrics",
        }
    }

    /// The gauge that is 1 for each IP the speaker announces.
    pub(crate) fn announced_metric(self) -> &'static str {
        match self {
            System::Herald => "herald_speaker_announced",
            System::Metallb => "metallb_speaker_announced",
        }
    }

    /// The speaker's hold-down as the lab installs it: how long a returning node waits before
    /// it takes its IPs back (MetalLB has none).
    pub(crate) fn hold_down(self) -> Duration {
        match self {
            System::Herald => Duration::from_millis(3000),
            System::Metallb => Duration::ZERO,
        }
    }

    /// What carries its membership traffic, as an nft match: Herald's heartbeats (UDP 7947,
    /// the speaker's default), MetalLB's memberlist (TCP and UDP 7946, its default).
    pub(crate) fn membership_match(self) -> &'static str {
        match self {
            System::Herald => "udp dport 7947",
            System::Metallb => "meta l4proto { tcp, udp } th dport 7946",
        }
    }

    fn resource(self, kind: &str, plural: &str) -> ApiResource {
        let (group, version) = match self {
            System::Herald => ("herald.dev", "v1beta1"),
            System::Metallb => ("metallb.io", "v1beta1"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    pub(crate) fn pool_kind(self) -> Kind {
        Kind {
            resource: self.resource("IPAddressPool", "ipaddresspools"),
            namespaced: self == System::Metallb,
        }
    }

    pub(crate) fn advertisement_kind(self) -> Kind {
        Kind {
            resource: self.resource("L2Advertisement", "l2advertisements"),
            namespaced: self == System::Metallb,
        }
    }

    /// MetalLB's record of who announces a Service (`ServiceL2Status`, in its namespace).
    pub(crate) fn l2_status_resource() -> ApiResource {
        System::Metallb.resource("ServiceL2Status", "servicel2statuses")
    }

    /// An API for one kind of its configuration objects.
    pub(crate) fn api(self, client: &Client, kind: &Kind) -> Api<DynamicObject> {
        if kind.namespaced {
            Api::namespaced_with(client.clone(), self.namespace(), &kind.resource)
        } else {
            Api::all_with(client.clone(), &kind.resource)
        }
    }

    /// The pool object: the same fields in both APIs (Herald took MetalLB's names).
    pub(crate) fn pool(self, name: &str, range: &str) -> Value {
        let kind = self.pool_kind();
        self.object(
            &kind,
            name,
            json!({"addresses": [range], "autoAssign": false}),
        )
    }

    /// The L2Advertisement of `pools` on the nodes' eth0.
    pub(crate) fn advertisement(self, name: &str, pools: &[&str]) -> Value {
        let kind = self.advertisement_kind();
        self.object(
            &kind,
            name,
            json!({"ipAddressPools": pools, "interfaces": ["eth0"]}),
        )
    }

    fn object(self, kind: &Kind, name: &str, spec: Value) -> Value {
        let mut metadata = json!({"name": name});
        if kind.namespaced {
            metadata["namespace"] = json!(self.namespace());
        }
        json!({
            "apiVersion": kind.resource.api_version,
            "kind": kind.resource.kind,
            "metadata": metadata,
            "spec": spec,
        })
    }

    /// Which of its components an API user (`user.username` of an audit event) is, if any:
    /// `speaker` or `controller`.
    pub(crate) fn component_of(self, username: &str) -> Option<&'static str> {
        let account = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = account.split_once(':')?;
        if namespace != self.namespace() {
            return None;
        }
        match (self, name) {
            (System::Herald, "herald-speaker") | (System::Metallb, "speaker") => Some("speaker"),
            (System::Herald, "herald-controller") | (System::Metallb, "controller") => {
                Some("controller")
            }
            _ => None,
        }
    }
}

/// Which node, if any, MetalLB's `ServiceL2Status` object says announces which Service
/// (`namespace/name`), once its status is written.
pub(crate) fn l2_status_announcer(object: &Value) -> Option<(String, String)> {
    let status = &object["status"];
    let node = status["node"].as_str().filter(|n| !n.is_empty())?;
    let name = status["serviceName"].as_str()?;
    let namespace = status["serviceNamespace"].as_str()?;
    Some((format!("{namespace}/{name}"), node.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_advertisements_in_both_apis() {
        let herald = System::Herald.pool("p", "192.0.2.150-192.0.2.199");
        assert_eq!(herald["apiVersion"], "herald.dev/v1beta1");
        assert_eq!(herald["kind"], "IPAddressPool");
        assert!(herald["metadata"].get("namespace").is_none());
        assert_eq!(herald["spec"]["addresses"][0], "192.0.2.150-192.0.2.199");
        let metallb = System::Metallb.advertisement("a", &["p4", "p6"]);
        assert_eq!(metallb["apiVersion"], "metallb.io/v1beta1");
        assert_eq!(metallb["metadata"]["namespace"], "metallb-system");
        assert_eq!(metallb["spec"]["ipAddressPools"], json!(["p4", "p6"]));
        assert_eq!(metallb["spec"]["interfaces"], json!(["eth0"]));
    }

    #[test]
    fn api_users_map_to_components() {
        let h = System::Herald;
        let m = System::Metallb;
        assert_eq!(
            h.component_of("system:serviceaccount:herald-system:herald-speaker"),
            Some("speaker")
        );
        assert_eq!(
            h.component_of("system:serviceaccount:herald-system:herald-controller"),
            Some("controller")
        );
        assert_eq!(
            m.component_of("system:serviceaccount:metallb-system:speaker"),
            Some("speaker")
        );
        assert_eq!(
            m.component_of("system:serviceaccount:metallb-system:controller"),
            Some("controller")
        );
        // Another system's, another account, a person.
        assert_eq!(
            m.component_of("system:serviceaccount:herald-system:herald-speaker"),
            None
        );
        assert_eq!(
            m.component_of("system:serviceaccount:metallb-system:metrics-reader"),
            None
        );
        assert_eq!(h.component_of("kubernetes-admin"), None);
    }

    #[test]
    fn one_way_cuts_drop_each_systems_membership_traffic() {
        assert_eq!(
            failover::cut_rule("input", System::Herald.membership_match()),
            "table inet herald_bench_cut { chain c { type filter hook input priority -10; udp dport 7947 drop; }; }"
        );
        // memberlist gossips over UDP and syncs state over TCP, both on 7946.
        assert!(
            failover::cut_rule("output", System::Metallb.membership_match()).contains(
                "hook output priority -10; meta l4proto { tcp, udp } th dport 7946 drop;"
            )
        );
    }

    #[test]
    fn l2_status_needs_its_node() {
        let written =
            json!({"status": {"node": "hl-node2", "serviceName": "s", "serviceNamespace": "b"}});
        assert_eq!(
            l2_status_announcer(&written),
            Some(("b/s".to_string(), "hl-node2".to_string()))
        );
        // Created, status not yet patched in.
        assert_eq!(l2_status_announcer(&json!({"metadata": {}})), None);
        assert_eq!(
            l2_status_announcer(
                &json!({"status": {"node": "", "serviceName": "s", "serviceNamespace": "b"}})
            ),
            None
        );
    }
}
