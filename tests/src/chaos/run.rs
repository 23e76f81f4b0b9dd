//! The chaos run end to end, from its Services to its verdict. Services in a namespace of
//! their own; the client's watch on every VIP (ARP and NDP every 10 ms, TCP every 10 ms, and
//! optionally a capture of the client's wire); the schedule executed — a fault starts at its planned time, or later while a fault it must not
//! overlap has not settled yet — and the verdict written as JSON lines and printed as
//! Markdown.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::check::{Limits, Observed, Verdict, VipObserved, check, ms, secs};
use super::inject::Injector;
use super::observe::Recorder;
use super::schedule::{
    Applied, FaultKind, PlannedFault, SETTLE, ScheduleSettings, Target, admissible, generate,
};
use crate::arp_watch::ArpWatch;
use crate::lab_case::{Case, speakers, url};
use crate::node_lab::{Lab, Node, Prober, fetch_eventually, one_announcer};

/// The run's pool: its own addresses in the lab's LoadBalancer range.
const POOL: [&str; 2] = ["192.0.2.140-192.0.2.147", "2001:db8::140-2001:db8::147"];
/// Calm before the first fault, so the start is a baseline.
const LEAD_IN: Duration = Duration::from_secs(5);

/// What a run does.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub seed: u64,
    /// Faults start within this time (their heals and settling may run past it).
    pub duration: Duration,
    pub kinds: Vec<FaultKind>,
    /// Between two planned fault starts.
    pub spacing: (Duration, Duration),
    /// IPv4 Services; one dual-stack Service more.
    pub services: usize,
    /// Between two probes of a VIP, ARP/NDP and TCP alike.
    pub probe_every: Duration,
    /// The JSON lines file.
    pub out: PathBuf,
    /// A capture of the client's wire (tcpdump), if wanted.
    pub capture: Option<PathBuf>,
    /// The command line, for the record.
    pub command: String,
    pub limits: Limits,
}

/// The verdict and its Markdown.
pub struct Outcome {
    pub verdict: Verdict,
    pub markdown: String,
}

/// Runs the chaos run in the lab (root, `make lab-up`).
pub async fn run(settings: RunSettings) -> anyhow::Result<Outcome> {
    let lab = Arc::new(Lab::load("herald-chaos")?);
    let nodes = lab.nodes()?;
    let case = Arc::new(Case::new(&lab, "chaos", &POOL).await?);
    let result = run_in(&lab, &nodes, &case, &settings).await;
    // Every speaker running and ready again, whatever happened, for whoever uses the lab next.
    for node in &nodes {
        if let Err(e) = speakers(&lab, "start", node).await {
            tracing::warn!(node = %node.name, error = %format!("{e:#}"), "speaker not back");
        }
    }
    if let Ok(case) = Arc::try_unwrap(case) {
        case.cleanup().await;
    }
    result
}

