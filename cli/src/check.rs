//! `herald check`: a cluster's pre-flight. Each finding says what is wrong and what to do.
//! Pure: a [`Snapshot`] in, findings out.

use std::collections::BTreeMap;
use std::net::IpAddr;

use herald_config::{IPAddressPool, IpRange, L2Advertisement};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use serde::Serialize;

use crate::cluster::{Scope, SecretState, Snapshot};
use crate::status::node_barred;
use crate::table;
use herald_config::pod::is_ready;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Herald cannot work as configured.
    Error,
    /// Probably wrong, or could not be verified.
    Warning,
    /// Checked and fine.
    Ok,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check.
    pub check: &'static str,
    /// How bad.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn finding(check: &'static str, level: Level, message: String, fix: Option<String>) -> Finding {
    Finding {
        check,
        level,
        message,
        fix,
    }
}

/// Runs every check.
pub fn run(snapshot: &Snapshot, scope: &Scope, now: Timestamp) -> Vec<Finding> {
    let mut out = Vec::new();
    kube_proxy(snapshot, &mut out);
    pool_overlaps(snapshot, &mut out);
    let ads: Vec<Advertisement> = snapshot
        .advertisements
        .iter()
        .map(Advertisement::new)
        .collect();
    advertisements(snapshot, &ads, &mut out);
    membership_secret(snapshot, scope, &mut out);
    speakers(snapshot, &ads, scope, &mut out);
    controller(snapshot, now, &mut out);
    out
}

/// kube-proxy's mode and, for IPVS, strictARP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ProxyMode {
    mode: Option<String>,
    strict_arp: bool,
    source: String,
}

fn proxy_mode(snapshot: &Snapshot) -> Option<ProxyMode> {
    if let Some(config) = snapshot
        .kube_proxy_config
        .as_ref()
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get("config.conf"))
    {
        let parsed: serde_yaml::Value = serde_yaml::from_str(config).unwrap_or_default();
        return Some(ProxyMode {
            mode: parsed
                .get("mode")
                .and_then(|m| m.as_str())
                .map(str::to_string),
            strict_arp: parsed
                .get("ipvs")
                .and_then(|i| i.get("strictARP"))
                .and_then(|s| s.as_bool())
                .unwrap_or(false),
            source: "ConfigMap kube-system/kube-proxy".into(),
        });
    }
    snapshot.kube_proxy_pods.iter().find_map(|pod| {
        let args: Vec<String> = pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.command.iter().flatten().chain(c.args.iter().flatten()))
            .cloned()
            .collect();
        let mut mode = None;
        let mut strict_arp = false;
        for (i, arg) in args.iter().enumerate() {
            if let Some(m) = arg.strip_prefix("--proxy-mode=") {
                mode = Some(m.to_string());
            } else if arg == "--proxy-mode" {
                mode = args.get(i + 1).cloned();
            } else if arg == "--ipvs-strict-arp" || arg == "--ipvs-strict-arp=true" {
                strict_arp = true;
            }
        }
        Some(ProxyMode {
            mode,
            strict_arp,
            source: format!("pod kube-system/{}", pod.name_any()),
        })
    })
}

fn kube_proxy(snapshot: &Snapshot, out: &mut Vec<Finding>) {
    const CHECK: &str = "kube-proxy";
    let Some(p) = proxy_mode(snapshot) else {
        out.push(finding(
            CHECK,
            Level::Warning,
            "kube-proxy's configuration was not found (no ConfigMap kube-system/kube-proxy, no pod labelled k8s-app=kube-proxy)".into(),
            Some("if kube-proxy runs in IPVS mode, set strictARP: true in its configuration; iptables and nftables modes need nothing".into()),
        ));
        return;
    };
    let mode = p
        .mode
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "iptables".into());
    match (mode.as_str(), p.strict_arp) {
        ("ipvs", false) => out.push(finding(
            CHECK,
            Level::Error,
            format!("kube-proxy runs in IPVS mode without strictARP ({})", p.source),
            Some("every node then answers ARP for the IPs on kube-ipvs0 and clients reach random nodes: set `ipvs: {strictARP: true}` in the kube-proxy ConfigMap (`kubectl -n kube-system edit configmap kube-proxy`) and restart kube-proxy".into()),
        )),
        (mode, _) => out.push(finding(
            CHECK,
            Level::Ok,
            format!(
                "kube-proxy mode {mode}{} ({})",
                if mode == "ipvs" { " with strictARP" } else { "" },
                p.source
            ),
            None,
        )),
    }
}

