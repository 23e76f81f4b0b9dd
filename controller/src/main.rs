//! `herald-controller`: allocates external IPs from IPAddressPools into Service status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald_controller::leader::LeaseSettings;
use herald_controller::metrics::{self, Metrics};
use herald_controller::runtime::{self, ControllerSettings};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

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
    /// Concurrent Service status writes.
    #[arg(long, default_value_t = 32)]
    write_concurrency: usize,
    /// Log format: json or text.
    #[arg(long, env = "HERALD_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "herald".into());
    format!("{host}-{}", std::process::id())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
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
        write_concurrency: args.write_concurrency,
        pool_status_interval: Duration::from_millis(500),
    };
    tracing::info!(?settings, "starting herald-controller");

    let server = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    runtime::run(client, settings, metrics, shutdown_rx).await;
    server.abort();
    Ok(())
}