async fn run_in(
    lab: &Arc<Lab>,
    nodes: &[Node],
    case: &Arc<Case>,
    s: &RunSettings,
) -> anyhow::Result<Outcome> {
    let all: Vec<&Node> = nodes.iter().collect();
    let mut services = Vec::new();
    let mut vips: Vec<IpAddr> = Vec::new();
    for i in 0..=s.services {
        let (name, dual) = if i == s.services {
            ("dual".to_string(), true)
        } else {
            (format!("web{i}"), false)
        };
        case.service(&name, dual, "Cluster").await?;
        case.endpoints(&name, &all).await?;
        for ip in case.ips(&name, if dual { 2 } else { 1 }).await? {
            vips.push(ip.parse().with_context(|| format!("{name}: {ip}"))?);
        }
        services.push(name);
    }
    for ip in &vips {
        let owner = one_announcer(lab, &ip.to_string(), None).await?;
        fetch_eventually(lab, &url(&ip.to_string())).await?;
        eprintln!("[chaos] {ip} announced by {}", owner.name);
    }

    let capture = match &s.capture {
        Some(path) => Some(Capture::start(lab, path)?),
        None => None,
    };
    let watch = ArpWatch::start_many(lab, &vips, s.probe_every)?;
    let probers: Vec<Prober> = vips
        .iter()
        .map(|ip| Prober::start(lab, SocketAddr::new(*ip, 80), s.probe_every))
        .collect::<anyhow::Result<_>>()?;
    let recorder = Recorder::start(lab.clone(), case.client.clone(), case.ns.clone())?;
    let t0 = Instant::now();

    let plan = generate(&ScheduleSettings {
        seed: s.seed,
        duration: s.duration,
        nodes: nodes.len(),
        kinds: s.kinds.clone(),
        spacing: s.spacing,
    });
    eprintln!(
        "[chaos] seed {}: {} faults planned over {:?}",
        s.seed,
        plan.len(),
        s.duration
    );
    let injector = Arc::new(Injector {
        lab: lab.clone(),
        case: case.clone(),
        nodes: nodes.to_vec(),
        services: services.clone(),
    });
    let applied = execute(&injector, &plan, t0, s.duration, nodes.len()).await;

    let recorded = recorder.stop().await?;
    let logs = watch.stop_all()?;
    let mut tcp = Vec::new();
    for p in probers {
        tcp.push(p.stop()?.answers);
    }
    let stopped = Instant::now();
    if let Some(c) = capture {
        c.stop();
    }
    let observed = Observed {
        started: t0,
        stopped,
        nodes: nodes.len(),
        vips: logs
            .into_iter()
            .zip(tcp)
            .map(|(arp, tcp)| VipObserved { arp, tcp })
            .collect(),
        faults: applied,
        status: recorded.status,
        panics: recorded.panics,
        restarts: recorded.restarts,
        memory: recorded.memory,
    };
    let verdict = check(&observed, &s.limits);
    let header = json!({
        "type": "run",
        "seed": s.seed,
        "command": s.command,
        "started_utc": k8s_openapi::jiff::Timestamp::now().to_string(),
        "duration_s": secs(s.duration),
        "ran_s": secs(stopped.duration_since(t0)),
        "nodes": nodes.len(),
        "kube_proxy_mode": lab.var("HERALD_KUBE_PROXY_MODE").unwrap_or("unknown"),
        "image": lab.var("HERALD_IMAGE").unwrap_or("unknown"),
        "commit": commit(),
        "vips": vips,
        "probe_every_ms": ms(s.probe_every),
        "faults_planned": plan.len(),
        "faults_applied": observed.faults.iter().filter(|f| f.error.is_none()).count(),
        "capture": s.capture,
        "restarts": observed.restarts.iter().map(|r| json!({
            "at_s": secs(r.at.duration_since(t0)), "pod": r.pod, "container": r.container,
            "exit_code": r.exit_code, "reason": r.reason,
        })).collect::<Vec<_>>(),
        "tcp_answered": observed.vips.iter().map(|v| v.tcp.len()).sum::<usize>(),
        "arp_ndp_requests": observed.vips.iter().map(|v| v.arp.requests).sum::<u64>(),
    });
    write_lines(&s.out, &header, &verdict)?;
    let markdown = markdown(s, &header, &verdict);
    Ok(Outcome { verdict, markdown })
}

