//! The results file's types against the file the run wrote before they existed.

use super::*;

/// A summary as `stats::summary` writes it.
fn summary_json(n: usize, min: f64, p50: f64, max: f64) -> Value {
    json!({"n": n, "min": min, "p50": p50, "p90": max, "p99": max, "p999": max, "max": max,
        "mean": p50})
}

/// A trial in which another node answered.
fn trial(ms: f64, t0: u64) -> Value {
    json!({
        "fault_exec_ms": 1.25, "pre_fault_requests": 50, "exit": 0, "valid": true,
        "failover_ms": ms, "first_new_request_sent_ms": ms - 0.5, "new_node": "hl-node2",
        "failed_requests": 3, "failed_after_failover": 0, "last_old_answer_ms": null,
        "flaps": 0, "nodes_after": ["hl-node2"], "service": "192.0.2.150",
        "old_node": "hl-node1", "herald_bench_overlap": false, "window_us": [t0, t0 + 9_000_000],
        "restore": {"settled_ms": 3977.0, "nudges": 0, "unsettled_at_first_nudge": [],
            "longest_without_announcer_ms": 118.0}
    })
}

/// A results file as the run wrote it before the types: every phase, every field it wrote.
pub(crate) fn old_shape() -> Value {
    let images = json!([{"pod": "herald-speaker-8hsqk", "node": "hl-node1",
        "image": "herald.lab/herald:sha-1", "image_id": "sha256:0e1d", "restarts": 0}]);
    let mut no_failover = trial(0.0, 40_000_000);
    for k in [
        "first_new_request_sent_ms",
        "failed_after_failover",
        "last_old_answer_ms",
        "flaps",
        "nodes_after",
    ] {
        no_failover.as_object_mut().map(|t| t.remove(k));
    }
    no_failover["failover_ms"] = Value::Null;
    no_failover["new_node"] = Value::Null;
    json!({
        "date": "2026-12-01T05:18:37Z",
        "system": "herald",
        "versions": {
            "herald": {"version": "0.1.0", "commit": "89ac497aaaaa", "image": "herald.lab/herald:sha-1",
                "image_profile": null},
            "metallb": {"version": "v0.15.2", "controller_image": null, "speaker_image": null},
            "kubernetes": "v1.34.1",
            "kube_proxy_mode": "nftables"
        },
        "hold_down_ms": 3000,
        "command": "herald-speaker-bench run --trials 2",
        "host": {"cpus": 2, "kernel": "6.18.44"},
        "speaker_command": "/herald-speaker --metrics-addr=0.0.0.0:7473",
        "lab_at_start": {"system": "herald", "speakers": images, "nodes": 3,
            "speakers_running": [true, true, true], "links_up": [true, true, true],
            "eth0_global_ipv6": [["2001:db8::11/64"], ["2001:db8::12/64"], ["2001:db8::13/64"]]},
        "failover": {
            "interval_ms": 10, "failover_max_ms": 15000, "timeout_ms": 80, "trials_per_fault": 2,
            "signal_faults_pause_the_kubelet": true,
            "services": [{"name": "fo-00", "ip": "192.0.2.150", "owner": "hl-node1"}],
            "conflicts_counted_by_speakers": 0.0,
            "two_macs": {
                "requests_answered_by_two_macs": 1, "during_trials": 1,
                "by_fault": {
                    "sigkill": {"trials": 2, "requests_answered_by_two_macs": 1, "mac_changes": 5,
                        "mac_changes_expected": 4},
                    "sigterm": {"trials": 2, "requests_answered_by_two_macs": 0, "mac_changes": 2,
                        "mac_changes_expected": 4}
                },
                "watch": {"started_us": 1_000_000, "stopped_us": 90_000_000, "interval_ms": 10,
                    "vips": [{"vip": "192.0.2.150", "asked": 8900, "answered": 8700,
                        "answered_by_two_or_more": 1,
                        "doubles": [{"t_us": 20_500_000, "macs": ["02:00:00:00:00:01", "02:00:00:00:00:02"]}],
                        "mac_changes": [{"t_us": 20_400_000, "mac": "02:00:00:00:00:02", "by": "claim"}],
                        "macs": ["02:00:00:00:00:01", "02:00:00:00:00:02"]}]}
            },
            "faults": {
                "sigkill": {
                    "summary": {
                        "restores_needing_a_nudge": 0,
                        "restore_longest_without_announcer_ms": summary_json(2, 116.0, 116.0, 118.0),
                        "restore_settled_ms": summary_json(2, 3820.0, 3820.0, 3977.0),
                        "failover_ms": summary_json(2, 501.5, 501.5, 620.0),
                        "failed_requests": summary_json(2, 3.0, 3.0, 3.0),
                        "fault_exec_ms": summary_json(2, 1.25, 1.25, 1.25),
                        "flaps": 0, "no_failover_within_max": 0, "invalid_trials_retried": 1,
                        "new_owner": {"hl-node2": 2},
                        "requests_answered_by_two_macs": 1, "mac_changes": 5, "mac_changes_expected": 4
                    },
                    "trials": [trial(501.5, 10_000_000), trial(620.0, 20_000_000)]
                },
                "sigterm": {
                    "summary": {
                        "restores_needing_a_nudge": 0,
                        "restore_longest_without_announcer_ms": summary_json(2, 118.0, 118.0, 118.0),
                        "restore_settled_ms": summary_json(2, 3977.0, 3977.0, 3977.0),
                        "failover_ms": summary_json(1, 300.0, 300.0, 300.0),
                        "failed_requests": summary_json(2, 3.0, 3.0, 3.0),
                        "fault_exec_ms": summary_json(2, 1.25, 1.25, 1.25),
                        "flaps": 0, "no_failover_within_max": 1, "invalid_trials_retried": 0,
                        "new_owner": {"hl-node2": 1, "none": 1},
                        "requests_answered_by_two_macs": 0, "mac_changes": 2, "mac_changes_expected": 4
                    },
                    "trials": [trial(300.0, 30_000_000), no_failover]
                }
            }
        },
        "arp": {
            "vip": "192.0.2.150", "node": "hl-node1", "node_ip": "192.0.2.11",
            "rps_per_target": 10000, "seconds": 10,
            "node_sysctls": {"conf/eth0/arp_ignore": "0", "neigh/eth0/proxy_delay": "80"},
            "runs": [{
                "requests": 200000, "sender_seconds": 10.001, "achieved_rps_total": 19998.0,
                "duplicate_replies": 0, "mismatched_replies": 0,
                "speaker": {"sent": 100000, "answered": 99999, "unanswered": 1,
                    "latency_us": summary_json(99999, 20.5, 41.0, 950.5), "macs": ["02:00:00:00:00:01"]},
                "kernel": {"sent": 100000, "answered": 100000, "unanswered": 0,
                    "latency_us": summary_json(100000, 10.5, 21.0, 400.0), "macs": ["02:00:00:00:00:01"]},
                "speaker_requests_received": 100000.0, "speaker_responses_sent": 99999.0,
                "speaker_cpu_s": 1.23
            }]
        },
        "scale": [{"services": 1000, "creates_s": 3.21, "complete": false, "ingress_written": 1000,
            "announcer_written": 990, "last_create_to_last_ingress_s": 0.021,
            "last_create_to_last_announcer_s": 0.5, "first_create_to_last_ingress_s": 3.231,
            "first_create_to_last_announcer_s": 3.71, "ips_gained": null}],
        "creation": [{"services": 100, "created": 100, "all_announced_s": 2.1, "ips_gained": 100.0,
            "ips_lost": 0.0, "conflicts_counted": 0.0}],
        "resources": [
            {"services": 0, "when": "running", "window_s": 60, "clk_tck": 100.0, "speakers": [
                {"node": "hl-node1", "pid": 4242, "vmhwm_kib": 20480, "vmrss_kib": 18000,
                 "threads": 9, "cpu_s": 0.12, "cpu_percent": 0.2, "max_1s_percent": 1.0,
                 "announced": 0}]},
            {"services": 100, "when": "running", "window_s": 60, "clk_tck": 100.0, "announce_all_s": 2.1,
             "speakers": [
                {"node": "hl-node1", "pid": 4242, "vmhwm_kib": 22528, "vmrss_kib": 19000,
                 "threads": 9, "cpu_s": 0.3, "cpu_percent": 0.5, "max_1s_percent": 2.0,
                 "announced": 34},
                {"node": "hl-node2", "pid": 4343, "vmhwm_kib": null, "vmrss_kib": null,
                 "threads": null, "cpu_s": 0.0, "cpu_percent": 0.0, "max_1s_percent": 0.0,
                 "announced": null}]}
        ],
        "api": [{
            "services": 100, "window_s": 580.0, "per_min": 6.0, "speakers_per_min": 4.66,
            "controller_per_min": 1.34,
            "running": {"seconds": 580.0, "requests": 58, "per_min": 6.0, "components": {
                "speaker": {"requests": 45, "per_min": 4.66,
                    "by_request": {"WATCH services (cluster)": 45}},
                "controller": {"requests": 13, "per_min": 1.34,
                    "by_request": {"UPDATE coordination.k8s.io/leases (resource)": 13}}}},
            "restart": {"all_announced_s": 3.2, "first_s": 60.1, "requests": 40,
                "speaker_requests": 36, "by_request": {"LIST services (cluster)": 3}}
        }],
        "error": "interrupted (SIGINT)",
        "lab_at_end": {"speakers_running": [true, true, false],
            "eth0_global_ipv6": [["2001:db8::11/64"], [], ["2001:db8::13/64"]]},
        "speaker_logs": {"hl-node1": {"levels": {"INFO": 10, "WARN": 1},
            "warnings_and_errors": {"WARN another station claims an IP": 1}}},
        "speaker_images": {"start": images, "end": images},
        "anomalies": ["only 1 of 3 nodes own one of 12 failover candidates"],
        "overlaps_with_controller_bench": []
    })
}

