//! The Markdown tables of a results file.

use super::*;
use herald_tests::bench::table::Align::{Left as L, Right as R};
use herald_tests::bench::table::Table;

pub(crate) fn f(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 {
                format!("{}", x as i64)
            } else {
                format!("{x}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn mib(kib: &Value) -> String {
    kib.as_f64()
        .map(|k| format!("{:.1}", k / 1024.0))
        .unwrap_or_else(|| "–".into())
}

pub(crate) fn report(r: &Value) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Speaker benchmarks of {}, {} — `{}` ({} CPUs, kernel {})\n\n",
        r["system"].as_str().unwrap_or("herald"),
        f(&r["date"]),
        f(&r["command"]),
        f(&r["host"]["cpus"]),
        f(&r["host"]["kernel"])
    ));
    if let Some(fo) = r.get("failover") {
        s.push_str(&format!(
            "### Failover\n\nTime from the fault to the first answer through another node; the client \
             opens a fresh TCP connection to VIP:80 every {} ms ({} ms timeout). {} trials per fault.\n\n",
            f(&fo["interval_ms"]),
            f(&fo["timeout_ms"]),
            f(&fo["trials_per_fault"])
        ));
        let mut times = Table::new(&[
            ("fault", L),
            ("trials", R),
            ("p50 ms", R),
            ("p99 ms", R),
            ("max ms", R),
            ("min ms", R),
            ("failed requests p50 / max", R),
            ("flaps back", R),
            ("retried", R),
            ("no failover", R),
            ("answered by two MACs", R),
            ("MAC changes / expected", R),
        ]);
        let mut restores = Table::new(&[
            ("fault", L),
            ("restores settled p50 / max ms", R),
            ("restores needing a nudge", R),
            ("longest with no announcer, max ms", R),
        ]);
        if let Some(faults) = fo["faults"].as_object() {
            for name in Fault::ALL.map(Fault::name) {
                let Some(x) = faults.get(name) else { continue };
                let sm = &x["summary"];
                times.row([
                    name.to_string(),
                    f(&sm["failover_ms"]["n"]),
                    f(&sm["failover_ms"]["p50"]),
                    f(&sm["failover_ms"]["p99"]),
                    f(&sm["failover_ms"]["max"]),
                    f(&sm["failover_ms"]["min"]),
                    format!(
                        "{} / {}",
                        f(&sm["failed_requests"]["p50"]),
                        f(&sm["failed_requests"]["max"])
                    ),
                    f(&sm["flaps"]),
                    f(&sm["invalid_trials_retried"]),
                    f(&sm["no_failover_within_max"]),
                    f(&sm["requests_answered_by_two_macs"]),
                    format!(
                        "{} / {}",
                        f(&sm["mac_changes"]),
                        f(&sm["mac_changes_expected"])
                    ),
                ]);
                restores.row([
                    name.to_string(),
                    format!(
                        "{} / {}",
                        f(&sm["restore_settled_ms"]["p50"]),
                        f(&sm["restore_settled_ms"]["max"])
                    ),
                    format!(
                        "{} of {}",
                        f(&sm["restores_needing_a_nudge"]),
                        f(&sm["failover_ms"]["n"])
                    ),
                    f(&sm["restore_longest_without_announcer_ms"]["max"]),
                ]);
            }
        }
        s.push_str(&times.render());
        s.push_str(
            "After each trial the fault is undone and the next trial waits until the returning \
             node is past its hold-down and has taken its IPs back:\n\n",
        );
        s.push_str(&restores.render());
        s.push_str(&format!(
            "IPConflict counted by the speakers during the trials: {}. The client's two-MAC watch \
             (an ARP request for every VIP every {} ms, each answer matched to its request): {} \
             requests answered by two MACs during the trials, {} over the whole phase.\n\n",
            f(&fo["conflicts_counted_by_speakers"]),
            f(&fo["interval_ms"]),
            f(&fo["two_macs"]["during_trials"]),
            f(&fo["two_macs"]["requests_answered_by_two_macs"])
        ));
    }
    if let Some(arp) = r.get("arp") {
        s.push_str(&format!(
            "### ARP reply latency\n\n{} requests/s to the speaker (VIP {}) and {} requests/s to the \
             kernel ({} of {}), interleaved, {} s per run; latency from send to receipt in the \
             client namespace (µs).\n\n",
            f(&arp["rps_per_target"]),
            f(&arp["vip"]),
            f(&arp["rps_per_target"]),
            f(&arp["node_ip"]),
            f(&arp["node"]),
            f(&arp["seconds"])
        ));
        let mut t = Table::new(&[
            ("run", R),
            ("answered by", L),
            ("sent", R),
            ("unanswered", R),
            ("p50 µs", R),
            ("p90 µs", R),
            ("p99 µs", R),
            ("p99.9 µs", R),
            ("max µs", R),
        ]);
        for (i, run) in arp["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            for who in ["speaker", "kernel"] {
                let x = &run[who];
                t.row([
                    (i + 1).to_string(),
                    who.to_string(),
                    f(&x["sent"]),
                    f(&x["unanswered"]),
                    f(&x["latency_us"]["p50"]),
                    f(&x["latency_us"]["p90"]),
                    f(&x["latency_us"]["p99"]),
                    f(&x["latency_us"]["p999"]),
                    f(&x["latency_us"]["max"]),
                ]);
            }
        }
        s.push_str(&t.render());
    }
    if let Some(res) = r["resources"].as_array() {
        s.push_str("### Speaker memory and idle CPU\n\n");
        let mut t = Table::new(&[
            ("Services", R),
            ("when", L),
            ("node", L),
            ("VmHWM MiB", R),
            ("VmRSS MiB", R),
            ("CPU s / window", R),
            ("CPU %", R),
            ("max 1-s %", R),
            ("announced", R),
        ]);
        for x in res {
            for sp in x["speakers"].as_array().cloned().unwrap_or_default() {
                t.row([
                    f(&x["services"]),
                    f(&x["when"]),
                    f(&sp["node"]),
                    mib(&sp["vmhwm_kib"]),
                    mib(&sp["vmrss_kib"]),
                    format!("{} / {} s", f(&sp["cpu_s"]), f(&x["window_s"])),
                    f(&sp["cpu_percent"]),
                    f(&sp["max_1s_percent"]),
                    f(&sp["announced"]),
                ]);
            }
        }
        s.push_str(&t.render());
    }
    if let Some(sc) = r["scale"].as_array() {
        s.push_str(
            "### Status after creating many Services\n\nN Services created 32 at a time; time \
             from the last create to the last status written (watched): the IP (controller) and \
             the announcer (speakers: Herald's Announced condition, MetalLB's ServiceL2Status).\n\n",
        );
        let mut t = Table::new(&[
            ("Services", R),
            ("creates s", R),
            ("IPs written", R),
            ("last create → last IP s", R),
            ("announcers written", R),
            ("last create → last announcer s", R),
        ]);
        for x in sc {
            t.row(
                [
                    "services",
                    "creates_s",
                    "ingress_written",
                    "last_create_to_last_ingress_s",
                    "announcer_written",
                    "last_create_to_last_announcer_s",
                ]
                .map(|k| f(&x[k])),
            );
        }
        s.push_str(&t.render());
    }
    if let Some(c) = r["creation"].as_array() {
        s.push_str("### Creating the Services\n\n");
        let mut t = Table::new(&[
            ("Services after", R),
            ("created", R),
            ("all announced s", R),
            ("IPs gained (ideal: created)", R),
            ("IPs lost (ideal 0)", R),
            ("conflicts counted", R),
        ]);
        for x in c {
            t.row(
                [
                    "services",
                    "created",
                    "all_announced_s",
                    "ips_gained",
                    "ips_lost",
                    "conflicts_counted",
                ]
                .map(|k| f(&x[k])),
            );
        }
        s.push_str(&t.render());
    }
    if let Some(api) = r["api"].as_array() {
        s.push_str(
            "### API requests at steady state\n\nRequests received from the system's service \
             accounts (the API server's audit log) over the window.\n\n",
        );
        let mut t = Table::new(&[
            ("Services", R),
            ("window s", R),
            ("all /min", R),
            ("speakers /min", R),
            ("controller /min", R),
            ("restart: speaker requests in the first 60 s", R),
        ]);
        for x in api {
            t.row([
                f(&x["services"]),
                f(&x["window_s"]),
                format!("**{}**", f(&x["per_min"])),
                f(&x["speakers_per_min"]),
                f(&x["controller_per_min"]),
                f(&x["restart"]["speaker_requests"]),
            ]);
        }
        s.push_str(&t.render());
        s.push_str("Requests by kind in the window:\n\n");
        for x in api {
            for c in ["speaker", "controller"] {
                let parts: Vec<String> = x["running"]["components"][c]["by_request"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("`{k}` {}", f(v))).collect())
                    .unwrap_or_default();
                s.push_str(&format!(
                    "- {} Services, {c}: {}\n",
                    f(&x["services"]),
                    if parts.is_empty() {
                        "none".to_string()
                    } else {
                        parts.join(", ")
                    }
                ));
            }
        }
        s.push('\n');
    }
    for (key, title) in [
        ("anomalies", "Anomalies"),
        (
            "overlaps_with_controller_bench",
            "Overlaps with herald-bench",
        ),
    ] {
        if let Some(a) = r[key].as_array()
            && !a.is_empty()
        {
            s.push_str(&format!("### {title}\n\n"));
            for x in a {
                s.push_str(&format!("- {}\n", f(x)));
            }
            s.push('\n');
        }
    }
    if let Some(logs) = r["speaker_logs"].as_object() {
        s.push_str("### Speaker logs during the run\n\n");
        for (name, x) in logs {
            s.push_str(&format!("- {name}: {}\n", x["levels"]));
            if let Some(m) = x["warnings_and_errors"].as_object() {
                for (msg, n) in m {
                    s.push_str(&format!("  - {n}× {msg}\n"));
                }
            }
        }
        s.push('\n');
    }
    if let Some(e) = r.get("error") {
        s.push_str(&format!("**The run ended with an error:** {}\n", f(e)));
    }
    s
}
