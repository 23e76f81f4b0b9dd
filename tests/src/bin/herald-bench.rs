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
//!
//! options: --results FILE   append one JSON line per result (default: only print)
//!          --rep R          repetition number, recorded with the result (default 1)
//!          --out DIR        controller logs and pid file (default target/bench)
//!          --pool CIDR      the pool (default 2001:db8:100::/112)
//!          --concurrency C  client concurrency for creates and direct patches (default 32)
//!          --timeout SECS   bound on each wait (default 60 + 30 ms per Service)
//!          --events-timeout SECS  how long to wait for the trailing Events (default 120)
//! ```
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
use futures::StreamExt;
use herald_config::addresses::{Family, IpRange, ip_to_u128, u128_to_ip};
use herald_config::pool::IPAddressPool;
use herald_config::selection::{Labels, PoolPolicy};
use herald_config::service::{
    BackendKey, FamilyPolicy, ServedClass, ServiceKey, ServicePort, ServiceRequest,
};
use herald_controller::allocator::{Allocator, ServiceContext};
use herald_controller::index::{Action, ControllerIndex};
use herald_controller::writer::{FIELD_MANAGER, ingress_patch};
use herald_tests::{http_get, ips, lab_client, pool_spec};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

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

// ----------------------------------------------------------------------------------------
// Options

#[derive(Clone, Debug)]
struct Opts {
    n: usize,
    controller: Option<PathBuf>,
    results: Option<PathBuf>,
    out: PathBuf,
    pool: String,
    concurrency: usize,
    timeout: Option<Duration>,
    events_timeout: Duration,
    rep: usize,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Opts> {
        let mut o = Opts {
            n: 1000,
            controller: None,
            results: None,
            out: PathBuf::from("target/bench"),
            pool: DEFAULT_POOL.into(),
            concurrency: 32,
            timeout: None,
            events_timeout: Duration::from_secs(120),
            rep: 1,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--n" => o.n = value()?.parse().context("--n")?,
                "--rep" => o.rep = value()?.parse().context("--rep")?,
                "--controller" => o.controller = Some(value()?.into()),
                "--results" => o.results = Some(value()?.into()),
                "--out" => o.out = value()?.into(),
                "--pool" => o.pool = value()?.clone(),
                "--concurrency" => o.concurrency = value()?.parse().context("--concurrency")?,
                "--timeout" => {
                    o.timeout = Some(Duration::from_secs(value()?.parse().context("--timeout")?))
                }
                "--events-timeout" => {
                    o.events_timeout =
                        Duration::from_secs(value()?.parse().context("--events-timeout")?)
                }
                other => bail!("unknown option {other:?}"),
            }
        }
        if o.n == 0 || o.concurrency == 0 {
            bail!("--n and --concurrency must be positive");
        }
        Ok(o)
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
fn record(opts: &Opts, result: Value) -> anyhow::Result<()> {
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

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

// ----------------------------------------------------------------------------------------
// /proc

/// Clock ticks per second (for utime/stime).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// A `/proc/PID/status` value in kB (`VmHWM`, `VmRSS`).
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// PIDs of the lab's etcd and kube-apiserver, from `$HERALD_LAB_DIR/pids`.
fn lab_pids() -> Vec<(&'static str, u32)> {
    let Some(dir) = std::env::var_os("HERALD_LAB_DIR") else {
        return Vec::new();
    };
    ["kube-apiserver", "etcd"]
        .into_iter()
        .filter_map(|name| {
            let pid =
                std::fs::read_to_string(Path::new(&dir).join("pids").join(format!("{name}.pid")))
                    .ok()?;
            Some((name, pid.trim().parse().ok()?))
        })
        .collect()
}

/// Busy CPU seconds of the whole machine (all CPUs), from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, t)| t)
        .sum();
    busy / clock_ticks()
}

/// CPU seconds of the lab's components, of this process and of the whole machine, to
/// attribute a window's CPU (and to see how much went to other work on the machine).
#[derive(Clone, Debug)]
struct CpuSample {
    at: Instant,
    apiserver: f64,
    etcd: f64,
    bench: f64,
    machine: f64,
}

fn sample_cpu() -> CpuSample {
    let mut s = CpuSample {
        at: Instant::now(),
        apiserver: 0.0,
        etcd: 0.0,
        bench: cpu_seconds(std::process::id()).unwrap_or(0.0),
        machine: machine_busy_seconds(),
    };
    for (name, pid) in lab_pids() {
        let cpu = cpu_seconds(pid).unwrap_or(0.0);
        match name {
            "kube-apiserver" => s.apiserver = cpu,
            _ => s.etcd = cpu,
        }
    }
    s
}

/// CPU over a window; `controller_s`: what the controller used in it. `other_cpu_s` is what
/// the rest of the machine used meanwhile (someone else's build, say): a noise indicator.
fn cpu_delta(a: &CpuSample, b: &CpuSample, controller_s: f64) -> Value {
    let (api, etcd, bench) = (
        b.apiserver - a.apiserver,
        b.etcd - a.etcd,
        b.bench - a.bench,
    );
    let machine = b.machine - a.machine;
    json!({
        "window_s": secs(b.at - a.at),
        "apiserver_cpu_s": round(api, 2),
        "etcd_cpu_s": round(etcd, 2),
        "bench_cpu_s": round(bench, 2),
        "controller_cpu_s": round(controller_s, 2),
        "machine_busy_cpu_s": round(machine, 2),
        "other_cpu_s": round((machine - api - etcd - bench - controller_s).max(0.0), 2),
    })
}

// ----------------------------------------------------------------------------------------
// Cluster helpers

async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

async fn apply_pool(client: &Client, cidr: &str) -> anyhow::Result<()> {
    let api: Api<IPAddressPool> = Api::all(client.clone());
    let mut pool = IPAddressPool::new("bench", pool_spec(&[cidr]));
    pool.metadata.labels = Some(BTreeMap::from([(
        POOL_LABEL.0.to_string(),
        POOL_LABEL.1.to_string(),
    )]));
    api.patch(
        "bench",
        &PatchParams::apply("herald-bench").force(),
        &Patch::Apply(&pool),
    )
    .await
    .context("applying the benchmark pool")?;
    Ok(())
}

/// Fresh cluster state for a phase: CRDs (via the harness), namespaces, the pool.
async fn setup(opts: &Opts) -> anyhow::Result<Client> {
    let client = lab_client().await?;
    for ns in [NS, NS_DIRECT, LEASE_NS] {
        ensure_namespace(&client, ns).await?;
        let existing: Api<Service> = Api::namespaced(client.clone(), ns);
        if !existing
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty()
        {
            bail!(
                "namespace {ns} already holds Services: run each phase on a fresh control plane (tests/bench/run.sh does)"
            );
        }
    }
    apply_pool(&client, &opts.pool).await?;
    Ok(client)
}

fn service(ns: &str, name: &str, class: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_class: Some(class.into()),
            // IPv6 single-stack: the lab's IPv4 Service range holds only ~253 ClusterIPs.
            ip_families: Some(vec!["IPv6".into()]),
            ip_family_policy: Some("SingleStack".into()),
            // No NodePorts: the API server's default range holds only 2,768 of them, and
            // layer-2 announcement does not need them.
            allocate_load_balancer_node_ports: Some(false),
            ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ..Default::default()
        }),
        status: None,
    }
}