#[test]
fn a_file_of_the_old_shape_reads_and_is_written_back_the_same() {
    let old = old_shape();
    let results: Results = serde_json::from_value(old.clone()).expect("the old shape reads");
    let fo = results.failover.as_ref().expect("a failover phase");
    let sigterm = &fo.faults["sigterm"];
    assert_eq!(sigterm.trials[1].failover_ms, None);
    assert_eq!(sigterm.trials[1].after_failover, None);
    assert_eq!(sigterm.summary.no_failover_within_max, Some(1));
    let after = fo.faults["sigkill"].trials[0].after_failover.as_ref();
    assert_eq!(after.map(|a| a.first_new_request_sent_ms), Some(501.0));
    assert_eq!(results.resources[1].speakers[0].vmhwm_kib, Some(22528));
    assert_eq!(results.api[0].running.components["speaker"].requests, 45);
    // Every field, in the type it was written in (a count stays an integer).
    assert_eq!(serde_json::to_value(&results).ok(), Some(old));
}

#[test]
fn results_round_trip() {
    let results: Results = serde_json::from_value(old_shape()).expect("the old shape reads");
    let text = results.to_file_text().expect("written");
    let back: Results = serde_json::from_str(&text).expect("read back");
    assert_eq!(back, results);
    // A run that ended before any phase: only what was there is written.
    let early = Results {
        date: Some("2026-12-01T05:18:37Z".into()),
        error: Some("the lab has fewer than two nodes".into()),
        ..Results::default()
    };
    let text = early.to_file_text().expect("written");
    assert_eq!(
        serde_json::from_str::<Value>(&text).ok(),
        Some(json!({"date": "2026-12-01T05:18:37Z", "error": "the lab has fewer than two nodes"}))
    );
    assert_eq!(serde_json::from_str::<Results>(&text).ok(), Some(early));
}

