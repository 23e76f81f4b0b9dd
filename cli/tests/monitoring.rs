//! The alerts and the dashboard of `deploy/monitoring/` against Herald's real metrics.
//!
//! A real controller pair runs against the lab's API server and fills one pool; its `/metrics`
//! text, and the text of the speaker's own metric registry set as the runtime sets it, become
//! the input series of `promtool test rules` (promtool built from its Go module by
//! `tests/lab/build-promtool.sh`). Each alert is shown to fire on the fault it is for and to
//! stay quiet otherwise; every metric name in the alerts and the dashboard must be one Herald
//! exports, and every dashboard query must parse (`promtool check rules`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_cli::metrics_text::{self, Sample};
use herald_speaker::metrics::{IpLabels, Metrics as SpeakerMetrics};
use herald_tests::{TestEnv, init_tracing, pool_spec};
use serde_json::{Value as Json, json};
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rules_spec() -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/monitoring/prometheus-rule.yaml"))
        .expect("the PrometheusRule");
    let rule: Value = serde_yaml::from_str(&text).expect("YAML");
    assert_eq!(rule["kind"], Value::from("PrometheusRule"));
    rule["spec"].clone()
}

fn dashboard() -> Json {
    let text = std::fs::read_to_string(repo().join("deploy/monitoring/grafana-dashboard.json"))
        .expect("the dashboard");
    serde_json::from_str(&text).expect("JSON")
}

fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &Json, out: &mut Vec<String>) {
        match v {
            Json::Object(m) => {
                if let Some(Json::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Json::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard(), &mut out);
    out
}

fn alert_rules() -> Vec<Value> {
    rules_spec()["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

/// promtool, built (or found in the cache) by the repository's script.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("HERALD_PROMTOOL") {
        return PathBuf::from(p);
    }
    let out = Command::new(repo().join("tests/lab/build-promtool.sh"))
        .output()
        .expect("tests/lab/build-promtool.sh runs");
    assert!(
        out.status.success(),
        "building promtool failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn run_promtool(args: &[&str], dir: &Path) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bherald_[a-z0-9_]+").expect("regex");
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// Series names a scrape of `text` gives (histograms also as `_bucket`, `_sum`, `_count`).
fn scraped_names(text: &str) -> BTreeSet<String> {
    metrics_text::parse(text)
        .expect("exposition")
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// The speaker's registry as one node's speaker sets it: `announced` IPs, quorum, members;
/// optionally a conflict on one IP. Names and label names come from the speaker's own code.
fn speaker_text(announced: &[&str], quorum: bool, conflict_on: Option<&str>) -> String {
    let m = SpeakerMetrics::default();
    for ip in announced {
        let labels = IpLabels { ip: ip.to_string() };
        m.set_announced(ip.parse().expect("an IP"), &["eth0".to_string()]);
        m.requests_received.get_or_create(&labels).inc();
        m.responses_sent.get_or_create(&labels).inc();
        m.gratuitous_sent.get_or_create(&labels).inc_by(6);
        m.ips_gained.inc();
    }
    if let Some(ip) = conflict_on {
        m.conflicts
            .get_or_create(&IpLabels { ip: ip.to_string() })
            .inc();
    }
    m.members.set(3);
    m.quorum.set(i64::from(quorum));
    m.encode()
}

/// One scrape target: its text and the labels Prometheus adds.
struct Target {
    text: String,
    labels: BTreeMap<String, String>,
}

fn target(text: String, job: &str, instance: &str, pod: &str, node: &str) -> Target {
    let labels = [
        ("job", job),
        ("instance", instance),
        ("pod", pod),
        ("node", node),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Target { text, labels }
}

/// promtool input series: every sample of every target, constant for 30 minutes; `delayed`
/// series (by name) only from minute 5.
fn input_series(targets: &[&Target], delayed: &[&str]) -> Vec<Json> {
    let mut out = Vec::new();
    for t in targets {
        for Sample {
            name,
            labels,
            value,
        } in metrics_text::parse(&t.text).expect("exposition")
        {
            let mut all = t.labels.clone();
            all.extend(labels);
            let selector = all
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(",");
            let values = if delayed.contains(&name.as_str()) {
                format!("_x5 {value}+0x25")
            } else {
                format!("{value}+0x30")
            };
            out.push(json!({"series": format!("{name}{{{selector}}}"), "values": values}));
        }
    }
    out
}

/// The alert's annotations as Prometheus renders them for these labels and value (the
/// templates use `$labels.x`, `$value` and `$value | humanizePercentage` only).
fn annotations(
    alert: &str,
    labels: &BTreeMap<String, String>,
    value: f64,
) -> BTreeMap<String, String> {
    let rule = alert_rules()
        .into_iter()
        .find(|r| r["alert"].as_str() == Some(alert))
        .unwrap_or_else(|| panic!("no alert {alert}"));
    let placeholder = regex::Regex::new(r"\{\{\s*([^}]*?)\s*\}\}").expect("regex");
    rule["annotations"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let template = v.as_str().unwrap_or_default();
            let rendered =
                placeholder.replace_all(template, |c: &regex::Captures| match c[1].trim() {
                    "$value" => format!("{value}"),
                    "$value | humanizePercentage" => format!("{}%", value * 100.0),
                    other => match other.strip_prefix("$labels.") {
                        Some(l) => labels.get(l).cloned().unwrap_or_default(),
                        None => panic!("{alert}: template {other:?} not understood by this test"),
                    },
                });
            (
                k.as_str().unwrap_or_default().to_string(),
                rendered.into_owned(),
            )
        })
        .collect()
}

fn expect(alert: &str, at: &str, firing: Vec<(BTreeMap<String, String>, f64)>) -> Json {
    let severity = alert_rules()
        .into_iter()
        .find(|r| r["alert"].as_str() == Some(alert))
        .and_then(|r| r["labels"]["severity"].as_str().map(str::to_string))
        .unwrap_or_default();
    let alerts: Vec<Json> = firing
        .into_iter()
        .map(|(mut labels, value)| {
            let annotations = annotations(alert, &labels, value);
            labels.insert("severity".into(), severity.clone());
            json!({"exp_labels": labels, "exp_annotations": annotations})
        })
        .collect();
    json!({"eval_time": at, "alertname": alert, "exp_alerts": alerts})
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ALL_ALERTS: [&str; 7] = [
    "HeraldPoolNearlyExhausted",
    "HeraldIPNotAnnounced",
    "HeraldIPAnnouncedByTwoNodes",
    "HeraldIPConflict",
    "HeraldSpeakerWithoutQuorum",
    "HeraldControllerWithoutLeader",
    "HeraldControllerAbsent",
];

fn quiet_except(at: &str, firing: &[Json]) -> Vec<Json> {
    let named: BTreeSet<&str> = firing
        .iter()
        .filter_map(|f| f["alertname"].as_str())
        .collect();
    let mut out: Vec<Json> = firing.to_vec();
    out.extend(
        ALL_ALERTS
            .iter()
            .filter(|a| !named.contains(*a))
            .map(|a| expect(a, at, Vec::new())),
    );
    out
}

/// Waits until the controller's metrics show, for each pool, its IPv4 addresses in use.
async fn wait_in_use(
    metrics: &herald_controller::metrics::Metrics,
    expected: &[(&str, f64)],
) -> anyhow::Result<String> {
    for _ in 0..200 {
        let text = metrics.encode();
        let samples = metrics_text::parse(&text)?;
        let shown = |pool: &str, n: f64| {
            samples.iter().any(|s| {
                s.name.starts_with("herald_allocator_addresses_in_use")
                    && s.labels.get("pool").map(String::as_str) == Some(pool)
                    && s.labels.get("family").map(String::as_str) == Some("ipv4")
                    && s.value == n
            })
        };
        if expected.iter().all(|(pool, n)| shown(pool, *n)) {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the controller never showed {expected:?} addresses in use")
}

#[tokio::test]
async fn every_alert_fires_on_its_fault_and_only_then() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("monitoring").await?;
    let result = async {
        // A full pool (4 of 4) and a quiet one (1 of 8), one Service waiting for the full one.
        env.apply_pool("full", pool_spec(&["203.0.113.48/30"])).await?;
        env.apply_pool("quiet", pool_spec(&["203.0.113.56/29"])).await?;
        let leader = env.start_controller();
        for _ in 0..100 {
            if leader.is_leader() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(leader.is_leader(), "the first controller never led");
        let standby = env.start_controller();
        let full = env.pool_name("full");
        let quiet = env.pool_name("quiet");
        let mut ips = Vec::new();
        for (name, pool) in [("a", &full), ("b", &full), ("c", &full), ("d", &full), ("e", &quiet)] {
            env.apply_service(name, &[("herald.dev/address-pool", pool.as_str())], |_| {}).await?;
            ips.push(env.wait_any_ip(name).await?[0].to_string());
        }
        env.apply_service("waiting", &[("herald.dev/address-pool", full.as_str())], |_| {}).await?;
        env.wait_event("waiting", "AllocationFailed").await?;
        let leader_text = wait_in_use(&leader.metrics, &[(&full, 4.0), (&quiet, 1.0)]).await?;
        let standby_text = standby.metrics.encode();
        standby.stop().await;
        leader.stop().await;
        // What the leader's scrape shows of its own state.
        assert!(leader_text.contains("herald_controller_leader 1"), "{leader_text}");
        assert!(standby_text.contains("herald_controller_leader 0"), "{standby_text}");
        assert!(leader_text.contains("reason=\"exhausted\""), "{leader_text}");

        let controller_a = target(leader_text.clone(), "herald-controller", "192.0.2.11:7472", "herald-controller-a", "node-a");
        let controller_b = target(standby_text.clone(), "herald-controller", "192.0.2.12:7472", "herald-controller-b", "node-b");
        let ip = |i: usize| ips[i].as_str();
        let speaker = |node: &str, i: u8, text: String| target(text, "herald-speaker", &format!("192.0.2.{}:7473", 20 + i), &format!("herald-speaker-{node}"), node);
        let healthy_speakers = [
            speaker("node-a", 0, speaker_text(&[ip(0), ip(1)], true, None)),
            speaker("node-b", 1, speaker_text(&[ip(2), ip(3)], true, None)),
            speaker("node-c", 2, speaker_text(&[ip(4)], true, None)),
        ];
        let with = |extra: &[&Target], speakers: &[&Target]| -> Vec<Json> {
            let mut all: Vec<&Target> = extra.to_vec();
            all.extend(speakers);
            input_series(&all, &[])
        };
        let healthy: Vec<&Target> = healthy_speakers.iter().collect();
        let mut tests = Vec::new();

        // Healthy: only the full pool is reported.
        tests.push(json!({
            "name": "healthy cluster, one full pool",
            "interval": "1m",
            "input_series": with(&[&controller_a, &controller_b], &healthy),
            "alert_rule_test": quiet_except("20m", &[expect("HeraldPoolNearlyExhausted", "20m", vec![(labels(&[("pool", &full), ("family", "ipv4")]), 1.0)])]),
        }));
        // An allocated IP nobody announces.
        let missing = speaker("node-c", 2, speaker_text(&[], true, None));
        tests.push(json!({
            "name": "an allocated IP no node announces",
            "interval": "1m",
            "input_series": with(&[&controller_a, &controller_b], &[&healthy_speakers[0], &healthy_speakers[1], &missing]),
            "alert_rule_test": [
                expect("HeraldIPNotAnnounced", "3m", Vec::new()),
                expect("HeraldIPNotAnnounced", "10m", vec![(BTreeMap::new(), 5.0)]),
            ],
        }));
        // Two nodes announce one IP.
        let double = speaker("node-c", 2, speaker_text(&[ip(4), ip(0)], true, None));
        tests.push(json!({
            "name": "two nodes announce one IP",
            "interval": "1m",
            "input_series": with(&[&controller_a, &controller_b], &[&healthy_speakers[0], &healthy_speakers[1], &double]),
            "alert_rule_test": [expect("HeraldIPAnnouncedByTwoNodes", "10m", vec![(labels(&[("ip", ip(0))]), 2.0)]), expect("HeraldIPNotAnnounced", "10m", Vec::new())],
        }));
        // Another MAC answers: the counter appears at minute 5.
        let conflicted = speaker("node-a", 0, speaker_text(&[ip(0), ip(1)], true, Some(ip(0))));
        let mut series = input_series(&[&controller_a, &controller_b, &healthy_speakers[1], &healthy_speakers[2]], &[]);
        series.extend(input_series(&[&conflicted], &["herald_speaker_conflicts_total"]));
        let conflict_labels = {
            let mut l = conflicted.labels.clone();
            l.insert("ip".into(), ip(0).into());
            l
        };
        tests.push(json!({
            "name": "another MAC answers for an announced IP",
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                expect("HeraldIPConflict", "3m", Vec::new()),
                expect("HeraldIPConflict", "8m", vec![(conflict_labels, 1.0)]),
                expect("HeraldIPConflict", "30m", Vec::new()),
            ],
        }));
        // A speaker without quorum.
        let fenced = speaker("node-b", 1, speaker_text(&[], false, None));
        tests.push(json!({
            "name": "a speaker without quorum",
            "interval": "1m",
            "input_series": with(&[&controller_a, &controller_b], &[&healthy_speakers[0], &fenced, &healthy_speakers[2]]),
            "alert_rule_test": [expect("HeraldSpeakerWithoutQuorum", "5m", vec![(fenced.labels.clone(), 0.0)])],
        }));
        // The leader is gone: only the standby is scraped, and it has not taken over.
        tests.push(json!({
            "name": "the controller without a leader",
            "interval": "1m",
            "input_series": with(&[&controller_b], &healthy),
            "alert_rule_test": quiet_except("10m", &[expect("HeraldControllerWithoutLeader", "10m", vec![(BTreeMap::new(), 0.0)])]),
        }));
        // No controller scraped at all.
        tests.push(json!({
            "name": "no controller at all",
            "interval": "1m",
            "input_series": with(&[], &healthy),
            "alert_rule_test": quiet_except("10m", &[expect("HeraldControllerAbsent", "10m", vec![(BTreeMap::new(), 1.0)])]),
        }));

        // promtool: the rules parse, the dashboard's queries parse, and every test passes.
        let dir = scratch("monitoring");
        std::fs::write(dir.join("rules.yml"), serde_yaml::to_string(&rules_spec())?)?;
        let dashboard_rules = json!({"groups": [{"name": "dashboard", "rules": dashboard_exprs().iter().enumerate()
            .map(|(i, e)| json!({"record": format!("herald:dashboard_query_{i}"), "expr": e})).collect::<Vec<_>>()}]});
        std::fs::write(dir.join("dashboard-queries.yml"), serde_yaml::to_string(&dashboard_rules)?)?;
        let unit = json!({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests});
        std::fs::write(dir.join("alerts.test.yml"), serde_yaml::to_string(&unit)?)?;
        run_promtool(&["check", "rules", "rules.yml", "dashboard-queries.yml"], &dir);
        run_promtool(&["test", "rules", "alerts.test.yml"], &dir);

        // Every metric the alerts and the dashboard read is one Herald exports.
        let exported: BTreeSet<String> = scraped_names(&leader_text)
            .into_iter()
            .chain(scraped_names(&speaker_text(&[ip(0)], true, Some(ip(0)))))
            .chain(scraped_names(&{
                let m = SpeakerMetrics::default();
                m.frames_dropped.get_or_create(&herald_speaker::metrics::ReasonLabels { reason: "short" }).inc();
                m.heartbeats_rejected.get_or_create(&herald_speaker::metrics::ReasonLabels { reason: "bad_tag" }).inc();
                m.ips_lost.inc();
                m.encode()
            }))
            .collect();
        let mut read: BTreeSet<String> = dashboard_exprs().iter().flat_map(|e| metric_names(e)).collect();
        for rule in alert_rules() {
            read.extend(metric_names(rule["expr"].as_str().unwrap_or_default()));
        }
        let unknown: Vec<_> = read.difference(&exported).collect();
        assert!(unknown.is_empty(), "alerts or dashboard read metrics Herald does not export: {unknown:?}");
        anyhow::Ok(())
    }
    .await;
    env.cleanup().await?;
    result
}

#[test]
fn every_alert_the_issue_asks_for_exists_and_says_what_to_do() {
    let rules = alert_rules();
    let names: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ALL_ALERTS.iter().map(|a| a.to_string()).collect());
    for rule in &rules {
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{rule:?} has no {key}"
            );
        }
        assert!(
            rule["labels"]["severity"].as_str().is_some(),
            "{rule:?} has no severity"
        );
    }
}

#[test]
fn the_dashboard_covers_pools_announcements_and_membership() {
    let d = dashboard();
    let rows: Vec<&str> = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(rows, ["Pools", "Announcements", "Membership", "Controller"]);
    let titles: BTreeSet<&str> = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for t in [
        "Pool usage",
        "Owner per IP",
        "Failovers",
        "Conflicts",
        "Members heard",
        "Quorum",
        "Leader",
    ] {
        assert!(titles.contains(t), "no panel {t:?}");
    }
    // Every query goes to the dashboard's data source variable.
    for p in d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] != "row")
    {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
    }
}

#[test]
fn the_pod_monitors_select_the_pods_deploy_kustomize_creates() {
    let monitors = std::fs::read_to_string(repo().join("deploy/monitoring/pod-monitors.yaml"))
        .expect("pod monitors");
    let mut selected = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&monitors) {
        let m = <Value as serde::Deserialize>::deserialize(doc).expect("YAML");
        let name = m["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let port = m["spec"]["podMetricsEndpoints"][0]["port"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        selected.insert(name, (m["spec"]["selector"]["matchLabels"].clone(), port));
    }
    for (monitor, file) in [
        ("herald-controller", "controller.yaml"),
        ("herald-speaker", "speaker.yaml"),
    ] {
        let text =
            std::fs::read_to_string(repo().join("deploy/kustomize").join(file)).expect("manifest");
        let workload = serde_yaml::Deserializer::from_str(&text)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("YAML"))
            .find(|d| matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")))
            .expect("a workload");
        let pod_labels = workload["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        let (selector, port) = &selected[monitor];
        for (k, v) in selector.as_mapping().into_iter().flatten() {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{monitor} selects {k:?}={v:?}, which {file}'s pods do not carry"
            );
        }
        let ports: Vec<&str> = workload["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            ports.contains(&port.as_str()),
            "{monitor} scrapes port {port:?}; {file} names {ports:?}"
        );
    }
}
