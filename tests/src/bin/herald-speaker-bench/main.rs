//! `herald-speaker-bench`: the speaker benchmarks (issue 3, section 4), run against the node lab
//! (`make lab-up` as root), for Herald or, with `--system metallb`, for MetalLB installed beside
//! it in the same lab (issue 12; `tests/bench/versus.sh` runs both alternately). The same code
//! measures both; what differs between them is in `system.rs`. `tests/bench/speaker.sh` drives
//! it for Herald alone. Benchmarks report; they never fail on a number, only when the lab does
//! not do what is needed at all (a Service never gets an IP, nobody announces it).
//!
//! ```text
//! herald-speaker-bench run [options]     every phase, in the root network namespace
//! herald-speaker-bench report FILE       Markdown tables from a results file
//! herald-speaker-bench versus-lines FILE...   the versus results lines (JSON) of results files
//! herald-speaker-bench versus-table FILE      the Markdown table of a versus results file
//! herald-speaker-bench probe ...         (internal) the failover client, in the client namespace
//! herald-speaker-bench arpload ...       (internal) the ARP load generator, in the client namespace
//! herald-speaker-bench macwatch ...      (internal) the two-MAC watch, in the client namespace
//!
//! `herald-speaker-bench help run` lists every option and its default.
//! ```
//!
//! What each phase does:
//!
//! - **failover**: IPv4 Services with `externalTrafficPolicy: Local` and a ready endpoint on
//!   every node, so the body of each answer names the node that received the traffic. One
//!   Service per node is chosen (by the owner the speakers elect) and trials rotate over them.
//!   A client in the client namespace opens a fresh TCP connection every `--interval-ms` and
//!   itself triggers the fault (`kill -KILL`/`kill -TERM` of the owner's speaker,
//!   `ip -n NODE link set eth0 down`, or an nft rule in the owner's namespace dropping
//!   membership traffic into or out of it) on its own monotonic clock, so fault and answers
//!   share one clock. Failover time = fault to the first answer from another node. For the two
//!   signals the owner node's kubelet is stopped first, so the speaker stays down for the trial
//!   as a crashed node's would (a kubelet restarts a killed container within a second, and a
//!   speaker back that soon may keep its IPs without any failover). Then the fault is undone
//!   (kubelet started, speaker running again, cut removed) and the next trial waits until the
//!   returning node is past its hold-down and has taken its IPs back. Meanwhile the two-MAC
//!   watch (`macwatch.rs`) asks for every VIP every 10 ms from the client and notes every
//!   request answered by two MACs.
//! - **scale**: N Services (`--scale-sizes`, IPv6, no NodePorts) created 32 at a time; time
//!   from the last create to the last IP status and to the last announcer status written.
//! - **arp**: AF_PACKET from the client namespace; requests alternate between a VIP (the
//!   speaker answers) and the owner node's own address (its kernel answers). Each request
//!   carries a distinct sender MAC (from a pool of 4096, also the Ethernet source, so the
//!   switch learns it and the reply is not flooded); the reply's target MAC names the request.
//! - **resources**: VmHWM/VmRSS of each speaker and utime+stime over a quiet window, with 0,
//!   `--services-small` and `--services` IPv6 single-stack Services (IPv6 pool, EndpointSlices
//!   on every node, so all are announced).
//! - **api**: requests of the system's speakers and controller over a window at steady state,
//!   at both Service counts, counted in the API server's audit log (`audit.rs`: the lab logs
//!   every request of the two systems' service accounts); then the requests of the first
//!   minute after every speaker pod is replaced (what a restart costs).
//!
//! Before every measurement the run waits until no `herald-bench ` (the controller benchmark)
//! process runs, and notes when one appeared during a measurement. Whatever happens (error,
//! SIGINT, SIGTERM, the time bound), it restores the lab: membership cuts removed, kubelets
//! and speakers running, links up, IPv6 addresses a link-down removed put back, its Services,
//! EndpointSlices, Events, namespace, pools and advertisements deleted, the ARP phase's and the
//! watch's neighbour and bridge entries removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use herald_speaker::edge::packet_socket::{PacketSocket, Protocol};
use herald_speaker::wire::ArpRequest;
use herald_speaker::wire::{EthernetHeader, Frame, MacAddr, Message};
use herald_tests::bench::metrics::Samples;
use herald_tests::bench::procfs::{cpu_ticks, status_kib};
use herald_tests::bench::stats::{round, summary};
use herald_tests::node_lab::{
    Backend, Lab, Node, is_root, metrics_in_node, place_backends, run as cmd,
};
use herald_tests::rand_u32;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod arp;
mod audit;
mod bench;
mod bulk;
mod failover;
mod macwatch;
mod pods;
mod probe;
mod report;
mod results;
mod scale;
mod services;
mod speakers;
mod system;
mod verdict;
mod versus;

use arp::*;
use bench::*;
use failover::*;
use macwatch::*;
use probe::*;
use report::*;
use results::*;
use speakers::*;
use std::path::Path;
use system::System;
use verdict::*;

const POOL4: &str = "speaker-bench-v4";
/// The label naming the set a benchmark Service belongs to (`fo`, `bulk`, `scale`).
const SET_LABEL: &str = "speaker-bench/set";

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

