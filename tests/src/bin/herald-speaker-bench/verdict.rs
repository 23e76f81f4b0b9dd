//! The verdict on one failover trial from the probe's answers, and the summary of a fault's
//! trials.

use super::*;

/// The failover verdict of one probe run: invalid when the old node did not answer steadily
/// before the fault or the fault command failed. The caller adds the Service, the nodes, the
/// window and the restore.
pub(crate) fn evaluate(probe: &ProbeReport, old: &str) -> Trial {
    let t0 = probe.t0_us as f64;
    let t1 = probe.t1_us as f64;
    struct S {
        sent: f64,
        done: f64,
        node: Option<String>,
    }
    let samples: Vec<S> = probe
        .samples
        .iter()
        .map(|s| S {
            sent: s.sent_us as f64,
            done: s.done_us as f64,
            node: s.node.clone(),
        })
        .collect();
    let pre: Vec<&S> = samples.iter().filter(|s| s.done < t0).collect();
    let pre_old = pre
        .iter()
        .filter(|s| s.node.as_deref() == Some(old))
        .count();
    let pre_other = pre
        .iter()
        .filter(|s| s.node.as_ref().is_some_and(|n| n != old))
        .count();
    let mut r = Trial {
        fault_exec_ms: round((t1 - t0) / 1000.0, 2),
        pre_fault_requests: pre.len(),
        exit: Some(i64::from(probe.fault_status)),
        ..Trial::default()
    };
    if pre.len() < 10 || pre_other > 0 || (pre_old as f64) < 0.9 * pre.len() as f64 {
        r.why = Some(format!(
            "before the fault: {} requests, {pre_old} answered by {old}, {pre_other} by others",
            pre.len()
        ));
        return r;
    }
    if probe.fault_status != 0 {
        r.why = Some("the fault command failed".into());
        return r;
    }
    r.valid = true;
    let first = samples
        .iter()
        .filter(|s| s.done >= t0 && s.node.as_ref().is_some_and(|n| n != old))
        .min_by(|a, b| a.done.total_cmp(&b.done));
    let Some(first) = first else {
        r.failed_requests = samples
            .iter()
            .filter(|s| s.sent >= t0 && s.node.is_none())
            .count();
        return r;
    };
    let failed = samples
        .iter()
        .filter(|s| s.sent >= t0 && s.done <= first.done && s.node.is_none())
        .count();
    let last_old = samples
        .iter()
        .filter(|s| s.done >= t0 && s.node.as_deref() == Some(old))
        .map(|s| s.done)
        .fold(f64::NAN, f64::max);
    let flaps = samples
        .iter()
        .filter(|s| s.sent > first.done && s.node.as_deref() == Some(old))
        .count();
    let others: BTreeSet<String> = samples
        .iter()
        .filter(|s| s.done >= first.done)
        .filter_map(|s| s.node.as_deref())
        .filter(|n| *n != old)
        .map(str::to_string)
        .collect();
    let failed_after = samples
        .iter()
        .filter(|s| s.sent > first.done && s.node.is_none())
        .count();
    r.failover_ms = Some(round((first.done - t0) / 1000.0, 1));
    r.new_node = first.node.clone();
    r.failed_requests = failed;
    r.after_failover = Some(AfterFailover {
        first_new_request_sent_ms: round((first.sent - t0) / 1000.0, 1),
        failed_after_failover: failed_after,
        last_old_answer_ms: (!last_old.is_nan()).then(|| round((last_old - t0) / 1000.0, 1)),
        flaps: flaps as u64,
        nodes_after: others,
    });
    r
}

