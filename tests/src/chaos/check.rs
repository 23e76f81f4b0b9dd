//! The chaos run's invariants, checked over what was recorded, pure:
//!
//! - never two MACs claiming one VIP within 10 ms (the client's ARP/NDP watch);
//! - every VIP claimed again within 1 s, within the window of each fault that left a majority
//!   of the nodes unimpaired (from its application until it is healed and settled), and at
//!   any time outside every fault's window;
//! - no IP moved in Service status (every sample equal to the first);
//! - no panic (a `panicked at` line in a speaker's or controller's log, or a container that
//!   exited with Rust's panic status, 101);
//! - memory flat: no speaker process's VmRSS grew, from its first sample after warming up to
//!   its last, by more than a ratio plus a slack, over a lifetime long enough to tell.
//!
//! Alongside, the figures the report gives: the worst gap per fault and per fault kind (ARP/NDP
//! and TCP), and each speaker's memory at the start and at the end.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::schedule::{Applied, FaultKind, leaves_majority};
use crate::arp_watch::{ArpLog, longest_silence};

/// What the run recorded. Fault times are offsets from `started`.
#[derive(Clone, Debug)]
pub struct Observed {
    pub started: Instant,
    pub stopped: Instant,
    /// The lab's node count.
    pub nodes: usize,
    pub vips: Vec<VipObserved>,
    pub faults: Vec<Applied>,
    pub status: Vec<StatusSample>,
    pub panics: Vec<PanicLine>,
    pub restarts: Vec<Restart>,
    pub memory: Vec<RssSample>,
}

/// One VIP: its claims, and the TCP client's answers.
#[derive(Clone, Debug)]
pub struct VipObserved {
    pub arp: ArpLog,
    /// When each TCP request through the VIP was answered.
    pub tcp: Vec<Instant>,
}

/// A Service's status IPs at one time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSample {
    pub at: Instant,
    pub service: String,
    pub ips: Vec<String>,
}

/// A log line telling of a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicLine {
    pub at: Instant,
    /// The log file (pod and container).
    pub source: String,
    pub line: String,
}

/// A container seen to have terminated and restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub at: Instant,
    pub pod: String,
    pub container: String,
    pub exit_code: i32,
    pub reason: String,
}

/// Rust's exit status after a panic on the main thread.
pub const PANIC_EXIT_CODE: i32 = 101;

/// One VmRSS sample of a speaker process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssSample {
    pub at: Instant,
    pub node: String,
    pub pid: u32,
    pub kib: u64,
}

/// The bounds the invariants use.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Two MACs claiming a VIP closer than this: a violation.
    pub two_macs: Duration,
    /// The longest a VIP may go unclaimed where a majority is left.
    pub max_gap: Duration,
    /// A process's memory is judged from its first sample this long after it was first seen.
    pub memory_warmup: Duration,
    /// … and only if it was then watched for at least this long.
    pub memory_min_lifetime: Duration,
    /// Growth allowed: this fraction of the first sample, plus `memory_slack_kib`.
    pub memory_ratio: f64,
    pub memory_slack_kib: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            two_macs: Duration::from_millis(10),
            max_gap: Duration::from_secs(1),
            memory_warmup: Duration::from_secs(30),
            memory_min_lifetime: Duration::from_secs(60),
            memory_ratio: 0.2,
            memory_slack_kib: 2048,
        }
    }
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// Two MACs claimed `vip` `apart` from each other, `at` into the run.
    TwoMacs {
        vip: IpAddr,
        at: Duration,
        macs: (String, String),
        apart: Duration,
    },
    /// `vip` went unclaimed for `gap` (ending `at` into the run) in the window of fault
    /// `fault`, which left a majority — or, with `fault` None, outside every fault's window.
    Dark {
        vip: IpAddr,
        fault: Option<(usize, FaultKind)>,
        gap: Duration,
    },
    /// A Service's status IPs changed.
    StatusMoved {
        service: String,
        at: Duration,
        before: Vec<String>,
        after: Vec<String>,
    },
    /// A panic in a log, or a container's panic exit.
    Panic {
        at: Duration,
        source: String,
        line: String,
    },
    /// A speaker process's memory grew.
    MemoryGrew {
        node: String,
        pid: u32,
        first_kib: u64,
        last_kib: u64,
        over: Duration,
    },
}

