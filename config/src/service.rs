//! What a `type: LoadBalancer` Service asks of Herald: requested IPs, pool, sharing key,
//! families, ports. Parsed once from the Service object; every problem is reported by name.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use serde::{Deserialize, Serialize};

use crate::addresses::Family;

/// Annotation prefixes honoured, in order of precedence. The last is MetalLB's old one and
/// earns a Warning Event.
pub const ANNOTATION_PREFIXES: [&str; 3] = ["herald.dev/", "metallb.io/", "metallb.universe.tf/"];
/// MetalLB's deprecated prefix.
pub const DEPRECATED_PREFIX: &str = "metallb.universe.tf/";
/// Annotation (after a prefix) requesting specific IPs, comma separated.
pub const LOAD_BALANCER_IPS: &str = "loadBalancerIPs";
/// Annotation (after a prefix) requesting a pool by name.
pub const ADDRESS_POOL: &str = "address-pool";
/// Annotation (after a prefix) naming the sharing key.
pub const ALLOW_SHARED_IP: &str = "allow-shared-ip";

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Service object, if it has a name and namespace.
    pub fn of(svc: &Service) -> Option<ServiceKey> {
        Some(ServiceKey::new(
            svc.metadata.namespace.clone()?,
            svc.metadata.name.clone()?,
        ))
    }

    /// The reference Events about this Service carry; with its UID, an Event never lands on
    /// a Service recreated under the same name.
    pub fn object_reference(&self, uid: Option<String>) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid,
            ..ObjectReference::default()
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How many families a Service wants, in its order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// Exactly this family.
    Single(Family),
    /// The first if possible, and the second too if possible.
    PreferDual(Family, Family),
    /// Both, or nothing.
    RequireDual(Family, Family),
}

impl FamilyPolicy {
    /// The families wanted, in order.
    pub fn families(&self) -> Vec<Family> {
        match *self {
            FamilyPolicy::Single(f) => vec![f],
            FamilyPolicy::PreferDual(a, b) | FamilyPolicy::RequireDual(a, b) => vec![a, b],
        }
    }

    /// Whether an assignment holding these families satisfies the policy fully.
    pub fn is_complete(&self, held: &[Family]) -> bool {
        self.families().iter().all(|f| held.contains(f))
    }
}

/// A port a Service exposes, for the sharing rule (no two sharers may expose the same one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: i32,
}

/// Which backends a Service sends to; services sharing an IP with
/// `externalTrafficPolicy: Local` must have the same, so one announcing node serves them all.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub enum BackendKey {
    /// `externalTrafficPolicy: Cluster`: any node can reach any backend.
    #[default]
    Cluster,
    /// `externalTrafficPolicy: Local` with this selector (serialized, sorted).
    Local(String),
}

/// Everything a Service asks of the allocator.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRequest {
    /// IPs asked for by `spec.loadBalancerIP` or the `loadBalancerIPs` annotation.
    pub requested_ips: Vec<IpAddr>,
    /// The pool asked for by annotation.
    pub pool: Option<String>,
    /// The sharing key (`allow-shared-ip`), if any.
    pub sharing_key: Option<String>,
    /// The families wanted.
    pub families: FamilyPolicy,
    /// The ports exposed.
    pub ports: Vec<ServicePort>,
    /// The backend identity for the sharing rule.
    pub backend: BackendKey,
    /// Annotations read under MetalLB's deprecated prefix (for a Warning Event).
    pub deprecated_annotations: Vec<String>,
}

