//! `herald-bench`: the controller benchmark (issue 2, section 5). `tests/bench/run.sh` drives
//! it, giving every cluster phase a fresh control plane; results are appended as JSON lines to
//! a results file and turned into Markdown tables by `herald-bench report`.
//!
//! ```text
//! herald-bench micro                          allocator and index micro-benchmarks (no cluster)
//! herald-bench direct --n N                   the limit: N Services of a class nobody serves,
//!                                             then N status patches of the controller's shape
//! herald-bench drain  --n N --controller BIN  N Services of the served class, then the
//!                                             controller starts; time to the last status
//! herald-bench live   --n N --controller BIN  controller running, N Services created at once
//! herald-bench report FILE                    Markdown tables from a results file
//! ```
//!
//! `herald-bench help` lists every option.
//!
//! Cluster phases use the lab's KUBECONFIG. Benchmarks report; they never fail on a number,
//! only when something does not happen at all (a Service never gets its IP).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use herald_config::addresses::{Family, IpRange, ip_to_u128, u128_to_ip};
use herald_config::pool::IPAddressPool;
use herald_config::selection::{Labels, PoolPolicy};
use herald_config::service::{
    BackendKey, FamilyPolicy, ServedClass, ServiceKey, ServicePort, ServiceRequest,
};
use herald_controller::allocator::{Allocator, ServiceContext};
use herald_controller::index::{Action, ControllerIndex};
use herald_controller::writer::{FIELD_MANAGER, StatusWrite, status_patch};
use herald_tests::bench::metrics::Samples;
use herald_tests::bench::procfs;
use herald_tests::bench::stats::{median, round, secs};
use herald_tests::{http_get, ips, lab_client, pool_spec};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::Value;

mod cluster;
mod controller;
mod cpu;
mod micro;
mod phases;
mod report;
mod results;

use cluster::*;
use controller::*;
use cpu::*;
use micro::*;
use phases::*;
use report::*;
use results::*;

/// Namespace of the benchmark's Services (served by the controller under test).
const NS: &str = "herald-bench";

/// Namespace of the direct-patch Services (a class nobody serves).
const NS_DIRECT: &str = "herald-bench-direct";

/// Namespace of the controller's Lease.
const LEASE_NS: &str = "herald-bench-system";

/// The class the controller under test serves.
const CLASS: &str = "bench.herald.dev/lb";

/// A class no controller serves (direct-patch phase).
const UNSERVED_CLASS: &str = "bench.herald.dev/unserved";

/// Label selecting the benchmark pool.
const POOL_LABEL: (&str, &str) = ("herald.dev/bench", "main");

/// Default pool: an IPv6 /112 (65,536 addresses, like an IPv4 /16), documentation space.
const DEFAULT_POOL: &str = "2001:db8:100::/112";

/// Direct-phase IPs are numbered from here (documentation space, outside every pool).
const DIRECT_BASE: &str = "2001:db8:200::";

/// The controller benchmark.
#[derive(Parser, Debug)]
#[command(name = "herald-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Allocator and index micro-benchmarks (no cluster).
    Micro(Opts),
    /// The limit: N Services of a class nobody serves, then N status patches of the
    /// controller's shape.
    Direct(Opts),
    /// N Services of the served class, then the controller starts; time to the last status.
    Drain(Opts),
    /// Controller running, N Services created at once.
    Live(Opts),
    /// Markdown tables from a results file.
    Report {
        /// The results file (JSON lines).
        file: PathBuf,
    },
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("not a number of seconds: {e}"))
}

#[derive(Args, Clone, Debug)]
struct Opts {
    /// Services.
    #[arg(long = "n", default_value_t = 1000)]
    n: usize,
    /// The release herald-controller binary (drain and live).
    #[arg(long)]
    controller: Option<PathBuf>,
    /// Append one JSON line per result (default: only print).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Controller logs and pid file.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The pool.
    #[arg(long, default_value = DEFAULT_POOL)]
    pool: String,
    /// Client concurrency for creates and direct patches.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Bound on each wait, in seconds (default 60 + 30 ms per Service).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    timeout: Option<Duration>,
    /// How long to wait for the trailing Events, in seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds, default_value = "120")]
    events_timeout: Duration,
    /// Repetition number, recorded with the result.
    #[arg(long, default_value_t = 1)]
    rep: usize,
}

impl Opts {
    fn check(self) -> anyhow::Result<Opts> {
        if self.n == 0 || self.concurrency == 0 {
            bail!("--n and --concurrency must be positive");
        }
        Ok(self)
    }

    /// Bound on every wait of a phase.
    fn timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| Duration::from_secs(60) + Duration::from_millis(30) * self.n as u32)
    }

    fn controller(&self) -> anyhow::Result<&Path> {
        self.controller
            .as_deref()
            .context("--controller PATH (the release herald-controller binary) is required")
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[herald-bench] {}", msg.as_ref());
}

/// Appends the result to the results file, or prints it when there is none.
fn record(opts: &Opts, result: &BenchResult) -> anyhow::Result<()> {
    let result = serde_json::to_string(result)?;
    if opts.results.is_none() {
        println!("{result}");
    }
    if let Some(path) = &opts.results {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{result}")?;
    }
    Ok(())
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Report { file } => report(&file),
        Command::Micro(opts) => phase_micro(&opts.check()?),
        Command::Direct(opts) => phase_direct(&opts.check()?).await,
        Command::Drain(opts) => phase_drain(&opts.check()?).await,
        Command::Live(opts) => phase_live(&opts.check()?).await,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Ctrl-C or SIGTERM: return, so the controller subprocess is dropped (and killed).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run(cli.command) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}