impl Violation {
    /// The invariant's short name.
    pub fn invariant(&self) -> &'static str {
        match self {
            Violation::TwoMacs { .. } => "two-macs",
            Violation::Dark { .. } => "dark",
            Violation::StatusMoved { .. } => "status-moved",
            Violation::Panic { .. } => "panic",
            Violation::MemoryGrew { .. } => "memory-grew",
        }
    }

    pub fn to_json(&self) -> Value {
        let detail = match self {
            Violation::TwoMacs {
                vip,
                at,
                macs,
                apart,
            } => {
                json!({"vip": vip, "at_s": secs(*at), "macs": [macs.0, macs.1], "apart_ms": ms(*apart)})
            }
            Violation::Dark { vip, fault, gap } => json!({
                "vip": vip, "gap_ms": ms(*gap),
                "fault": fault.map(|(id, _)| id), "kind": fault.map(|(_, k)| k.name()),
            }),
            Violation::StatusMoved {
                service,
                at,
                before,
                after,
            } => json!({"service": service, "at_s": secs(*at), "before": before, "after": after}),
            Violation::Panic { at, source, line } => {
                json!({"at_s": secs(*at), "source": source, "line": line})
            }
            Violation::MemoryGrew {
                node,
                pid,
                first_kib,
                last_kib,
                over,
            } => {
                json!({"node": node, "pid": pid, "first_kib": first_kib, "last_kib": last_kib, "over_s": secs(*over)})
            }
        };
        json!({"type": "violation", "invariant": self.invariant(), "detail": detail})
    }
}

/// One fault's result.
#[derive(Clone, Debug)]
pub struct FaultResult {
    pub applied: Applied,
    pub leaves_majority: bool,
    /// Per VIP: the longest time unclaimed (ARP/NDP) and unanswered (TCP) in its window.
    pub gaps: Vec<(IpAddr, Duration, Duration)>,
}

impl FaultResult {
    /// The worst ARP/NDP gap and its VIP.
    pub fn worst(&self) -> Option<(IpAddr, Duration)> {
        self.gaps
            .iter()
            .map(|(ip, arp, _)| (*ip, *arp))
            .max_by_key(|(_, gap)| *gap)
    }

    /// The worst TCP gap.
    pub fn worst_tcp(&self) -> Duration {
        self.gaps
            .iter()
            .map(|(_, _, tcp)| *tcp)
            .max()
            .unwrap_or_default()
    }
}

/// One fault kind's figures.
#[derive(Clone, Debug, Default)]
pub struct KindResult {
    /// Applied (without error).
    pub applied: usize,
    /// Of which left a majority.
    pub with_majority: usize,
    /// The worst ARP/NDP gap over the faults that left a majority: gap, VIP, fault id.
    pub worst: Option<(Duration, IpAddr, usize)>,
    /// The worst over every fault of the kind.
    pub worst_any: Option<(Duration, IpAddr, usize)>,
    /// The worst TCP gap over the faults that left a majority.
    pub worst_tcp: Duration,
    /// Faults that failed to apply or heal.
    pub errors: usize,
}

/// A speaker process's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryResult {
    pub node: String,
    pub pid: u32,
    /// The first sample after warm-up and the last, and the time between them.
    pub first_kib: u64,
    pub last_kib: u64,
    pub over: Duration,
}

/// The run judged.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub faults: Vec<FaultResult>,
    pub kinds: BTreeMap<FaultKind, KindResult>,
    /// The longest a VIP went unclaimed outside every fault's window.
    pub calm_worst: Duration,
    pub memory: Vec<MemoryResult>,
    /// Per node: VmRSS of its speaker at the first and the last sample of the run.
    pub memory_start_end: BTreeMap<String, (u64, u64)>,
    pub violations: Vec<Violation>,
}

