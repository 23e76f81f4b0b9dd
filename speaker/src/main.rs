//! `herald-speaker`: one per node. Elects one owner node per LoadBalancer IP with its peers and
//! answers ARP and NDP for the IPs this node owns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald_speaker::announcer::GratuitousSettings;
use herald_speaker::election::NodeName;
use herald_speaker::metrics::{self, Metrics};
use herald_speaker::runtime::{self, SpeakerSettings};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Announces LoadBalancer IPs on this node's layer-2 segment.
#[derive(Parser, Debug)]
#[command(name = "herald-speaker", version)]
struct Args {
    /// This node's name (the Node object's).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Announce Services with this spec.loadBalancerClass (default: only those without one).
    #[arg(long, env = "HERALD_LOAD_BALANCER_CLASS")]
    load_balancer_class: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    /// UDP port of the speakers' membership.
    #[arg(long, default_value_t = 7947)]
    membership_port: u16,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// A peer silent this many milliseconds is dead and its IPs move.
    #[arg(long, default_value_t = 600)]
    dead_after_ms: u64,
    /// Stop announcing when no majority was heard for this many milliseconds (< dead-after).
    #[arg(long, default_value_t = 400)]
    withdraw_after_ms: u64,
    /// Milliseconds a joining or returning node waits before it may own IPs.
    #[arg(long, default_value_t = 3000)]
    hold_down_ms: u64,
    /// Namespace of the membership key Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "herald-system")]
    secret_namespace: String,
    /// Name of the membership key Secret (key `secretkey`).
    #[arg(long, default_value = "herald-memberlist")]
    secret_name: String,
    /// Milliseconds a node waits before announcing an IP it takes from a live owner (a
    /// hand-back after a hold-down, a configuration change), so the two never answer together.
    /// IPs of a dead or leaving owner are taken at once.
    #[arg(long, default_value_t = 200)]
    handover_delay_ms: u64,
    /// Lease (in the Secret's namespace) that breaks a tie, when exactly half the speakers
    /// are heard (a two-node cluster losing one). Read and written only during a tie. Empty:
    /// no witness, a tie never announces.
    #[arg(long, default_value = "herald-speaker-witness")]
    witness_lease: String,
    /// Gratuitous announcements sent on gaining an IP. The burst spans more than a second
    /// because Linux ignores a neighbour update for `locktime` (1 s) after the last one.
    #[arg(long, default_value_t = 6)]
    gratuitous_burst: u32,
    /// Milliseconds between the burst's announcements.
    #[arg(long, default_value_t = 250)]
    gratuitous_interval_ms: u64,
    /// Seconds between periodic re-announcements of owned IPs; 0 disables them.
    #[arg(long, default_value_t = 60)]
    gratuitous_refresh_s: u64,
    /// Log format: json or text.
    #[arg(long, env = "HERALD_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

// Two workers whatever the node's size: the speaker's work is a few small tasks (heartbeats,
// socket readers, the election loop), and every extra thread costs memory (a malloc arena).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
    anyhow::ensure!(
        args.withdraw_after_ms < args.dead_after_ms,
        "--withdraw-after-ms must be shorter than --dead-after-ms, or a cut-off owner could still answer when others take over"
    );
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
    let settings = SpeakerSettings {
        node: NodeName::new(args.node_name.clone()),
        class: args.load_balancer_class.clone(),
        membership_port: args.membership_port,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        dead_after: Duration::from_millis(args.dead_after_ms),
        withdraw_after: Duration::from_millis(args.withdraw_after_ms),
        hold_down: Duration::from_millis(args.hold_down_ms),
        secret: (args.secret_namespace.clone(), args.secret_name.clone()),
        gratuitous: GratuitousSettings {
            burst: args.gratuitous_burst,
            burst_interval: Duration::from_millis(args.gratuitous_interval_ms),
            refresh: (args.gratuitous_refresh_s > 0)
                .then(|| Duration::from_secs(args.gratuitous_refresh_s)),
        },
        interface_scan: Duration::from_secs(5),
        handover_delay: Duration::from_millis(args.handover_delay_ms),
        witness_lease: Some(args.witness_lease).filter(|n| !n.is_empty()),
    };
    tracing::info!(?settings, "starting herald-speaker");
    let server = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = shutdown_tx.send(true);
    });
    runtime::run(client, settings, metrics, shutdown_rx)
        .await
        .context("speaker failed")?;
    server.abort();
    Ok(())
}
