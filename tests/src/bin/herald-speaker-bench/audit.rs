//! API requests by the system under test, read from the API server's audit log. The lab's API
//! server logs every request of the service accounts in `herald-system` and `metallb-system`
//! once, when it is received (`tests/lab/control-plane.sh`: level Metadata, stage
//! RequestReceived only), so a window's count is exact for each component and needs no baseline
//! window without it.

use super::*;
use k8s_openapi::jiff::Timestamp;

/// One request, as the audit log has it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    /// Microseconds since the Unix epoch, when the API server received it.
    pub(crate) at_us: i64,
    pub(crate) username: String,
    /// `VERB group/resource[/subresource] (scope)`, as [`ApiSnapshot`] names requests.
    pub(crate) key: String,
}

/// The request of one audit log line, if it is one (an `audit.k8s.io` Event at stage
/// RequestReceived).
pub(crate) fn parse_line(line: &str) -> Option<Request> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["kind"] != "Event" || v["stage"] != "RequestReceived" {
        return None;
    }
    let at: Timestamp = v["requestReceivedTimestamp"].as_str()?.parse().ok()?;
    let username = v["user"]["username"].as_str()?.to_string();
    let verb = v["verb"].as_str()?.to_uppercase();
    let r = &v["objectRef"];
    let key = match r["resource"].as_str() {
        None => {
            let path = v["requestURI"].as_str().unwrap_or("?");
            let path = path.split('?').next().unwrap_or(path);
            format!("{verb} {path} (non-resource)")
        }
        Some(resource) => {
            let mut k = verb;
            k.push(' ');
            if let Some(g) = r["apiGroup"].as_str().filter(|g| !g.is_empty()) {
                k.push_str(g);
                k.push('/');
            }
            k.push_str(resource);
            if let Some(sub) = r["subresource"].as_str().filter(|s| !s.is_empty()) {
                k.push('/');
                k.push_str(sub);
            }
            let scope = if r["name"].as_str().is_some_and(|n| !n.is_empty()) {
                "resource"
            } else if r["namespace"].as_str().is_some_and(|n| !n.is_empty()) {
                "namespace"
            } else {
                "cluster"
            };
            k.push_str(&format!(" ({scope})"));
            k
        }
    };
    Some(Request {
        at_us: at.as_microsecond(),
        username,
        key,
    })
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn unix_us() -> i64 {
    Timestamp::now().as_microsecond()
}

/// What one component of a system asked for in a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ComponentRequests {
    pub(crate) total: u64,
    pub(crate) by_key: BTreeMap<String, u64>,
}

/// Requests of `system`'s components received in `[from_us, to_us)`, by component.
pub(crate) fn count(
    system: System,
    text: &str,
    from_us: i64,
    to_us: i64,
) -> BTreeMap<&'static str, ComponentRequests> {
    let mut out: BTreeMap<&'static str, ComponentRequests> = BTreeMap::new();
    for component in ["speaker", "controller"] {
        out.insert(component, ComponentRequests::default());
    }
    for r in text.lines().filter_map(parse_line) {
        if r.at_us < from_us || r.at_us >= to_us {
            continue;
        }
        let Some(component) = system.component_of(&r.username) else {
            continue;
        };
        let c = out.entry(component).or_default();
        c.total += 1;
        *c.by_key.entry(r.key).or_default() += 1;
    }
    out
}

