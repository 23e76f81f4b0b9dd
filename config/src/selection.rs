//! Which pools a Service may draw from, and in what order — the rules both binaries share.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use crate::addresses::{AddressError, IpRange};
use crate::pool::IPAddressPoolSpec;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A pool's spec, parsed: its ranges and who may use it.
#[derive(Clone, Debug)]
pub struct PoolPolicy {
    /// The pool's name.
    pub name: String,
    /// The ranges of every entry that parsed.
    pub ranges: Vec<IpRange>,
    /// Entries that did not parse, with the reason (the pool's `Valid` condition).
    pub invalid: Vec<String>,
    /// `spec.autoAssign`.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy_ips: bool,
    /// Present when `spec.serviceAllocation` is set.
    pub allocation: Option<AllocationRules>,
}

/// `spec.serviceAllocation`, with selectors parsed.
#[derive(Clone, Debug, Default)]
pub struct AllocationRules {
    /// Lower is tried first; 0 means after every positive priority.
    pub priority: i32,
    /// Namespaces allowed by name.
    pub namespaces: Vec<String>,
    /// Namespaces allowed by label.
    pub namespace_selectors: Vec<Selector>,
    /// Services allowed by label.
    pub service_selectors: Vec<Selector>,
}

/// Parses label selectors; a bad one is reported and matches nothing (fail closed).
fn selectors(field: &str, raw: &[LabelSelector], invalid: &mut Vec<String>) -> Vec<Selector> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| match Selector::try_from(s.clone()) {
            Ok(sel) => Some(sel),
            Err(e) => {
                invalid.push(format!("{field}[{i}]: {e}"));
                None
            }
        })
        .collect()
}

impl PoolPolicy {
    /// Parses a pool. Bad entries are listed in `invalid`; the good ones are still used.
    pub fn from_spec(name: &str, spec: &IPAddressPoolSpec) -> PoolPolicy {
        let mut invalid = Vec::new();
        let mut ranges = Vec::new();
        for (i, entry) in spec.addresses.iter().enumerate() {
            match IpRange::parse_usable(entry) {
                Ok(r) => ranges.push(r),
                Err(
                    e @ (AddressError::Malformed { .. }
                    | AddressError::MixedFamilies { .. }
                    | AddressError::Reversed { .. }
                    | AddressError::Reserved { .. }),
                ) => {
                    invalid.push(format!("spec.addresses[{i}]: {e}"));
                }
            }
        }
        let allocation = spec.service_allocation.as_ref().map(|a| AllocationRules {
            priority: a.priority.unwrap_or(0).max(0),
            namespaces: a.namespaces.clone(),
            namespace_selectors: selectors(
                "spec.serviceAllocation.namespaceSelectors",
                &a.namespace_selectors,
                &mut invalid,
            ),
            service_selectors: selectors(
                "spec.serviceAllocation.serviceSelectors",
                &a.service_selectors,
                &mut invalid,
            ),
        });
        // A selector that failed to parse must not widen the pool: if every selector of a kind
        // failed, nobody matches.
        let allocation = allocation.map(|mut rules| {
            let raw = spec.service_allocation.as_ref();
            if raw.is_some_and(|a| !a.namespace_selectors.is_empty())
                && rules.namespace_selectors.is_empty()
                && rules.namespaces.is_empty()
            {
                rules.namespaces.push(String::new());
            }
            if raw.is_some_and(|a| !a.service_selectors.is_empty())
                && rules.service_selectors.is_empty()
            {
                rules.service_selectors.push(match_nothing());
            }
            rules
        });
        PoolPolicy {
            name: name.to_string(),
            ranges,
            invalid,
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            allocation,
        }
    }