fn svc_name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// What a batch of API calls did.
#[derive(Debug)]
struct Ops {
    /// When the first call was sent.
    first_start: Instant,
    /// When the last response arrived.
    last_end: Instant,
    /// Calls retried (429, 5xx, transport errors).
    retries: usize,
    /// Failed attempts by HTTP status (or "transport").
    errors: BTreeMap<String, usize>,
}

impl Ops {
    fn elapsed(&self) -> Duration {
        self.last_end - self.first_start
    }

    fn json(&self, n: usize) -> Value {
        let t = self.elapsed();
        json!({
            "time_s": secs(t),
            "rate_per_s": round(n as f64 / t.as_secs_f64(), 1),
            "retries": self.retries,
            "errors": self.errors,
        })
    }
}

/// Runs `op(i)` for `0..n` with `concurrency` calls in flight, retrying 429/5xx/transport
/// errors (bounded), printing progress. `AlreadyExists` on a retried create counts as done.
async fn run_ops<F, Fut>(label: &str, n: usize, concurrency: usize, op: F) -> anyhow::Result<Ops>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let done = Arc::new(AtomicUsize::new(0));
    let progress = {
        let done = done.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                log(format!(
                    "  {label}: {}/{n} ({:.1}s)",
                    done.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                ));
            }
        })
    };
    // Failed attempts are logged as they happen (the first few); after a call failed for
    // good, the rest are skipped, so that a broken phase ends quickly.
    let logged = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let first_start = Instant::now();
    let results: Vec<(usize, Vec<String>, Result<(), kube::Error>)> = futures::stream::iter(0..n)
        .map(|i| {
            let done = done.clone();
            let op = &op;
            let (logged, failed) = (&logged, &failed);
            async move {
                let mut failures = Vec::new();
                let mut attempt = 0;
                loop {
                    if failed.load(Ordering::Relaxed) > 0 {
                        break (0, failures, Ok(()));
                    }
                    attempt += 1;
                    let result = op(i).await;
                    if let Err(e) = &result
                        && logged.fetch_add(1, Ordering::Relaxed) < 5
                    {
                        log(format!("  {label} #{i} attempt {attempt}: {e}"));
                    }
                    let retryable = match &result {
                        Ok(()) => false,
                        Err(kube::Error::Api(e)) if e.code == 409 && attempt > 1 => {
                            // Created by an attempt whose response was lost.
                            break (attempt - 1, failures, Ok(()));
                        }
                        Err(kube::Error::Api(e)) => {
                            failures.push(e.code.to_string());
                            e.code == 429 || e.code >= 500
                        }
                        Err(_) => {
                            failures.push("transport".into());
                            true
                        }
                    };
                    if !retryable || attempt >= 5 {
                        done.fetch_add(1, Ordering::Relaxed);
                        if result.is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        break (attempt - 1, failures, result);
                    }
                    tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let last_end = Instant::now();
    progress.abort();
    let mut ops = Ops {
        first_start,
        last_end,
        retries: 0,
        errors: BTreeMap::new(),
    };
    let mut failed = Vec::new();
    for (retries, failures, result) in results {
        ops.retries += retries;
        for f in failures {
            *ops.errors.entry(f).or_default() += 1;
        }
        if let Err(e) = result {
            failed.push(e.to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{label}: {} calls failed, first: {}",
            failed.len(),
            failed[0]
        );
    }
    Ok(ops)
}

/// Which Services a phase creates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sets {
    /// N of the served class, in `NS`.
    Served,
    /// N of a class nobody serves, in `NS_DIRECT`.
    Direct,
    /// Both (2N), interleaved, so that neither set is the older one in etcd.
    Both,
}

async fn create_services(client: &Client, sets: Sets, opts: &Opts) -> anyhow::Result<Ops> {
    let served: Api<Service> = Api::namespaced(client.clone(), NS);
    let direct: Api<Service> = Api::namespaced(client.clone(), NS_DIRECT);
    let total = if sets == Sets::Both {
        2 * opts.n
    } else {
        opts.n
    };
    let ops = run_ops("create", total, opts.concurrency, |i| {
        let (is_served, i) = match sets {
            Sets::Served => (true, i),
            Sets::Direct => (false, i),
            Sets::Both => (i % 2 == 0, i / 2),
        };
        let (api, svc) = if is_served {
            (served.clone(), service(NS, &svc_name(i), CLASS))
        } else {
            (
                direct.clone(),
                service(NS_DIRECT, &svc_name(i), UNSERVED_CLASS),
            )
        };
        async move { api.create(&PostParams::default(), &svc).await.map(|_| ()) }
    })
    .await?;
    log(format!(
        "created {total} Services in {:.2}s ({:.0}/s)",
        ops.elapsed().as_secs_f64(),
        total as f64 / ops.elapsed().as_secs_f64()
    ));
    Ok(ops)
}

/// Checks that every benchmark Service holds exactly one distinct IP from the pool.
async fn verify(client: &Client, opts: &Opts) -> anyhow::Result<usize> {
    let api: Api<Service> = Api::namespaced(client.clone(), NS);
    let range =
        IpRange::parse(&opts.pool).map_err(|e| anyhow::anyhow!("--pool {}: {e}", opts.pool))?;
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut without = 0;
    let mut continue_token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(1000);
        if let Some(t) = &continue_token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        for svc in &page.items {
            let got = ips(svc);
            match got.as_slice() {
                [] => without += 1,
                [ip] => {
                    let n = ip_to_u128(*ip);
                    if Family::of(*ip) != range.family() || n < range.start() || n > range.end() {
                        bail!(
                            "{}: IP {ip} is outside the pool {}",
                            svc.metadata.name.as_deref().unwrap_or("?"),
                            opts.pool
                        );
                    }
                    if !seen.insert(*ip) {
                        bail!("IP {ip} is held by two Services");
                    }
                }
                more => bail!(
                    "{}: several IPs {more:?}",
                    svc.metadata.name.as_deref().unwrap_or("?")
                ),
            }
        }
        continue_token = page.metadata.continue_.filter(|t| !t.is_empty());
        if continue_token.is_none() {
            break;
        }
    }
    if seen.len() + without != opts.n {
        bail!(
            "expected {} Services, found {}",
            opts.n,
            seen.len() + without
        );
    }
    Ok(without)
}

// ----------------------------------------------------------------------------------------
// The controller subprocess

/// Counters read from the controller's /metrics.
#[derive(Clone, Debug, Default)]
struct Scrape {
    status_ok: u64,
    status_err: u64,
    event_ok: u64,
    event_err: u64,
    pool_ok: u64,
    pool_err: u64,
    leader: bool,
    reconcile_s: f64,
    reconciles: u64,
    failures: u64,
}

fn parse_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        let name = series.split('{').next().unwrap_or("");
        let has = |label: &str| series.contains(label);
        match name {
            "herald_controller_api_writes_total" => {
                let ok = has(r#"result="ok""#);
                let slot = if has(r#"kind="service_status""#) {
                    if ok {
                        &mut s.status_ok
                    } else {
                        &mut s.status_err
                    }
                } else if has(r#"kind="event""#) {
                    if ok {
                        &mut s.event_ok
                    } else {
                        &mut s.event_err
                    }
                } else if ok {
                    &mut s.pool_ok
                } else {
                    &mut s.pool_err
                };
                *slot += v as u64;
            }
            "herald_controller_leader" => s.leader = v == 1.0,
            "herald_controller_reconcile_duration_seconds_sum" => s.reconcile_s = v,
            "herald_controller_reconcile_duration_seconds_count" => s.reconciles = v as u64,
            "herald_allocation_failures_total" => s.failures += v as u64,
            _ => {}
        }
    }
    s
}

struct ControllerProc {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    log_path: PathBuf,
    pid_file: PathBuf,
    spawned: Instant,
}

impl ControllerProc {
    /// Starts the release binary, logging to `OUT/TAG.controller.log`; its PID goes to
    /// `OUT/controller.pid` so that run.sh can kill it if this process dies first.
    fn spawn(opts: &Opts, tag: &str) -> anyhow::Result<ControllerProc> {
        let bin = opts.controller()?;
        std::fs::create_dir_all(&opts.out)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log_path = opts.out.join(format!("{tag}.controller.log"));
        let log_file = std::fs::File::create(&log_path)?;
        let spawned = Instant::now();
        let child = tokio::process::Command::new(bin)
            .args(["--load-balancer-class", CLASS])
            .args([
                "--pool-selector",
                &format!("{}={}", POOL_LABEL.0, POOL_LABEL.1),
            ])
            .args(["--metrics-addr", &addr.to_string()])
            .args([
                "--lease-namespace",
                LEASE_NS,
                "--lease-name",
                "herald-bench",
            ])
            .args(["--log-format", "json", "--write-concurrency", "32"])
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("controller exited at once")?;
        let pid_file = opts.out.join("controller.pid");
        std::fs::write(&pid_file, format!("{pid}\n"))?;
        log(format!(
            "controller started (pid {pid}, metrics {addr}, log {})",
            log_path.display()
        ));
        Ok(ControllerProc {
            child,
            pid,
            addr,
            log_path,
            pid_file,
            spawned,
        })
    }

    async fn scrape(&self) -> anyhow::Result<Scrape> {
        let (code, body) = http_get(self.addr, "/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(parse_metrics(&body))
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the controller exited ({status}); see {}",
                self.log_path.display()
            );
        }
        Ok(())
    }

    /// Waits for /readyz and leadership; returns when each happened.
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<(Instant, Instant)> {
        let deadline = Instant::now() + timeout;
        let mut ready = None;
        loop {
            self.alive()?;
            if ready.is_none()
                && let Ok((200, _)) = http_get(self.addr, "/readyz").await
            {
                ready = Some(Instant::now());
            }
            if let Some(r) = ready
                && let Ok(s) = self.scrape().await
                && s.leader
            {
                return Ok((r, Instant::now()));
            }
            if Instant::now() > deadline {
                bail!("controller not ready and leading after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls /metrics every 20 ms until `n` status writes succeeded; returns that moment.
    async fn wait_status_writes(
        &mut self,
        n: usize,
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<(Instant, Scrape)> {
        let deadline = Instant::now() + timeout;
        let mut last_print = Instant::now();
        loop {
            self.alive()?;
            if let Ok(s) = self.scrape().await {
                if s.status_ok as usize >= n {
                    return Ok((Instant::now(), s));
                }
                if last_print.elapsed() > Duration::from_secs(2) {
                    last_print = Instant::now();
                    log(format!(
                        "  status written: {}/{n} ({} errors, {:.1}s)",
                        s.status_ok,
                        s.status_err,
                        since.elapsed().as_secs_f64()
                    ));
                }
            }
            if Instant::now() > deadline {
                bail!("not every Service got its status within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the controller has published `n` Events; returns when, if it did.
    async fn wait_events(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Option<Instant>, Scrape)> {
        let deadline = Instant::now() + timeout;
        let mut last_print = Instant::now();
        loop {
            self.alive()?;
            let s = self.scrape().await?;
            if (s.event_ok + s.event_err) as usize >= n {
                return Ok((Some(Instant::now()), s));
            }
            if Instant::now() > deadline {
                log(format!(
                    "  gave up waiting for Events: {}/{n} published",
                    s.event_ok + s.event_err
                ));
                return Ok((None, s));
            }
            if last_print.elapsed() > Duration::from_secs(5) {
                last_print = Instant::now();
                log(format!(
                    "  events published: {}/{n}",
                    s.event_ok + s.event_err
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sample(&self) -> (f64, u64, u64) {
        (
            cpu_seconds(self.pid).unwrap_or(f64::NAN),
            status_kb(self.pid, "VmHWM").unwrap_or(0),
            status_kb(self.pid, "VmRSS").unwrap_or(0),
        )
    }

    /// SIGTERM, then SIGKILL after 15 s.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => log(format!("controller stopped ({})", status?)),
            Err(_) => {
                log("controller ignored SIGTERM for 15s; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }

    /// Warnings and errors from its JSON log: count and the first few distinct messages.
    fn log_summary(&self) -> Value {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut samples: Vec<String> = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let level = v["level"].as_str().unwrap_or("").to_string();
            if level != "WARN" && level != "ERROR" {
                continue;
            }
            *counts.entry(level).or_default() += 1;
            let msg = format!(
                "{} {}",
                v["message"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or("")
            );
            if samples.len() < 5 && !samples.contains(&msg) {
                samples.push(msg);
            }
        }
        json!({"log_levels": counts, "log_samples": samples, "log": self.log_path.display().to_string()})
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        // kill_on_drop takes care of the process.
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

fn controller_cost(
    c: &ControllerProc,
    at_last_status: (f64, u64, u64),
    end: (f64, u64, u64),
    s: &Scrape,
) -> Value {
    json!({
        "controller_cpu_s_at_last_status": round(at_last_status.0, 2),
        "controller_cpu_s_total": round(end.0, 2),
        "controller_vmhwm_kb": end.1,
        "controller_vmrss_kb_end": end.2,
        "status_writes_ok": s.status_ok,
        "status_writes_error": s.status_err,
        "events_ok": s.event_ok,
        "events_error": s.event_err,
        "pool_status_writes": s.pool_ok + s.pool_err,
        "allocation_failures": s.failures,
        "reconciles": s.reconciles,
        "reconcile_time_s": round(s.reconcile_s, 3),
        "controller_log": c.log_summary(),
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

// ----------------------------------------------------------------------------------------
// Cluster phases

/// The limit: N status patches of the controller's shape (`writer::ingress_patch`, field
/// manager `herald-controller`, merge patch on `status`), sent directly at the same
/// concurrency to the N Services of `NS_DIRECT`, whose class nobody serves.
///
/// `ns` is `NS_DIRECT`, or `NS` for the cross-check on the drain's control plane once the
/// controller has stopped (the IPs written are then outside the pool; nobody reads them).
async fn direct_patch(client: &Client, opts: &Opts, ns: &str) -> anyhow::Result<Value> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let base = ip_to_u128(DIRECT_BASE.parse()?);
    log(format!(
        "direct n={}: patching status, {} in flight",
        opts.n, opts.concurrency
    ));
    let cpu0 = sample_cpu();
    let patch = run_ops("patch", opts.n, opts.concurrency, |i| {
        let api = api.clone();
        let params = params.clone();
        let ip = u128_to_ip(Family::V6, base + i as u128 + 1);
        async move {
            api.patch_status(&svc_name(i), &params, &Patch::Merge(ingress_patch(&[ip])))
                .await
                .map(|_| ())
        }
    })
    .await?;
    let cpu1 = sample_cpu();
    log(format!(
        "direct n={}: {} patches in {:.2}s = {:.0}/s",
        opts.n,
        opts.n,
        patch.elapsed().as_secs_f64(),
        opts.n as f64 / patch.elapsed().as_secs_f64()
    ));
    Ok(merge(
        patch.json(opts.n),
        json!({"window": cpu_delta(&cpu0, &cpu1, 0.0)}),
    ))
}

/// The drain: N Services wait when the controller starts. Times from its start, from
/// /readyz (caches synced) and from leadership to the last status written.
async fn drain(client: &Client, opts: &Opts, tag: &str) -> anyhow::Result<Value> {
    let cpu0 = sample_cpu();
    let mut c = ControllerProc::spawn(opts, tag)?;
    let spawned = c.spawned;
    let (ready, leading) = c.wait_ready(opts.timeout()).await?;
    log(format!(
        "controller ready after {:.2}s, leading after {:.2}s",
        (ready - spawned).as_secs_f64(),
        (leading - spawned).as_secs_f64()
    ));
    let (last, _) = c
        .wait_status_writes(opts.n, spawned, opts.timeout())
        .await?;
    let at_last = c.sample();
    let cpu1 = sample_cpu();
    let from_start = last - spawned;
    let from_ready = last - ready;
    log(format!(
        "drain n={}: last status {:.2}s after start, {:.2}s after ready ({:.0}/s)",
        opts.n,
        from_start.as_secs_f64(),
        from_ready.as_secs_f64(),
        opts.n as f64 / from_ready.as_secs_f64()
    ));
    let (events_done, scrape) = c.wait_events(opts.n, opts.events_timeout).await?;
    let end = c.sample();
    let without = verify(client, opts).await?;
    let cost = controller_cost(&c, at_last, end, &scrape);
    c.stop().await?;
    Ok(merge(
        json!({
            "start_to_ready_s": secs(ready - spawned),
            "start_to_leading_s": secs(leading - spawned),
            "start_to_last_status_s": secs(from_start),
            "ready_to_last_status_s": secs(from_ready),
            "rate_from_ready_per_s": round(opts.n as f64 / from_ready.as_secs_f64(), 1),
            "rate_from_start_per_s": round(opts.n as f64 / from_start.as_secs_f64(), 1),
            "events_done_after_start_s": events_done.map(|t| secs(t - spawned)),
            "services_without_ip": without,
            "window": cpu_delta(&cpu0, &cpu1, at_last.0),
        }),
        cost,
    ))
}

/// `direct` alone: N Services of no served class, then the N patches.
async fn phase_direct(opts: &Opts) -> anyhow::Result<()> {
    let client = setup(opts).await?;
    let create = create_services(&client, Sets::Direct, opts).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patch = direct_patch(&client, opts, NS_DIRECT).await?;
    record(
        opts,
        json!({
            "phase": "direct",
            "n": opts.n,
            "rep": opts.rep,
            "concurrency": opts.concurrency,
            "create": create.json(opts.n),
            "direct": patch,
        }),
    )
}

/// `drain` alone: N Services of the served class, then the controller starts.
async fn phase_drain(opts: &Opts) -> anyhow::Result<()> {
    opts.controller()?;
    let client = setup(opts).await?;
    log(format!(
        "drain n={} pool {}: creating Services with no controller running",
        opts.n, opts.pool
    ));
    let create = create_services(&client, Sets::Served, opts).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tag = format!(
        "drain-{}-rep{}-{}",
        opts.n,
        opts.rep,
        opts.pool.replace([':', '/'], "_")
    );
    let drained = drain(&client, opts, &tag).await?;
    // Cross-check of the limit on this very control plane, right after the drain: the same
    // N patches sent directly to the same N Services (the controller has stopped).
    tokio::time::sleep(Duration::from_secs(1)).await;
    log(format!(
        "drain n={}: limit on the same control plane",
        opts.n
    ));
    let after = direct_patch(&client, opts, NS).await?;
    record(
        opts,
        json!({
            "phase": "drain",
            "n": opts.n,
            "rep": opts.rep,
            "pool": opts.pool,
            "create": create.json(opts.n),
            "drain": drained,
            "direct_after": after,
        }),
    )
}

/// Live: the controller runs; N Services are created as fast as possible (concurrency C);
/// time from the first create to the last status, and from the last create to it.
async fn phase_live(opts: &Opts) -> anyhow::Result<()> {
    opts.controller()?;
    let client = setup(opts).await?;
    let mut c = ControllerProc::spawn(opts, &format!("live-{}", opts.n))?;
    let (ready, _) = c.wait_ready(opts.timeout()).await?;
    log(format!(
        "controller ready after {:.2}s",
        (ready - c.spawned).as_secs_f64()
    ));
    // Let the initial pool status write land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu_ctl0, _, _) = c.sample();
    let cpu0 = sample_cpu();
    log(format!(
        "live n={}: creating Services, {} in flight",
        opts.n, opts.concurrency
    ));
    // The controller's counter is polled while the Services are being created.
    let addr = c.addr;
    let n = opts.n;
    let timeout = opts.timeout();
    let poller = tokio::spawn(async move {
        let deadline = Instant::now() + timeout;
        let mut last_print = Instant::now();
        let start = Instant::now();
        loop {
            if let Ok((200, body)) = http_get(addr, "/metrics").await {
                let s = parse_metrics(&body);
                if s.status_ok as usize >= n {
                    return Ok(Instant::now());
                }
                if last_print.elapsed() > Duration::from_secs(2) {
                    last_print = Instant::now();
                    log(format!(
                        "  status written: {}/{n} ({} errors, {:.1}s)",
                        s.status_ok,
                        s.status_err,
                        start.elapsed().as_secs_f64()
                    ));
                }
            }
            if Instant::now() > deadline {
                bail!("not every Service got its status within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let create = match create_services(&client, Sets::Served, opts).await {
        Ok(c) => c,
        Err(e) => {
            poller.abort();
            return Err(e);
        }
    };
    let last = poller.await??;
    let at_last = c.sample();
    let cpu1 = sample_cpu();
    let total = last - create.first_start;
    let after_last_create = last.saturating_duration_since(create.last_end);
    log(format!(
        "live n={}: first create -> last status {:.2}s ({:.0}/s); last create -> last status {:.3}s",
        opts.n,
        total.as_secs_f64(),
        opts.n as f64 / total.as_secs_f64(),
        after_last_create.as_secs_f64()
    ));
    let (events_done, scrape) = c.wait_events(opts.n, opts.events_timeout).await?;
    let end = c.sample();
    let without = verify(&client, opts).await?;
    let cost = controller_cost(&c, at_last, end, &scrape);
    c.stop().await?;
    record(
        opts,
        merge(
            json!({
                "phase": "live",
                "n": opts.n,
                "pool": opts.pool,
                "create": create.json(opts.n),
                "first_create_to_last_status_s": secs(total),
                "last_create_to_last_status_s": secs(after_last_create),
                "rate_per_s": round(opts.n as f64 / total.as_secs_f64(), 1),
                "events_done_after_first_create_s": events_done.map(|t| secs(t - create.first_start)),
                "controller_cpu_s_in_window": round(at_last.0 - cpu_ctl0, 2),
                "services_without_ip": without,
                "window": cpu_delta(&cpu0, &cpu1, at_last.0 - cpu_ctl0),
            }),
            cost,
        ),
    )
}

// ----------------------------------------------------------------------------------------
// Micro-benchmarks (no cluster)

fn v6_request() -> ServiceRequest {
    ServiceRequest {
        requested_ips: vec![],
        pool: None,
        sharing_key: None,
        families: FamilyPolicy::Single(Family::V6),
        ports: vec![ServicePort {
            protocol: "TCP".into(),
            port: 80,
        }],
        backend: BackendKey::Cluster,
        deprecated_annotations: vec![],
    }
}

fn allocator_with(cidr: &str) -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(vec![PoolPolicy::from_spec("bench", &pool_spec(&[cidr]))]);
    a
}

fn allocate_one(a: &mut Allocator, key: &ServiceKey, request: &ServiceRequest, labels: &Labels) {
    let ctx = ServiceContext {
        key,
        request,
        namespace_labels: labels,
        service_labels: labels,
    };
    if let Err(e) = a.allocate(ctx) {
        panic!("allocation failed: {e}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Allocates `n` Services into a fresh allocator over `cidr`, `iterations` times; ns per
/// allocation (median over iterations), and ns per allocation of the first and the last tenth.
fn micro_fill(cidr: &str, n: usize) -> Value {
    let keys: Vec<ServiceKey> = (0..n)
        .map(|i| ServiceKey::new("bench", svc_name(i)))
        .collect();
    let request = v6_request();
    let labels = Labels::new();
    let iterations = (200_000 / n).clamp(10, 2000);
    let tenth = (n / 10).max(1);
    let mut per_iter = Vec::new();
    let (mut first, mut last) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..iterations {
        let mut a = allocator_with(cidr);
        let start = Instant::now();
        let mut first_end = start;
        let mut last_start = start;
        for (i, key) in keys.iter().enumerate() {
            if i == n - tenth {
                last_start = Instant::now();
            }
            allocate_one(&mut a, key, &request, &labels);
            if i + 1 == tenth {
                first_end = Instant::now();
            }
        }
        let end = Instant::now();
        per_iter.push((end - start).as_nanos() as f64 / n as f64);
        first += first_end - start;
        last += end - last_start;
        std::hint::black_box(&a);
    }
    let per_tenth = |d: Duration| round(d.as_nanos() as f64 / (iterations * tenth) as f64, 0);
    json!({
        "phase": "micro",
        "scenario": "fill",
        "pool": cidr,
        "n": n,
        "iterations": iterations,
        "ns_per_alloc": round(median(per_iter.clone()), 0),
        "ns_per_alloc_min": round(per_iter.iter().copied().fold(f64::INFINITY, f64::min), 0),
        "ns_per_alloc_first_tenth": per_tenth(first),
        "ns_per_alloc_last_tenth": per_tenth(last),
    })
}

/// Allocates `n`, frees every other one (n/2 single-address holes: a free list of ~n/2
/// spans), then allocates n/2 again: the holes are taken lowest first.
fn micro_fragmented(cidr: &str, n: usize) -> Value {
    let keys: Vec<ServiceKey> = (0..n)
        .map(|i| ServiceKey::new("bench", svc_name(i)))
        .collect();
    let request = v6_request();
    let labels = Labels::new();
    let iterations = (200_000 / n).clamp(10, 2000);
    let (mut release_ns, mut alloc_ns) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let mut a = allocator_with(cidr);
        for key in &keys {
            allocate_one(&mut a, key, &request, &labels);
        }
        let start = Instant::now();
        for key in keys.iter().step_by(2) {
            std::hint::black_box(a.release(key));
        }
        let released = Instant::now();
        for key in keys.iter().step_by(2) {
            allocate_one(&mut a, key, &request, &labels);
        }
        let end = Instant::now();
        let half = keys.iter().step_by(2).count() as f64;
        release_ns.push((released - start).as_nanos() as f64 / half);
        alloc_ns.push((end - released).as_nanos() as f64 / half);
        std::hint::black_box(&a);
    }
    json!({
        "phase": "micro",
        "scenario": "fragmented",
        "pool": cidr,
        "n": n,
        "iterations": iterations,
        "ns_per_release": round(median(release_ns), 0),
        "ns_per_alloc": round(median(alloc_ns), 0),
    })
}

fn index_service(i: usize) -> Service {
    let mut svc = service(NS, &svc_name(i), CLASS);
    svc.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
    svc
}

/// The controller's whole decision path (the index: Service parsing, allocation, what to
/// write) for N new Services seen before activation, as on a leader's start (the drain).
fn micro_index(cidr: &str, n: usize) -> Value {
    let services: Vec<Service> = (0..n).map(index_service).collect();
    let mut pool = IPAddressPool::new("bench", pool_spec(&[cidr]));
    pool.metadata.uid = Some("pool-uid".into());
    let iterations = (100_000 / n).clamp(5, 500);
    let (mut apply_ns, mut activate_ns) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let mut index = ControllerIndex::new(ServedClass(Some(CLASS.into())));
        index.apply_pool(&pool);
        let start = Instant::now();
        for svc in &services {
            index.apply_service(svc);
        }
        let applied = Instant::now();
        let actions = index.activate();
        let end = Instant::now();
        let writes = actions
            .iter()
            .filter(|a| matches!(a, Action::WriteIngress { .. }))
            .count();
        assert_eq!(writes, n, "every Service gets a status write");
        apply_ns.push((applied - start).as_nanos() as f64 / n as f64);
        activate_ns.push((end - applied).as_nanos() as f64 / n as f64);
        std::hint::black_box(actions);
    }
    json!({
        "phase": "micro",
        "scenario": "index",
        "pool": cidr,
        "n": n,
        "iterations": iterations,
        "ns_per_service_apply": round(median(apply_ns), 0),
        "ns_per_service_activate": round(median(activate_ns), 0),
    })
}

fn phase_micro(opts: &Opts) -> anyhow::Result<()> {
    let runs: Vec<Box<dyn Fn() -> Value>> = vec![
        Box::new(|| micro_fill("2001:db8:100::/120", 250)),
        Box::new(|| micro_fill("2001:db8:100::/112", 250)),
        Box::new(|| micro_fill("2001:db8:100::/64", 250)),
        Box::new(|| micro_fill("2001:db8:100::/112", 10_000)),
        Box::new(|| micro_fill("2001:db8:100::/64", 10_000)),
        Box::new(|| micro_fill("2001:db8:100::/112", 65_536)),
        Box::new(|| micro_fill("2001:db8:100::/64", 65_536)),
        Box::new(|| micro_fragmented("2001:db8:100::/120", 250)),
        Box::new(|| micro_fragmented("2001:db8:100::/112", 10_000)),
        Box::new(|| micro_fragmented("2001:db8:100::/64", 10_000)),
        Box::new(|| micro_index("2001:db8:100::/120", 250)),
        Box::new(|| micro_index("2001:db8:100::/112", 10_000)),
        Box::new(|| micro_index("2001:db8:100::/64", 10_000)),
    ];
    for run in runs {
        let v = run();
        log(format!(
            "micro {} {} n={}",
            v["scenario"].as_str().unwrap_or(""),
            v["pool"].as_str().unwrap_or(""),
            v["n"]
        ));
        record(opts, v)?;
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Report

fn f(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

/// Average cores used by other work on the machine during a window.
fn other_load(window: &Value) -> String {
    match (window["other_cpu_s"].as_f64(), window["window_s"].as_f64()) {
        (Some(cpu), Some(t)) if t > 0.0 => format!("{:.2}", cpu / t),
        _ => "–".into(),
    }
}

fn mib(v: &Value) -> String {
    match v.as_f64() {
        Some(kb) => format!("{:.1}", kb / 1024.0),
        None => "–".into(),
    }
}

fn report(path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |phase: &str| -> Vec<&Value> { rows.iter().filter(|r| r["phase"] == phase).collect() };
    // A drain pairs with the direct run of the same size and repetition (the default pool).
    let direct_of = |r: &Value| -> Option<&Value> {
        rows.iter().find(|d| {
            d["phase"] == "direct"
                && d["n"] == r["n"]
                && d["rep"] == r["rep"]
                && r["pool"].as_str() == Some(DEFAULT_POOL)
        })
    };
    let pairs: Vec<(&Value, &Value)> = of("drain")
        .into_iter()
        .filter_map(|r| Some((direct_of(r)?, r)))
        .collect();
    let mut sizes: Vec<u64> = pairs.iter().filter_map(|(_, r)| r["n"].as_u64()).collect();
    sizes.sort();
    sizes.dedup();

    if !pairs.is_empty() {
        println!("### Status writes: the controller's drain vs. the API server's limit\n");
        println!(
            "*Limit*: a fresh control plane with N Services of a class nobody serves; the N \
             status patches sent directly (the controller's patch, field manager and 32 in \
             flight). *Drain*: a fresh control plane with N Services of the served class; the \
             controller starts. One row per repetition; the two phases of a repetition run \
             back to back (odd repetitions: limit first; even: drain first). *Same-CP limit*: \
             the N patches sent again directly, on the drain's control plane right after the \
             drain (controller stopped), to the same N Services: a cross-check that does not \
             depend on two control planes being alike. *Other load*: CPU used by everything \
             else on the machine during each measurement (the lab, controller and bench \
             excluded), in cores out of 2.\n"
        );
        println!(
            "| Services | rep | limit: N patches | limit rate | drain: start → ready | ready → last status | start → last status | drain rate (from ready) | drain / limit | same-CP limit rate | drain / same-CP limit | other load (cores): limit / drain / same-CP |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (d, r) in &pairs {
            let x = &r["drain"];
            let ratio = x["rate_from_ready_per_s"].as_f64().unwrap_or(0.0)
                / d["direct"]["rate_per_s"].as_f64().unwrap_or(f64::INFINITY);
            let same = r["direct_after"]["rate_per_s"].as_f64();
            println!(
                "| {} | {} | {} s | {}/s | {} s | {} s | {} s | {}/s | {:.0}% | {} | {} | {} / {} / {} |",
                r["n"],
                r["rep"],
                f(&d["direct"]["time_s"], 2),
                f(&d["direct"]["rate_per_s"], 0),
                f(&x["start_to_ready_s"], 2),
                f(&x["ready_to_last_status_s"], 2),
                f(&x["start_to_last_status_s"], 2),
                f(&x["rate_from_ready_per_s"], 0),
                100.0 * ratio,
                same.map(|l| format!("{l:.0}/s"))
                    .unwrap_or_else(|| "–".into()),
                same.map(|l| format!(
                    "{:.0}%",
                    100.0 * x["rate_from_ready_per_s"].as_f64().unwrap_or(0.0) / l
                ))
                .unwrap_or_else(|| "–".into()),
                other_load(&d["direct"]["window"]),
                other_load(&x["window"]),
                other_load(&r["direct_after"]["window"]),
            );
        }
        println!();
        for n in &sizes {
            let of_n: Vec<&(&Value, &Value)> = pairs
                .iter()
                .filter(|(_, r)| r["n"].as_u64() == Some(*n))
                .collect();
            let limits: Vec<f64> = of_n
                .iter()
                .filter_map(|(d, _)| d["direct"]["rate_per_s"].as_f64())
                .collect();
            let drains: Vec<f64> = of_n
                .iter()
                .filter_map(|(_, r)| r["drain"]["rate_from_ready_per_s"].as_f64())
                .collect();
            let starts: Vec<f64> = of_n
                .iter()
                .filter_map(|(_, r)| r["drain"]["rate_from_start_per_s"].as_f64())
                .collect();
            let same: Vec<f64> = of_n
                .iter()
                .filter_map(|(_, r)| r["direct_after"]["rate_per_s"].as_f64())
                .collect();
            let (limit, drain) = (median(limits), median(drains));
            print!(
                "- **{n} Services** ({} repetitions): median limit {limit:.0}/s, median drain {drain:.0}/s from ready ({:.0}/s from process start): drain / limit **{:.0}%** (from start: {:.0}%)",
                of_n.len(),
                median(starts.clone()),
                100.0 * drain / limit,
                100.0 * median(starts) / limit,
            );
            if same.is_empty() {
                println!();
            } else {
                let same = median(same);
                println!(
                    "; median same-CP limit {same:.0}/s: drain / same-CP limit **{:.0}%**",
                    100.0 * drain / same
                );
            }
        }
    }

    let live = of("live");
    if !live.is_empty() {
        println!("\n### Services created while the controller runs (live)\n");
        println!(
            "N Services created as fast as the API server takes them (32 in flight) while the \
             controller runs; its status writes compete with the creates.\n"
        );
        println!(
            "| Services | creates (first → last) | first create → last status | last create → last status | rate (N / first create → last status) |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for r in &live {
            println!(
                "| {} | {} s ({}/s) | {} s | {} s | {}/s |",
                r["n"],
                f(&r["create"]["time_s"], 2),
                f(&r["create"]["rate_per_s"], 0),
                f(&r["first_create_to_last_status_s"], 2),
                f(&r["last_create_to_last_status_s"], 3),
                f(&r["rate_per_s"], 0),
            );
        }
    }

    println!("\n### Controller cost (the release binary, its own process)\n");
    println!(
        "CPU = utime + stime of the controller process since it started; *at last status* is \
         read the moment the last status write is seen, *incl. Events* once it has also \
         published its N `IPAllocated` Events (one at a time, after the status writes). API \
         server / etcd CPU: over the measured window (controller start, or first create, to \
         last status).\n"
    );
    println!(
        "| phase | Services | peak RSS (VmHWM) | CPU at last status | CPU incl. Events | all Events published after | status write errors | WARN/ERROR log lines | API server CPU | etcd CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut cost_rows: Vec<(String, &Value, &Value)> = Vec::new();
    for (_, r) in &pairs {
        cost_rows.push((format!("drain (rep {})", r["rep"]), r, &r["drain"]));
    }
    for r in &live {
        cost_rows.push(("live".into(), r, r));
    }
    for (name, r, d) in cost_rows {
        let events = if d["events_done_after_start_s"].is_null() {
            &r["events_done_after_first_create_s"]
        } else {
            &d["events_done_after_start_s"]
        };
        let levels = &d["controller_log"]["log_levels"];
        let warn = levels["WARN"].as_u64().unwrap_or(0) + levels["ERROR"].as_u64().unwrap_or(0);
        println!(
            "| {name} | {} | {} MiB | {} s | {} s | {} | {} | {} | {} s | {} s |",
            r["n"],
            mib(&d["controller_vmhwm_kb"]),
            f(&d["controller_cpu_s_at_last_status"], 2),
            f(&d["controller_cpu_s_total"], 2),
            if events.is_null() {
                "not within the wait".into()
            } else {
                format!("{} s", f(events, 1))
            },
            d["status_writes_error"],
            warn,
            f(&d["window"]["apiserver_cpu_s"], 1),
            f(&d["window"]["etcd_cpu_s"], 1),
        );
    }

    let pools: Vec<&Value> = of("drain")
        .into_iter()
        .filter(|r| direct_of(r).is_none())
        .collect();
    if !pools.is_empty() {
        println!("\n### Drain by pool size (end to end)\n");
        println!(
            "| pool | addresses | Services | start → ready | ready → last status | start → last status | drain rate (from ready) | same-CP limit rate | controller CPU at last status |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &pools {
            let pool = r["pool"].as_str().unwrap_or("");
            let d = &r["drain"];
            println!(
                "| `{pool}` | {} | {} | {} s | {} s | {} s | {}/s | {}/s | {} s |",
                pool_size(pool),
                r["n"],
                f(&d["start_to_ready_s"], 3),
                f(&d["ready_to_last_status_s"], 3),
                f(&d["start_to_last_status_s"], 3),
                f(&d["rate_from_ready_per_s"], 0),
                f(&r["direct_after"]["rate_per_s"], 0),
                f(&d["controller_cpu_s_at_last_status"], 2),
            );
        }
        println!();
        let mut names: Vec<(&str, u64)> = pools
            .iter()
            .filter_map(|r| Some((r["pool"].as_str()?, r["n"].as_u64()?)))
            .collect();
        let size = |pool: &str| IpRange::parse(pool).map_or(0, |r| r.end() - r.start());
        names.sort_by_key(|&(pool, n)| (n, size(pool)));
        names.dedup();
        for (pool, n) in names {
            let of_pool: Vec<&&Value> = pools
                .iter()
                .filter(|r| r["pool"].as_str() == Some(pool) && r["n"].as_u64() == Some(n))
                .collect();
            let times: Vec<f64> = of_pool
                .iter()
                .filter_map(|r| r["drain"]["ready_to_last_status_s"].as_f64())
                .collect();
            let rates: Vec<f64> = of_pool
                .iter()
                .filter_map(|r| r["drain"]["rate_from_ready_per_s"].as_f64())
                .collect();
            println!(
                "- `{pool}` ({} addresses), {n} Services: median ready → last status {:.3} s, median {:.0}/s ({} runs)",
                pool_size(pool),
                median(times),
                median(rates),
                of_pool.len(),
            );
        }
    }

    let micro = of("micro");
    if !micro.is_empty() {
        println!(
            "\n### Allocator micro-benchmark (`herald_controller::allocator::Allocator`, one IPv6 pool)\n"
        );
        println!(
            "*fill*: N Services allocated into an empty pool. *fragmented*: N allocated, every \
             other one released (N/2 one-address holes), then N/2 allocated again. Median over \
             the iterations; *first/last tenth*: the first and the last tenth of each fill.\n"
        );
        println!(
            "| scenario | pool | addresses | Services | iterations | ns / allocation (median) | first tenth | last tenth | ns / release |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in micro.iter().filter(|r| r["scenario"] != "index") {
            let pool = r["pool"].as_str().unwrap_or("");
            println!(
                "| {} | `{pool}` | {} | {} | {} | {} | {} | {} | {} |",
                r["scenario"].as_str().unwrap_or(""),
                pool_size(pool),
                r["n"],
                r["iterations"],
                f(&r["ns_per_alloc"], 0),
                f(&r["ns_per_alloc_first_tenth"], 0),
                f(&r["ns_per_alloc_last_tenth"], 0),
                f(&r["ns_per_release"], 0),
            );
        }
        let index: Vec<&&Value> = micro.iter().filter(|r| r["scenario"] == "index").collect();
        if !index.is_empty() {
            println!(
                "\n### Whole decision path (`herald_controller::index::ControllerIndex`: parse, allocate, decide the write)\n"
            );
            println!(
                "| pool | addresses | Services | ns / Service applied (watch event) | ns / Service decided (activate) |"
            );
            println!("|---|---:|---:|---:|---:|");
            for r in index {
                let pool = r["pool"].as_str().unwrap_or("");
                println!(
                    "| `{pool}` | {} | {} | {} | {} |",
                    pool_size(pool),
                    r["n"],
                    f(&r["ns_per_service_apply"], 0),
                    f(&r["ns_per_service_activate"], 0),
                );
            }
        }
    }
    Ok(())
}

fn pool_size(cidr: &str) -> String {
    match IpRange::parse(cidr) {
        Ok(r) => {
            let n = r.end() - r.start() + 1;
            match n.checked_ilog2() {
                Some(b) if n.is_power_of_two() && b > 20 => format!("2^{b}"),
                _ => n.to_string(),
            }
        }
        Err(_) => "?".into(),
    }
}

// ----------------------------------------------------------------------------------------

async fn run(cmd: &str, rest: &[String]) -> anyhow::Result<()> {
    match cmd {
        "report" => {
            let [path] = rest else {
                bail!("usage: herald-bench report RESULTS_FILE")
            };
            report(Path::new(path))
        }
        "micro" => phase_micro(&Opts::parse(rest)?),
        "direct" => phase_direct(&Opts::parse(rest)?).await,
        "drain" => phase_drain(&Opts::parse(rest)?).await,
        "live" => phase_live(&Opts::parse(rest)?).await,
        other => bail!(
            "unknown command {other:?}: micro | direct | drain | live | report (see the source's header)"
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("usage: herald-bench micro|direct|drain|live|report [options]");
    };
    // Ctrl-C or SIGTERM: return, so the controller subprocess is dropped (and killed).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run(cmd, rest) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}
