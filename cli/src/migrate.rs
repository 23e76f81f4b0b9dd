//! `herald migrate`: MetalLB's `metallb.io` configuration in, Herald's out.
//!
//! Pure: documents in, objects and findings out. Herald's API keeps MetalLB's field names, so
//! a pool or an advertisement moves by changing its `apiVersion` — except for what Herald does
//! not have (BGP, fields added to MetalLB later), which is found by walking each object against
//! Herald's own CRD schema and reported with the object and the field, never dropped silently.

use std::collections::BTreeMap;
use std::fmt;

use herald_config::addresses::IpRange;
use herald_config::service::{ADDRESS_POOL, ALLOW_SHARED_IP, DEPRECATED_PREFIX, LOAD_BALANCER_IPS};
use herald_config::{IPAddressPool, IPAddressPoolSpec, L2Advertisement, L2AdvertisementSpec};
use kube::CustomResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The annotation kubectl writes on `apply`; it describes the MetalLB object, not the new one.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// MetalLB's current annotation prefix (its old one is [`DEPRECATED_PREFIX`]).
const METALLB_PREFIX: &str = "metallb.io/";
/// Written by MetalLB's controller, read by nobody.
const ALLOCATED_FROM_POOL: &str = "ip-allocated-from-pool";

/// One YAML document and where it came from.
#[derive(Clone, Debug)]
pub struct SourceDocument {
    /// `FILE #N` (the N-th document of the file, from 1).
    pub origin: String,
    /// The parsed document.
    pub value: serde_yaml::Value,
}

/// Input that cannot be migrated at all: nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Not YAML.
    #[error("{origin}: not valid YAML: {error}")]
    Yaml {
        /// The file.
        origin: String,
        /// The parser's message (with line and column).
        error: serde_yaml::Error,
    },
    /// YAML, but not a Kubernetes object.
    #[error("{origin}: not a Kubernetes object ({why})")]
    NotAnObject {
        /// The document.
        origin: String,
        /// What is missing.
        why: String,
    },
    /// A MetalLB object whose field has a value Herald cannot take.
    #[error("{object}: {field}: {why}")]
    InvalidField {
        /// The object.
        object: String,
        /// The field path.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// Nothing in the input at all.
    #[error("no documents in the input")]
    Empty,
}

/// Splits a YAML stream into its documents; empty documents are skipped.
pub fn parse_documents(origin: &str, text: &str) -> Result<Vec<SourceDocument>, MigrateError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|error| MigrateError::Yaml {
            origin: origin.to_string(),
            error,
        })?;
        if value.is_null() {
            continue;
        }
        out.push(SourceDocument {
            origin: format!("{origin} #{}", i + 1),
            value,
        });
    }
    Ok(out)
}

/// How much a finding matters to the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was not carried over: the result is incomplete.
    Unsupported,
    /// Worth knowing; nothing was lost.
    Note,
}

/// Something the operator must know about one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Whether it makes the result incomplete.
    pub severity: Severity,
    /// `Kind namespace/name (FILE #N)`.
    pub object: String,
    /// The field concerned, when one is.
    pub field: Option<String>,
    /// What happened and what to do.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Unsupported => "not migrated",
            Severity::Note => "note",
        };
        match &self.field {
            Some(field) => write!(f, "{tag}: {}: {field}: {}", self.object, self.message),
            None => write!(f, "{tag}: {}: {}", self.object, self.message),
        }
    }
}

/// What Herald does with one MetalLB annotation of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub enum AnnotationVerdict {
    /// Read as it is.
    Honoured,
    /// Read as it is, with a `DeprecatedAnnotation` Warning Event until renamed.
    HonouredDeprecated {
        /// The key to rename it to.
        rename_to: String,
    },
    /// Not read, and nothing is lost (MetalLB's own bookkeeping).
    Ignored {
        /// Why that is fine.
        why: String,
    },
    /// Not read: the Service loses what it asked for.
    Unsupported,
}

/// A Service that carries MetalLB annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceAnnotations {
    /// `namespace/name`.
    pub service: String,
    /// Each MetalLB annotation with its verdict.
    pub annotations: BTreeMap<String, AnnotationVerdict>,
}

/// The result: Herald objects to write, and everything the operator must know.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Migration {
    /// Herald objects, pools first, each in input order.
    pub objects: Vec<Value>,
    /// Findings, in input order.
    pub findings: Vec<Finding>,
    /// Services with MetalLB annotations.
    pub services: Vec<ServiceAnnotations>,
}