/// The versus lines `herald-speaker-bench versus-lines` printed for [`old_shape`] before the
/// types: `(metric, value, unit, trials, above)`, each with the run's date, system and versions.
#[test]
fn the_old_shape_gives_the_same_versus_lines_as_before() {
    let old = old_shape();
    let results: Results = serde_json::from_value(old.clone()).expect("the old shape reads");
    let before: Vec<Value> = [
        json!(["failover_sigkill_p50_ms", 501.5, "ms", 2, null]),
        json!(["failover_sigkill_p99_ms", 620.0, "ms", 2, null]),
        json!(["failover_sigkill_max_ms", 620.0, "ms", 2, null]),
        json!([
            "failover_sigkill_trials_without_failover",
            0,
            "trials",
            2,
            null
        ]),
        json!(["failover_sigterm_p50_ms", 300.0, "ms", 2, null]),
        json!(["failover_sigterm_p99_ms", null, "ms", 2, 15000]),
        json!(["failover_sigterm_max_ms", null, "ms", 2, 15000]),
        json!([
            "failover_sigterm_trials_without_failover",
            1,
            "trials",
            2,
            null
        ]),
        json!([
            "failover_requests_answered_by_two_macs",
            1,
            "requests",
            4,
            null
        ]),
        json!([
            "failover_mac_changes_beyond_one_each_way",
            0,
            "changes",
            4,
            null
        ]),
        json!([
            "speaker_peak_rss_100_services_mib",
            22.0,
            "MiB (highest speaker)",
            2,
            null
        ]),
        json!([
            "speaker_idle_cpu_100_services_percent",
            0.25,
            "% of a core (mean of the speakers)",
            2,
            null
        ]),
        json!([
            "status_ingress_after_last_create_1000_services_s",
            0.021,
            "s",
            1,
            null
        ]),
        json!([
            "status_announcer_after_last_create_1000_services_s",
            null,
            "s",
            1,
            null
        ]),
        json!([
            "api_requests_per_min_100_services",
            6.0,
            "requests/min",
            1,
            null
        ]),
        json!([
            "api_requests_per_min_speakers_100_services",
            4.66,
            "requests/min",
            1,
            null
        ]),
        json!([
            "api_requests_per_min_controller_100_services",
            1.34,
            "requests/min",
            1,
            null
        ]),
    ]
    .into_iter()
    .map(|x| {
        let mut line = json!({
            "date": old["date"], "system": "herald", "version": "0.1.0",
            "versions": old["versions"],
            "metric": x[0], "value": x[1], "unit": x[2], "trials": x[3],
        });
        if !x[4].is_null() {
            line["above"] = x[4].clone();
        }
        line
    })
    .collect();
    let now: Vec<Value> = versus::lines(&results)
        .expect("lines")
        .iter()
        .map(|l| l.to_json().ok().and_then(|t| serde_json::from_str(&t).ok()))
        .collect::<Option<_>>()
        .expect("lines as JSON");
    assert_eq!(now, before);
}