/// Address ranges of one kind that must not be handed out, with what they are.
fn reserved_ranges(snapshot: &Snapshot) -> Vec<(String, IpRange)> {
    let mut out = Vec::new();
    for node in &snapshot.nodes {
        let name = node.name_any();
        let status = node.status.as_ref();
        for a in status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
        {
            if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                && let Ok(ip) = a.address.parse::<IpAddr>()
            {
                out.push((
                    format!("node {name}'s {} {ip}", a.type_),
                    IpRange::single(ip),
                ));
            }
        }
        let spec = node.spec.as_ref();
        for cidr in spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
        {
            if let Ok(r) = IpRange::parse(cidr) {
                out.push((format!("node {name}'s pod CIDR {cidr}"), r));
            }
        }
    }
    for sc in &snapshot.service_cidrs {
        for cidr in sc
            .spec
            .as_ref()
            .and_then(|s| s.cidrs.as_ref())
            .into_iter()
            .flatten()
        {
            if let Ok(r) = IpRange::parse(cidr) {
                out.push((
                    format!("the Service CIDR {cidr} (ServiceCIDR {})", sc.name_any()),
                    r,
                ));
            }
        }
    }
    out
}

fn pool_overlaps(snapshot: &Snapshot, out: &mut Vec<Finding>) {
    const CHECK: &str = "pool-overlap";
    let reserved = reserved_ranges(snapshot);
    let mut clean = true;
    for pool in &snapshot.pools {
        for entry in &pool.spec.addresses {
            let Ok(range) = IpRange::parse(entry) else {
                continue;
            };
            for (what, r) in &reserved {
                if let Some(common) = range.intersection(r) {
                    clean = false;
                    out.push(finding(
                        CHECK,
                        Level::Error,
                        format!("pool {} entry {entry} overlaps {what} ({common})", pool.name_any()),
                        Some(format!(
                            "remove {common} from spec.addresses of IPAddressPool {}: an address in use by the cluster must never be announced",
                            pool.name_any()
                        )),
                    ));
                }
            }
        }
    }
    if clean {
        let what = if snapshot.service_cidrs.is_empty() {
            "node addresses and pod CIDRs (no ServiceCIDR objects to compare with)"
        } else {
            "node addresses, pod CIDRs and Service CIDRs"
        };
        out.push(finding(
            CHECK,
            if snapshot.service_cidrs.is_empty() {
                Level::Warning
            } else {
                Level::Ok
            },
            format!("no pool overlaps {what}"),
            snapshot.service_cidrs.is_empty().then(|| {
                "compare the pools with kube-apiserver's --service-cluster-ip-range by hand"
                    .to_string()
            }),
        ));
    }
}

/// An advertisement's rules, parsed; a selector that does not parse matches nothing.
struct Advertisement {
    name: String,
    pool_names: Vec<String>,
    pool_selectors: Vec<Option<Selector>>,
    node_selectors: Vec<Option<Selector>>,
}

fn parse_selectors(raw: &[LabelSelector]) -> Vec<Option<Selector>> {
    raw.iter()
        .map(|s| Selector::try_from(s.clone()).ok())
        .collect()
}

impl Advertisement {
    fn new(ad: &L2Advertisement) -> Advertisement {
        Advertisement {
            name: ad.name_any(),
            pool_names: ad.spec.ip_address_pools.clone(),
            pool_selectors: parse_selectors(&ad.spec.ip_address_pool_selectors),
            node_selectors: parse_selectors(&ad.spec.node_selectors),
        }
    }

