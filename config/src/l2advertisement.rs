//! The `L2Advertisement` custom resource: which nodes and interfaces announce which pools.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Announces the addresses of some pools with ARP and NDP from some nodes.
///
/// With neither `ipAddressPools` nor `ipAddressPoolSelectors`, it covers every pool.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    shortname = "l2adv",
    category = "herald",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools announced, by name. Unknown names are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ip_address_pools: Vec<String>,

    /// Pools announced, by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Only nodes matching one of these may announce. Empty means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,

    /// Interfaces to announce on. Empty means every usable interface. When several
    /// advertisements cover a pool, their interfaces are unioned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub interfaces: Vec<InterfaceName>,

    /// Only Services matching one of these are announced by this advertisement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,

    /// Nodes matching these are preferred as announcers; the weights of matching terms are
    /// summed and the highest sum wins before the hash decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// A Linux interface name (at most 15 bytes, IFNAMSIZ - 1).
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(transparent)]
pub struct InterfaceName(
    #[schemars(length(min = 1, max = 15), regex(pattern = r"^[^\s/:]+$"))] pub String,
);

/// One weighted preference for the announcing node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PreferredNodeSelector {
    /// Added to a node's score when it matches `preference`.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// The nodes this preference applies to.
    pub preference: LabelSelector,
}