/// Checks every invariant over `observed`.
pub fn check(observed: &Observed, limits: &Limits) -> Verdict {
    let start = observed.started;
    let at = |d: Duration| start + d;
    let since = |t: Instant| t.saturating_duration_since(start);
    let mut violations = Vec::new();

    for vip in &observed.vips {
        violations.extend(
            vip.arp
                .two_macs(limits.two_macs)
                .map(|(a, b)| Violation::TwoMacs {
                    vip: vip.arp.vip,
                    at: since(a.at),
                    macs: (a.mac.clone(), b.mac.clone()),
                    apart: b.at.duration_since(a.at),
                }),
        );
    }

    let mut faults = Vec::new();
    let mut kinds: BTreeMap<FaultKind, KindResult> = BTreeMap::new();
    for (i, applied) in observed.faults.iter().enumerate() {
        let kind = kinds.entry(applied.fault.kind).or_default();
        if applied.error.is_some() {
            kind.errors += 1;
        }
        let majority = leaves_majority(&observed.faults, i, observed.nodes);
        let (from, to) = (
            at(applied.applied),
            at(applied.settled()).min(observed.stopped),
        );
        let gaps: Vec<(IpAddr, Duration, Duration)> = observed
            .vips
            .iter()
            .map(|v| {
                (
                    v.arp.vip,
                    v.arp.longest_silence(from, to),
                    longest_silence(v.tcp.iter().copied(), from, to),
                )
            })
            .collect();
        let result = FaultResult {
            applied: applied.clone(),
            leaves_majority: majority,
            gaps,
        };
        if applied.error.is_none() {
            kind.applied += 1;
            let worst = result.worst().map(|(ip, gap)| (gap, ip, applied.fault.id));
            kind.worst_any = kind.worst_any.max(worst);
            if majority {
                kind.with_majority += 1;
                kind.worst = kind.worst.max(worst);
                kind.worst_tcp = kind.worst_tcp.max(result.worst_tcp());
                for (ip, gap, _) in &result.gaps {
                    if *gap > limits.max_gap {
                        violations.push(Violation::Dark {
                            vip: *ip,
                            fault: Some((applied.fault.id, applied.fault.kind)),
                            gap: *gap,
                        });
                    }
                }
            }
        }
        faults.push(result);
    }

    // Outside every fault's window.
    let mut windows: Vec<(Instant, Instant)> = observed
        .faults
        .iter()
        .map(|f| (at(f.applied), at(f.settled())))
        .collect();
    windows.sort();
    let mut calm = Vec::new();
    let mut cursor = observed.started;
    for (from, to) in windows {
        if from > cursor {
            calm.push((cursor, from));
        }
        cursor = cursor.max(to);
    }
    if observed.stopped > cursor {
        calm.push((cursor, observed.stopped));
    }
    let mut calm_worst = Duration::ZERO;
    for vip in &observed.vips {
        let worst = calm
            .iter()
            .map(|(from, to)| vip.arp.longest_silence(*from, *to))
            .max()
            .unwrap_or_default();
        calm_worst = calm_worst.max(worst);
        if worst > limits.max_gap {
            violations.push(Violation::Dark {
                vip: vip.arp.vip,
                fault: None,
                gap: worst,
            });
        }
    }

    let mut first_status: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
    for sample in &observed.status {
        match first_status.get(sample.service.as_str()) {
            None => {
                first_status.insert(&sample.service, &sample.ips);
            }
            Some(first) if **first != sample.ips => violations.push(Violation::StatusMoved {
                service: sample.service.clone(),
                at: since(sample.at),
                before: (*first).clone(),
                after: sample.ips.clone(),
            }),
            Some(_) => {}
        }
    }

    violations.extend(observed.panics.iter().map(|p| Violation::Panic {
        at: since(p.at),
        source: p.source.clone(),
        line: p.line.clone(),
    }));
    violations.extend(
        observed
            .restarts
            .iter()
            .filter(|r| r.exit_code == PANIC_EXIT_CODE)
            .map(|r| Violation::Panic {
                at: since(r.at),
                source: format!("{}/{}", r.pod, r.container),
                line: format!("exited {} ({})", r.exit_code, r.reason),
            }),
    );

    let (memory, memory_start_end) = memory(&observed.memory, limits);
    violations.extend(
        memory
            .iter()
            .filter(|m| {
                m.over >= limits.memory_min_lifetime
                    && m.last_kib as f64
                        > m.first_kib as f64 * (1.0 + limits.memory_ratio)
                            + limits.memory_slack_kib as f64
            })
            .map(|m| Violation::MemoryGrew {
                node: m.node.clone(),
                pid: m.pid,
                first_kib: m.first_kib,
                last_kib: m.last_kib,
                over: m.over,
            }),
    );

    Verdict {
        faults,
        kinds,
        calm_worst,
        memory,
        memory_start_end,
        violations,
    }
}

