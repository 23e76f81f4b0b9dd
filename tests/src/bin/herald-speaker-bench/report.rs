//! The Markdown tables of a results file.

use super::*;
use herald_tests::bench::table::Align::{Left as L, Right as R};
use herald_tests::bench::table::Table;

/// A figure as the tables show it: a whole number without its fraction, a dash for none.
pub(crate) trait Shown {
    fn shown(&self) -> String;
}

impl Shown for f64 {
    fn shown(&self) -> String {
        if self.fract() == 0.0 {
            format!("{}", *self as i64)
        } else {
            format!("{self}")
        }
    }
}

macro_rules! shown_as_display {
    ($($t:ty),*) => {
        $(impl Shown for $t {
            fn shown(&self) -> String {
                self.to_string()
            }
        })*
    };
}

shown_as_display!(u64, usize, String, str);

impl<T: Shown + ?Sized> Shown for &T {
    fn shown(&self) -> String {
        (**self).shown()
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref().map_or_else(|| "–".into(), Shown::shown)
    }
}

pub(crate) fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "–".into())
}

pub(crate) fn report(r: &Results) -> String {
    let mut s = String::new();
    let host = r.host.clone().unwrap_or_default();
    s.push_str(&format!(
        "Speaker benchmarks of {}, {} — `{}` ({} CPUs, kernel {})\n\n",
        r.system(),
        r.date.shown(),
        r.command.shown(),
        host.cpus.shown(),
        host.kernel.shown()
    ));
    if let Some(fo) = &r.failover {
        failover(&mut s, fo);
    }
    if let Some(arp) = &r.arp {
        s.push_str(&format!(
            "### ARP reply latency\n\n{} requests/s to the speaker (VIP {}) and {} requests/s to the \
             kernel ({} of {}), interleaved, {} s per run; latency from send to receipt in the \
             client namespace (µs).\n\n",
            arp.rps_per_target, arp.vip, arp.rps_per_target, arp.node_ip, arp.node, arp.seconds
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
        for (i, run) in arp.runs.iter().enumerate() {
            for (who, x) in [("speaker", &run.speaker), ("kernel", &run.kernel)] {
                let l = &x.latency_us;
                t.row([
                    (i + 1).to_string(),
                    who.to_string(),
                    x.sent.shown(),
                    x.unanswered.shown(),
                    l.p50.shown(),
                    l.p90.shown(),
                    l.p99.shown(),
                    l.p999.shown(),
                    l.max.shown(),
                ]);
            }
        }
        s.push_str(&t.render());
    }
    if !r.resources.is_empty() {
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
        for x in &r.resources {
            for sp in &x.speakers {
                t.row([
                    x.services.shown(),
                    x.when.shown(),
                    sp.node.shown(),
                    mib(sp.vmhwm_kib),
                    mib(sp.vmrss_kib),
                    format!("{} / {} s", sp.cpu_s.shown(), x.window_s.shown()),
                    sp.cpu_percent.shown(),
                    sp.max_1s_percent.shown(),
                    sp.announced.shown(),
                ]);
            }
        }
        s.push_str(&t.render());
    }
    if !r.scale.is_empty() {
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
        for x in &r.scale {
            t.row([
                x.services.shown(),
                x.creates_s.shown(),
                x.ingress_written.shown(),
                x.last_create_to_last_ingress_s.shown(),
                x.announcer_written.shown(),
                x.last_create_to_last_announcer_s.shown(),
            ]);
        }
        s.push_str(&t.render());
    }
    if !r.creation.is_empty() {
        s.push_str("### Creating the Services\n\n");
        let mut t = Table::new(&[
            ("Services after", R),
            ("created", R),
            ("all announced s", R),
            ("IPs gained (ideal: created)", R),
            ("IPs lost (ideal 0)", R),
            ("conflicts counted", R),
        ]);
        for x in &r.creation {
            t.row([
                x.services.shown(),
                x.created.shown(),
                x.all_announced_s.shown(),
                x.ips_gained.shown(),
                x.ips_lost.shown(),
                x.conflicts_counted.shown(),
            ]);
        }
        s.push_str(&t.render());
    }
    if !r.api.is_empty() {
        api(&mut s, &r.api);
    }
    for (list, title) in [
        (&r.anomalies, "Anomalies"),
        (
            &r.overlaps_with_controller_bench,
            "Overlaps with herald-bench",
        ),
    ] {
        if let Some(a) = list
            && !a.is_empty()
        {
            s.push_str(&format!("### {title}\n\n"));
            for x in a {
                s.push_str(&format!("- {x}\n"));
            }
            s.push('\n');
        }
    }
    if let Some(logs) = &r.speaker_logs {
        s.push_str("### Speaker logs during the run\n\n");
        for (name, x) in logs {
            s.push_str(&format!("- {name}: {}\n", compact(&x.levels)));
            for (msg, n) in &x.warnings_and_errors {
                s.push_str(&format!("  - {n}× {msg}\n"));
            }
        }
        s.push('\n');
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("**The run ended with an error:** {e}\n"));
    }
    s
}

/// The failover phase's tables.
fn failover(s: &mut String, fo: &FailoverPhase) {
    s.push_str(&format!(
        "### Failover\n\nTime from the fault to the first answer through another node; the client \
         opens a fresh TCP connection to VIP:80 every {} ms ({} ms timeout). {} trials per fault.\n\n",
        fo.interval_ms.shown(),
        fo.timeout_ms.shown(),
        fo.trials_per_fault.shown()
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
    for name in Fault::ALL.map(Fault::name) {
        let Some(x) = fo.faults.get(name) else {
            continue;
        };
        let sm = &x.summary;
        times.row([
            name.to_string(),
            sm.failover_ms.n.shown(),
            sm.failover_ms.p50.shown(),
            sm.failover_ms.p99.shown(),
            sm.failover_ms.max.shown(),
            sm.failover_ms.min.shown(),
            format!(
                "{} / {}",
                sm.failed_requests.p50.shown(),
                sm.failed_requests.max.shown()
            ),
            sm.flaps.shown(),
            sm.invalid_trials_retried.shown(),
            sm.no_failover_within_max.shown(),
            sm.requests_answered_by_two_macs.shown(),
            format!(
                "{} / {}",
                sm.mac_changes.shown(),
                sm.mac_changes_expected.shown()
            ),
        ]);
        restores.row([
            name.to_string(),
            format!(
                "{} / {}",
                sm.restore_settled_ms.p50.shown(),
                sm.restore_settled_ms.max.shown()
            ),
            format!(
                "{} of {}",
                sm.restores_needing_a_nudge.shown(),
                sm.failover_ms.n.shown()
            ),
            sm.restore_longest_without_announcer_ms.max.shown(),
        ]);
    }
    s.push_str(&times.render());
    s.push_str(
        "After each trial the fault is undone and the next trial waits until the returning \
         node is past its hold-down and has taken its IPs back:\n\n",
    );
    s.push_str(&restores.render());
    let two = fo.two_macs.as_ref();
    s.push_str(&format!(
        "IPConflict counted by the speakers during the trials: {}. The client's two-MAC watch \
         (an ARP request for every VIP every {} ms, each answer matched to its request): {} \
         requests answered by two MACs during the trials, {} over the whole phase.\n\n",
        fo.conflicts_counted_by_speakers.shown(),
        fo.interval_ms.shown(),
        two.and_then(|t| t.during_trials).shown(),
        two.and_then(|t| t.requests_answered_by_two_macs).shown()
    ));
}

/// The API phase's table and requests by kind.
fn api(s: &mut String, runs: &[ApiRun]) {
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
    for x in runs {
        t.row([
            x.services.shown(),
            x.window_s.shown(),
            format!("**{}**", x.per_min.shown()),
            x.speakers_per_min.shown(),
            x.controller_per_min.shown(),
            x.restart.speaker_requests.shown(),
        ]);
    }
    s.push_str(&t.render());
    s.push_str("Requests by kind in the window:\n\n");
    for x in runs {
        for c in ["speaker", "controller"] {
            let parts: Vec<String> = x
                .running
                .components
                .get(c)
                .map(|m| {
                    m.by_request
                        .iter()
                        .map(|(k, v)| format!("`{k}` {v}"))
                        .collect()
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "- {} Services, {c}: {}\n",
                x.services,
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