    /// No pool list and no pool selector: every pool.
    fn covers(&self, pool: &IPAddressPool) -> bool {
        (self.pool_names.is_empty() && self.pool_selectors.is_empty())
            || self.pool_names.contains(&pool.name_any())
            || self
                .pool_selectors
                .iter()
                .flatten()
                .any(|s| s.matches(pool.labels()))
    }

    /// No node selector: every node.
    fn selects(&self, node: &Node) -> bool {
        self.node_selectors.is_empty()
            || self
                .node_selectors
                .iter()
                .flatten()
                .any(|s| s.matches(node.labels()))
    }
}

/// Nodes that may announce some pool: selected by an advertisement and not barred.
fn eligible_nodes<'a>(snapshot: &'a Snapshot, ads: &[Advertisement]) -> Vec<&'a Node> {
    snapshot
        .nodes
        .iter()
        .filter(|n| node_barred(n).is_none() && ads.iter().any(|a| a.selects(n)))
        .collect()
}

fn advertisements(snapshot: &Snapshot, ads: &[Advertisement], out: &mut Vec<Finding>) {
    const CHECK: &str = "advertisements";
    let mut fine = true;
    for ad in ads {
        let usable = snapshot
            .nodes
            .iter()
            .filter(|n| ad.selects(n) && node_barred(n).is_none())
            .count();
        if usable == 0 {
            fine = false;
            out.push(finding(
                CHECK,
                Level::Error,
                format!("L2Advertisement {} selects no node that may announce", ad.name),
                Some(format!(
                    "fix spec.nodeSelectors of L2Advertisement {} (compare with `kubectl get nodes --show-labels`; nodes labelled {} never announce)",
                    ad.name,
                    crate::status::EXCLUDE_LABEL
                )),
            ));
        }
        for pool in ad
            .pool_names
            .iter()
            .filter(|p| !snapshot.pools.iter().any(|x| x.name_any() == **p))
        {
            fine = false;
            out.push(finding(
                CHECK,
                Level::Warning,
                format!(
                    "L2Advertisement {} names pool {pool}, which does not exist",
                    ad.name
                ),
                Some("fix the name in spec.ipAddressPools, or create the pool".into()),
            ));
        }
        if ad
            .pool_selectors
            .iter()
            .chain(&ad.node_selectors)
            .any(Option::is_none)
        {
            fine = false;
            out.push(finding(
                CHECK,
                Level::Error,
                format!("L2Advertisement {} has a label selector that does not parse; it matches nothing", ad.name),
                Some("fix its matchExpressions (operators In, NotIn, Exists, DoesNotExist)".into()),
            ));
        }
    }
    for pool in &snapshot.pools {
        if !ads.iter().any(|a| a.covers(pool)) {
            fine = false;
            out.push(finding(
                CHECK,
                Level::Error,
                format!("pool {} is covered by no L2Advertisement: its IPs are allocated but no node answers for them", pool.name_any()),
                Some(format!("create an L2Advertisement with ipAddressPools: [{}] (or one naming no pools, which covers all)", pool.name_any())),
            ));
        }
    }
    if fine {
        out.push(finding(
            CHECK,
            Level::Ok,
            format!(
                "{} advertisement(s) cover every pool and select nodes",
                ads.len()
            ),
            None,
        ));
    }
}