/// Something wrong with what a Service asks for. The Service waits; others are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceInputError {
    /// An entry of the loadBalancerIPs annotation or `spec.loadBalancerIP` is not an IP.
    #[error("{source_name}: {value:?} is not an IP address")]
    NotAnIp {
        /// Where it was read.
        source_name: String,
        /// The text.
        value: String,
    },
    /// More than two IPs requested.
    #[error("{source_name}: at most 2 IPs (one per family) may be requested, got {count}")]
    TooManyIps {
        /// Where it was read.
        source_name: String,
        /// How many.
        count: usize,
    },
    /// Two requested IPs of one family.
    #[error("{source_name}: requests two {family} addresses; give at most one per family")]
    SameFamilyTwice {
        /// Where it was read.
        source_name: String,
        /// The repeated family.
        family: Family,
    },
    /// Both `spec.loadBalancerIP` and the annotation.
    #[error(
        "spec.loadBalancerIP and the {annotation} annotation are both set; use only the annotation"
    )]
    BothIpSources {
        /// The annotation key.
        annotation: String,
    },
    /// Two prefixes of one annotation disagree.
    #[error("annotations {first} ({first_value:?}) and {second} ({second_value:?}) disagree")]
    ConflictingAnnotations {
        /// The first key.
        first: String,
        /// Its value.
        first_value: String,
        /// The second key.
        second: String,
        /// Its value.
        second_value: String,
    },
    /// A requested IP's family is not one the Service has.
    #[error("requested IP {ip} is {family} but the Service's ipFamilies are {service_families}")]
    FamilyNotInService {
        /// The IP.
        ip: IpAddr,
        /// Its family.
        family: Family,
        /// What the Service has.
        service_families: String,
    },
    /// RequireDualStack with a single requested IP.
    #[error(
        "ipFamilyPolicy RequireDualStack needs one IPv4 and one IPv6 requested IP, got {count}"
    )]
    DualStackNeedsTwo {
        /// How many were requested.
        count: usize,
    },
    /// An empty annotation value where a name is required.
    #[error("annotation {key} is empty")]
    EmptyAnnotation {
        /// The key.
        key: String,
    },
}

/// Which `spec.loadBalancerClass` this controller serves: `None` serves only Services without a
/// class (MetalLB's default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedClass(pub Option<String>);

impl ServedClass {
    /// Whether a Service with this class is ours.
    pub fn serves(&self, class: Option<&str>) -> bool {
        self.0.as_deref() == class
    }
}

/// The IPs in `status.loadBalancer.ingress` (entries without a parseable IP are skipped).
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether Herald should give this Service an address at all.
pub fn is_ours(svc: &Service, class: &ServedClass) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && class.serves(spec.load_balancer_class.as_deref())
}

