//! The side-by-side results (issue 12): each figure of a `run` results file as one JSON line
//! (`system`, `metric`, `value`, `unit`, `trials`, the versions), and the Markdown table of a
//! file of such lines with both systems' columns and their ratio.

use super::*;
use herald_tests::bench::stats::percentile;
use herald_tests::bench::table::Align::{Left as L, Right as R};
use herald_tests::bench::table::Table;

fn line(results: &Value, metric: String, value: Value, unit: &str, trials: Value) -> Value {
    let system = results["system"].as_str().unwrap_or("herald");
    json!({
        "date": results["date"],
        "system": system,
        "metric": metric,
        "value": value,
        "unit": unit,
        "trials": trials,
        "version": results["versions"][system]["version"],
        "versions": results["versions"],
    })
}

/// The `p`th percentile (nearest rank) of failover times over every trial, where a trial with no
/// failover within the limit (`None`) ranks above every failover; `None` when the percentile
/// lands on such a trial (or there are no trials).
pub(crate) fn censored_percentile(times: &[Option<f64>], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = times.iter().map(|t| t.unwrap_or(f64::INFINITY)).collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, p).filter(|x| x.is_finite())
}

/// The versus lines of one results file.
pub(crate) fn lines(results: &Value) -> anyhow::Result<Vec<Value>> {
    let system = results["system"].as_str().unwrap_or("herald");
    ensure!(
        system == "herald" || system == "metallb",
        "the results name an unknown system {system:?}"
    );
    let mut out = Vec::new();
    let fo = &results["failover"];
    if let Some(faults) = fo["faults"].as_object() {
        let limit = fo["failover_max_ms"].clone();
        for (fault, x) in faults {
            let f = fault.replace('-', "_");
            // Every valid trial, a failover or none within the limit.
            let times: Vec<Option<f64>> = x["trials"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["failover_ms"].as_f64())
                .collect();
            let n = json!(times.len());
            for (stat, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
                let mut l = line(
                    results,
                    format!("failover_{f}_{stat}_ms"),
                    json!(censored_percentile(&times, p)),
                    "ms",
                    n.clone(),
                );
                if l["value"].is_null() && !times.is_empty() {
                    // It lands on a trial without failover: only a lower bound is known.
                    l["above"] = limit.clone();
                }
                out.push(l);
            }
            out.push(line(
                results,
                format!("failover_{f}_trials_without_failover"),
                json!(times.iter().filter(|t| t.is_none()).count()),
                "trials",
                n.clone(),
            ));
        }
    }
    if let Some(two) = fo.get("two_macs") {
        let trials: u64 = two["by_fault"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v["trials"].as_u64()).sum())
            .unwrap_or(0);
        out.push(line(
            results,
            "failover_requests_answered_by_two_macs".into(),
            two["during_trials"].clone(),
            "requests",
            json!(trials),
        ));
        let (changes, expected) = two["by_fault"]
            .as_object()
            .map(|m| {
                m.values().fold((0, 0), |(c, e), v| {
                    (
                        c + v["mac_changes"].as_u64().unwrap_or(0),
                        e + v["mac_changes_expected"].as_u64().unwrap_or(0),
                    )
                })
            })
            .unwrap_or((0, 0));
        out.push(line(
            results,
            "failover_mac_changes_beyond_one_each_way".into(),
            json!(changes.saturating_sub(expected)),
            "changes",
            json!(trials),
        ));
    }
    for r in results["resources"].as_array().into_iter().flatten() {
        if r["when"] != "running" || r["services"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let n = r["services"].as_u64().unwrap_or(0);
        let speakers: Vec<&Value> = r["speakers"].as_array().into_iter().flatten().collect();
        let rss = speakers
            .iter()
            .filter_map(|s| s["vmhwm_kib"].as_f64())
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let cpu: Vec<f64> = speakers
            .iter()
            .filter_map(|s| s["cpu_percent"].as_f64())
            .collect();
        out.push(line(
            results,
            format!("speaker_peak_rss_{n}_services_mib"),
            json!(rss.map(|k| round(k / 1024.0, 1))),
            "MiB (highest speaker)",
            json!(speakers.len()),
        ));
        out.push(line(
            results,
            format!("speaker_idle_cpu_{n}_services_percent"),
            json!((!cpu.is_empty()).then(|| round(cpu.iter().sum::<f64>() / cpu.len() as f64, 3))),
            "% of a core (mean of the speakers)",
            json!(cpu.len()),
        ));
    }
    for r in results["scale"].as_array().into_iter().flatten() {
        let n = r["services"].as_u64().unwrap_or(0);
        for (what, key) in [
            ("ingress", "last_create_to_last_ingress_s"),
            ("announcer", "last_create_to_last_announcer_s"),
        ] {
            let written = &r[if what == "ingress" {
                "ingress_written"
            } else {
                "announcer_written"
            }];
            // Incomplete: no figure, not the time of the last status that did arrive.
            let value = if written.as_u64() == Some(n) {
                r[key].clone()
            } else {
                Value::Null
            };
            out.push(line(
                results,
                format!("status_{what}_after_last_create_{n}_services_s"),
                value,
                "s",
                json!(1),
            ));
        }
    }
    for r in results["api"].as_array().into_iter().flatten() {
        let n = r["services"].as_u64().unwrap_or(0);
        for (who, key) in [
            ("", "per_min"),
            ("speakers_", "speakers_per_min"),
            ("controller_", "controller_per_min"),
        ] {
            out.push(line(
                results,
                format!("api_requests_per_min_{who}{n}_services"),
                r[key].clone(),
                "requests/min",
                json!(1),
            ));
        }
    }
    Ok(out)
}