/// Per-minute figures of a window's counts, as the results file keeps them.
pub(crate) fn window(
    counts: &BTreeMap<&'static str, ComponentRequests>,
    seconds: f64,
) -> ApiWindow {
    let per_min = |n: u64| round(n as f64 * 60.0 / seconds.max(1e-9), 2);
    let mut components = BTreeMap::new();
    let mut all = 0;
    for (name, c) in counts {
        all += c.total;
        components.insert(
            name.to_string(),
            ComponentWindow {
                requests: c.total,
                per_min: per_min(c.total),
                by_request: c.by_key.clone(),
            },
        );
    }
    ApiWindow {
        seconds: round(seconds, 1),
        requests: all,
        per_min: per_min(all),
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"RequestReceived","requestURI":"/api/v1/services?allowWatchBookmarks=true\u0026watch=true","verb":"watch","user":{"username":"system:serviceaccount:herald-system:herald-speaker","groups":["system:serviceaccounts","system:serviceaccounts:herald-system"]},"objectRef":{"resource":"services","apiVersion":"v1"},"requestReceivedTimestamp":"2026-12-01T00:00:01.000000Z","stageTimestamp":"2026-12-01T00:00:01.000000Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"RequestReceived","requestURI":"/api/v1/namespaces/b/services/s/status","verb":"patch","user":{"username":"system:serviceaccount:herald-system:herald-speaker"},"objectRef":{"resource":"services","namespace":"b","name":"s","apiVersion":"v1","subresource":"status"},"requestReceivedTimestamp":"2026-12-01T00:00:02.500000Z","stageTimestamp":"2026-12-01T00:00:02.500000Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"RequestReceived","requestURI":"/apis/coordination.k8s.io/v1/namespaces/herald-system/leases/x","verb":"update","user":{"username":"system:serviceaccount:herald-system:herald-controller"},"objectRef":{"resource":"leases","namespace":"herald-system","name":"x","apiGroup":"coordination.k8s.io","apiVersion":"v1"},"requestReceivedTimestamp":"2026-12-01T00:00:03Z","stageTimestamp":"2026-12-01T00:00:03Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"ResponseComplete","requestURI":"/apis/coordination.k8s.io/v1/namespaces/herald-system/leases/x","verb":"update","user":{"username":"system:serviceaccount:herald-system:herald-controller"},"objectRef":{"resource":"leases","namespace":"herald-system","name":"x","apiGroup":"coordination.k8s.io","apiVersion":"v1"},"requestReceivedTimestamp":"2026-12-01T00:00:03Z","stageTimestamp":"2026-12-01T00:00:03Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a4","stage":"RequestReceived","requestURI":"/metrics","verb":"get","user":{"username":"system:serviceaccount:metallb-system:speaker"},"requestReceivedTimestamp":"2026-12-01T00:00:04Z","stageTimestamp":"2026-12-01T00:00:04Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a5","stage":"RequestReceived","requestURI":"/api/v1/nodes","verb":"list","user":{"username":"system:serviceaccount:herald-system:herald-speaker"},"objectRef":{"resource":"nodes","apiVersion":"v1"},"requestReceivedTimestamp":"2026-12-01T00:01:00Z","stageTimestamp":"2026-12-01T00:01:00Z"}
not json
"#;

    #[test]
    fn lines_become_requests() {
        let requests: Vec<Request> = LOG.lines().filter_map(parse_line).collect();
        // The ResponseComplete stage and the garbage are not requests.
        assert_eq!(requests.len(), 5);
        assert_eq!(requests[0].key, "WATCH services (cluster)");
        assert_eq!(requests[1].key, "PATCH services/status (resource)");
        assert_eq!(
            requests[2].key,
            "UPDATE coordination.k8s.io/leases (resource)"
        );
        assert_eq!(requests[3].key, "GET /metrics (non-resource)");
        let t0: Timestamp = "2026-12-01T00:00:01Z".parse().unwrap();
        assert_eq!(requests[0].at_us, t0.as_microsecond());
        assert_eq!(requests[1].at_us - requests[0].at_us, 1_500_000);
    }

    #[test]
    fn a_window_counts_only_its_systems_components() {
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let from = t0.as_microsecond();
        // [0 s, 60 s): the 01:00 list is outside.
        let counts = count(System::Herald, LOG, from, from + 60_000_000);
        assert_eq!(counts["speaker"].total, 2);
        assert_eq!(counts["controller"].total, 1);
        assert_eq!(
            counts["speaker"].by_key["PATCH services/status (resource)"],
            1
        );
        let metallb = count(System::Metallb, LOG, from, from + 60_000_000);
        assert_eq!(metallb["speaker"].total, 1);
        assert_eq!(metallb["controller"].total, 0);
        let w = window(&counts, 60.0);
        assert_eq!(w.requests, 3);
        assert_eq!(w.per_min, 3.0);
        assert_eq!(w.components["speaker"].per_min, 2.0);
    }
}
