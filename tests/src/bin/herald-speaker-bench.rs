//! `herald-speaker-bench`: the speaker benchmarks (issue 3, section 4), run against the node lab
//! (`make lab-up` as root). `tests/bench/speaker.sh` drives it. Benchmarks report; they never
//! fail on a number, only when the lab does not do what is needed at all (a Service never gets
//! an IP, nobody announces it).
//!
//! ```text
//! herald-speaker-bench run [options]     every phase, in the root network namespace
//! herald-speaker-bench report FILE       Markdown tables from a results file
//! herald-speaker-bench probe ...         (internal) the failover client, in the client namespace
//! herald-speaker-bench arpload ...       (internal) the ARP load generator, in the client namespace
//!
//! run options:
//!   --phases LIST        failover,arp,resources,api (default: all four)
//!   --trials N           failover trials per fault type (default 20)
//!   --interval-ms MS     the failover client's request interval (default 10)
//!   --timeout-ms MS      its per-request timeout, connect to last byte (default 80)
//!   --arp-rps N          ARP requests per second to each target (default 10000)
//!   --arp-seconds S      length of one ARP run (default 10)
//!   --arp-runs N         ARP runs (default 3)
//!   --services N         the large Service count (default 1000)
//!   --services-small N   the small one, for the API figure (default 100)
//!   --cpu-window-s S     idle CPU window (default 60)
//!   --api-window-s S     API request window (default 580: two periods of the speakers'
//!                        290 s watch timeout, so every watch is re-opened exactly twice)
//!   --hold-down-ms MS    the lab speakers' hold-down (default 3000, as tests/lab/speakers.sh)
//!   --results FILE       write the results as JSON
//!   --max-minutes M      bound on the whole run (default 180)
//! ```
//!
//! What each phase does:
//!
//! - **failover**: IPv4 Services with `externalTrafficPolicy: Local` and a ready endpoint on
//!   every node, so the body of each answer names the node that received the traffic. One
//!   Service per node is chosen (by the owner the speakers elect) and trials rotate over them.
//!   A client in the client namespace opens a fresh TCP connection every `--interval-ms` and
//!   itself triggers the fault (`kill -KILL`/`kill -TERM` of the owner's speaker, or
//!   `ip -n NODE link set eth0 down`) on its own monotonic clock, so fault and answers share
//!   one clock. Failover time = fault to the first answer from another node. Then the fault is
//!   undone and the next trial waits until the returning node is past its hold-down and has
//!   taken its IPs back.
//! - **arp**: AF_PACKET from the client namespace; requests alternate between a VIP (the
//!   speaker answers) and the owner node's own address (its kernel answers). Each request
//!   carries a distinct sender MAC (from a pool of 4096, also the Ethernet source, so the
//!   switch learns it and the reply is not flooded); the reply's target MAC names the request.
//! - **resources**: VmHWM/VmRSS of each speaker and utime+stime over a quiet window, with 0,
//!   `--services-small` and `--services` IPv6 single-stack Services (IPv6 pool, EndpointSlices
//!   on every node, so all are announced).
//! - **api**: requests started at the API server (`apiserver_request_total` deltas plus the
//!   change of `apiserver_longrunning_requests`, i.e. watches opened) over a window with the
//!   speakers running, minus the same window with the speakers stopped (SIGKILL, so that no
//!   handover writes anything), at both Service counts. Every lab client is the same user, so
//!   the API server cannot tell them apart; the difference is the speakers'.
//!
//! Before every measurement the run waits until no `herald-bench ` (the controller benchmark)
//! process runs, and notes when one appeared during a measurement. Whatever happens (error,
//! SIGINT, SIGTERM, the time bound), it restores the lab: speakers restarted, links up, IPv6
//! addresses a link-down removed put back, its Services, EndpointSlices, Events, namespace,
//! pools and advertisements deleted, the ARP phase's neighbour and bridge entries removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use herald_speaker::arp::ArpRequest;
use herald_speaker::frame::{EthernetHeader, Frame, MacAddr, Message};
use herald_speaker::packet_socket::{PacketSocket, Protocol};
use herald_tests::node_lab::{Lab, Node, is_root, run as cmd, speaker_metrics};
use herald_tests::rand_u32;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POOL4: &str = "speaker-bench-v4";
const POOL6: &str = "speaker-bench-v6";
const RANGE4: &str = "192.0.2.150-192.0.2.199";
const RANGE6: &str = "2001:db8::1:0/112";
/// The failover candidates: 192.0.2.150 onwards, until every node owns one.
const FAILOVER_CANDIDATES: u8 = 12;
/// Sender IP of the ARP load (unused in the lab: nodes are .11-.13, the client .200).
const ARP_SENDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 201);
/// Distinct sender MACs of the ARP load: 02:b3:00:00:HI:LO.
const ARP_SLOTS: usize = 4096;
const ARP_MAC_PREFIX: [u8; 4] = [0x02, 0xb3, 0x00, 0x00];
const MANAGER: &str = "herald-speaker-bench";
const ANNOUNCED_CONDITION: &str = "herald.dev/Announced";

fn usage() -> ! {
    eprintln!(
        "usage: herald-speaker-bench run [--phases failover,arp,resources,api] [--trials N] \
         [--results FILE] ...\n       herald-speaker-bench report FILE\n(see the file's \
         header for every option)"
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else { usage() };
    let rest = &args[1..];
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    match command.as_str() {
        "run" => {
            let opts = Opts::parse(rest)?;
            runtime()?.block_on(run(opts))
        }
        "probe" => {
            let opts = ProbeOpts::parse(rest)?;
            runtime()?.block_on(probe(opts))
        }
        "arpload" => arpload(ArpOpts::parse(rest)?),
        "report" => {
            let file = rest.first().context("report needs a results file")?;
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            let results: Value = serde_json::from_str(&text)?;
            print!("{}", report(&results));
            Ok(())
        }
        _ => usage(),
    }
}

// ----------------------------------------------------------------------------------------
// Options

#[derive(Clone, Debug)]
struct Opts {
    phases: BTreeSet<String>,
    trials: usize,
    interval_ms: u64,
    timeout_ms: u64,
    arp_rps: u64,
    arp_seconds: u64,
    arp_runs: usize,
    services: usize,
    services_small: usize,
    cpu_window: Duration,
    api_window: Duration,
    hold_down: Duration,
    results: Option<PathBuf>,
    max_total: Duration,
    command_line: String,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Opts> {
        let mut o = Opts {
            phases: ["failover", "arp", "resources", "api"]
                .map(String::from)
                .into(),
            trials: 20,
            interval_ms: 10,
            timeout_ms: 80,
            arp_rps: 10_000,
            arp_seconds: 10,
            arp_runs: 3,
            services: 1000,
            services_small: 100,
            cpu_window: Duration::from_secs(60),
            api_window: Duration::from_secs(580),
            hold_down: Duration::from_millis(3000),
            results: None,
            max_total: Duration::from_secs(180 * 60),
            command_line: std::env::args().collect::<Vec<_>>().join(" "),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            let num = |v: &String| -> anyhow::Result<u64> {
                v.parse()
                    .with_context(|| format!("{flag}: not a number: {v}"))
            };
            match flag.as_str() {
                "--phases" => {
                    o.phases = value()?.split(',').map(|s| s.trim().to_string()).collect();
                    for p in &o.phases {
                        ensure!(
                            ["failover", "arp", "resources", "api"].contains(&p.as_str()),
                            "unknown phase {p:?}"
                        );
                    }
                }
                "--trials" => o.trials = num(value()?)? as usize,
                "--interval-ms" => o.interval_ms = num(value()?)?,
                "--timeout-ms" => o.timeout_ms = num(value()?)?,
                "--arp-rps" => o.arp_rps = num(value()?)?,
                "--arp-seconds" => o.arp_seconds = num(value()?)?,
                "--arp-runs" => o.arp_runs = num(value()?)? as usize,
                "--services" => o.services = num(value()?)? as usize,
                "--services-small" => o.services_small = num(value()?)? as usize,
                "--cpu-window-s" => o.cpu_window = Duration::from_secs(num(value()?)?),
                "--api-window-s" => o.api_window = Duration::from_secs(num(value()?)?),
                "--hold-down-ms" => o.hold_down = Duration::from_millis(num(value()?)?),
                "--results" => o.results = Some(value()?.into()),
                "--max-minutes" => o.max_total = Duration::from_secs(num(value()?)? * 60),
                other => bail!("unknown option {other:?}"),
            }
        }
        ensure!(
            o.trials > 0 && o.interval_ms > 0 && o.timeout_ms > 0,
            "zero trials or times"
        );
        ensure!(
            o.services_small > 0 && o.services > o.services_small && o.services <= 60_000,
            "need 0 < --services-small < --services <= 60000"
        );
        ensure!(
            o.arp_rps > 0 && o.arp_seconds > 0,
            "zero ARP rate or length"
        );
        Ok(o)
    }
}

// ----------------------------------------------------------------------------------------
// Small helpers

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[speaker-bench {}] {}", now_utc(), msg.as_ref());
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Summary statistics of a sample, rounded for the tables.
fn stats(values: &[f64], digits: i32) -> Value {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let r = |x: Option<f64>| x.map(|x| round(x, digits));
    let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    json!({
        "n": v.len(),
        "min": r(v.first().copied()),
        "p50": r(pct(&v, 50.0)),
        "p90": r(pct(&v, 90.0)),
        "p99": r(pct(&v, 99.0)),
        "p999": r(pct(&v, 99.9)),
        "max": r(v.last().copied()),
        "mean": r(mean),
    })
}

/// One Prometheus text-format sample.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.trim().to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.trim_end().trim_end_matches('}');
                let mut labels = BTreeMap::new();
                let mut chars = rest.chars().peekable();
                loop {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if key.is_empty() {
                        break;
                    }
                    if chars.next() != Some('"') {
                        break;
                    }
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => val.extend(chars.next()),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.insert(key.trim().trim_start_matches(',').to_string(), val);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// What a speaker's /metrics says.
#[derive(Debug, Clone, Default)]
struct SpeakerView {
    announced: BTreeSet<String>,
    members: f64,
    quorum: f64,
    /// Counters by (metric, ip).
    per_ip: BTreeMap<(String, String), f64>,
    /// Other unlabelled values.
    plain: BTreeMap<String, f64>,
}

impl SpeakerView {
    fn parse(text: &str) -> SpeakerView {
        let mut v = SpeakerView::default();
        for s in parse_metrics(text) {
            match (s.name.as_str(), s.labels.get("ip")) {
                ("herald_speaker_announced", Some(ip)) if s.value == 1.0 => {
                    v.announced.insert(ip.clone());
                }
                ("herald_speaker_members", _) => v.members = s.value,
                ("herald_speaker_quorum", _) => v.quorum = s.value,
                (name, Some(ip)) => {
                    v.per_ip.insert((name.to_string(), ip.clone()), s.value);
                }
                (name, None) if s.labels.is_empty() => {
                    v.plain.insert(name.to_string(), s.value);
                }
                _ => {}
            }
        }
        v
    }

    fn counter(&self, name: &str, ip: &str) -> f64 {
        self.per_ip
            .get(&(name.to_string(), ip.to_string()))
            .copied()
            .unwrap_or(0.0)
    }

    fn total(&self, name: &str) -> f64 {
        self.per_ip
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

/// Processes whose command line contains `herald-bench ` (the controller benchmark).
fn other_bench() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains("herald-bench ") {
                out.push(pid);
            }
        }
    }
    out
}

fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn slot_mac(slot: usize) -> MacAddr {
    let [a, b, c, d] = ARP_MAC_PREFIX;
    MacAddr([a, b, c, d, (slot >> 8) as u8, slot as u8])
}

// ----------------------------------------------------------------------------------------
// The orchestrator

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Link,
    Term,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "sigkill",
            Fault::Link => "link-down",
            Fault::Term => "sigterm",
        }
    }
}

