//! The `IPAddressPool` custom resource: which addresses Herald may hand out, and to whom.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A set of addresses the controller may assign to `type: LoadBalancer` Services.
///
/// Field names follow MetalLB's `IPAddressPool` so a MetalLB user can move a pool by changing
/// its `apiVersion`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    shortname = "ippool",
    category = "herald",
    status = "IPAddressPoolStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Assigned IPv4","type":"integer","jsonPath":".status.assignedIPv4"}"#,
    printcolumn = r#"{"name":"Available IPv4","type":"integer","jsonPath":".status.availableIPv4"}"#,
    printcolumn = r#"{"name":"Assigned IPv6","type":"integer","jsonPath":".status.assignedIPv6"}"#,
    printcolumn = r#"{"name":"Available IPv6","type":"integer","jsonPath":".status.availableIPv6"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// Addresses in this pool: CIDRs (`192.0.2.0/28`), inclusive ranges
    /// (`192.0.2.10-192.0.2.20`) or single IPs. IPv4 and IPv6 entries may be mixed.
    #[schemars(schema_with = "address_list_schema")]
    pub addresses: Vec<String>,

    /// Whether Services may be given an address from this pool without asking for it by pool
    /// name or IP.
    #[serde(default = "default_true")]
    #[schemars(default = "default_true")]
    pub auto_assign: bool,

    /// Never assign IPv4 addresses ending in `.0` or `.255`, which some old network equipment
    /// mistakes for network or broadcast addresses.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Restricts the pool to some Services and ranks it against other pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

impl IPAddressPoolSpec {
    /// A pool of these addresses with the API's defaults (`autoAssign: true`, nothing else).
    pub fn new<S: ToString>(addresses: &[S]) -> IPAddressPoolSpec {
        IPAddressPoolSpec {
            addresses: addresses.iter().map(ToString::to_string).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        }
    }
}

/// Which Services a pool serves, and its precedence over other pools that match them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are tried first; 0 or unset is tried after every positive priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,

    /// Namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub namespaces: Vec<String>,

    /// Namespaces, by label, whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,

    /// Services, by label, that may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses of this pool held by Services.
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: i64,
    /// IPv6 addresses of this pool held by Services.
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: i64,
    /// IPv4 addresses of this pool still free (saturates at the largest int64).
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: i64,
    /// IPv6 addresses of this pool still free (saturates at the largest int64).
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: i64,
    /// `Valid` (every address entry parses) and `Overlapping` (shares addresses with another pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Condition type: every entry of `spec.addresses` is usable.
pub const CONDITION_VALID: &str = "Valid";
/// Condition type: some addresses are also in another pool; those are never assigned.
pub const CONDITION_OVERLAPPING: &str = "Overlapping";

/// The CEL rule for one `spec.addresses` entry: a CIDR, an IP, or `a-b` of one family.
///
/// `isCIDR`/`isIP`/`ip()` are Kubernetes' CEL network library (1.31+). Whether a range's start
/// lies after its end cannot be said in CEL; the controller reports that in the `Valid` condition.
pub const ADDRESS_ENTRY_RULE: &str = "isCIDR(self) || isIP(self) || (self.split('-').size() == 2 \
     && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) \
     && ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family())";

/// The refusal message, naming the offending entry.
pub const ADDRESS_ENTRY_MESSAGE: &str = "'\\'' + self + '\\' must be a CIDR (192.0.2.0/28), a range of one family (192.0.2.10-192.0.2.20) or a single IP'";

/// The CEL rule that refuses an entry holding reserved addresses (`addresses::RESERVED`:
/// multicast, broadcast, loopback, link-local, unspecified): an IP or a range end that is one
/// (CEL's `isGlobalUnicast` is false for exactly these), a CIDR whose network address is one or
/// that contains one of the blocks. Checked only once the entry is well-formed (the rule
/// above says what is wrong otherwise). A range that spans a block without ending in it cannot
/// be told in CEL; the controller reports it in the `Valid` condition.
pub const RESERVED_RULE: &str = "!(isCIDR(self) || isIP(self) || (self.split('-').size() == 2 \
     && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()))) \
     || (isIP(self) ? ip(self).isGlobalUnicast() \
     : isCIDR(self) ? (cidr(self).masked().ip().isGlobalUnicast() \
       && (cidr(self).ip().family() == 4 \
         ? ['127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '255.255.255.255/32'] \
         : ['::1/128', 'fe80::/10', 'ff00::/8']).all(b, !cidr(self).containsCIDR(b))) \
     : (ip(self.split('-')[0].trim()).isGlobalUnicast() \
       && ip(self.split('-')[1].trim()).isGlobalUnicast()))";

/// The refusal message of [`RESERVED_RULE`], naming the offending entry.
pub const RESERVED_MESSAGE: &str = "'\\'' + self + '\\' holds multicast, broadcast, loopback, link-local or unspecified addresses, which are never handed out'";

fn address_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 1024,
        "items": {
            "type": "string",
            "maxLength": 100,
            "x-kubernetes-validations": [{
                "rule": ADDRESS_ENTRY_RULE,
                "message": "must be a CIDR (192.0.2.0/28), a range of one family (192.0.2.10-192.0.2.20) or a single IP",
                "messageExpression": ADDRESS_ENTRY_MESSAGE,
            }, {
                "rule": RESERVED_RULE,
                "message": "holds multicast, broadcast, loopback, link-local or unspecified addresses, which are never handed out",
                "messageExpression": RESERVED_MESSAGE,
            }],
        },
    })
}
