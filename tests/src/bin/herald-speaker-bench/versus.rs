//! The side-by-side results (issue 12): each figure of a `run` results file as one JSON line
//! (`system`, `metric`, `value`, `unit`, `trials`, the versions), and the Markdown table of a
//! file of such lines with both systems' columns and their ratio.

use super::*;
use herald_tests::bench::stats::percentile;
use herald_tests::bench::table::Align::{Left as L, Right as R};
use herald_tests::bench::table::Table;
use serde::{Deserialize, Serialize};
use serde_json::Number;

/// One figure of one system, as a line of a versus results file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct VersusLine {
    /// When the run started.
    #[serde(default)]
    pub(crate) date: Option<String>,
    pub(crate) system: String,
    pub(crate) metric: String,
    /// A count or a measure (a count stays an integer), `None` when not measured, or only
    /// bounded (`above`).
    #[serde(default)]
    pub(crate) value: Option<Number>,
    /// A lower bound of a figure that is not known: a failover percentile that lands on a
    /// trial without failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) above: Option<Number>,
    #[serde(default)]
    pub(crate) unit: Option<String>,
    /// What the figure is taken over (trials, speakers, runs).
    #[serde(default)]
    pub(crate) trials: Option<usize>,
    /// The version of `system`.
    #[serde(default)]
    pub(crate) version: Option<String>,
    #[serde(default)]
    pub(crate) versions: Option<Versions>,
}

impl VersusLine {
    /// The line as the versus results file has it: keys in alphabetical order, as they always
    /// were (they went through a `serde_json` map).
    pub(crate) fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_value(self)?.to_string())
    }
}

/// A measure as a JSON number; `None` for none (or not finite).
fn measure(x: Option<f64>) -> Option<Number> {
    x.and_then(Number::from_f64)
}

/// A count as a JSON number.
fn count(n: usize) -> Option<Number> {
    Some(Number::from(n))
}