type MemoryFigures = (Vec<MemoryResult>, BTreeMap<String, (u64, u64)>);

/// Per process: first sample after warm-up, last sample; per node: first and last sample.
fn memory(samples: &[RssSample], limits: &Limits) -> MemoryFigures {
    let mut by_process: BTreeMap<(&str, u32), Vec<&RssSample>> = BTreeMap::new();
    let mut by_node: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut sorted: Vec<&RssSample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.at);
    for s in sorted {
        by_process.entry((&s.node, s.pid)).or_default().push(s);
        by_node
            .entry(s.node.clone())
            .and_modify(|(_, last)| *last = s.kib)
            .or_insert((s.kib, s.kib));
    }
    let results = by_process
        .into_iter()
        .filter_map(|((node, pid), samples)| {
            let seen = samples.first()?.at;
            let first = samples
                .iter()
                .find(|s| s.at.duration_since(seen) >= limits.memory_warmup)?;
            let last = samples.last()?;
            Some(MemoryResult {
                node: node.to_string(),
                pid,
                first_kib: first.kib,
                last_kib: last.kib,
                over: last.at.duration_since(first.at),
            })
        })
        .collect();
    (results, by_node)
}

/// Milliseconds, to 0.1.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Seconds, to 0.001.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arp_watch::Claim;
    use crate::chaos::schedule::{PlannedFault, SETTLE, Target};

    const A: &str = "02:00:00:00:00:01";
    const B: &str = "02:00:00:00:00:02";

    /// A run of `seconds` where `vip` is claimed by A every 10 ms except where `claims` says
    /// otherwise: (from ms, to ms, MAC or None for silence).
    fn run(seconds: u64, claims: &[(u64, u64, Option<&str>)]) -> Observed {
        let t0 = Instant::now();
        let end = seconds * 1000;
        let mac_at = |ms: u64| {
            claims
                .iter()
                .find(|(from, to, _)| ms >= *from && ms < *to)
                .map_or(Some(A), |(_, _, mac)| *mac)
        };
        let arp_claims: Vec<Claim> = (0..end)
            .step_by(10)
            .filter_map(|ms| {
                mac_at(ms).map(|mac| Claim {
                    at: t0 + Duration::from_millis(ms),
                    mac: mac.to_string(),
                })
            })
            .collect();
        let tcp = arp_claims.iter().map(|c| c.at).collect();
        Observed {
            started: t0,
            stopped: t0 + Duration::from_millis(end),
            nodes: 3,
            vips: vec![VipObserved {
                arp: ArpLog {
                    vip: "192.0.2.140".parse().unwrap(),
                    started: t0,
                    stopped: t0 + Duration::from_millis(end),
                    requests: end / 10,
                    claims: arp_claims,
                },
                tcp,
            }],
            faults: Vec::new(),
            status: Vec::new(),
            panics: Vec::new(),
            restarts: Vec::new(),
            memory: Vec::new(),
        }
    }

    fn fault(id: usize, kind: FaultKind, target: Target, from_ms: u64, to_ms: u64) -> Applied {
        Applied {
            fault: PlannedFault {
                id,
                kind,
                target,
                start: Duration::from_millis(from_ms),
                hold: Duration::ZERO,
            },
            applied: Duration::from_millis(from_ms),
            healed: Duration::from_millis(to_ms),
            error: None,
        }
    }

    fn invariants(v: &Verdict) -> Vec<&'static str> {
        v.violations.iter().map(Violation::invariant).collect()
    }

    #[test]
    fn a_clean_run_breaks_nothing() {
        let mut o = run(60, &[(10_000, 10_600, None), (10_600, 20_000, Some(B))]);
        o.faults.push(fault(
            0,
            FaultKind::SpeakerKill,
            Target::Node(0),
            10_000,
            12_000,
        ));
        let v = check(&o, &Limits::default());
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        let kill = &v.kinds[&FaultKind::SpeakerKill];
        assert_eq!((kill.applied, kill.with_majority), (1, 1));
        let (gap, _, id) = kill.worst.expect("a worst gap");
        // Counted from the fault's application.
        assert_eq!((gap, id), (Duration::from_millis(600), 0));
        assert!(v.calm_worst <= Duration::from_millis(10));
    }

    #[test]
    fn two_macs_within_10_ms_are_a_violation() {
        // B starts claiming 5 ms after A's last claim.
        let mut o = run(10, &[]);
        let claims = &mut o.vips[0].arp.claims;
        let t = claims[300].at + Duration::from_millis(5);
        claims.insert(
            301,
            Claim {
                at: t,
                mac: B.into(),
            },
        );
        let v = check(&o, &Limits::default());
        assert_eq!(invariants(&v), ["two-macs", "two-macs"]);
        match &v.violations[0] {
            Violation::TwoMacs { apart, macs, .. } => {
                assert_eq!(*apart, Duration::from_millis(5));
                assert_eq!(macs, &(A.to_string(), B.to_string()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_long_gap_after_a_fault_that_leaves_a_majority_is_a_violation() {
        let mut o = run(60, &[(10_000, 11_500, None), (11_500, 30_000, Some(B))]);
        o.faults.push(fault(
            0,
            FaultKind::MembershipInto,
            Target::Node(0),
            10_000,
            14_000,
        ));
        let v = check(&o, &Limits::default());
        assert_eq!(invariants(&v), ["dark"]);
        assert_eq!(
            v.violations[0],
            Violation::Dark {
                vip: "192.0.2.140".parse().unwrap(),
                fault: Some((0, FaultKind::MembershipInto)),
                gap: Duration::from_millis(1500),
            }
        );
    }

    #[test]
    fn a_long_gap_where_no_majority_is_left_is_reported_not_a_violation() {
        let mut o = run(60, &[(10_000, 13_000, None)]);
        o.faults.push(fault(
            0,
            FaultKind::SpeakerKill,
            Target::Node(0),
            10_000,
            11_000,
        ));
        o.faults.push(fault(
            1,
            FaultKind::LinkDown,
            Target::Node(1),
            10_500,
            12_000,
        ));
        let v = check(&o, &Limits::default());
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        let kill = &v.kinds[&FaultKind::SpeakerKill];
        assert_eq!((kill.applied, kill.with_majority, kill.worst), (1, 0, None));
        assert_eq!(
            kill.worst_any.map(|w| w.0),
            Some(Duration::from_millis(3000))
        );
    }

    #[test]
    fn a_long_gap_outside_every_fault_is_a_violation() {
        let mut o = run(60, &[(40_000, 42_000, None)]);
        o.faults.push(fault(
            0,
            FaultKind::ApiPause,
            Target::Cluster,
            10_000,
            12_000,
        ));
        let v = check(&o, &Limits::default());
        assert_eq!(invariants(&v), ["dark"]);
        assert!(matches!(
            v.violations[0],
            Violation::Dark { fault: None, .. }
        ));
        assert_eq!(v.calm_worst, Duration::from_millis(2010));
        // The same silence inside the fault's window (until healed + SETTLE) is charged to it.
        let mut o = run(60, &[(12_000, 14_000, None)]);
        o.faults.push(fault(
            0,
            FaultKind::ApiPause,
            Target::Cluster,
            10_000,
            12_000,
        ));
        assert!(SETTLE > Duration::from_secs(2));
        let v = check(&o, &Limits::default());
        assert!(matches!(
            v.violations[..],
            [Violation::Dark {
                fault: Some((0, FaultKind::ApiPause)),
                ..
            }]
        ));
    }

    #[test]
    fn a_moved_status_ip_is_a_violation() {
        let mut o = run(10, &[]);
        let sample = |s: u64, ips: &[&str]| StatusSample {
            at: o.started + Duration::from_secs(s),
            service: "web0".into(),
            ips: ips.iter().map(ToString::to_string).collect(),
        };
        o.status = vec![
            sample(1, &["192.0.2.140"]),
            sample(2, &["192.0.2.140"]),
            sample(3, &["192.0.2.141"]),
        ];
        let v = check(&o, &Limits::default());
        assert_eq!(invariants(&v), ["status-moved"]);
        o.status.pop();
        o.status.push(sample(3, &[]));
        assert_eq!(invariants(&check(&o, &Limits::default())), ["status-moved"]);
    }

    #[test]
    fn panics_in_logs_and_panic_exits_are_violations() {
        let mut o = run(10, &[]);
        o.panics.push(PanicLine {
            at: o.started,
            source: "herald-system_herald-speaker-x/speaker/0.log".into(),
            line: "thread 'main' panicked at speaker/src/main.rs:1:1".into(),
        });
        let restart = |code: i32| Restart {
            at: o.started,
            pod: "herald-speaker-x".into(),
            container: "speaker".into(),
            exit_code: code,
            reason: "Error".into(),
        };
        o.restarts = vec![restart(137), restart(PANIC_EXIT_CODE)];
        let v = check(&o, &Limits::default());
        assert_eq!(invariants(&v), ["panic", "panic"]);
    }

    #[test]
    fn memory_growth_beyond_the_allowance_is_a_violation() {
        let mut o = run(10, &[]);
        let t0 = o.started;
        let sample = |s: u64, node: &str, pid: u32, kib: u64| RssSample {
            at: t0 + Duration::from_secs(s),
            node: node.into(),
            pid,
            kib,
        };
        o.memory = vec![
            // Warming up (ignored), then flat.
            sample(0, "hl-node1", 10, 5_000),
            sample(30, "hl-node1", 10, 12_000),
            sample(300, "hl-node1", 10, 12_500),
            // Grows by half.
            sample(0, "hl-node2", 20, 12_000),
            sample(30, "hl-node2", 20, 12_000),
            sample(300, "hl-node2", 20, 18_000),
            // Grows, but watched too briefly to tell.
            sample(0, "hl-node3", 30, 12_000),
            sample(30, "hl-node3", 30, 12_000),
            sample(40, "hl-node3", 30, 30_000),
            // A restart: the node's last sample is the new process's.
            sample(310, "hl-node1", 11, 11_000),
        ];
        let v = check(&o, &Limits::default());
        assert_eq!(invariants(&v), ["memory-grew"]);
        assert!(
            matches!(&v.violations[0], Violation::MemoryGrew { node, .. } if node == "hl-node2")
        );
        assert_eq!(v.memory_start_end["hl-node1"], (5_000, 11_000));
        assert_eq!(v.memory.len(), 3);
    }

    #[test]
    fn failed_faults_are_counted_not_judged() {
        let mut o = run(60, &[(10_000, 13_000, None)]);
        let mut f = fault(0, FaultKind::LinkDown, Target::Node(0), 10_000, 11_000);
        f.error = Some("nodes.sh link down 1: no such node".into());
        o.faults.push(f);
        let v = check(&o, &Limits::default());
        let link = &v.kinds[&FaultKind::LinkDown];
        assert_eq!((link.applied, link.errors), (0, 1));
        assert!(v.violations.is_empty(), "{:?}", v.violations);
    }
}