/// The speaker benchmarks.
#[derive(Parser, Debug)]
#[command(name = "herald-speaker-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the benchmark phases against the node lab.
    Run(Opts),
    /// (Internal, run in the client namespace) probes a VIP over HTTP around a fault.
    Probe(ProbeOpts),
    /// (Internal, run in the client namespace) ARP requests at a fixed rate, timing replies.
    Arpload(ArpOpts),
    /// (Internal, run in the client namespace) watches which MACs answer for the VIPs until
    /// SIGTERM, then prints what it saw.
    Macwatch(MacWatchOpts),
    /// Markdown tables from a results file.
    Report {
        /// The results file (JSON).
        file: PathBuf,
    },
    /// The versus results lines (one JSON object per figure) of `run` results files.
    VersusLines {
        /// Results files (JSON) of `run --system ...`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The Markdown table (Herald, MetalLB, ratio) of a versus results file (JSON lines).
    VersusTable {
        /// The versus results file.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Run(opts) => {
            let opts = opts.check()?;
            runtime()?.block_on(run(opts))
        }
        Command::Probe(opts) => runtime()?.block_on(probe(opts)),
        Command::Arpload(opts) => arpload(opts.check()?),
        Command::Macwatch(opts) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(macwatch(opts)),
        Command::Report { file } => {
            let results = read_results(&file)?;
            print!("{}", report(&results));
            Ok(())
        }
        Command::VersusLines { files } => {
            for file in files {
                for line in versus::lines(&read_results(&file)?)? {
                    println!("{}", line.to_json()?);
                }
            }
            Ok(())
        }
        Command::VersusTable { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            print!("{}", versus::table(&text)?);
            Ok(())
        }
    }
}

fn read_results(file: &Path) -> anyhow::Result<Results> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))
}

fn millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("not a number of milliseconds: {e}"))
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("not a number of seconds: {e}"))
}

fn minutes(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(|m| Duration::from_secs(m * 60))
        .map_err(|e| format!("not a number of minutes: {e}"))
}

/// The phases `run` knows.
const PHASES: [&str; 5] = ["failover", "arp", "scale", "resources", "api"];

#[derive(Args, Clone, Debug)]
struct Opts {
    /// The load balancer under test (it must be the one running: tests/lab/systems.sh use).
    #[arg(long, value_enum, default_value = "herald")]
    system: System,
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "failover,arp,resources,api"
    )]
    phases: Vec<String>,
    /// Failover trials per fault.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// The failover phase's faults, comma-separated (sigkill, link-down, sigterm, one-way-in:
    /// membership traffic into the owner dropped, one-way-out: out of it).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sigkill,link-down,sigterm,one-way-in,one-way-out"
    )]
    faults: Vec<String>,
    /// The failover client's request interval, in ms.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Its per-request timeout, connect to last byte, in ms.
    #[arg(long, default_value_t = 80)]
    timeout_ms: u64,
    /// How long a failover trial waits for an answer from another node, in ms.
    #[arg(long = "failover-max-ms", value_name = "MS", value_parser = millis, default_value = "15000")]
    failover_max: Duration,
    /// Service counts of the scale phase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    scale_sizes: Vec<usize>,
    /// ARP requests per second.
    #[arg(long, default_value_t = 10_000)]
    arp_rps: u64,
    /// Length of one ARP run, in seconds.
    #[arg(long, default_value_t = 10)]
    arp_seconds: u64,
    /// ARP runs.
    #[arg(long, default_value_t = 3)]
    arp_runs: usize,
    /// Services in the large resources and API runs.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Services in the small ones.
    #[arg(long, default_value_t = 100)]
    services_small: usize,
    /// CPU measurement window, in seconds.
    #[arg(long = "cpu-window-s", value_name = "SECS", value_parser = seconds, default_value = "60")]
    cpu_window: Duration,
    /// API measurement window, in seconds (580: two periods of the speakers' 290 s watch
    /// timeout, so every watch is re-opened exactly twice).
    #[arg(long = "api-window-s", value_name = "SECS", value_parser = seconds, default_value = "580")]
    api_window: Duration,
    /// The speakers' hold-down, in ms (default: as the lab installs them, 3000 for Herald, 0
    /// for MetalLB, which has none).
    #[arg(long = "hold-down-ms", value_name = "MS", value_parser = millis)]
    hold_down: Option<Duration>,
    /// The results file (JSON), written after every result.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Stop starting new work after this many minutes.
    #[arg(long = "max-minutes", value_name = "MIN", value_parser = minutes, default_value = "180")]
    max_total: Duration,
    /// The command line, recorded with the results.
    #[arg(skip = std::env::args().collect::<Vec<_>>().join(" "))]
    command_line: String,
}

impl Opts {
    fn check(self) -> anyhow::Result<Opts> {
        for p in &self.phases {
            ensure!(PHASES.contains(&p.as_str()), "unknown phase {p:?}");
        }
        for f in &self.faults {
            ensure!(
                failover::Fault::parse(f).is_some(),
                "unknown fault {f:?} (sigkill, link-down, sigterm, one-way-in, one-way-out)"
            );
        }
        ensure!(
            self.trials > 0 && self.interval_ms > 0 && self.timeout_ms > 0,
            "zero trials or times"
        );
        ensure!(
            self.services_small > 0
                && self.services > self.services_small
                && self.services <= 60_000,
            "need 0 < --services-small < --services <= 60000"
        );
        ensure!(
            self.scale_sizes.iter().all(|n| (1..=60_000).contains(n)),
            "--scale-sizes must be 1..=60000 each"
        );
        ensure!(
            self.arp_rps > 0 && self.arp_seconds > 0,
            "zero ARP rate or length"
        );
        Ok(self)
    }
}

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
