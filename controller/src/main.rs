//! `herald-controller`: allocates external IPs from IPAddressPools into Service status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use herald_controller::leader::{self, LeaseSettings};
use herald_controller::metrics::Metrics;
use herald_controller::runtime::{self, ControllerSettings};
use herald_support::telemetry::{self, LogFormat};
use herald_support::{health, signals};

/// Allocates external IPs from IPAddressPools into LoadBalancer Service status.
#[derive(Parser, Debug)]
#[command(name = "herald-controller", version)]
struct Args {
    /// Serve Services with this spec.loadBalancerClass (default: only Services without one).
    #[arg(long, env = "HERALD_LOAD_BALANCER_CLASS")]
    load_balancer_class: Option<String>,
    /// Use only IPAddressPools matching this label selector.
    #[arg(long, env = "HERALD_POOL_SELECTOR")]
    pool_selector: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "0.0.0.0:7472")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "herald-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "herald-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (default: POD_NAME or the host name and PID).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds after which a leader that could not renew steps down.
    #[arg(long, default_value_t = 10)]
    renew_deadline_seconds: u64,
    /// Seconds between election attempts.
    #[arg(long, default_value_t = 2)]
    retry_period_seconds: u64,
    /// Seconds after which any API request other than a watch is abandoned (a Lease request
    /// abandoned counts as a failed renewal). Less than the renew deadline.
    #[arg(long, default_value_t = 5)]
    api_timeout_seconds: u64,
    /// Concurrent Service status writes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    write_concurrency: u16,
    /// Log format.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

/// How long a connection may stay silent before it is dropped: longer than the 290 s a watch
/// asks the API server to keep it open.
const WATCH_SILENCE: Duration = Duration::from_secs(295);

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "herald".into());
    format!("{host}-{}", std::process::id())
}

/// The settings the flags describe, or why they cannot work (before anything starts).
fn settings(args: &Args) -> Result<ControllerSettings, leader::SettingsError> {
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let settings = ControllerSettings {
        class: args.load_balancer_class.clone(),
        pool_selector: args.pool_selector.clone(),
        lease: LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity,
            lease_duration: Duration::from_secs(args.lease_duration_seconds),
            renew_deadline: Duration::from_secs(args.renew_deadline_seconds),
            retry_period: Duration::from_secs(args.retry_period_seconds),
        },
        api_timeout: Duration::from_secs(args.api_timeout_seconds),
        write_concurrency: usize::from(args.write_concurrency),
        pool_status_interval: Duration::from_millis(500),
    };
    settings.lease.validate(settings.api_timeout)?;
    Ok(settings)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = match settings(&args) {
        Ok(settings) => settings,
        Err(e) => Args::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit(),
    };
    telemetry::init(args.log_format);
    let mut config = kube::Config::infer()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    // Requests are bounded one by one (`--api-timeout-seconds`); a watch, which is idle for up
    // to the 290 s the watcher asks the API server for, is bounded by this: a connection
    // silent for longer is dropped and the watch starts over.
    config.read_timeout = Some(WATCH_SILENCE);
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let metrics = Arc::new(Metrics::default());
    tracing::info!(?settings, "starting herald-controller");

    let server = tokio::spawn(health::serve(args.metrics_addr, metrics.clone()));
    let shutdown_rx = signals::shutdown_flag().context("installing SIGTERM handler")?;
    runtime::run(client, settings, metrics, shutdown_rx).await;
    server.abort();
    Ok(())
}