impl Migration {
    /// Whether everything in the input has an equivalent in the output.
    pub fn is_complete(&self) -> bool {
        self.findings
            .iter()
            .all(|f| f.severity != Severity::Unsupported)
            && self.services.iter().all(|s| {
                s.annotations
                    .values()
                    .all(|v| *v != AnnotationVerdict::Unsupported)
            })
    }

    /// The objects as one multi-document YAML stream.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(object)?);
        }
        Ok(out)
    }
}

/// The kinds of `metallb.io` that Herald has no equivalent for, and what to do instead.
fn unsupported_kind(kind: &str) -> Option<(&'static str, Severity)> {
    Some(match kind {
        "BGPPeer" | "BGPAdvertisement" | "Community" | "BFDProfile" => (
            "Herald announces in layer 2 only (ARP and NDP); BGP has no equivalent. Keep MetalLB \
             (or another BGP speaker) for the pools announced over BGP",
            Severity::Unsupported,
        ),
        "MetalLB" => (
            "MetalLB's operator resource configures MetalLB's own deployment; install Herald with \
             `kubectl apply -k deploy/kustomize` and set node placement there",
            Severity::Unsupported,
        ),
        "ServiceL2Status" | "ServiceBGPStatus" | "ConfigurationState" => (
            "status written by MetalLB, not configuration; Herald reports who announces in the \
             Service's herald.dev/Announced condition (`herald status`)",
            Severity::Note,
        ),
        _ => return None,
    })
}