fn membership_secret(snapshot: &Snapshot, scope: &Scope, out: &mut Vec<Finding>) {
    const CHECK: &str = "membership-secret";
    let name = format!("{}/{}", scope.herald_namespace, scope.membership_secret);
    let create = format!(
        "kubectl -n {} create secret generic {} --from-literal=secretkey=\"$(openssl rand -hex 32)\"",
        scope.herald_namespace, scope.membership_secret
    );
    let f = match &snapshot.membership_secret {
        Some(SecretState::Present) => finding(
            CHECK,
            Level::Ok,
            format!("Secret {name} has a secretkey"),
            None,
        ),
        Some(SecretState::Missing) => finding(
            CHECK,
            Level::Error,
            format!(
                "Secret {name} does not exist: speakers cannot join the membership and announce nothing"
            ),
            Some(create),
        ),
        Some(SecretState::NoKey) => finding(
            CHECK,
            Level::Error,
            format!("Secret {name} has no non-empty key secretkey"),
            Some(format!("delete it and run: {create}")),
        ),
        Some(SecretState::Unknown { why }) => finding(
            CHECK,
            Level::Warning,
            format!("Secret {name} could not be read: {why}"),
            Some("run herald check with rights to get Secrets in Herald's namespace".into()),
        ),
        None => return,
    };
    out.push(f);
}

fn speakers(snapshot: &Snapshot, ads: &[Advertisement], scope: &Scope, out: &mut Vec<Finding>) {
    const CHECK: &str = "speakers";
    let by_node: BTreeMap<&str, &Pod> = snapshot
        .speakers
        .iter()
        .filter_map(|p| Some((p.spec.as_ref()?.node_name.as_deref()?, p)))
        .collect();
    let mut missing = Vec::new();
    let mut not_ready = Vec::new();
    let eligible = eligible_nodes(snapshot, ads);
    for node in &eligible {
        let name = node.name_any();
        match by_node.get(name.as_str()) {
            None => missing.push(name),
            Some(p) if !is_ready(p) => not_ready.push(format!("{name} ({})", p.name_any())),
            Some(_) => {}
        }
    }
    let ns = &scope.herald_namespace;
    if !missing.is_empty() {
        out.push(finding(
            CHECK,
            Level::Error,
            format!("no speaker on eligible node(s) {}", missing.join(", ")),
            Some(format!("check the DaemonSet's placement: `kubectl -n {ns} describe daemonset herald-speaker` (tolerations, nodeSelector) and the speaker selector {}", scope.speaker_selector)),
        ));
    }
    if !not_ready.is_empty() {
        out.push(finding(
            CHECK,
            Level::Error,
            format!("speaker not Ready on {}", not_ready.join(", ")),
            Some(format!("`kubectl -n {ns} logs POD`: a speaker is not ready until it has its membership key and its caches")),
        ));
    }
    if missing.is_empty() && not_ready.is_empty() {
        out.push(finding(
            CHECK,
            if eligible.is_empty() {
                Level::Warning
            } else {
                Level::Ok
            },
            format!(
                "a Ready speaker on each of the {} eligible node(s)",
                eligible.len()
            ),
            eligible
                .is_empty()
                .then(|| "no node may announce: see the advertisements check".to_string()),
        ));
    }
}

fn controller(snapshot: &Snapshot, now: Timestamp, out: &mut Vec<Finding>) {
    const CHECK: &str = "controller";
    let status = crate::status::leader_of(snapshot.controller_lease.as_ref(), now);
    out.push(match status.leader {
        Some(leader) => finding(CHECK, Level::Ok, format!("controller leader {leader}"), None),
        None => finding(
            CHECK,
            Level::Error,
            status.problem.unwrap_or_else(|| "no controller leader".into()),
            Some("`kubectl -n herald-system get pods -l app.kubernetes.io/component=controller` and its logs: without a leader no IP is allocated or released".into()),
        ),
    });
}

/// The findings as a table, with each fix under its finding.
pub fn render_table(findings: &[Finding]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for f in findings {
        let level = match f.level {
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Ok => "ok",
        };
        rows.push(vec![level.into(), f.check.into(), f.message.clone()]);
        if let Some(fix) = &f.fix {
            rows.push(vec![String::new(), String::new(), format!("fix: {fix}")]);
        }
    }
    table::render(&["LEVEL", "CHECK", "FINDING"], &rows)
}

#[cfg(test)]
mod tests;