/// The summary of one fault's valid trials (the two-MAC figures are added after the phase).
pub(crate) fn summarize_fault(trials: &[Trial], invalid: usize) -> FaultSummary {
    let of = |field: fn(&Trial) -> Option<f64>| -> Vec<f64> {
        trials.iter().filter_map(field).collect()
    };
    let mut new_owner: BTreeMap<String, usize> = BTreeMap::new();
    for r in trials {
        *new_owner
            .entry(r.new_node.clone().unwrap_or_else(|| "none".into()))
            .or_default() += 1;
    }
    FaultSummary {
        restores_needing_a_nudge: Some(trials.iter().filter(|r| r.restore.nudges > 0).count()),
        restore_longest_without_announcer_ms: summary(
            &of(|r| Some(r.restore.longest_without_announcer_ms)),
            0,
        ),
        restore_settled_ms: summary(&of(|r| Some(r.restore.settled_ms)), 0),
        failover_ms: summary(&of(|r| r.failover_ms), 1),
        failed_requests: summary(&of(|r| Some(r.failed_requests as f64)), 0),
        fault_exec_ms: summary(&of(|r| Some(r.fault_exec_ms)), 2),
        flaps: Some(
            trials
                .iter()
                .filter_map(|r| r.after_failover.as_ref())
                .map(|a| a.flaps)
                .sum(),
        ),
        no_failover_within_max: Some(trials.iter().filter(|r| r.failover_ms.is_none()).count()),
        invalid_trials_retried: Some(invalid),
        new_owner,
        ..FaultSummary::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "hl-node1";
    const NEW: &str = "hl-node2";

    /// Requests every 10 ms from 0 to 1.5 s, each done 1 ms after it was sent, answered by
    /// `by(sent_ms)` (`None`: failed); the fault at 500 ms.
    fn probe(by: impl Fn(u64) -> Option<&'static str>) -> ProbeReport {
        ProbeReport {
            t0_us: 500_000,
            t1_us: 501_500,
            fault_status: 0,
            samples: (0..150)
                .map(|k| {
                    let node = by(k * 10).map(str::to_string);
                    ProbeSample {
                        sent_us: k * 10_000,
                        done_us: k * 10_000 + 1_000,
                        error: node.is_none().then(|| "timeout".into()),
                        node,
                    }
                })
                .collect(),
        }
    }

    /// The keys of a trial as the results file has them.
    fn keys(t: &Trial) -> Vec<String> {
        let v = serde_json::to_value(t).unwrap_or_default();
        let mut k: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        k.sort();
        k
    }

    #[test]
    fn a_failover_is_timed_from_the_fault_to_the_first_answer_from_another_node() {
        // Failed from the fault until 700 ms, then the new node, and the old one once more.
        let t = evaluate(
            &probe(|ms| match ms {
                0..500 => Some(OLD),
                500..700 => None,
                900 => Some(OLD),
                _ => Some(NEW),
            }),
            OLD,
        );
        assert!(t.valid);
        assert_eq!(t.fault_exec_ms, 1.5);
        assert_eq!(t.pre_fault_requests, 50);
        assert_eq!(t.failover_ms, Some(201.0));
        assert_eq!(t.new_node.as_deref(), Some(NEW));
        assert_eq!(t.failed_requests, 20);
        let after = t.after_failover.as_ref().expect("a failover");
        assert_eq!(after.first_new_request_sent_ms, 200.0);
        assert_eq!(after.flaps, 1);
        assert_eq!(after.last_old_answer_ms, Some(401.0));
        assert_eq!(after.nodes_after, BTreeSet::from([NEW.to_string()]));
        // The fields the run always wrote for such a trial.
        assert_eq!(
            keys(&t),
            [
                "exit",
                "failed_after_failover",
                "failed_requests",
                "failover_ms",
                "fault_exec_ms",
                "first_new_request_sent_ms",
                "flaps",
                "herald_bench_overlap",
                "last_old_answer_ms",
                "new_node",
                "nodes_after",
                "old_node",
                "pre_fault_requests",
                "restore",
                "service",
                "valid",
                "window_us",
            ]
        );
    }

    #[test]
    fn no_answer_from_another_node_is_no_failover_and_bad_starts_are_invalid() {
        let t = evaluate(&probe(|ms| (ms < 500).then_some(OLD)), OLD);
        assert!(t.valid);
        assert_eq!((t.failover_ms, t.new_node.as_deref()), (None, None));
        assert_eq!(t.failed_requests, 100);
        assert_eq!(t.after_failover, None);
        let v = serde_json::to_value(&t).unwrap_or_default();
        assert!(v["failover_ms"].is_null() && v.get("flaps").is_none());
        // Another node answering before the fault, or a failed fault command: invalid.
        let t = evaluate(&probe(|_| Some(NEW)), OLD);
        assert!(!t.valid);
        assert!(t.why.is_some_and(|w| w.contains("50 by others")));
        let mut p = probe(|_| Some(OLD));
        p.fault_status = 1;
        assert_eq!(
            evaluate(&p, OLD).why.as_deref(),
            Some("the fault command failed")
        );
    }

    #[test]
    fn a_fault_summary_counts_its_trials() {
        let failover = evaluate(
            &probe(|ms| if ms < 600 { Some(OLD) } else { Some(NEW) }),
            OLD,
        );
        let mut none = evaluate(&probe(|ms| (ms < 500).then_some(OLD)), OLD);
        none.restore.nudges = 2;
        let s = summarize_fault(&[failover, none], 3);
        assert_eq!(s.failover_ms.n, 1);
        assert_eq!(s.failover_ms.p50, Some(101.0));
        assert_eq!(s.failed_requests.n, 2);
        assert_eq!(s.no_failover_within_max, Some(1));
        assert_eq!(s.invalid_trials_retried, Some(3));
        assert_eq!(s.restores_needing_a_nudge, Some(1));
        assert_eq!(s.flaps, Some(0));
        assert_eq!(
            s.new_owner,
            BTreeMap::from([(NEW.to_string(), 1), ("none".to_string(), 1)])
        );
    }
}