/// The schema of `spec` of one of Herald's CRDs, as JSON.
fn spec_schema(crd: &impl Serialize) -> Value {
    serde_json::to_value(crd)
        .ok()
        .and_then(|v| {
            v.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// Drops every field of `value` that `schema` does not know, naming each in `unknown`.
fn prune(value: &Value, schema: &Value, path: &str, unknown: &mut Vec<String>) -> Value {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let open = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let additional = schema.get("additionalProperties");
            let mut kept = Map::new();
            for (key, field) in fields {
                let field_path = format!("{path}.{key}");
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    kept.insert(key.clone(), prune(field, sub, &field_path, unknown));
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    kept.insert(key.clone(), prune(field, sub, &field_path, unknown));
                } else if open || additional == Some(&Value::Bool(true)) {
                    kept.insert(key.clone(), field.clone());
                } else {
                    unknown.push(field_path);
                }
            }
            Value::Object(kept)
        }
        Value::Array(items) => {
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| prune(item, item_schema, &format!("{path}[{i}]"), unknown))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// Reads the input documents and produces Herald's objects.
pub fn migrate(documents: &[SourceDocument]) -> Result<Migration, MigrateError> {
    if documents.is_empty() {
        return Err(MigrateError::Empty);
    }
    let mut objects = Vec::new();
    for doc in documents {
        let json = serde_json::to_value(&doc.value).map_err(|e| MigrateError::NotAnObject {
            origin: doc.origin.clone(),
            why: e.to_string(),
        })?;
        flatten(&doc.origin, json, &mut objects)?;
    }
    let pool_schema = spec_schema(&IPAddressPool::crd());
    let advertisement_schema = spec_schema(&L2Advertisement::crd());
    let mut out = Migration::default();
    let mut pools = Vec::new();
    let mut advertisements = Vec::new();
    let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
    for object in &objects {
        let described = object.describe();
        let metallb = object
            .api_version
            .starts_with(METALLB_PREFIX.trim_end_matches('/'));
        match (metallb, object.kind.as_str()) {
            (true, kind @ ("IPAddressPool" | "L2Advertisement")) => {
                // Herald's objects are cluster-scoped: two MetalLB objects of one name in two
                // namespaces cannot both be kept.
                if let Some(first) =
                    names.insert((kind.to_string(), object.name.clone()), described.clone())
                {
                    names.insert((kind.to_string(), object.name.clone()), first.clone());
                    out.findings.push(Finding {
                        severity: Severity::Unsupported,
                        object: described,
                        field: Some("metadata.name".into()),
                        message: format!(
                            "Herald's {kind}s are cluster-scoped and {first} has the same name; \
                             this one is not written: rename it and run again"
                        ),
                    });
                    continue;
                }
                let schema = if kind == "IPAddressPool" {
                    &pool_schema
                } else {
                    &advertisement_schema
                };
                let mut unknown = Vec::new();
                let spec = prune(object.spec(), schema, "spec", &mut unknown);
                for field in unknown {
                    out.findings.push(Finding {
                        severity: Severity::Unsupported,
                        object: described.clone(),
                        field: Some(field),
                        message: "Herald has no such field; it is left out".into(),
                    });
                }
                let converted = if kind == "IPAddressPool" {
                    convert_pool(object, spec)?
                } else {
                    convert_advertisement(object, spec, &mut out.findings)?
                };
                if kind == "IPAddressPool" {
                    pools.push(converted);
                } else {
                    advertisements.push(converted);
                }
            }
            (true, kind) => {
                let (message, severity) = unsupported_kind(kind).unwrap_or((
                    "a MetalLB kind Herald does not know; it is left out",
                    Severity::Unsupported,
                ));
                out.findings.push(Finding {
                    severity,
                    object: described,
                    field: None,
                    message: message.into(),
                });
            }
            (false, "Service") if object.api_version == "v1" => {
                if let Some(service) = service_annotations(object) {
                    out.services.push(service);
                }
            }
            (false, "ConfigMap") if object.data_has("config") && object.namespace_is_metallb() => {
                out.findings.push(Finding {
                    severity: Severity::Unsupported,
                    object: described,
                    field: Some("data.config".into()),
                    message: "MetalLB's ConfigMap configuration (before v0.13) is not read; \
                              convert it to MetalLB's CRDs first (MetalLB's upgrade notes), then \
                              migrate those"
                        .into(),
                });
            }
            (false, _) => out.findings.push(Finding {
                severity: Severity::Note,
                object: described,
                field: None,
                message: "not MetalLB configuration; left out".into(),
            }),
        }
    }
    note_unknown_pool_references(&pools, &advertisements, &mut out.findings);
    out.objects = pools.into_iter().chain(advertisements).collect();
    Ok(out)
}

/// One Kubernetes object of the input.
struct InputObject {
    origin: String,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    raw: Value,
}

impl InputObject {
    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{} ({})", self.kind, self.name, self.origin),
            None => format!("{} {} ({})", self.kind, self.name, self.origin),
        }
    }

    fn spec(&self) -> &Value {
        self.raw.get("spec").unwrap_or(&Value::Null)
    }

    fn metadata_map(&self, field: &str) -> Option<Map<String, Value>> {
        self.raw
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .cloned()
    }

    fn data_has(&self, key: &str) -> bool {
        self.raw.pointer(&format!("/data/{key}")).is_some()
    }

    fn namespace_is_metallb(&self) -> bool {
        self.namespace
            .as_deref()
            .is_some_and(|ns| ns.contains("metallb"))
            || self.name.contains("metallb")
    }

    /// `metadata` for the Herald object: the name, labels (advertisements select pools by
    /// them) and annotations other than kubectl's record of the MetalLB object.
    fn herald_metadata(&self) -> Value {
        let mut metadata = Map::new();
        metadata.insert("name".into(), Value::String(self.name.clone()));
        if let Some(labels) = self.metadata_map("labels").filter(|l| !l.is_empty()) {
            metadata.insert("labels".into(), Value::Object(labels));
        }
        if let Some(mut annotations) = self.metadata_map("annotations") {
            annotations.remove(LAST_APPLIED);
            if !annotations.is_empty() {
                metadata.insert("annotations".into(), Value::Object(annotations));
            }
        }
        Value::Object(metadata)
    }
}

/// Objects of a document, with `kind: List` (what `kubectl get -o yaml` prints) flattened.
fn flatten(origin: &str, json: Value, out: &mut Vec<InputObject>) -> Result<(), MigrateError> {
    let not_object = |why: &str| MigrateError::NotAnObject {
        origin: origin.to_string(),
        why: why.to_string(),
    };
    let Value::Object(fields) = &json else {
        return Err(not_object(
            "expected a mapping with apiVersion, kind and metadata",
        ));
    };
    let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_string);
    let kind = text("kind").ok_or_else(|| not_object("no kind"))?;
    let api_version = text("apiVersion").ok_or_else(|| not_object("no apiVersion"))?;
    if kind == "List" || kind.ends_with("List") && fields.contains_key("items") {
        let items = fields
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| not_object("a List without items"))?;
        for (i, item) in items.iter().enumerate() {
            flatten(&format!("{origin} items[{i}]"), item.clone(), out)?;
        }
        return Ok(());
    }
    let metadata = fields.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| not_object("no metadata.name"))?
        .to_string();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    out.push(InputObject {
        origin: origin.to_string(),
        api_version,
        kind,
        namespace,
        name,
        raw: json,
    });
    Ok(())
}