fn line(
    results: &Results,
    metric: String,
    value: Option<Number>,
    unit: &str,
    trials: usize,
) -> VersusLine {
    let system = results.system();
    VersusLine {
        date: results.date.clone(),
        system: system.to_string(),
        metric,
        value,
        above: None,
        unit: Some(unit.to_string()),
        trials: Some(trials),
        version: results
            .versions
            .as_ref()
            .and_then(|v| v.of(system))
            .map(str::to_string),
        versions: results.versions.clone(),
    }
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
pub(crate) fn lines(results: &Results) -> anyhow::Result<Vec<VersusLine>> {
    let system = results.system();
    ensure!(
        system == "herald" || system == "metallb",
        "the results name an unknown system {system:?}"
    );
    let mut out = Vec::new();
    if let Some(fo) = &results.failover {
        out.extend(failover_lines(results, fo));
    }
    for r in &results.resources {
        if r.when != "running" || r.services == 0 {
            continue;
        }
        let n = r.services;
        let rss = r
            .speakers
            .iter()
            .filter_map(|s| s.vmhwm_kib)
            .map(|k| k as f64)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let cpu: Vec<f64> = r.speakers.iter().filter_map(|s| s.cpu_percent).collect();
        out.push(line(
            results,
            format!("speaker_peak_rss_{n}_services_mib"),
            measure(rss.map(|k| round(k / 1024.0, 1))),
            "MiB (highest speaker)",
            r.speakers.len(),
        ));
        out.push(line(
            results,
            format!("speaker_idle_cpu_{n}_services_percent"),
            measure(
                (!cpu.is_empty()).then(|| round(cpu.iter().sum::<f64>() / cpu.len() as f64, 3)),
            ),
            "% of a core (mean of the speakers)",
            cpu.len(),
        ));
    }
    for r in &results.scale {
        let n = r.services;
        for (what, written, time) in [
            (
                "ingress",
                r.ingress_written,
                r.last_create_to_last_ingress_s,
            ),
            (
                "announcer",
                r.announcer_written,
                r.last_create_to_last_announcer_s,
            ),
        ] {
            // Incomplete: no figure, not the time of the last status that did arrive.
            let value = if written == n { time } else { None };
            out.push(line(
                results,
                format!("status_{what}_after_last_create_{n}_services_s"),
                measure(value),
                "s",
                1,
            ));
        }
    }
    for r in &results.api {
        let n = r.services;
        for (who, per_min) in [
            ("", r.per_min),
            ("speakers_", r.speakers_per_min),
            ("controller_", r.controller_per_min),
        ] {
            out.push(line(
                results,
                format!("api_requests_per_min_{who}{n}_services"),
                measure(per_min),
                "requests/min",
                1,
            ));
        }
    }
    Ok(out)
}

/// The failover phase's lines: per fault, percentiles over every valid trial; then the two-MAC
/// watch's.
fn failover_lines(results: &Results, fo: &FailoverPhase) -> Vec<VersusLine> {
    let mut out = Vec::new();
    let limit = fo.failover_max_ms.map(Number::from);
    for (fault, x) in &fo.faults {
        let f = fault.replace('-', "_");
        // Every valid trial, a failover or none within the limit.
        let times: Vec<Option<f64>> = x.trials.iter().map(|t| t.failover_ms).collect();
        let n = times.len();
        for (stat, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            let mut l = line(
                results,
                format!("failover_{f}_{stat}_ms"),
                measure(censored_percentile(&times, p)),
                "ms",
                n,
            );
            if l.value.is_none() && !times.is_empty() {
                // It lands on a trial without failover: only a lower bound is known.
                l.above = limit.clone();
            }
            out.push(l);
        }
        out.push(line(
            results,
            format!("failover_{f}_trials_without_failover"),
            count(times.iter().filter(|t| t.is_none()).count()),
            "trials",
            n,
        ));
    }
    if let Some(two) = &fo.two_macs {
        let trials: usize = two.by_fault.values().map(|v| v.trials).sum();
        out.push(line(
            results,
            "failover_requests_answered_by_two_macs".into(),
            two.during_trials.map(Number::from),
            "requests",
            trials,
        ));
        let (changes, expected) = two.by_fault.values().fold((0, 0), |(c, e), v| {
            (c + v.mac_changes, e + v.mac_changes_expected)
        });
        out.push(line(
            results,
            "failover_mac_changes_beyond_one_each_way".into(),
            count(changes.saturating_sub(expected)),
            "changes",
            trials,
        ));
    }
    out
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
    fn of(line: &VersusLine) -> Cell {
        let number = |n: &Option<Number>| n.as_ref().and_then(Number::as_f64);
        match (number(&line.value), number(&line.above)) {
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
            Cell::Known(v) => out.write_str(&v.shown()),
            Cell::Above(b) => write!(out, "> {}", b.shown()),
            Cell::Missing => out.write_str("–"),
        }
    }
}

/// The Markdown table of a versus results file: one row per metric, in the order they first
/// appear, with Herald's and MetalLB's values (the last line of each) and MetalLB / Herald.
pub(crate) fn table(text: &str) -> anyhow::Result<String> {
    let mut order: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), VersusLine> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: VersusLine = serde_json::from_str(l)
            .with_context(|| format!("line {} is not a versus line", i + 1))?;
        if !order.contains(&v.metric) {
            order.push(v.metric.clone());
        }
        units.insert(v.metric.clone(), v.unit.shown());
        cells.insert((v.metric.clone(), v.system.clone()), v);
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
            .map(|v| v.map(|v| v.trials.shown()).unwrap_or_else(|| "–".into()));
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

    /// A results file with only the fields `lines` reads (older files may lack the others).
    fn results(system: &str, p99: f64) -> Results {
        // MetalLB once did not fail over after SIGTERM within the limit.
        let sigterm_last = (system == "herald").then_some(400.0);
        let file = json!({
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
                    {"vmhwm_kib": 20480, "cpu_percent": 0.3},
                    {"vmhwm_kib": 19456, "cpu_percent": 0.5}
                ]},
                {"services": 1000, "when": "after restart", "speakers": [{"vmhwm_kib": 40000, "cpu_percent": 9.0}]}
            ],
            "scale": [
                {"services": 1000, "ingress_written": 1000, "announcer_written": 1000,
                 "last_create_to_last_ingress_s": 0.02, "last_create_to_last_announcer_s": 0.5},
                {"services": 10000, "ingress_written": 10000, "announcer_written": 9000,
                 "last_create_to_last_ingress_s": 0.03, "last_create_to_last_announcer_s": 30.0}
            ],
            "api": [{"services": 100, "per_min": 6.0, "speakers_per_min": 4.5, "controller_per_min": 1.5}]
        });
        serde_json::from_value(file).expect("a results file")
    }

    fn metric<'a>(lines: &'a [VersusLine], name: &str) -> &'a VersusLine {
        lines
            .iter()
            .find(|l| l.metric == name)
            .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
    }

    fn value(line: &VersusLine) -> Option<f64> {
        line.value.as_ref().and_then(Number::as_f64)
    }

    #[test]
    fn every_figure_is_a_line() {
        let lines = lines(&results("metallb", 5000.0)).unwrap();
        let p99 = metric(&lines, "failover_sigkill_p99_ms");
        assert_eq!(p99.system, "metallb");
        assert_eq!(value(p99), Some(5000.0));
        assert_eq!(p99.unit.as_deref(), Some("ms"));
        assert_eq!(p99.trials, Some(20));
        assert_eq!(p99.version.as_deref(), Some("v0.16.1"));
        let versions = p99.versions.as_ref().expect("versions");
        assert_eq!(versions.herald.version.as_deref(), Some("0.1.0"));
        let v = |name| value(metric(&lines, name));
        assert_eq!(v("failover_sigkill_p50_ms"), Some(500.0));
        assert_eq!(v("failover_link_down_p50_ms"), Some(510.0));
        assert_eq!(v("failover_link_down_max_ms"), Some(610.0));
        // A trial without failover: the median is known, the p99 and max only bounded.
        assert_eq!(v("failover_sigterm_p50_ms"), Some(300.0));
        let p99 = metric(&lines, "failover_sigterm_p99_ms");
        assert_eq!(p99.value, None);
        assert_eq!(p99.above, Some(Number::from(15000)));
        assert_eq!(p99.trials, Some(20));
        // A count stays an integer.
        assert_eq!(
            metric(&lines, "failover_sigterm_trials_without_failover").value,
            Some(Number::from(1))
        );
        assert_eq!(metric(&lines, "failover_sigkill_max_ms").above, None);
        assert_eq!(
            metric(&lines, "failover_requests_answered_by_two_macs").trials,
            Some(40)
        );
        assert_eq!(v("failover_mac_changes_beyond_one_each_way"), Some(1.0));
        // The highest speaker's peak; the mean idle CPU; only the running 1,000-Service row.
        assert_eq!(v("speaker_peak_rss_1000_services_mib"), Some(20.0));
        assert_eq!(v("speaker_idle_cpu_1000_services_percent"), Some(0.4));
        assert!(
            !lines
                .iter()
                .any(|l| l.metric == "speaker_peak_rss_0_services_mib")
        );
        assert_eq!(
            v("status_ingress_after_last_create_10000_services_s"),
            Some(0.03)
        );
        // 9,000 of 10,000 written: no figure.
        assert_eq!(
            v("status_announcer_after_last_create_10000_services_s"),
            None
        );
        assert_eq!(v("api_requests_per_min_speakers_100_services"), Some(4.5));
        assert_eq!(v("api_requests_per_min_100_services"), Some(6.0));
        let other = Results {
            system: Some("other".into()),
            ..Results::default()
        };
        assert!(super::lines(&other).is_err());
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
            .map(|l| format!("{}\n", l.to_json().unwrap()))
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