/// Runs the plan: each fault at its time, or once nothing it must not overlap is active;
/// none starts after `duration`. Returns every fault as it happened, in order of application.
async fn execute(
    injector: &Arc<Injector>,
    plan: &[PlannedFault],
    t0: Instant,
    duration: Duration,
    nodes: usize,
) -> Vec<Applied> {
    // The faults applied and not settled yet.
    let active: Arc<Mutex<Vec<PlannedFault>>> = Arc::default();
    let mut tasks = Vec::new();
    let end = t0 + LEAD_IN + duration;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'plan: for fault in plan {
        let due = t0 + LEAD_IN + fault.start;
        loop {
            let now = Instant::now();
            if now >= end {
                break 'plan;
            }
            let fits = {
                let active = active.lock().unwrap_or_else(|p| p.into_inner());
                let refs: Vec<&PlannedFault> = active.iter().collect();
                admissible(&refs, fault, nodes)
            };
            if now >= due && fits {
                break;
            }
            let wait = if now < due {
                due - now
            } else {
                Duration::from_millis(200)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.min(Duration::from_millis(200))) => {}
                _ = &mut interrupted => {
                    eprintln!("[chaos] interrupted: no more faults; healing those applied");
                    break 'plan;
                }
            }
        }
        active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(*fault);
        eprintln!(
            "[chaos] {:>7.1}s fault {} {} on {}",
            t0.elapsed().as_secs_f64(),
            fault.id,
            fault.kind.name(),
            describe(fault.target, &injector.nodes)
        );
        let (injector, active, fault) = (injector.clone(), active.clone(), *fault);
        tasks.push(tokio::spawn(async move {
            let applied = injector.apply_and_heal(fault, t0).await;
            tokio::time::sleep(SETTLE).await;
            active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|f| f.id != fault.id);
            applied
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        match task.await {
            Ok(a) => applied.push(a),
            Err(e) => tracing::warn!(error = %e, "a fault task failed"),
        }
    }
    applied.sort_by_key(|a| a.applied);
    applied
}

fn describe(target: Target, nodes: &[Node]) -> String {
    let name = |i: usize| nodes.get(i).map_or("?", |n| n.name.as_str());
    match target {
        Target::Cluster => "the cluster".into(),
        Target::Node(n) => name(n).into(),
        Target::Pair { from, to } => format!("{} -> {}", name(from), name(to)),
    }
}

fn target_json(target: Target) -> Value {
    match target {
        Target::Cluster => json!("cluster"),
        Target::Node(n) => json!({"node": n + 1}),
        Target::Pair { from, to } => json!({"from": from + 1, "to": to + 1}),
    }
}