fn invalid(object: &InputObject, field: &str, why: impl ToString) -> MigrateError {
    MigrateError::InvalidField {
        object: object.describe(),
        field: field.to_string(),
        why: why.to_string(),
    }
}

fn convert_pool(object: &InputObject, spec: Value) -> Result<Value, MigrateError> {
    let spec: IPAddressPoolSpec =
        serde_json::from_value(spec).map_err(|e| invalid(object, "spec", e))?;
    if spec.addresses.is_empty() {
        return Err(invalid(
            object,
            "spec.addresses",
            "a pool needs at least one address",
        ));
    }
    for (i, entry) in spec.addresses.iter().enumerate() {
        IpRange::parse(entry).map_err(|e| invalid(object, &format!("spec.addresses[{i}]"), e))?;
    }
    Ok(json!({
        "apiVersion": "herald.dev/v1beta1",
        "kind": "IPAddressPool",
        "metadata": object.herald_metadata(),
        "spec": spec,
    }))
}

fn convert_advertisement(
    object: &InputObject,
    spec: Value,
    findings: &mut Vec<Finding>,
) -> Result<Value, MigrateError> {
    let spec: L2AdvertisementSpec = if spec.is_null() {
        L2AdvertisementSpec::default()
    } else {
        serde_json::from_value(spec).map_err(|e| invalid(object, "spec", e))?
    };
    for (i, interface) in spec.interfaces.iter().enumerate() {
        let name = &interface.0;
        if name.is_empty()
            || name.len() > 15
            || name.contains(['/', ':'])
            || name.contains(char::is_whitespace)
        {
            return Err(invalid(
                object,
                &format!("spec.interfaces[{i}]"),
                format!(
                    "{name:?} is not a Linux interface name (1 to 15 characters, no '/', ':' or blanks)"
                ),
            ));
        }
    }
    if spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty() {
        findings.push(Finding {
            severity: Severity::Note,
            object: object.describe(),
            field: None,
            message: "names no pools: it covers every pool, as in MetalLB".into(),
        });
    }
    Ok(json!({
        "apiVersion": "herald.dev/v1beta1",
        "kind": "L2Advertisement",
        "metadata": object.herald_metadata(),
        "spec": spec,
    }))
}

fn note_unknown_pool_references(
    pools: &[Value],
    advertisements: &[Value],
    findings: &mut Vec<Finding>,
) {
    let known: Vec<&str> = pools
        .iter()
        .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    for ad in advertisements {
        let name = ad
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let referenced = ad
            .pointer("/spec/ipAddressPools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        for pool in referenced.filter(|p| !known.contains(p)) {
            findings.push(Finding {
                severity: Severity::Note,
                object: format!("L2Advertisement {name}"),
                field: Some("spec.ipAddressPools".into()),
                message: format!(
                    "pool {pool:?} is not in the input; unknown names are ignored, as in MetalLB"
                ),
            });
        }
    }
}

/// What Herald makes of a Service's MetalLB annotations; `None` when it has none.
fn service_annotations(object: &InputObject) -> Option<ServiceAnnotations> {
    let annotations = object.metadata_map("annotations")?;
    let mut verdicts = BTreeMap::new();
    for key in annotations.keys() {
        let (prefix, suffix) = if let Some(s) = key.strip_prefix(METALLB_PREFIX) {
            (METALLB_PREFIX, s)
        } else if let Some(s) = key.strip_prefix(DEPRECATED_PREFIX) {
            (DEPRECATED_PREFIX, s)
        } else {
            continue;
        };
        let verdict = match suffix {
            LOAD_BALANCER_IPS | ADDRESS_POOL | ALLOW_SHARED_IP if prefix == DEPRECATED_PREFIX => {
                AnnotationVerdict::HonouredDeprecated {
                    rename_to: format!("{METALLB_PREFIX}{suffix} (or herald.dev/{suffix})"),
                }
            }
            LOAD_BALANCER_IPS | ADDRESS_POOL | ALLOW_SHARED_IP => AnnotationVerdict::Honoured,
            ALLOCATED_FROM_POOL => AnnotationVerdict::Ignored {
                why: "written by MetalLB's controller; Herald does not need it (`herald status` \
                      shows each IP's pool)"
                    .into(),
            },
            _ => AnnotationVerdict::Unsupported,
        };
        verdicts.insert(key.clone(), verdict);
    }
    (!verdicts.is_empty()).then(|| ServiceAnnotations {
        service: format!(
            "{}/{}",
            object.namespace.as_deref().unwrap_or("default"),
            object.name
        ),
        annotations: verdicts,
    })
}

#[cfg(test)]
mod tests;