/// One system's value of a figure as the table shows it.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Known(f64),
    /// Only a lower bound: a failover percentile that lands on a trial without failover.
    Above(f64),
    /// Not measured (or not complete).
    Missing,
}

impl Cell {
    fn of(line: &Value) -> Cell {
        match (line["value"].as_f64(), line["above"].as_f64()) {
            (Some(v), _) => Cell::Known(v),
            (None, Some(bound)) => Cell::Above(bound),
            (None, None) => Cell::Missing,
        }
    }

    /// MetalLB / Herald; a bound when one side is.
    fn ratio(herald: &Cell, metallb: &Cell) -> String {
        match (herald, metallb) {
            (Cell::Known(h), Cell::Known(m)) if *h > 0.0 => format!("{:.1}×", m / h),
            (Cell::Known(h), Cell::Above(m)) if *h > 0.0 => format!("> {:.1}×", m / h),
            (Cell::Above(h), Cell::Known(m)) if *h > 0.0 => format!("< {:.1}×", m / h),
            _ => "–".into(),
        }
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Known(v) => out.write_str(&f(&json!(v))),
            Cell::Above(b) => write!(out, "> {}", f(&json!(b))),
            Cell::Missing => out.write_str("–"),
        }
    }
}

/// The Markdown table of a versus results file: one row per metric, in the order they first
/// appear, with Herald's and MetalLB's values (the last line of each) and MetalLB / Herald.
pub(crate) fn table(text: &str) -> anyhow::Result<String> {
    let mut order: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(l).with_context(|| format!("line {} is not JSON", i + 1))?;
        let metric = v["metric"]
            .as_str()
            .with_context(|| format!("line {} has no metric", i + 1))?
            .to_string();
        let system = v["system"]
            .as_str()
            .with_context(|| format!("line {} has no system", i + 1))?
            .to_string();
        if !order.contains(&metric) {
            order.push(metric.clone());
        }
        units.insert(metric.clone(), f(&v["unit"]));
        cells.insert((metric, system), v);
    }
    let mut t = Table::new(&[
        ("figure", L),
        ("unit", L),
        ("trials", R),
        ("Herald", R),
        ("MetalLB", R),
        ("MetalLB / Herald", R),
    ]);
    for m in &order {
        let get = |s: &str| cells.get(&(m.clone(), s.to_string()));
        let cell = |s: &str| get(s).map(Cell::of).unwrap_or(Cell::Missing);
        let (h, mb) = (cell("herald"), cell("metallb"));
        let ratio = Cell::ratio(&h, &mb);
        let trials = [get("herald"), get("metallb")]
            .map(|v| v.map(|v| f(&v["trials"])).unwrap_or_else(|| "–".into()));
        let trials = if trials[0] == trials[1] {
            trials[0].clone()
        } else {
            format!("{} / {}", trials[0], trials[1])
        };
        t.row([
            format!("`{m}`"),
            units.get(m).cloned().unwrap_or_default(),
            trials,
            h.to_string(),
            mb.to_string(),
            ratio,
        ]);
    }
    Ok(t.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trials: `n - 1` at `typical` and one at `last` (`None`: no failover).
    fn trials(n: usize, typical: f64, last: Option<f64>) -> Value {
        let mut t: Vec<Value> = (1..n).map(|_| json!({"failover_ms": typical})).collect();
        t.push(json!({"failover_ms": last}));
        json!(t)
    }

    fn results(system: &str, p99: f64) -> Value {
        // MetalLB once did not fail over after SIGTERM within the limit.
        let sigterm_last = (system == "herald").then_some(400.0);
        json!({
            "date": "2026-12-01T01:00:00Z",
            "system": system,
            "versions": {"herald": {"version": "0.1.0"}, "metallb": {"version": "v0.16.1"}},
            "failover": {
                "failover_max_ms": 15000,
                "faults": {
                    "sigkill": {"trials": trials(20, 500.0, Some(p99))},
                    "link-down": {"trials": trials(20, 510.0, Some(610.0))},
                    "sigterm": {"trials": trials(20, 300.0, sigterm_last)}
                },
                "two_macs": {"during_trials": 0, "by_fault": {
                    "sigkill": {"trials": 20, "mac_changes": 41, "mac_changes_expected": 40},
                    "link-down": {"trials": 20, "mac_changes": 40, "mac_changes_expected": 40}
                }}
            },
            "resources": [
                {"services": 0, "when": "running", "speakers": []},
                {"services": 1000, "when": "running", "speakers": [
                    {"vmhwm_kib": 20480.0, "cpu_percent": 0.3},
                    {"vmhwm_kib": 19456.0, "cpu_percent": 0.5}
                ]},
                {"services": 1000, "when": "after restart", "speakers": [{"vmhwm_kib": 40000.0, "cpu_percent": 9.0}]}
            ],
            "scale": [
                {"services": 1000, "ingress_written": 1000, "announcer_written": 1000,
                 "last_create_to_last_ingress_s": 0.02, "last_create_to_last_announcer_s": 0.5},
                {"services": 10000, "ingress_written": 10000, "announcer_written": 9000,
                 "last_create_to_last_ingress_s": 0.03, "last_create_to_last_announcer_s": 30.0}
            ],
            "api": [{"services": 100, "per_min": 6.0, "speakers_per_min": 4.5, "controller_per_min": 1.5}]
        })
    }

    fn metric<'a>(lines: &'a [Value], name: &str) -> &'a Value {
        lines
            .iter()
            .find(|l| l["metric"] == name)
            .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
    }

    #[test]
    fn every_figure_is_a_line() {
        let lines = lines(&results("metallb", 5000.0)).unwrap();
        let p99 = metric(&lines, "failover_sigkill_p99_ms");
        assert_eq!(p99["system"], "metallb");
        assert_eq!(p99["value"], 5000.0);
        assert_eq!(p99["unit"], "ms");
        assert_eq!(p99["trials"], 20);
        assert_eq!(p99["version"], "v0.16.1");
        assert_eq!(p99["versions"]["herald"]["version"], "0.1.0");
        assert_eq!(metric(&lines, "failover_sigkill_p50_ms")["value"], 500.0);
        assert_eq!(metric(&lines, "failover_link_down_p50_ms")["value"], 510.0);
        assert_eq!(metric(&lines, "failover_link_down_max_ms")["value"], 610.0);
        // A trial without failover: the median is known, the p99 and max only bounded.
        assert_eq!(metric(&lines, "failover_sigterm_p50_ms")["value"], 300.0);
        let p99 = metric(&lines, "failover_sigterm_p99_ms");
        assert!(p99["value"].is_null());
        assert_eq!(p99["above"], 15000);
        assert_eq!(p99["trials"], 20);
        assert_eq!(
            metric(&lines, "failover_sigterm_trials_without_failover")["value"],
            1
        );
        assert!(
            metric(&lines, "failover_sigkill_max_ms")
                .get("above")
                .is_none()
        );
        assert_eq!(
            metric(&lines, "failover_requests_answered_by_two_macs")["trials"],
            40
        );
        assert_eq!(
            metric(&lines, "failover_mac_changes_beyond_one_each_way")["value"],
            1
        );
        // The highest speaker's peak; the mean idle CPU; only the running 1,000-Service row.
        assert_eq!(
            metric(&lines, "speaker_peak_rss_1000_services_mib")["value"],
            20.0
        );
        assert_eq!(
            metric(&lines, "speaker_idle_cpu_1000_services_percent")["value"],
            0.4
        );
        assert!(
            !lines
                .iter()
                .any(|l| l["metric"] == "speaker_peak_rss_0_services_mib")
        );
        assert_eq!(
            metric(&lines, "status_ingress_after_last_create_10000_services_s")["value"],
            0.03
        );
        // 9,000 of 10,000 written: no figure.
        assert!(
            metric(
                &lines,
                "status_announcer_after_last_create_10000_services_s"
            )["value"]
                .is_null()
        );
        assert_eq!(
            metric(&lines, "api_requests_per_min_speakers_100_services")["value"],
            4.5
        );
        assert_eq!(
            metric(&lines, "api_requests_per_min_100_services")["value"],
            6.0
        );
        assert!(super::lines(&json!({"system": "other"})).is_err());
    }

    #[test]
    fn a_trial_without_failover_ranks_above_every_failover() {
        let t = [Some(30.0), None, Some(10.0), Some(20.0)];
        assert_eq!(censored_percentile(&t, 50.0), Some(20.0));
        assert_eq!(censored_percentile(&t, 75.0), Some(30.0));
        assert_eq!(censored_percentile(&t, 99.0), None);
        assert_eq!(censored_percentile(&t[..1], 100.0), Some(30.0));
        assert_eq!(censored_percentile(&[], 50.0), None);
    }

    #[test]
    fn the_table_has_both_columns_and_the_ratio() {
        let text: String = [results("herald", 600.0), results("metallb", 6000.0)]
            .iter()
            .flat_map(|r| lines(r).unwrap())
            .map(|l| format!("{l}\n"))
            .collect();
        let t = table(&text).unwrap();
        assert!(
            t.contains("| `failover_sigkill_p99_ms` | ms | 20 | 600 | 6000 | 10.0× |"),
            "{t}"
        );
        // MetalLB's p99 only bounded: so is the ratio.
        assert!(
            t.contains("| `failover_sigterm_p99_ms` | ms | 20 | 400 | > 15000 | > 37.5× |"),
            "{t}"
        );
        assert!(
            t.contains("| `failover_sigterm_p50_ms` | ms | 20 | 300 | 300 | 1.0× |"),
            "{t}"
        );
        // A missing figure: a dash and no ratio.
        assert!(
            t.contains(
                "| `status_announcer_after_last_create_10000_services_s` | s | 1 | – | – | – |"
            ),
            "{t}"
        );
        assert!(table("not json\n").is_err());
    }
}