/// The JSON lines: the run, each fault, each kind, each speaker's memory, each violation, and
/// a summary.
fn write_lines(out: &Path, header: &Value, v: &Verdict) -> anyhow::Result<()> {
    let mut lines = vec![header.clone()];
    for f in &v.faults {
        let a = &f.applied;
        lines.push(json!({
            "type": "fault",
            "id": a.fault.id,
            "kind": a.fault.kind.name(),
            "target": target_json(a.fault.target),
            "planned_s": secs(a.fault.start + LEAD_IN),
            "hold_s": secs(a.fault.hold),
            "applied_s": secs(a.applied),
            "healed_s": secs(a.healed),
            "leaves_majority": f.leaves_majority,
            "gaps": f.gaps.iter().map(|(ip, arp, tcp)| json!({
                "vip": ip, "arp_ndp_ms": ms(*arp), "tcp_ms": ms(*tcp),
            })).collect::<Vec<_>>(),
            "error": a.error,
        }));
    }
    for (kind, k) in &v.kinds {
        lines.push(json!({
            "type": "kind",
            "kind": kind.name(),
            "applied": k.applied,
            "with_majority": k.with_majority,
            "errors": k.errors,
            "worst_arp_ndp_ms": k.worst.map(|w| ms(w.0)),
            "worst_vip": k.worst.map(|w| w.1),
            "worst_fault": k.worst.map(|w| w.2),
            "worst_tcp_ms": ms(k.worst_tcp),
            "worst_any_arp_ndp_ms": k.worst_any.map(|w| ms(w.0)),
        }));
    }
    for m in &v.memory {
        lines.push(json!({
            "type": "memory", "node": m.node, "pid": m.pid,
            "first_kib": m.first_kib, "last_kib": m.last_kib, "over_s": secs(m.over),
        }));
    }
    lines.extend(v.violations.iter().map(|x| x.to_json()));
    lines.push(json!({
        "type": "summary",
        "seed": header["seed"],
        "violations": v.violations.len(),
        "calm_worst_arp_ndp_ms": ms(v.calm_worst),
        "memory_start_end_kib": v.memory_start_end,
    }));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The report: what ran, the faults by kind with their worst gaps, memory, violations.
fn markdown(s: &RunSettings, header: &Value, v: &Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Seed **{}**, {:.1} min of faults ({} s in all), kube-proxy {}, image `{}`, commit `{}`; \
         VIPs {}; each probed every {} ms by ARP/NDP and by TCP. Command: `{}`. Results: `{}`.\n",
        s.seed,
        secs(s.duration) / 60.0,
        header["ran_s"],
        header["kube_proxy_mode"].as_str().unwrap_or("?"),
        header["image"].as_str().unwrap_or("?"),
        header["commit"].as_str().unwrap_or("?"),
        header["vips"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        ms(s.probe_every),
        s.command,
        s.out.display(),
    );
    let _ = writeln!(
        out,
        "| fault | applied | left a majority | worst ARP/NDP gap, majority left (ms) | worst TCP gap, majority left (ms) | worst ARP/NDP gap, any (ms) | failed |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let mut total = 0;
    for (kind, k) in &v.kinds {
        total += k.applied;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            k.applied,
            k.with_majority,
            k.worst
                .map_or("–".into(), |w| format!("{} ({}, #{})", ms(w.0), w.1, w.2)),
            if k.with_majority > 0 {
                ms(k.worst_tcp).to_string()
            } else {
                "–".into()
            },
            k.worst_any.map_or("–".into(), |w| ms(w.0).to_string()),
            k.errors
        );
    }
    let _ = writeln!(
        out,
        "\n{total} faults applied. Longest ARP/NDP silence outside every fault's window: {} ms.",
        ms(v.calm_worst)
    );
    let _ = writeln!(
        out,
        "Speaker VmRSS, first → last sample of the run (KiB): {}.",
        v.memory_start_end
            .iter()
            .map(|(node, (a, b))| format!("{node} {a} → {b}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let watched: Vec<String> = v
        .memory
        .iter()
        .filter(|m| m.over >= s.limits.memory_min_lifetime)
        .map(|m| {
            format!(
                "{} pid {}: {} → {} over {:.0} s",
                m.node,
                m.pid,
                m.first_kib,
                m.last_kib,
                m.over.as_secs_f64()
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Processes watched long enough to judge (after {} s of warm-up): {}.",
        s.limits.memory_warmup.as_secs(),
        if watched.is_empty() {
            "none".into()
        } else {
            watched.join("; ")
        }
    );
    if v.violations.is_empty() {
        let _ = writeln!(out, "\n**No violation.**");
    } else {
        let _ = writeln!(out, "\n**{} violations:**\n", v.violations.len());
        for x in v.violations.iter().take(50) {
            let _ = writeln!(out, "- {}", x.to_json()["detail"]);
        }
    }
    out
}

/// `tcpdump` on the client's interface: ARP, NDP, and TCP connection setups and resets, in a
/// ring of 10 files of 50 MB.
struct Capture {
    child: std::process::Child,
}

impl Capture {
    fn start(lab: &Lab, path: &Path) -> anyhow::Result<Capture> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log_path = path.with_extension("tcpdump.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        // `-Z root`: with `-C`, tcpdump opens each file after dropping to its own user, who
        // may not write here (the first 30-minute runs kept no capture: "Permission denied").
        let mut child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.client_ns()?,
                "tcpdump",
                "-Z",
                "root",
                "-i",
            ])
            .arg(lab.var("HERALD_CLIENT_IF")?)
            .args(["-s", "128", "-U", "-C", "50", "-W", "10", "-w"])
            .arg(path)
            .arg("arp or icmp6 or (ip and tcp[tcpflags] & (tcp-syn|tcp-rst) != 0) or (ip6 and tcp)")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting tcpdump")?;
        // A capture that cannot start stops the run before any fault, with tcpdump's reason.
        std::thread::sleep(std::time::Duration::from_millis(500));
        if let Some(status) = child.try_wait().context("waiting for tcpdump")? {
            let reason = std::fs::read_to_string(&log_path).unwrap_or_default();
            anyhow::bail!("tcpdump exited at once ({status}): {}", reason.trim());
        }
        Ok(Capture { child })
    }

    fn stop(mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: our own child; SIGTERM lets tcpdump flush its file.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