/// The lab's state at the start, restored at the end.
#[derive(Debug, Default)]
struct Initial {
    speakers_running: Vec<bool>,
    links_up: Vec<bool>,
    /// Global IPv6 addresses on each node's eth0 (`ADDR/PREFIX`), which a link down removes.
    v6: Vec<Vec<String>>,
    speaker_sha: String,
}

struct Bench {
    opts: Opts,
    lab: Lab,
    nodes: Vec<Node>,
    node_ns: Vec<String>,
    client_ns: String,
    client: Client,
    ns: String,
    exe: PathBuf,
    speakers_sh: PathBuf,
    kubectl: PathBuf,
    kubeconfig: String,
    initial: Initial,
    log_offsets: Vec<(PathBuf, u64)>,
    results: serde_json::Map<String, Value>,
    anomalies: Vec<String>,
    /// Measurements during which a `herald-bench` process was seen.
    overlaps: Vec<String>,
    /// The ARP phase touched these (node namespace) neighbour entries and bridge entries.
    arp_touched: BTreeSet<String>,
    created: bool,
    clk_tck: f64,
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    ensure!(
        is_root(),
        "needs root (network namespaces, AF_PACKET, signals to the speakers)"
    );
    let lab = Lab::load("herald-speaker-bench")
        .context("the node lab is not up: make lab-up as root (or set HERALD_LAB_DIR)")?;
    let mut bench = Bench::new(lab, opts.clone()).await?;
    let max_total = opts.max_total;
    let outcome = {
        let body = bench.body();
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::time::timeout(max_total, body) => match r {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("the run exceeded --max-minutes")),
            },
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
            _ = sigterm.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
        }
    };
    if let Err(e) = &outcome {
        log(format!("error: {e:#}; cleaning up"));
        bench
            .results
            .insert("error".into(), json!(format!("{e:#}")));
    }
    bench.cleanup().await;
    bench.finish();
    let results = Value::Object(bench.results.clone());
    if let Some(path) = &bench.opts.results {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
        log(format!("results in {}", path.display()));
    }
    println!("{}", report(&results));
    outcome
}