    /// Whether a Service in `namespace` (labelled `namespace_labels`) with `service_labels` may
    /// use this pool at all — by request or automatically.
    pub fn allows(
        &self,
        namespace: &str,
        namespace_labels: &Labels,
        service_labels: &Labels,
    ) -> bool {
        let Some(rules) = &self.allocation else {
            return true;
        };
        let namespace_limited =
            !rules.namespaces.is_empty() || !rules.namespace_selectors.is_empty();
        if namespace_limited
            && !rules.namespaces.iter().any(|n| n == namespace)
            && !rules
                .namespace_selectors
                .iter()
                .any(|s| s.matches(namespace_labels))
        {
            return false;
        }
        rules.service_selectors.is_empty()
            || rules
                .service_selectors
                .iter()
                .any(|s| s.matches(service_labels))
    }

    /// The order in which pools are tried for automatic assignment: pools with
    /// `serviceAllocation` by priority (positive first, ascending; then 0), then the general
    /// auto-assign pools; names break ties. `None` means the pool is never tried automatically.
    pub fn auto_rank(&self) -> Option<(u8, i32)> {
        if !self.auto_assign {
            return None;
        }
        Some(match &self.allocation {
            Some(rules) if rules.priority > 0 => (0, rules.priority),
            Some(_) => (1, 0),
            None => (2, 0),
        })
    }
}

fn match_nothing() -> Selector {
    use kube::core::Expression;
    // `In` with an empty value set never matches.
    Selector::from_iter([Expression::In(
        "herald.dev/invalid-selector".into(),
        Default::default(),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::ServiceAllocation;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec(addresses: &[&str], allocation: Option<ServiceAllocation>) -> IPAddressPoolSpec {
        IPAddressPoolSpec {
            service_allocation: allocation,
            ..IPAddressPoolSpec::new(addresses)
        }
    }

    fn selector(k: &str, v: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some([(k.to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn bad_entries_are_listed_good_ones_kept() {
        let p = PoolPolicy::from_spec("p", &spec(&["192.0.2.9-192.0.2.1", "192.0.2.16/28"], None));
        assert_eq!(p.ranges.len(), 1);
        assert_eq!(p.invalid.len(), 1);
        assert!(
            p.invalid[0].starts_with("spec.addresses[0]: "),
            "{:?}",
            p.invalid
        );
    }

    #[test]
    fn namespaces_and_selectors() {
        let p = PoolPolicy::from_spec(
            "p",
            &spec(
                &["192.0.2.0/28"],
                Some(ServiceAllocation {
                    priority: Some(5),
                    namespaces: vec!["shop".into()],
                    namespace_selectors: vec![selector("team", "a")],
                    service_selectors: vec![selector("tier", "web")],
                }),
            ),
        );
        let web = labels(&[("tier", "web")]);
        assert!(p.allows("shop", &labels(&[]), &web));
        assert!(p.allows("other", &labels(&[("team", "a")]), &web));
        assert!(!p.allows("other", &labels(&[("team", "b")]), &web));
        assert!(!p.allows("shop", &labels(&[]), &labels(&[("tier", "db")])));
        assert_eq!(p.auto_rank(), Some((0, 5)));
    }

    #[test]
    fn ranking() {
        let plain = PoolPolicy::from_spec("a", &spec(&["192.0.2.0/28"], None));
        let zero = PoolPolicy::from_spec(
            "b",
            &spec(&["192.0.2.0/28"], Some(ServiceAllocation::default())),
        );
        assert!(zero.auto_rank() < plain.auto_rank());
        let mut manual = spec(&["192.0.2.0/28"], None);
        manual.auto_assign = false;
        assert_eq!(PoolPolicy::from_spec("c", &manual).auto_rank(), None);
    }

    #[test]
    fn broken_selector_fails_closed() {
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "Resembles".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let p = PoolPolicy::from_spec(
            "p",
            &spec(
                &["192.0.2.0/28"],
                Some(ServiceAllocation {
                    service_selectors: vec![bad.clone()],
                    namespace_selectors: vec![bad],
                    ..Default::default()
                }),
            ),
        );
        assert_eq!(p.invalid.len(), 2, "{:?}", p.invalid);
        assert!(!p.allows("x", &labels(&[("team", "a")]), &labels(&[("team", "a")])));
    }
}