/// Reads one annotation under every honoured prefix. Returns the value (if any), the key it was
/// read from, and an error if two prefixes disagree.
fn annotation(
    annotations: &BTreeMap<String, String>,
    suffix: &str,
    deprecated: &mut Vec<String>,
) -> Result<Option<(String, String)>, ServiceInputError> {
    let mut found: Option<(String, String)> = None;
    for prefix in ANNOTATION_PREFIXES {
        let key = format!("{prefix}{suffix}");
        let Some(value) = annotations.get(&key) else {
            continue;
        };
        if prefix == DEPRECATED_PREFIX {
            deprecated.push(key.clone());
        }
        match &found {
            None => found = Some((key, value.trim().to_string())),
            Some((first, first_value)) if first_value != value.trim() => {
                return Err(ServiceInputError::ConflictingAnnotations {
                    first: first.clone(),
                    first_value: first_value.clone(),
                    second: key,
                    second_value: value.clone(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

fn parse_ips(source_name: &str, text: &str) -> Result<Vec<IpAddr>, ServiceInputError> {
    let parts: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.len() > 2 {
        return Err(ServiceInputError::TooManyIps {
            source_name: source_name.to_string(),
            count: parts.len(),
        });
    }
    let mut ips = Vec::with_capacity(parts.len());
    for part in parts {
        let ip: IpAddr = part.parse().map_err(|_| ServiceInputError::NotAnIp {
            source_name: source_name.to_string(),
            value: part.to_string(),
        })?;
        if let Some(prev) = ips
            .iter()
            .find(|p: &&IpAddr| Family::of(**p) == Family::of(ip))
        {
            let _ = prev;
            return Err(ServiceInputError::SameFamilyTwice {
                source_name: source_name.to_string(),
                family: Family::of(ip),
            });
        }
        ips.push(ip);
    }
    Ok(ips)
}

fn family_policy(svc: &Service) -> FamilyPolicy {
    let spec = svc.spec.as_ref();
    let mut families: Vec<Family> = spec
        .and_then(|s| s.ip_families.as_ref())
        .map(|fs| fs.iter().filter_map(|f| Family::from_k8s(f)).collect())
        .unwrap_or_default();
    families.dedup();
    let first = families.first().copied().unwrap_or(Family::V4);
    let second = families.get(1).copied().unwrap_or(first.other());
    match spec.and_then(|s| s.ip_family_policy.as_deref()) {
        Some("RequireDualStack") => FamilyPolicy::RequireDual(first, second),
        Some("PreferDualStack") => FamilyPolicy::PreferDual(first, second),
        _ => FamilyPolicy::Single(first),
    }
}

fn backend_key(svc: &Service) -> BackendKey {
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.external_traffic_policy.as_deref()) != Some("Local") {
        return BackendKey::Cluster;
    }
    let selector = spec
        .and_then(|s| s.selector.as_ref())
        .map(|sel| {
            sel.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    BackendKey::Local(selector)
}

/// Reads what the Service asks for. Call only for Services that [`is_ours`].
pub fn parse_request(svc: &Service) -> Result<ServiceRequest, ServiceInputError> {
    let empty = BTreeMap::new();
    let annotations = svc.metadata.annotations.as_ref().unwrap_or(&empty);
    let spec = svc.spec.as_ref();
    let mut deprecated = Vec::new();

    let families = family_policy(svc);
    let ips_annotation = annotation(annotations, LOAD_BALANCER_IPS, &mut deprecated)?;
    let spec_ip = spec
        .and_then(|s| s.load_balancer_ip.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let requested_ips = match (ips_annotation, spec_ip) {
        (Some((key, _)), Some(_)) => {
            return Err(ServiceInputError::BothIpSources { annotation: key });
        }
        (Some((key, value)), None) => parse_ips(&key, &value)?,
        (None, Some(ip)) => parse_ips("spec.loadBalancerIP", ip)?,
        (None, None) => Vec::new(),
    };
    let service_families = families.families();
    for ip in &requested_ips {
        let family = Family::of(*ip);
        if !service_families.contains(&family) {
            return Err(ServiceInputError::FamilyNotInService {
                ip: *ip,
                family,
                service_families: service_families
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
    }
    if matches!(families, FamilyPolicy::RequireDual(..))
        && !requested_ips.is_empty()
        && requested_ips.len() != 2
    {
        return Err(ServiceInputError::DualStackNeedsTwo {
            count: requested_ips.len(),
        });
    }

    let non_empty = |found: Option<(String, String)>| match found {
        Some((key, value)) if value.is_empty() => Err(ServiceInputError::EmptyAnnotation { key }),
        other => Ok(other.map(|(_, value)| value)),
    };
    let pool = non_empty(annotation(annotations, ADDRESS_POOL, &mut deprecated)?)?;
    let sharing_key = non_empty(annotation(annotations, ALLOW_SHARED_IP, &mut deprecated)?)?;

    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|p| ServicePort {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                    port: p.port,
                })
                .collect()
        })
        .unwrap_or_default();

    Ok(ServiceRequest {
        requested_ips,
        pool,
        sharing_key,
        families,
        ports,
        backend: backend_key(svc),
        deprecated_annotations: deprecated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as K8sPort, ServiceSpec};

    fn svc(annotations: &[(&str, &str)], spec: ServiceSpec) -> Service {
        herald_fixtures::service("shop", "web")
            .annotations(annotations)
            .spec_with(|s| {
                *s = ServiceSpec {
                    type_: Some("LoadBalancer".into()),
                    ..spec
                }
            })
            .build()
    }

    fn lb() -> ServiceSpec {
        ServiceSpec {
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![K8sPort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn class_decides_ownership() {
        let mut s = svc(&[], lb());
        assert!(is_ours(&s, &ServedClass(None)));
        assert!(!is_ours(&s, &ServedClass(Some("herald.dev/x".into()))));
        s.spec.as_mut().unwrap().load_balancer_class = Some("herald.dev/x".into());
        assert!(!is_ours(&s, &ServedClass(None)));
        assert!(is_ours(&s, &ServedClass(Some("herald.dev/x".into()))));
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(!is_ours(&s, &ServedClass(Some("herald.dev/x".into()))));
    }

    #[test]
    fn reads_every_prefix_and_flags_the_deprecated_one() {
        let r = parse_request(&svc(
            &[
                ("metallb.universe.tf/address-pool", "gold"),
                ("metallb.io/allow-shared-ip", "k"),
            ],
            lb(),
        ))
        .unwrap();
        assert_eq!(r.pool.as_deref(), Some("gold"));
        assert_eq!(r.sharing_key.as_deref(), Some("k"));
        assert_eq!(
            r.deprecated_annotations,
            vec!["metallb.universe.tf/address-pool"]
        );
        assert_eq!(
            r.ports,
            vec![ServicePort {
                protocol: "TCP".into(),
                port: 80
            }]
        );
    }

    #[test]
    fn garbage_annotations_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("herald.dev/loadBalancerIPs", "banana")], "not an IP"),
            (
                &[(
                    "herald.dev/loadBalancerIPs",
                    "192.0.2.1,192.0.2.2,192.0.2.3",
                )],
                "at most 2",
            ),
            (
                &[("herald.dev/loadBalancerIPs", "192.0.2.1,192.0.2.2")],
                "two IPv4",
            ),
            (
                &[
                    ("herald.dev/address-pool", "a"),
                    ("metallb.io/address-pool", "b"),
                ],
                "disagree",
            ),
            (&[("herald.dev/address-pool", " ")], "empty"),
            (
                &[("herald.dev/loadBalancerIPs", "2001:db8::1")],
                "ipFamilies",
            ),
        ];
        for (annotations, expected) in cases {
            let err = parse_request(&svc(annotations, lb()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{annotations:?}: {err}");
        }
        let mut spec = lb();
        spec.load_balancer_ip = Some("192.0.2.1".into());
        let err =
            parse_request(&svc(&[("metallb.io/loadBalancerIPs", "192.0.2.1")], spec)).unwrap_err();
        assert!(matches!(err, ServiceInputError::BothIpSources { .. }));
    }

    #[test]
    fn family_policies() {
        let mut spec = lb();
        spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        spec.ip_family_policy = Some("RequireDualStack".into());
        let r = parse_request(&svc(&[], spec.clone())).unwrap();
        assert_eq!(
            r.families,
            FamilyPolicy::RequireDual(Family::V6, Family::V4)
        );
        let err = parse_request(&svc(&[("herald.dev/loadBalancerIPs", "2001:db8::1")], spec))
            .unwrap_err();
        assert!(matches!(
            err,
            ServiceInputError::DualStackNeedsTwo { count: 1 }
        ));
        let mut spec = lb();
        spec.ip_family_policy = Some("PreferDualStack".into());
        let r = parse_request(&svc(&[], spec)).unwrap();
        assert_eq!(r.families, FamilyPolicy::PreferDual(Family::V4, Family::V6));
        assert!(!r.families.is_complete(&[Family::V4]));
    }

    #[test]
    fn local_policy_keys_on_selector() {
        let mut spec = lb();
        spec.external_traffic_policy = Some("Local".into());
        spec.selector = Some([("app".to_string(), "web".to_string())].into());
        let r = parse_request(&svc(&[], spec)).unwrap();
        assert_eq!(r.backend, BackendKey::Local("app=web".into()));
    }
}