impl Bench {
    async fn new(lab: Lab, opts: Opts) -> anyhow::Result<Bench> {
        let nodes = lab.nodes()?;
        ensure!(nodes.len() >= 2, "the lab has fewer than two nodes");
        let node_ns = (1..=nodes.len())
            .map(|i| lab.var(&format!("HERALD_NODE{i}_NS")).map(str::to_string))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client_ns = lab.client_ns()?.to_string();
        let client = lab.client().await?;
        let kubeconfig = std::env::var("KUBECONFIG")
            .ok()
            .unwrap_or_else(|| lab.var("KUBECONFIG").unwrap_or_default().to_string());
        let kubectl = lab
            .var("HERALD_K8S_BIN")
            .map(|d| PathBuf::from(d).join("kubectl"))
            .unwrap_or_else(|_| PathBuf::from("kubectl"));
        let clk_tck = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        let mut bench = Bench {
            ns: format!("speaker-bench-{:x}", rand_u32() & 0xffff),
            exe: std::env::current_exe()?,
            speakers_sh: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/lab/speakers.sh")),
            opts,
            nodes,
            node_ns,
            client_ns,
            client,
            kubectl,
            kubeconfig,
            initial: Initial::default(),
            log_offsets: Vec::new(),
            results: serde_json::Map::new(),
            anomalies: Vec::new(),
            overlaps: Vec::new(),
            arp_touched: BTreeSet::new(),
            created: false,
            clk_tck,
            lab,
        };
        bench.record_initial().await?;
        Ok(bench)
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    fn speaker_binary(&self) -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/release/herald-speaker"
        ))
    }

    async fn record_initial(&mut self) -> anyhow::Result<()> {
        for i in 0..self.n() {
            self.initial
                .speakers_running
                .push(self.speaker_pid(i).is_some());
            let link = cmd(
                "ip",
                &["-n", &self.node_ns[i], "-o", "link", "show", "eth0"],
            )
            .await
            .unwrap_or_default();
            self.initial
                .links_up
                .push(link.contains(",UP") || link.contains("<UP"));
            self.initial.v6.push(self.global_v6(i).await);
        }
        self.initial.speaker_sha = cmd(
            "sha256sum",
            &[self.speaker_binary().to_str().unwrap_or_default()],
        )
        .await
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
        for i in 0..self.n() {
            let path = self
                .lab
                .dir
                .join("logs")
                .join(format!("speaker-{}.log", self.nodes[i].name));
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            self.log_offsets.push((path, len));
        }
        let lab = json!({
            "nodes": self.n(),
            "speakers_running": self.initial.speakers_running,
            "links_up": self.initial.links_up,
            "eth0_global_ipv6": self.initial.v6,
        });
        log(format!("lab at start: {lab}"));
        self.results.insert("lab_at_start".into(), lab);
        Ok(())
    }

    async fn global_v6(&self, i: usize) -> Vec<String> {
        cmd(
            "ip",
            &[
                "-n",
                &self.node_ns[i],
                "-6",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
                "scope",
                "global",
            ],
        )
        .await
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip_while(|w| *w != "inet6");
            w.next();
            w.next().map(str::to_string)
        })
        .collect()
    }

    fn speaker_pid(&self, i: usize) -> Option<u32> {
        let file = self
            .lab
            .dir
            .join("pids")
            .join(format!("speaker-hl-node{}.pid", i + 1));
        let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        (comm.trim().starts_with("herald-speaker") && !zombie).then_some(pid)
    }

    async fn speakers(&self, action: &str, which: &[usize]) -> anyhow::Result<()> {
        let mut c = tokio::process::Command::new(&self.speakers_sh);
        c.arg(action);
        for i in which {
            c.arg((i + 1).to_string());
        }
        let out = c
            .env("HERALD_LAB_DIR", &self.lab.dir)
            .output()
            .await
            .context("running tests/lab/speakers.sh")?;
        ensure!(
            out.status.success(),
            "speakers.sh {action} {which:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    async fn speaker_view(&self, i: usize) -> Option<SpeakerView> {
        let text = speaker_metrics(&self.node_ns[i]).await.ok()?;
        text.contains("herald_speaker_members")
            .then(|| SpeakerView::parse(&text))
    }

    async fn views(&self) -> Vec<Option<SpeakerView>> {
        futures::future::join_all((0..self.n()).map(|i| self.speaker_view(i))).await
    }

    /// Waits (bounded) until no `herald-bench` process runs.
    async fn wait_quiet(&mut self, what: &str) {
        let start = Instant::now();
        let mut said = false;
        loop {
            let pids = other_bench();
            if pids.is_empty() {
                if said {
                    log(format!(
                        "herald-bench gone after {:.0} s; measuring {what}",
                        start.elapsed().as_secs_f64()
                    ));
                }
                return;
            }
            if !said {
                log(format!(
                    "waiting for the controller benchmark (herald-bench, pids {pids:?}) to finish before {what}"
                ));
                said = true;
            }
            if start.elapsed() > Duration::from_secs(3 * 3600) {
                let note = format!("{what}: herald-bench still running after 3 h; measured anyway");
                log(&note);
                self.overlaps.push(note);
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// Notes that a measurement overlapped the controller benchmark.
    fn check_overlap(&mut self, what: &str, seen: bool) {
        if seen || !other_bench().is_empty() {
            self.overlaps
                .push(format!("{what}: herald-bench ran during the measurement"));
        }
    }

    async fn body(&mut self) -> anyhow::Result<()> {
        self.results.insert("date".into(), json!(now_utc()));
        self.results
            .insert("command".into(), json!(self.opts.command_line.clone()));
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let kernel = cmd("uname", &["-r"]).await.unwrap_or_default();
        self.results.insert(
            "host".into(),
            json!({"cpus": cpus, "kernel": kernel.trim()}),
        );
        if let Some(pid) = self.speaker_pid(0) {
            let line = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            self.results
                .insert("speaker_command".into(), json!(line.trim()));
        }
        for i in 0..self.n() {
            ensure!(
                self.initial.speakers_running[i],
                "the speaker of {} is not running (tests/lab/speakers.sh start)",
                self.nodes[i].name
            );
            ensure!(
                self.initial.links_up[i],
                "eth0 of {} is down",
                self.nodes[i].name
            );
        }
        self.setup().await?;
        let phases = self.opts.phases.clone();
        let mut chosen = Vec::new();
        if phases.contains("failover") || phases.contains("arp") {
            chosen = self.failover_services().await?;
        }
        if phases.contains("failover") {
            self.phase_failover(&chosen).await?;
        }
        if phases.contains("arp") {
            self.phase_arp(&chosen).await?;
        }
        if !chosen.is_empty() {
            let names: Vec<String> = chosen.iter().map(|c| c.name.clone()).collect();
            self.delete_services(&names).await;
        }
        if phases.contains("resources") || phases.contains("api") {
            self.phase_bulk(phases.contains("resources"), phases.contains("api"))
                .await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Kubernetes objects

    async fn setup(&mut self) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": self.ns}}))?,
            )
            .await
            .with_context(|| format!("creating namespace {}", self.ns))?;
        self.created = true;
        let apply = PatchParams::apply(MANAGER).force();
        let pools: Api<herald_config::IPAddressPool> = Api::all(self.client.clone());
        for (name, range) in [(POOL4, RANGE4), (POOL6, RANGE6)] {
            pools
                .patch(
                    name,
                    &apply,
                    &Patch::Apply(json!({
                        "apiVersion": "herald.dev/v1beta1", "kind": "IPAddressPool",
                        "metadata": {"name": name},
                        "spec": {"addresses": [range], "autoAssign": false}
                    })),
                )
                .await
                .with_context(|| format!("applying pool {name}"))?;
        }
        let ads: Api<herald_config::L2Advertisement> = Api::all(self.client.clone());
        ads.patch(
            POOL4,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "herald.dev/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": POOL4},
                "spec": {"ipAddressPools": [POOL4, POOL6], "interfaces": ["eth0"]}
            })),
        )
        .await
        .context("applying the L2Advertisement")?;
        log(format!(
            "namespace {}, pools {POOL4} ({RANGE4}) and {POOL6} ({RANGE6})",
            self.ns
        ));
        Ok(())
    }

    /// A selector-less LoadBalancer Service and its EndpointSlice (every node's backend).
    async fn create_service(
        &self,
        name: &str,
        v6: bool,
        policy: &str,
        ip: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut annotations = json!({"herald.dev/address-pool": if v6 { POOL6 } else { POOL4 }});
        if let Some(ip) = ip {
            annotations["herald.dev/loadBalancerIPs"] = json!(ip);
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        services
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": annotations},
                    "spec": {
                        "type": "LoadBalancer", "externalTrafficPolicy": policy,
                        "ipFamilyPolicy": "SingleStack",
                        "ipFamilies": [if v6 { "IPv6" } else { "IPv4" }],
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
                    }
                }))?,
            )
            .await
            .with_context(|| format!("creating Service {name}"))?;
        let endpoints: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "addresses": [if v6 { &n.pod_ip6 } else { &n.pod_ip4 }],
                    "nodeName": n.name,
                    "conditions": {"ready": true}
                })
            })
            .collect();
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        slices
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {
                        "name": format!("{name}-{}", if v6 { "v6" } else { "v4" }),
                        "labels": {"kubernetes.io/service-name": name}
                    },
                    "addressType": if v6 { "IPv6" } else { "IPv4" },
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": endpoints
                }))?,
            )
            .await
            .with_context(|| format!("creating the EndpointSlice of {name}"))?;
        Ok(())
    }

    async fn delete_services(&self, names: &[String]) {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        for name in names {
            let _ = services.delete(name, &DeleteParams::default()).await;
            for suffix in ["v4", "v6"] {
                let _ = slices
                    .delete(&format!("{name}-{suffix}"), &DeleteParams::default())
                    .await;
            }
        }
    }

    /// Waits until every named Service has a status IP; name -> IP.
    async fn wait_ips(
        &self,
        names: &BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let start = Instant::now();
        loop {
            let list = services.list(&ListParams::default()).await?;
            let ips: BTreeMap<String, String> = list
                .items
                .iter()
                .filter_map(|s| {
                    let name = s.metadata.name.clone()?;
                    let ip = herald_config::service::status_ips(s).first()?.to_string();
                    names.contains(&name).then_some((name, ip))
                })
                .collect();
            if ips.len() == names.len() {
                return Ok(ips);
            }
            if start.elapsed() > within {
                bail!(
                    "{} of {} Services have an IP after {within:?} (is the lab's herald-controller running?)",
                    ips.len(),
                    names.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until each IP is announced by exactly one node; IP -> node index. Records any
    /// IP seen announced by two nodes at once.
    async fn wait_announced(
        &mut self,
        ips: &BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let start = Instant::now();
        let mut nudges = 0u32;
        let mut last_nudge: Option<Instant> = None;
        let mut missing_at_nudge = 0usize;
        loop {
            let views = self.views().await;
            let mut owners: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, v) in views.iter().enumerate() {
                if let Some(v) = v {
                    for ip in v.announced.intersection(ips) {
                        owners.entry(ip.clone()).or_default().push(i);
                    }
                }
            }
            let doubles: Vec<String> = owners
                .iter()
                .filter(|(_, o)| o.len() > 1)
                .map(|(ip, o)| format!("{ip} by {o:?}"))
                .collect();
            if !doubles.is_empty() {
                self.anomaly(format!(
                    "announced by two nodes at once (speaker metrics): {}",
                    doubles
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if owners.len() == ips.len() && doubles.is_empty() {
                if nudges > 0 {
                    self.anomaly(format!(
                        "{} IPs: all announced only after {nudges} nudge(s) ({:.1} s); before the first, {missing_at_nudge} had no announcer",
                        ips.len(),
                        start.elapsed().as_secs_f64()
                    ));
                }
                return Ok(owners.into_iter().map(|(ip, o)| (ip, o[0])).collect());
            }
            let late = start.elapsed() >= self.opts.hold_down + Duration::from_secs(10);
            if late && last_nudge.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(5)) {
                if nudges == 0 {
                    missing_at_nudge = ips.len() - owners.len();
                }
                self.nudge().await;
                nudges += 1;
                last_nudge = Some(Instant::now());
            }
            if start.elapsed() > within {
                bail!(
                    "{} of {} IPs announced by exactly one node after {within:?}",
                    owners.values().filter(|o| o.len() == 1).count(),
                    ips.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn anomaly(&mut self, what: String) {
        log(format!("ANOMALY: {what}"));
        if !self.anomalies.contains(&what) {
            self.anomalies.push(what);
        }
    }

    // ------------------------------------------------------------------------------------
    // Failover

    /// IPv4 Local Services until every node owns one; the chosen one per node.
    async fn failover_services(&mut self) -> anyhow::Result<Vec<Chosen>> {
        self.wait_quiet("setup").await;
        let mut names = BTreeSet::new();
        for k in 0..FAILOVER_CANDIDATES {
            let name = format!("fo-{k:02}");
            let ip = format!("192.0.2.{}", 150 + u32::from(k));
            self.create_service(&name, false, "Local", Some(&ip))
                .await?;
            names.insert(name);
        }
        let ips = self.wait_ips(&names, Duration::from_secs(60)).await?;
        let set: BTreeSet<String> = ips.values().cloned().collect();
        let owners = self.wait_announced(&set, Duration::from_secs(60)).await?;
        let mut chosen: Vec<Chosen> = Vec::new();
        for (name, ip) in &ips {
            let owner = owners[ip];
            if !chosen.iter().any(|c| c.owner == owner) {
                chosen.push(Chosen {
                    name: name.clone(),
                    ip: ip.clone(),
                    owner,
                });
            }
        }
        chosen.sort_by_key(|c| c.owner);
        let unused: Vec<String> = names
            .iter()
            .filter(|n| !chosen.iter().any(|c| &c.name == *n))
            .cloned()
            .collect();
        self.delete_services(&unused).await;
        if chosen.len() < self.n() {
            self.anomaly(format!(
                "only {} of {} nodes own one of {FAILOVER_CANDIDATES} failover candidates",
                chosen.len(),
                self.n()
            ));
        }
        for c in &chosen {
            log(format!(
                "failover Service {} at {} owned by {}",
                c.name, c.ip, self.nodes[c.owner].name
            ));
            self.wait_http(
                &c.ip,
                &self.nodes[c.owner].name.clone(),
                Duration::from_secs(30),
            )
            .await?;
        }
        Ok(chosen)
    }

    /// Waits until `curl http://IP/` from the client is answered by `node`.
    async fn wait_http(&self, ip: &str, node: &str, within: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < within {
            let url = format!("http://{ip}/");
            last = cmd(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.client_ns,
                    "curl",
                    "-s",
                    "--max-time",
                    "0.5",
                    &url,
                ],
            )
            .await
            .unwrap_or_else(|e| e.to_string());
            if last.trim() == node {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("http://{ip}/ never answered from {node} in {within:?}; last: {last:?}")
    }

    /// Waits until each chosen IP is announced by its original owner only, every speaker sees
    /// every member and has quorum, and at least the hold-down (+0.5 s) has passed since
    /// `since`, stably for 0.5 s. When that has not happened 2 s after the hold-down ended,
    /// nudges the speakers (see [`Bench::nudge`]) every 3 s and says so in the result.
    async fn wait_stable(&mut self, chosen: &[Chosen], since: Instant) -> anyhow::Result<Value> {
        let start = Instant::now();
        let mut stable_since: Option<Instant> = None;
        let mut last = String::new();
        let mut nudges = 0u32;
        let mut last_nudge: Option<Instant> = None;
        let mut nobody_since: BTreeMap<String, Instant> = BTreeMap::new();
        let mut nobody_max = Duration::ZERO;
        let mut unsettled_at_nudge = Vec::new();
        loop {
            let views = self.views().await;
            let now = Instant::now();
            let mut ok = true;
            let mut why = Vec::new();
            for (i, v) in views.iter().enumerate() {
                match v {
                    None => {
                        ok = false;
                        why.push(format!("{}: no metrics", self.nodes[i].name));
                    }
                    Some(v) if v.members as usize != self.n() || v.quorum != 1.0 => {
                        ok = false;
                        why.push(format!(
                            "{}: members {} quorum {}",
                            self.nodes[i].name, v.members, v.quorum
                        ));
                    }
                    _ => {}
                }
            }
            for c in chosen {
                let by: Vec<usize> = views
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.as_ref().is_some_and(|v| v.announced.contains(&c.ip)))
                    .map(|(i, _)| i)
                    .collect();
                if by.len() > 1 {
                    self.anomaly(format!(
                        "{} announced by {:?} at once (speaker metrics)",
                        c.ip,
                        by.iter().map(|i| &self.nodes[*i].name).collect::<Vec<_>>()
                    ));
                }
                if by.is_empty() && views.iter().all(Option::is_some) {
                    let z = *nobody_since.entry(c.ip.clone()).or_insert(now);
                    nobody_max = nobody_max.max(now - z);
                } else {
                    nobody_since.remove(&c.ip);
                }
                if by != [c.owner] {
                    ok = false;
                    why.push(format!(
                        "{} announced by {:?}, expected {}",
                        c.ip,
                        by.iter().map(|i| &self.nodes[*i].name).collect::<Vec<_>>(),
                        self.nodes[c.owner].name
                    ));
                }
            }
            if ok {
                let s = *stable_since.get_or_insert(now);
                if now - s >= Duration::from_millis(500)
                    && now - since >= self.opts.hold_down + Duration::from_millis(500)
                {
                    return Ok(json!({
                        "settled_ms": round((now - since).as_secs_f64() * 1000.0, 0),
                        "nudges": nudges,
                        "unsettled_at_first_nudge": unsettled_at_nudge,
                        "longest_without_announcer_ms": round(nobody_max.as_secs_f64() * 1000.0, 0),
                    }));
                }
            } else {
                stable_since = None;
                last = why.join("; ");
                let late = now.saturating_duration_since(since)
                    >= self.opts.hold_down + Duration::from_secs(2);
                if late && last_nudge.is_none_or(|t| now - t >= Duration::from_secs(3)) {
                    if nudges == 0 {
                        unsettled_at_nudge = why.clone();
                    }
                    self.nudge().await;
                    nudges += 1;
                    last_nudge = Some(now);
                }
            }
            if start.elapsed() > Duration::from_secs(90) {
                bail!("the lab did not settle in 90 s: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes every speaker re-run its elections without changing any input: an annotation on
    /// the benchmark's L2Advertisement (every speaker watches them). Needed because a node's
    /// hold-down ending does not reliably re-run the elections (see the results' anomalies).
    async fn nudge(&mut self) {
        let ads: Api<herald_config::L2Advertisement> = Api::all(self.client.clone());
        let value = format!("{}", rand_u32());
        let patch = json!({"metadata": {"annotations": {"speaker-bench.herald.dev/nudge": value}}});
        if let Err(e) = ads
            .patch(POOL4, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            log(format!("nudge failed: {e}"));
        }
    }

    async fn phase_failover(&mut self, chosen: &[Chosen]) -> anyhow::Result<()> {
        let mut all = serde_json::Map::new();
        let mut since = Instant::now() - self.opts.hold_down * 2;
        let conflicts_before: f64 = self
            .views()
            .await
            .iter()
            .flatten()
            .map(|v| v.total("herald_speaker_conflicts_total"))
            .sum();
        self.wait_stable(chosen, since).await?;
        for fault in [Fault::Kill, Fault::Link, Fault::Term] {
            let mut trials = Vec::new();
            let mut invalid = 0;
            let mut t = 0;
            while trials.len() < self.opts.trials {
                let c = &chosen[t % chosen.len()];
                t += 1;
                self.wait_quiet("a failover trial").await;
                let (result, restored) = self.trial(fault, c).await;
                since = restored;
                let mut result = result?;
                // The fault undone: until the returning node is past its hold-down and has
                // its IPs back.
                let settle = self.wait_stable(chosen, since).await?;
                if settle["nudges"].as_u64().unwrap_or(0) > 0 {
                    log(format!("after the {} trial: {settle}", fault.name()));
                }
                result["restore"] = settle;
                let overlap = result["herald_bench_overlap"].as_bool() == Some(true);
                if overlap {
                    self.check_overlap(&format!("failover {} trial", fault.name()), true);
                }
                if result["valid"].as_bool() == Some(true) {
                    log(format!(
                        "{} #{:>2} {} {}: {} -> {} in {} ms ({} failed requests)",
                        fault.name(),
                        trials.len() + 1,
                        c.name,
                        c.ip,
                        self.nodes[c.owner].name,
                        result["new_node"].as_str().unwrap_or("?"),
                        result["failover_ms"],
                        result["failed_requests"]
                    ));
                    trials.push(result);
                } else {
                    invalid += 1;
                    log(format!(
                        "{} trial on {} invalid: {}",
                        fault.name(),
                        c.ip,
                        result["why"]
                    ));
                    if invalid > self.opts.trials {
                        bail!("too many invalid {} trials", fault.name());
                    }
                }
            }
            let times: Vec<f64> = trials
                .iter()
                .filter_map(|r| r["failover_ms"].as_f64())
                .collect();
            let failed: Vec<f64> = trials
                .iter()
                .filter_map(|r| r["failed_requests"].as_f64())
                .collect();
            let flaps: u64 = trials.iter().filter_map(|r| r["flaps"].as_u64()).sum();
            let never: usize = trials.iter().filter(|r| r["failover_ms"].is_null()).count();
            let mut new_nodes: BTreeMap<String, usize> = BTreeMap::new();
            for r in &trials {
                *new_nodes
                    .entry(r["new_node"].as_str().unwrap_or("none").to_string())
                    .or_default() += 1;
            }
            let exec: Vec<f64> = trials
                .iter()
                .filter_map(|r| r["fault_exec_ms"].as_f64())
                .collect();
            let restores: Vec<&Value> = trials.iter().map(|r| &r["restore"]).collect();
            let nudged = restores
                .iter()
                .filter(|r| r["nudges"].as_u64().unwrap_or(0) > 0)
                .count();
            let nobody: Vec<f64> = restores
                .iter()
                .filter_map(|r| r["longest_without_announcer_ms"].as_f64())
                .collect();
            let settled: Vec<f64> = restores
                .iter()
                .filter_map(|r| r["settled_ms"].as_f64())
                .collect();
            let summary = json!({
                "restores_needing_a_nudge": nudged,
                "restore_longest_without_announcer_ms": stats(&nobody, 0),
                "restore_settled_ms": stats(&settled, 0),
                "failover_ms": stats(&times, 1),
                "failed_requests": stats(&failed, 0),
                "fault_exec_ms": stats(&exec, 2),
                "flaps": flaps,
                "no_failover_within_max": never,
                "invalid_trials_retried": invalid,
                "new_owner": new_nodes,
            });
            log(format!("{}: {summary}", fault.name()));
            all.insert(
                fault.name().into(),
                json!({"summary": summary, "trials": trials}),
            );
        }
        self.wait_stable(chosen, since).await?;
        let conflicts_after: f64 = self
            .views()
            .await
            .iter()
            .flatten()
            .map(|v| v.total("herald_speaker_conflicts_total"))
            .sum();
        self.results.insert(
            "failover".into(),
            json!({
                "interval_ms": self.opts.interval_ms,
                "timeout_ms": self.opts.timeout_ms,
                "trials_per_fault": self.opts.trials,
                "services": chosen.iter().map(|c| json!({"name": c.name, "ip": c.ip, "owner": self.nodes[c.owner].name})).collect::<Vec<_>>(),
                "conflicts_counted_by_speakers": conflicts_after - conflicts_before,
                "faults": all,
            }),
        );
        Ok(())
    }

    /// One trial: the client probes, triggers the fault, and reports; then the fault is
    /// undone. Returns the evaluation and the moment the fault was undone.
    async fn trial(&mut self, fault: Fault, c: &Chosen) -> (anyhow::Result<Value>, Instant) {
        let owner = c.owner;
        let fault_cmd: Vec<String> = match fault {
            Fault::Kill | Fault::Term => {
                let Some(pid) = self.speaker_pid(owner) else {
                    return (
                        Err(anyhow::anyhow!("no speaker on {}", self.nodes[owner].name)),
                        Instant::now(),
                    );
                };
                let sig = if fault == Fault::Kill {
                    "-KILL"
                } else {
                    "-TERM"
                };
                vec!["kill".into(), sig.into(), pid.to_string()]
            }
            Fault::Link => [
                "ip",
                "-n",
                &self.node_ns[owner],
                "link",
                "set",
                "eth0",
                "down",
            ]
            .map(String::from)
            .to_vec(),
        };
        let overlap_seen = Arc::new(AtomicBool::new(false));
        let watcher = {
            let seen = overlap_seen.clone();
            tokio::spawn(async move {
                loop {
                    if !other_bench().is_empty() {
                        seen.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let probe = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.client_ns])
            .arg(&self.exe)
            .args([
                "probe",
                "--target",
                &format!("{}:80", c.ip),
                "--interval-ms",
                &self.opts.interval_ms.to_string(),
                "--timeout-ms",
                &self.opts.timeout_ms.to_string(),
                "--pre-ms",
                "500",
                "--after-ms",
                "1000",
                "--max-ms",
                "10000",
                "--old",
                &self.nodes[owner].name,
                "--",
            ])
            .args(&fault_cmd)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), probe).await;
        watcher.abort();
        let restore = self.restore(fault, owner).await;
        let restored = Instant::now();
        let result = (|| -> anyhow::Result<Value> {
            let out = out.map_err(|_| anyhow::anyhow!("the probe hung"))??;
            ensure!(
                out.status.success(),
                "probe failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            restore?;
            let probe: Value = serde_json::from_slice(&out.stdout).context("probe output")?;
            let mut r = evaluate(&probe, &self.nodes[owner].name);
            r["service"] = json!(c.ip);
            r["old_node"] = json!(self.nodes[owner].name);
            r["herald_bench_overlap"] = json!(overlap_seen.load(Ordering::Relaxed));
            Ok(r)
        })();
        (result, restored)
    }

    async fn restore(&mut self, fault: Fault, owner: usize) -> anyhow::Result<()> {
        match fault {
            Fault::Kill => {
                self.speakers("kill", &[owner]).await?;
                self.speakers("start", &[owner]).await?;
            }
            Fault::Term => {
                self.speakers("stop", &[owner]).await?;
                self.speakers("start", &[owner]).await?;
            }
            Fault::Link => {
                cmd(
                    "ip",
                    &["-n", &self.node_ns[owner], "link", "set", "eth0", "up"],
                )
                .await?;
                self.restore_v6(owner).await;
            }
        }
        Ok(())
    }

    /// Puts back the global IPv6 addresses of eth0 that were there at the start (a link down
    /// removes them unless keep_addr_on_down is set).
    async fn restore_v6(&mut self, i: usize) {
        let now = self.global_v6(i).await;
        for addr in self.initial.v6[i].clone() {
            if !now.contains(&addr) {
                let r = cmd(
                    "ip",
                    &[
                        "-n",
                        &self.node_ns[i],
                        "addr",
                        "add",
                        &addr,
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                )
                .await;
                if let Err(e) = r {
                    self.anomaly(format!(
                        "could not restore {addr} on {}: {e}",
                        self.nodes[i].name
                    ));
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // ARP

    async fn node_sysctls(&self, ns: &str) -> BTreeMap<String, String> {
        let script = "cd /proc/sys/net/ipv4 && for f in conf/eth0/arp_* conf/eth0/proxy_arp \
                      conf/eth0/rp_filter conf/all/arp_ignore conf/all/arp_filter \
                      conf/all/rp_filter neigh/eth0/locktime neigh/eth0/proxy_delay \
                       neigh/eth0/proxy_qlen neigh/eth0/retrans_time_ms neigh/eth0/unres_qlen; do echo \"$f=$(cat $f)\"; done";
        cmd("ip", &["netns", "exec", ns, "sh", "-c", script])
            .await
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn phase_arp(&mut self, chosen: &[Chosen]) -> anyhow::Result<()> {
        let c = chosen.first().context("no failover Service")?.clone();
        let owner = c.owner;
        let node = self.nodes[owner].clone();
        let sysctls = self.node_sysctls(&self.node_ns[owner]).await;
        let mut runs = Vec::new();
        self.arp_touched.insert(self.node_ns[owner].clone());
        for run in 0..self.opts.arp_runs {
            self.wait_stable(chosen, Instant::now() - self.opts.hold_down * 2)
                .await?;
            self.wait_quiet("an ARP run").await;
            let before = self.speaker_view(owner).await.unwrap_or_default();
            let start_ticks = self.speaker_pid(owner).and_then(proc_ticks);
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", &self.client_ns])
                .arg(&self.exe)
                .args([
                    "arpload",
                    "--if",
                    "eth0",
                    "--vip",
                    &c.ip,
                    "--node-ip",
                    &node.ip4,
                    "--sender-ip",
                    &ARP_SENDER.to_string(),
                    "--rps",
                    &self.opts.arp_rps.to_string(),
                    "--seconds",
                    &self.opts.arp_seconds.to_string(),
                ])
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(self.opts.arp_seconds + 60), out)
                .await
                .context("the ARP load generator hung")??;
            ensure!(
                out.status.success(),
                "arpload failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            let end_ticks = self.speaker_pid(owner).and_then(proc_ticks);
            let after = self.speaker_view(owner).await.unwrap_or_default();
            let mut r: Value = serde_json::from_slice(&out.stdout).context("arpload output")?;
            r["speaker_requests_received"] = json!(
                after.counter("herald_speaker_requests_received_total", &c.ip)
                    - before.counter("herald_speaker_requests_received_total", &c.ip)
            );
            r["speaker_responses_sent"] = json!(
                after.counter("herald_speaker_responses_sent_total", &c.ip)
                    - before.counter("herald_speaker_responses_sent_total", &c.ip)
            );
            if let (Some(a), Some(b)) = (start_ticks, end_ticks) {
                r["speaker_cpu_s"] = json!(round((b - a) as f64 / self.clk_tck, 2));
            }
            for target in ["speaker", "kernel"] {
                let macs = r[target]["macs"].as_array().cloned().unwrap_or_default();
                if macs.len() > 1
                    || macs
                        .iter()
                        .any(|m| m.as_str() != Some(&node.mac.to_lowercase()))
                {
                    self.anomaly(format!(
                        "ARP run {run}: {target} replies came from {macs:?}, owner MAC {}",
                        node.mac
                    ));
                }
            }
            self.check_overlap(&format!("ARP run {}", run + 1), false);
            log(format!(
                "ARP run {}: speaker {} / kernel {}",
                run + 1,
                r["speaker"]["latency_us"],
                r["kernel"]["latency_us"]
            ));
            runs.push(r);
        }
        self.results.insert(
            "arp".into(),
            json!({
                "vip": c.ip,
                "node": node.name,
                "node_ip": node.ip4,
                "rps_per_target": self.opts.arp_rps,
                "seconds": self.opts.arp_seconds,
                "node_sysctls": sysctls,
                "runs": runs,
            }),
        );
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Resources and API requests with many Services

    /// Appends a result to the array `key`, at once, so that an interrupted run keeps it.
    fn record(&mut self, key: &str, value: Value) {
        let entry = self
            .results
            .entry(key.to_string())
            .or_insert_with(|| json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(value);
        }
    }

    /// Sum over the speakers of an unlabelled counter, and of conflicts.
    async fn churn(&self) -> (f64, f64, f64) {
        let views = self.views().await;
        let sum = |name: &str| -> f64 {
            views
                .iter()
                .flatten()
                .map(|v| v.plain.get(name).copied().unwrap_or(0.0))
                .sum()
        };
        let conflicts = views
            .iter()
            .flatten()
            .map(|v| v.total("herald_speaker_conflicts_total"))
            .sum();
        (
            sum("herald_speaker_ips_gained_total"),
            sum("herald_speaker_ips_lost_total"),
            conflicts,
        )
    }

    async fn phase_bulk(&mut self, resources: bool, api: bool) -> anyhow::Result<()> {
        if resources {
            let r = self.resources(0, "running").await?;
            self.record("resources", r);
        }
        let mut created = 0;
        for target in [self.opts.services_small, self.opts.services] {
            self.wait_quiet("creating Services").await;
            let (gained0, lost0, conflicts0) = self.churn().await;
            let started = Instant::now();
            let names: Vec<String> = (created..target).map(|k| format!("bulk-{k:05}")).collect();
            let this = &*self;
            let mut creates =
                futures::stream::iter(names.iter().map(|name| async move {
                    this.create_service(name, true, "Cluster", None).await
                }))
                .buffer_unordered(16);
            while let Some(r) = creates.next().await {
                r?;
            }
            drop(creates);
            let new = target - created;
            created = target;
            let all: BTreeSet<String> = (0..target).map(|k| format!("bulk-{k:05}")).collect();
            let within = Duration::from_secs(120 + target as u64 / 5);
            let ips: BTreeSet<String> = self.wait_ips(&all, within).await?.into_values().collect();
            self.wait_announced(&ips, within).await?;
            let announced_after = started.elapsed();
            self.wait_conditions(target, within).await?;
            log(format!(
                "{target} Services: all announced {:.1} s after the first create, conditions written after {:.1} s",
                announced_after.as_secs_f64(),
                started.elapsed().as_secs_f64()
            ));
            self.wait_writes_quiet().await?;
            let (gained1, lost1, conflicts1) = self.churn().await;
            let creation = json!({
                "services": target,
                "created": new,
                "all_announced_s": round(announced_after.as_secs_f64(), 1),
                "ips_gained": gained1 - gained0,
                "ips_lost": lost1 - lost0,
                "conflicts_counted": conflicts1 - conflicts0,
            });
            log(format!("creating {new} Services: {creation}"));
            if gained1 - gained0 > new as f64 || conflicts1 > conflicts0 {
                self.anomaly(format!(
                    "creating {new} Services: {} IPs gained and {} lost (ideal {new} and 0), {} conflicts counted",
                    gained1 - gained0,
                    lost1 - lost0,
                    conflicts1 - conflicts0
                ));
            }
            self.record("creation", creation);
            if resources {
                let mut r = self.resources(target, "running").await?;
                r["announce_all_s"] = json!(round(announced_after.as_secs_f64(), 1));
                self.record("resources", r);
            }
            if api {
                let a = self.api_windows(target, &ips).await?;
                self.record("api", a);
                if resources {
                    let r = self.resources(target, "after restart").await?;
                    self.record("resources", r);
                }
            }
        }
        Ok(())
    }

    /// Waits until every bulk Service has the speakers' Announced condition.
    async fn wait_conditions(&self, count: usize, within: Duration) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let start = Instant::now();
        loop {
            let list = services.list(&ListParams::default()).await?;
            let done = list
                .items
                .iter()
                .filter(|s| {
                    s.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("bulk-"))
                })
                .filter(|s| {
                    s.status
                        .as_ref()
                        .and_then(|st| st.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == ANNOUNCED_CONDITION && c.status == "True")
                        })
                })
                .count();
            if done >= count {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!("{done} of {count} Services have the Announced condition after {within:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn scrape(&self) -> anyhow::Result<ApiSnapshot> {
        let out = tokio::process::Command::new(&self.kubectl)
            .args(["--kubeconfig", &self.kubeconfig, "get", "--raw", "/metrics"])
            .output()
            .await
            .context("kubectl get --raw /metrics")?;
        ensure!(
            out.status.success(),
            "kubectl get --raw /metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(ApiSnapshot::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Waits until no Service status or Event write happened for 15 s (bounded: 3 min).
    async fn wait_writes_quiet(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = self.scrape().await?;
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = self.scrape().await?;
            let writes = now.writes() - last.writes();
            last = now;
            if writes > 0.0 {
                quiet_since = Instant::now();
            }
            if quiet_since.elapsed() >= Duration::from_secs(15) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(180) {
                log("Service status / Event writes did not stop within 3 min; measuring anyway");
                return Ok(());
            }
        }
    }

    async fn resources(&mut self, services: usize, when: &str) -> anyhow::Result<Value> {
        self.wait_quiet("speaker CPU").await;
        let n = self.n();
        let pids: Vec<u32> = (0..n)
            .map(|i| {
                self.speaker_pid(i)
                    .with_context(|| format!("no speaker on {}", self.nodes[i].name))
            })
            .collect::<anyhow::Result<_>>()?;
        let window = self.opts.cpu_window;
        let first: Vec<u64> = pids.iter().map(|p| proc_ticks(*p).unwrap_or(0)).collect();
        let mut prev = first.clone();
        let mut max_1s = vec![0u64; n];
        let mut seen = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..window.as_secs() {
            tick.tick().await;
            seen |= !other_bench().is_empty();
            for (i, p) in pids.iter().enumerate() {
                let t = proc_ticks(*p).unwrap_or(prev[i]);
                max_1s[i] = max_1s[i].max(t.saturating_sub(prev[i]));
                prev[i] = t;
            }
        }
        let views = self.views().await;
        let speakers: Vec<Value> = (0..n)
            .map(|i| {
                let ticks = prev[i].saturating_sub(first[i]) as f64;
                let cpu_s = ticks / self.clk_tck;
                json!({
                    "node": self.nodes[i].name,
                    "pid": pids[i],
                    "vmhwm_kib": proc_status_kib(pids[i], "VmHWM"),
                    "vmrss_kib": proc_status_kib(pids[i], "VmRSS"),
                    "threads": proc_status_kib(pids[i], "Threads"),
                    "cpu_s": round(cpu_s, 2),
                    "cpu_percent": round(100.0 * cpu_s / window.as_secs_f64(), 3),
                    "max_1s_percent": round(100.0 * max_1s[i] as f64 / self.clk_tck, 1),
                    "announced": views[i].as_ref().map(|v| v.announced.len()),
                })
            })
            .collect();
        let label = format!("resources with {services} Services ({when})");
        self.check_overlap(&label, seen);
        log(format!("{label}: {}", json!(speakers)));
        Ok(json!({
            "services": services,
            "when": when,
            "window_s": window.as_secs(),
            "clk_tck": self.clk_tck,
            "speakers": speakers,
        }))
    }

    async fn api_window(&mut self, label: &str) -> anyhow::Result<ApiDelta> {
        self.wait_quiet(label).await;
        let window = self.opts.api_window;
        log(format!(
            "{label}: counting API requests for {} s",
            window.as_secs()
        ));
        let before = self.scrape().await?;
        let started = Instant::now();
        let mut seen = false;
        while started.elapsed() < window {
            seen |= !other_bench().is_empty();
            let left = window.saturating_sub(started.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(5))).await;
        }
        let after = self.scrape().await?;
        let secs = started.elapsed().as_secs_f64();
        self.check_overlap(label, seen);
        Ok(ApiDelta::between(&before, &after, secs))
    }

    async fn api_windows(
        &mut self,
        services: usize,
        ips: &BTreeSet<String>,
    ) -> anyhow::Result<Value> {
        let all: Vec<usize> = (0..self.n()).collect();
        let running = self
            .api_window(&format!("API, {services} Services, speakers running"))
            .await?;
        self.speakers("kill", &all).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let baseline = self
            .api_window(&format!("API, {services} Services, speakers stopped"))
            .await?;
        // Restart; the first minute shows what a (re)start costs.
        let before = self.scrape().await?;
        let t = Instant::now();
        self.speakers("start", &all).await?;
        let within = Duration::from_secs(120 + services as u64 / 5);
        self.wait_announced(ips, within).await?;
        let announced_s = t.elapsed().as_secs_f64();
        let left = Duration::from_secs(60).saturating_sub(t.elapsed());
        tokio::time::sleep(left).await;
        let after = self.scrape().await?;
        let startup = ApiDelta::between(&before, &after, t.elapsed().as_secs_f64());
        self.wait_writes_quiet().await?;

        let speakers_per_min = running.per_min() - baseline.per_min();
        let startup_extra = startup.started - baseline.per_min() * startup.seconds / 60.0;
        let mut diff: BTreeMap<String, f64> = BTreeMap::new();
        for (k, v) in &running.by_key {
            *diff.entry(k.clone()).or_default() += v * 60.0 / running.seconds;
        }
        for (k, v) in &baseline.by_key {
            *diff.entry(k.clone()).or_default() -= v * 60.0 / baseline.seconds;
        }
        let diff: BTreeMap<String, f64> = diff
            .into_iter()
            .filter(|(_, v)| v.abs() >= 0.05)
            .map(|(k, v)| (k, round(v, 2)))
            .collect();
        let mut startup_keys: BTreeMap<String, f64> = startup
            .by_key
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, v) in &baseline.by_key {
            if let Some(s) = startup_keys.get_mut(k) {
                *s -= v * startup.seconds / baseline.seconds;
            }
        }
        let startup_keys: BTreeMap<String, f64> = startup_keys
            .into_iter()
            .filter(|(_, v)| *v >= 0.5)
            .map(|(k, v)| (k, round(v, 1)))
            .collect();
        let r = json!({
            "services": services,
            "window_s": round(running.seconds, 1),
            "running": running.to_json(),
            "baseline": baseline.to_json(),
            "speakers_per_min": round(speakers_per_min, 2),
            "speakers_per_min_by_request": diff,
            "restart": {
                "all_announced_s": round(announced_s, 1),
                "first_s": round(startup.seconds, 1),
                "requests_beyond_baseline": round(startup_extra, 1),
                "by_request": startup_keys,
            },
        });
        log(format!(
            "API with {services} Services: speakers {:.2} requests/min (running {:.2}, baseline {:.2})",
            speakers_per_min,
            running.per_min(),
            baseline.per_min()
        ));
        Ok(r)
    }

    // ------------------------------------------------------------------------------------
    // Cleanup and the end

    async fn cleanup(&mut self) {
        log("restoring the lab");
        for i in 0..self.n() {
            if self.initial.links_up.get(i) == Some(&true) {
                let _ = cmd("ip", &["-n", &self.node_ns[i], "link", "set", "eth0", "up"]).await;
                self.restore_v6(i).await;
            }
        }
        let running: Vec<usize> = (0..self.n())
            .filter(|i| self.initial.speakers_running.get(*i) == Some(&true))
            .collect();
        if let Err(e) = self.speakers("start", &running).await {
            log(format!("could not restart the speakers: {e:#}"));
            self.anomaly(format!("cleanup: could not restart the speakers: {e:#}"));
        }
        if self.created {
            let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
            let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
            let events: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(self.client.clone(), &self.ns);
            let core_events: Api<k8s_openapi::api::core::v1::Event> =
                Api::namespaced(self.client.clone(), &self.ns);
            let dp = DeleteParams::default();
            let lp = ListParams::default();
            let _ = services.delete_collection(&dp, &lp).await;
            let _ = slices.delete_collection(&dp, &lp).await;
            let _ = events.delete_collection(&dp, &lp).await;
            let _ = core_events.delete_collection(&dp, &lp).await;
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let _ = namespaces.delete(&self.ns, &dp).await;
            let ads: Api<herald_config::L2Advertisement> = Api::all(self.client.clone());
            let _ = ads.delete(POOL4, &dp).await;
            let pools: Api<herald_config::IPAddressPool> = Api::all(self.client.clone());
            let _ = pools.delete(POOL4, &dp).await;
            let _ = pools.delete(POOL6, &dp).await;
        }
        for ns in self.arp_touched.clone() {
            let _ = cmd(
                "ip",
                &[
                    "-n",
                    &ns,
                    "neigh",
                    "del",
                    &ARP_SENDER.to_string(),
                    "dev",
                    "eth0",
                ],
            )
            .await;
        }
        if !self.arp_touched.is_empty()
            && let Ok(switch) = self.lab.var("HERALD_SWITCH_NS")
        {
            let port = self
                .lab
                .var("HERALD_CLIENT_SWITCH_PORT")
                .unwrap_or("client")
                .to_string();
            let batch: String = (0..ARP_SLOTS)
                .map(|s| format!("fdb del {} dev {port} master\n", slot_mac(s)))
                .collect();
            let file =
                std::env::temp_dir().join(format!("speaker-bench-fdb-{}", std::process::id()));
            if std::fs::write(&file, batch).is_ok() {
                // Entries that already aged out make some lines fail: -force goes on.
                let _ = cmd(
                    "bridge",
                    &[
                        "-n",
                        switch,
                        "-force",
                        "-batch",
                        file.to_str().unwrap_or_default(),
                    ],
                )
                .await;
                let _ = std::fs::remove_file(&file);
            }
        }
        // The client's neighbour entries for the benchmark's VIPs.
        for k in 0..FAILOVER_CANDIDATES {
            let ip = format!("192.0.2.{}", 150 + u32::from(k));
            let _ = cmd(
                "ip",
                &["-n", &self.client_ns, "neigh", "del", &ip, "dev", "eth0"],
            )
            .await;
        }
        // Let the speakers settle, then report what the lab looks like.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            let views = self.views().await;
            if views
                .iter()
                .all(|v| v.as_ref().is_some_and(|v| v.members as usize == self.n()))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let end = json!({
            "speakers_running": (0..self.n()).map(|i| self.speaker_pid(i).is_some()).collect::<Vec<_>>(),
            "eth0_global_ipv6": futures::future::join_all((0..self.n()).map(|i| self.global_v6(i))).await,
        });
        log(format!("lab at the end: {end}"));
        self.results.insert("lab_at_end".into(), end);
    }

    /// Logs, anomalies and overlaps into the results.
    fn finish(&mut self) {
        let mut logs = serde_json::Map::new();
        for (path, offset) in &self.log_offsets {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let tail = if (*offset as usize) <= bytes.len() {
                &bytes[*offset as usize..]
            } else {
                &bytes[..]
            };
            let text = String::from_utf8_lossy(tail);
            let mut levels: BTreeMap<String, u64> = BTreeMap::new();
            let mut messages: BTreeMap<String, u64> = BTreeMap::new();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    *levels.entry("unparsed".into()).or_default() += 1;
                    if line.contains("panick") || line.contains("ERROR") || line.contains("WARN") {
                        *messages
                            .entry(line.chars().take(160).collect())
                            .or_default() += 1;
                    }
                    continue;
                };
                let level = v["level"].as_str().unwrap_or("?").to_string();
                if level == "WARN" || level == "ERROR" {
                    let mut m = v["message"].as_str().unwrap_or("?").to_string();
                    if let Some(e) = v["error"].as_str() {
                        m = format!("{m}: {}", e.chars().take(100).collect::<String>());
                    }
                    *messages.entry(format!("{level} {m}")).or_default() += 1;
                } else if v["message"].as_str() == Some("quorum changed") {
                    // A quorum flicker withdraws every IP of the node: worth seeing.
                    let m = format!("INFO quorum changed to {}", v["quorum"]);
                    *messages.entry(m).or_default() += 1;
                }
                *levels.entry(level).or_default() += 1;
            }
            let name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            logs.insert(
                name,
                json!({"levels": levels, "warnings_and_errors": messages}),
            );
        }
        self.results
            .insert("speaker_logs".into(), Value::Object(logs));
        let sha_now = std::process::Command::new("sha256sum")
            .arg(self.speaker_binary())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        if sha_now != self.initial.speaker_sha {
            self.anomaly(format!(
                "target/release/herald-speaker changed during the run ({} -> {sha_now}): restarted speakers ran another build",
                self.initial.speaker_sha
            ));
        }
        self.results.insert(
            "speaker_binary_sha256".into(),
            json!(self.initial.speaker_sha),
        );
        self.results
            .insert("anomalies".into(), json!(self.anomalies));
        self.results.insert(
            "overlaps_with_controller_bench".into(),
            json!(self.overlaps),
        );
    }
}

#[derive(Clone, Debug)]
struct Chosen {
    name: String,
    ip: String,
    owner: usize,
}

/// The failover verdict of one probe run.
fn evaluate(probe: &Value, old: &str) -> Value {
    let t0 = probe["t0_us"].as_f64().unwrap_or(0.0);
    let t1 = probe["t1_us"].as_f64().unwrap_or(0.0);
    struct S {
        sent: f64,
        done: f64,
        node: Option<String>,
    }
    let samples: Vec<S> = probe["samples"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| S {
                    sent: s[0].as_f64().unwrap_or(0.0),
                    done: s[1].as_f64().unwrap_or(0.0),
                    node: s[2].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default();
    let pre: Vec<&S> = samples.iter().filter(|s| s.done < t0).collect();
    let pre_old = pre
        .iter()
        .filter(|s| s.node.as_deref() == Some(old))
        .count();
    let pre_other = pre
        .iter()
        .filter(|s| s.node.as_ref().is_some_and(|n| n != old))
        .count();
    let mut r = json!({
        "fault_exec_ms": round((t1 - t0) / 1000.0, 2),
        "pre_fault_requests": pre.len(),
        "exit": probe["fault_status"],
    });
    if pre.len() < 10 || pre_other > 0 || (pre_old as f64) < 0.9 * pre.len() as f64 {
        r["valid"] = json!(false);
        r["why"] = json!(format!(
            "before the fault: {} requests, {pre_old} answered by {old}, {pre_other} by others",
            pre.len()
        ));
        return r;
    }
    if probe["fault_status"].as_i64() != Some(0) {
        r["valid"] = json!(false);
        r["why"] = json!("the fault command failed");
        return r;
    }
    r["valid"] = json!(true);
    let first = samples
        .iter()
        .filter(|s| s.done >= t0 && s.node.as_ref().is_some_and(|n| n != old))
        .min_by(|a, b| a.done.total_cmp(&b.done));
    let Some(first) = first else {
        r["failover_ms"] = Value::Null;
        r["new_node"] = Value::Null;
        r["failed_requests"] = json!(
            samples
                .iter()
                .filter(|s| s.sent >= t0 && s.node.is_none())
                .count()
        );
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
    let others: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.done >= first.done)
        .filter_map(|s| s.node.as_deref())
        .filter(|n| *n != old)
        .collect();
    let failed_after = samples
        .iter()
        .filter(|s| s.sent > first.done && s.node.is_none())
        .count();
    r["failover_ms"] = json!(round((first.done - t0) / 1000.0, 1));
    r["first_new_request_sent_ms"] = json!(round((first.sent - t0) / 1000.0, 1));
    r["new_node"] = json!(first.node);
    r["failed_requests"] = json!(failed);
    r["failed_after_failover"] = json!(failed_after);
    r["last_old_answer_ms"] = if last_old.is_nan() {
        Value::Null
    } else {
        json!(round((last_old - t0) / 1000.0, 1))
    };
    r["flaps"] = json!(flaps);
    r["nodes_after"] = json!(others);
    r
}

// ----------------------------------------------------------------------------------------
// API server metrics

#[derive(Debug, Clone, Default)]
struct ApiSnapshot {
    /// Completed requests by "VERB group/resource[/sub] (scope)".
    completed: BTreeMap<String, f64>,
    /// Long-running requests in flight, same keys.
    in_flight: BTreeMap<String, f64>,
    dispatched: f64,
}

impl ApiSnapshot {
    fn parse(text: &str) -> ApiSnapshot {
        let mut s = ApiSnapshot::default();
        for m in parse_metrics(text) {
            let key = |l: &BTreeMap<String, String>| {
                let g = l.get("group").map(String::as_str).unwrap_or("");
                let r = l.get("resource").map(String::as_str).unwrap_or("");
                let sub = l.get("subresource").map(String::as_str).unwrap_or("");
                let scope = l.get("scope").map(String::as_str).unwrap_or("");
                let verb = l.get("verb").map(String::as_str).unwrap_or("?");
                if r.is_empty() {
                    return format!("{verb} {sub} (non-resource)");
                }
                let mut k = format!(
                    "{verb} {}{r}",
                    if g.is_empty() {
                        String::new()
                    } else {
                        format!("{g}/")
                    },
                );
                if !sub.is_empty() {
                    k.push('/');
                    k.push_str(sub);
                }
                if !scope.is_empty() {
                    k.push_str(&format!(" ({scope})"));
                }
                k
            };
            match m.name.as_str() {
                "apiserver_request_total" => {
                    *s.completed.entry(key(&m.labels)).or_default() += m.value
                }
                "apiserver_longrunning_requests" => {
                    *s.in_flight.entry(key(&m.labels)).or_default() += m.value
                }
                "apiserver_flowcontrol_dispatched_requests_total" => s.dispatched += m.value,
                _ => {}
            }
        }
        s
    }

    /// Service status and Event writes (what the speakers write when owners change).
    fn writes(&self) -> f64 {
        self.completed
            .iter()
            .filter(|(k, _)| {
                k.contains("services/status")
                    || (k.contains("events")
                        && !k.starts_with("GET")
                        && !k.starts_with("LIST")
                        && !k.starts_with("WATCH"))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Requests started between two snapshots.
#[derive(Debug, Clone, Default)]
struct ApiDelta {
    seconds: f64,
    /// Requests started: completed delta + change of long-running requests in flight (the
    /// scrapes themselves are not counted by apiserver_request_total).
    started: f64,
    dispatched: f64,
    by_key: BTreeMap<String, f64>,
}

impl ApiDelta {
    fn between(a: &ApiSnapshot, b: &ApiSnapshot, seconds: f64) -> ApiDelta {
        let mut by_key: BTreeMap<String, f64> = BTreeMap::new();
        let keys: BTreeSet<&String> = a
            .completed
            .keys()
            .chain(b.completed.keys())
            .chain(a.in_flight.keys())
            .chain(b.in_flight.keys())
            .collect();
        for k in keys {
            let get = |m: &BTreeMap<String, f64>| m.get(k).copied().unwrap_or(0.0);
            let v = get(&b.completed) - get(&a.completed) + get(&b.in_flight) - get(&a.in_flight);
            if v.abs() > 1e-9 {
                by_key.insert(k.clone(), v);
            }
        }
        // `/metrics` itself is not in apiserver_request_total, but the second scrape is in
        // the dispatched counter.
        let started = by_key.values().sum();
        ApiDelta {
            seconds,
            started,
            dispatched: b.dispatched - a.dispatched - 1.0,
            by_key,
        }
    }

    fn per_min(&self) -> f64 {
        self.started * 60.0 / self.seconds.max(1e-9)
    }

    fn to_json(&self) -> Value {
        json!({
            "seconds": round(self.seconds, 1),
            "requests_started": round(self.started, 0),
            "apf_dispatched": round(self.dispatched, 0),
            "per_min": round(self.per_min(), 2),
            "by_request": self.by_key.iter().map(|(k, v)| (k.clone(), json!(round(*v, 0)))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

// ----------------------------------------------------------------------------------------
// probe: the failover client (in the client namespace)

struct ProbeOpts {
    target: SocketAddr,
    interval: Duration,
    timeout: Duration,
    pre: Duration,
    after: Duration,
    max: Duration,
    old: String,
    fault: Vec<String>,
}

impl ProbeOpts {
    fn parse(args: &[String]) -> anyhow::Result<ProbeOpts> {
        let mut target = None;
        let (mut interval, mut timeout, mut pre, mut after, mut max) = (10, 80, 500, 1000, 10_000);
        let mut old = String::new();
        let mut fault = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--" {
                fault = it.by_ref().cloned().collect();
                break;
            }
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            let ms = || value.parse::<u64>().with_context(|| flag.to_string());
            match flag.as_str() {
                "--target" => target = Some(value.parse().context("--target")?),
                "--interval-ms" => interval = ms()?,
                "--timeout-ms" => timeout = ms()?,
                "--pre-ms" => pre = ms()?,
                "--after-ms" => after = ms()?,
                "--max-ms" => max = ms()?,
                "--old" => old = value.clone(),
                other => bail!("unknown probe option {other:?}"),
            }
        }
        ensure!(!fault.is_empty(), "probe needs a fault command after --");
        Ok(ProbeOpts {
            target: target.context("--target")?,
            interval: Duration::from_millis(interval),
            timeout: Duration::from_millis(timeout),
            pre: Duration::from_millis(pre),
            after: Duration::from_millis(after),
            max: Duration::from_millis(max),
            old,
            fault,
        })
    }
}

/// One HTTP GET on a fresh connection: the body (the node's name).
async fn get_node(addr: SocketAddr) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.trim().to_string())
}

async fn probe(o: ProbeOpts) -> anyhow::Result<()> {
    let origin = Instant::now();
    let us = move |t: Instant| t.duration_since(origin).as_micros() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64, Result<String, String>)>();
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        let (target, interval, timeout) = (o.target, o.interval, o.timeout);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let r = match tokio::time::timeout(timeout, get_node(target)).await {
                        Ok(r) => r,
                        Err(_) => Err("timeout".into()),
                    };
                    let _ = tx.send((us(sent), us(Instant::now()), r));
                });
            }
        })
    };
    let mut samples: Vec<(u64, u64, Result<String, String>)> = Vec::new();
    tokio::time::sleep(o.pre).await;
    let t0 = Instant::now();
    let status = tokio::process::Command::new(&o.fault[0])
        .args(&o.fault[1..])
        .status()
        .await;
    let t1 = Instant::now();
    let fault_status = status.map(|s| s.code().unwrap_or(-1)).unwrap_or(-2);
    let t0_us = us(t0);
    let mut first_other: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = samples.len();
        while let Ok(s) = rx.try_recv() {
            samples.push(s);
        }
        if first_other.is_none()
            && samples[before..]
                .iter()
                .any(|(_, done, r): &(u64, u64, Result<String, String>)| {
                    *done >= t0_us && r.as_ref().is_ok_and(|n| *n != o.old)
                })
        {
            first_other = Some(Instant::now());
        }
        let now = Instant::now();
        if first_other.is_some_and(|f| now - f >= o.after) || now - t0 >= o.max {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.timeout + Duration::from_millis(30)).await;
    ticker.abort();
    while let Ok(s) = rx.try_recv() {
        samples.push(s);
    }
    samples.sort_by_key(|s| s.0);
    let out = json!({
        "t0_us": t0_us,
        "t1_us": us(t1),
        "fault_status": fault_status,
        "samples": samples.iter().map(|(sent, done, r)| match r {
            Ok(node) => json!([sent, done, node, null]),
            Err(e) => json!([sent, done, null, e]),
        }).collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}

// ----------------------------------------------------------------------------------------
// arpload: the ARP load generator (in the client namespace)

struct ArpOpts {
    iface: String,
    vip: Ipv4Addr,
    node_ip: Ipv4Addr,
    sender_ip: Ipv4Addr,
    rps: u64,
    seconds: u64,
}

impl ArpOpts {
    fn parse(args: &[String]) -> anyhow::Result<ArpOpts> {
        let mut o = ArpOpts {
            iface: "eth0".into(),
            vip: Ipv4Addr::UNSPECIFIED,
            node_ip: Ipv4Addr::UNSPECIFIED,
            sender_ip: ARP_SENDER,
            rps: 10_000,
            seconds: 10,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--if" => o.iface = value.clone(),
                "--vip" => o.vip = value.parse().context("--vip")?,
                "--node-ip" => o.node_ip = value.parse().context("--node-ip")?,
                "--sender-ip" => o.sender_ip = value.parse().context("--sender-ip")?,
                "--rps" => o.rps = value.parse().context("--rps")?,
                "--seconds" => o.seconds = value.parse().context("--seconds")?,
                other => bail!("unknown arpload option {other:?}"),
            }
        }
        ensure!(
            !o.vip.is_unspecified() && !o.node_ip.is_unspecified(),
            "--vip and --node-ip are required"
        );
        Ok(o)
    }
}

struct ArpShared {
    /// Send time of each request (ns since `epoch`, +1; 0 = not sent).
    sent_at: Vec<AtomicU64>,
    /// The last request sent from each slot (+1).
    slot_seq: Vec<AtomicU64>,
    /// Latency of each request (ns, +1; 0 = unanswered).
    latency: Vec<AtomicU64>,
    done: AtomicBool,
    epoch: Instant,
}

fn arpload(o: ArpOpts) -> anyhow::Result<()> {
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", o.iface))
        .with_context(|| format!("no interface {}", o.iface))?
        .trim()
        .parse()?;
    let total = usize::try_from(o.rps * 2 * o.seconds)?;
    let shared = Arc::new(ArpShared {
        sent_at: (0..total).map(|_| AtomicU64::new(0)).collect(),
        slot_seq: (0..ARP_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        latency: (0..total).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicBool::new(false),
        epoch: Instant::now(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sent_secs, dup, mismatched, macs) = rt.block_on(async {
        let rx = PacketSocket::open(ifindex, Protocol::Arp).context("AF_PACKET socket")?;
        let sender = {
            let shared = shared.clone();
            let (vip, node_ip, sender_ip, rps) = (o.vip, o.node_ip, o.sender_ip, o.rps);
            std::thread::spawn(move || -> anyhow::Result<f64> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let r = rt.block_on(async {
                    let sock = PacketSocket::open(ifindex, Protocol::Arp)?;
                    let gap_ns = 1_000_000_000u64 / (2 * rps);
                    let start = Instant::now();
                    for seq in 0..total {
                        let due = start + Duration::from_nanos(gap_ns * seq as u64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let slot = seq % ARP_SLOTS;
                        let mac = slot_mac(slot);
                        let target = if seq.is_multiple_of(2) { vip } else { node_ip };
                        let frame = Frame {
                            eth: EthernetHeader {
                                dst: MacAddr::BROADCAST,
                                src: mac,
                            },
                            message: Message::ArpRequest(ArpRequest {
                                sender_mac: mac,
                                sender_ip,
                                target_mac: MacAddr::ZERO,
                                target_ip: target,
                            }),
                        }
                        .to_bytes();
                        let t = shared.epoch.elapsed().as_nanos() as u64 + 1;
                        shared.sent_at[seq].store(t, Ordering::SeqCst);
                        shared.slot_seq[slot].store(seq as u64 + 1, Ordering::SeqCst);
                        sock.send(&frame).await?;
                    }
                    Ok::<f64, anyhow::Error>(start.elapsed().as_secs_f64())
                });
                shared.done.store(true, Ordering::SeqCst);
                r
            })
        };
        let mut buf = vec![0u8; 2048];
        let mut dup = 0u64;
        let mut mismatched = 0u64;
        let mut macs: [BTreeSet<String>; 2] = Default::default();
        let mut done_at: Option<Instant> = None;
        loop {
            if done_at.is_none() && shared.done.load(Ordering::SeqCst) {
                done_at = Some(Instant::now());
            }
            if done_at.is_some_and(|d| d.elapsed() > Duration::from_millis(500)) {
                break;
            }
            let n = match tokio::time::timeout(Duration::from_millis(50), rx.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(anyhow::Error::from(e).context("receiving")),
                Err(_) => continue,
            };
            let now = shared.epoch.elapsed().as_nanos() as u64;
            let Ok(Frame {
                message: Message::ArpReply(reply),
                ..
            }) = Frame::decode(&buf[..n])
            else {
                continue;
            };
            let m = reply.target_mac.0;
            if reply.target_ip != o.sender_ip || m[..4] != ARP_MAC_PREFIX {
                continue;
            }
            let slot = (usize::from(m[4]) << 8) | usize::from(m[5]);
            if slot >= ARP_SLOTS {
                continue;
            }
            let seq = shared.slot_seq[slot].load(Ordering::SeqCst);
            if seq == 0 {
                continue;
            }
            let seq = (seq - 1) as usize;
            let expected = if seq.is_multiple_of(2) {
                o.vip
            } else {
                o.node_ip
            };
            if reply.sender_ip != expected {
                mismatched += 1;
                continue;
            }
            macs[seq % 2].insert(reply.sender_mac.to_string());
            let sent = shared.sent_at[seq].load(Ordering::SeqCst);
            if sent == 0 {
                continue;
            }
            let lat = now.saturating_sub(sent - 1) + 1;
            if shared.latency[seq]
                .compare_exchange(0, lat, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                dup += 1;
            }
        }
        let secs = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender thread panicked"))??;
        Ok::<_, anyhow::Error>((secs, dup, mismatched, macs))
    })?;
    let target_json = |parity: usize| {
        let lat: Vec<f64> = (parity..total)
            .step_by(2)
            .filter_map(|s| {
                let l = shared.latency[s].load(Ordering::SeqCst);
                (l > 0).then(|| (l - 1) as f64 / 1000.0)
            })
            .collect();
        let sent = (parity..total).step_by(2).count();
        json!({
            "sent": sent,
            "answered": lat.len(),
            "unanswered": sent - lat.len(),
            "latency_us": stats(&lat, 1),
            "macs": macs[parity],
        })
    };
    let out = json!({
        "requests": total,
        "sender_seconds": round(sent_secs, 3),
        "achieved_rps_total": round(total as f64 / sent_secs, 0),
        "duplicate_replies": dup,
        "mismatched_replies": mismatched,
        "speaker": target_json(0),
        "kernel": target_json(1),
    });
    println!("{out}");
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Markdown

fn f(v: &Value) -> String {
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

fn mib(kib: &Value) -> String {
    kib.as_f64()
        .map(|k| format!("{:.1}", k / 1024.0))
        .unwrap_or_else(|| "–".into())
}

fn report(r: &Value) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Speaker benchmarks, {} — `{}` ({} CPUs, kernel {})\n\n",
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
        s.push_str("| fault | trials | p50 ms | p99 ms | max ms | min ms | failed requests p50 / max | flaps back | retried |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        if let Some(faults) = fo["faults"].as_object() {
            for name in ["sigkill", "link-down", "sigterm"] {
                let Some(x) = faults.get(name) else { continue };
                let sm = &x["summary"];
                s.push_str(&format!(
                    "| {name} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
                    f(&sm["failover_ms"]["n"]),
                    f(&sm["failover_ms"]["p50"]),
                    f(&sm["failover_ms"]["p99"]),
                    f(&sm["failover_ms"]["max"]),
                    f(&sm["failover_ms"]["min"]),
                    f(&sm["failed_requests"]["p50"]),
                    f(&sm["failed_requests"]["max"]),
                    f(&sm["flaps"]),
                    f(&sm["invalid_trials_retried"]),
                ));
            }
        }
        s.push_str(
            "\nAfter each trial the fault is undone and the next trial waits until the returning \
             node is past its hold-down and has taken its IPs back:\n\n",
        );
        s.push_str("| fault | restores settled p50 / max ms | restores needing a nudge | longest with no announcer, max ms |\n");
        s.push_str("|---|---:|---:|---:|\n");
        if let Some(faults) = fo["faults"].as_object() {
            for name in ["sigkill", "link-down", "sigterm"] {
                let Some(x) = faults.get(name) else { continue };
                let sm = &x["summary"];
                s.push_str(&format!(
                    "| {name} | {} / {} | {} of {} | {} |\n",
                    f(&sm["restore_settled_ms"]["p50"]),
                    f(&sm["restore_settled_ms"]["max"]),
                    f(&sm["restores_needing_a_nudge"]),
                    f(&sm["failover_ms"]["n"]),
                    f(&sm["restore_longest_without_announcer_ms"]["max"]),
                ));
            }
        }
        s.push_str(&format!(
            "\nIPConflict counted by the speakers during the trials: {}.\n\n",
            f(&fo["conflicts_counted_by_speakers"])
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
        s.push_str("| run | answered by | sent | unanswered | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |\n");
        s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (i, run) in arp["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            for t in ["speaker", "kernel"] {
                let x = &run[t];
                s.push_str(&format!(
                    "| {} | {t} | {} | {} | {} | {} | {} | {} | {} |\n",
                    i + 1,
                    f(&x["sent"]),
                    f(&x["unanswered"]),
                    f(&x["latency_us"]["p50"]),
                    f(&x["latency_us"]["p90"]),
                    f(&x["latency_us"]["p99"]),
                    f(&x["latency_us"]["p999"]),
                    f(&x["latency_us"]["max"]),
                ));
            }
        }
        s.push('\n');
    }
    if let Some(res) = r["resources"].as_array() {
        s.push_str("### Speaker memory and idle CPU\n\n");
        s.push_str("| Services | when | node | VmHWM MiB | VmRSS MiB | CPU s / window | CPU % | max 1-s % | announced |\n");
        s.push_str("|---:|---|---|---:|---:|---:|---:|---:|---:|\n");
        for x in res {
            for sp in x["speakers"].as_array().cloned().unwrap_or_default() {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} / {} s | {} | {} | {} |\n",
                    f(&x["services"]),
                    f(&x["when"]),
                    f(&sp["node"]),
                    mib(&sp["vmhwm_kib"]),
                    mib(&sp["vmrss_kib"]),
                    f(&sp["cpu_s"]),
                    f(&x["window_s"]),
                    f(&sp["cpu_percent"]),
                    f(&sp["max_1s_percent"]),
                    f(&sp["announced"]),
                ));
            }
        }
        s.push('\n');
    }
    if let Some(c) = r["creation"].as_array() {
        s.push_str("### Creating the Services\n\n");
        s.push_str("| Services after | created | all announced s | IPs gained (ideal: created) | IPs lost (ideal 0) | conflicts counted |\n");
        s.push_str("|---:|---:|---:|---:|---:|---:|\n");
        for x in c {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                f(&x["services"]),
                f(&x["created"]),
                f(&x["all_announced_s"]),
                f(&x["ips_gained"]),
                f(&x["ips_lost"]),
                f(&x["conflicts_counted"]),
            ));
        }
        s.push('\n');
    }
    if let Some(api) = r["api"].as_array() {
        s.push_str("### API requests at steady state\n\n");
        s.push_str("| Services | window s | all clients, speakers running /min | speakers stopped /min | speakers /min | restart: requests in first 60 s beyond baseline |\n");
        s.push_str("|---:|---:|---:|---:|---:|---:|\n");
        for x in api {
            s.push_str(&format!(
                "| {} | {} | {} | {} | **{}** | {} |\n",
                f(&x["services"]),
                f(&x["window_s"]),
                f(&x["running"]["per_min"]),
                f(&x["baseline"]["per_min"]),
                f(&x["speakers_per_min"]),
                f(&x["restart"]["requests_beyond_baseline"]),
            ));
        }
        s.push_str("\nDifference by request (per minute, running − stopped):\n\n");
        for x in api {
            let parts: Vec<String> = x["speakers_per_min_by_request"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("`{k}` {}", f(v))).collect())
                .unwrap_or_default();
            s.push_str(&format!(
                "- {} Services: {}\n",
                f(&x["services"]),
                parts.join(", ")
            ));
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
