//! `herald-speaker`, one per node: elects one owner node per LoadBalancer IP with its peers and
//! answers ARP and NDP for the IPs this node owns.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald_speaker::decide::announcer::GratuitousSettings;
use herald_speaker::decide::election::NodeName;
use herald_speaker::decide::fencing::Timing;
use herald_speaker::edge::watches::SpeakerPods;
use herald_speaker::metrics::Metrics;
use herald_speaker::runtime::{self, SpeakerSettings};
use herald_support::telemetry::{self, LogFormat};
use herald_support::{health, signals};

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
    /// Address for /metrics, /healthz and /readyz. The speaker runs with hostNetwork, so
    /// `0.0.0.0` exposes them on every interface of the node: choose the node's internal
    /// address (or 127.0.0.1 with a local scraper) to keep them off other networks.
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    /// Address the membership socket binds. Default: every address (IPv6 and IPv4; IPv4 only
    /// on a node booted without IPv6). The peers' heartbeats come from and go to the Nodes'
    /// InternalIPs: bind one of them to keep the port off other networks.
    #[arg(long, env = "HERALD_MEMBERSHIP_ADDR")]
    membership_addr: Option<IpAddr>,
    /// UDP port of the speakers' membership.
    #[arg(long, default_value_t = 7947)]
    membership_port: u16,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = Timing::DEFAULT.interval.as_millis() as u64)]
    heartbeat_ms: u64,
    /// A node heard by nobody (this speaker or a peer it hears) for this many milliseconds is
    /// dead and its IPs move. At least twice --withdraw-after-ms (plus 0.2 %).
    #[arg(long, default_value_t = Timing::DEFAULT.dead_after.as_millis() as u64)]
    dead_after_ms: u64,
    /// Stop answering when no majority of the speakers echoed a heartbeat sent within this
    /// many milliseconds (two-way contact). Longer than two heartbeat intervals.
    #[arg(long, default_value_t = Timing::DEFAULT.withdraw_after.as_millis() as u64)]
    withdraw_after_ms: u64,
    /// Milliseconds a joining or returning node waits before it may own IPs. At least twice
    /// --dead-after-ms.
    #[arg(long, default_value_t = Timing::DEFAULT.hold_down.as_millis() as u64)]
    hold_down_ms: u64,
    /// Namespace of the membership key Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "herald-system")]
    secret_namespace: String,
    /// Name of the membership key Secret (key `secretkey`, at least 32 octets).
    #[arg(long, default_value = "herald-memberlist")]
    secret_name: String,
    /// Seconds both the old and the new membership key are accepted after the key changes
    /// (the old one still signs for the first half, so slower peers keep accepting).
    #[arg(long, default_value_t = 60)]
    key_rotation_window_s: u64,
    /// Label selector of the speaker DaemonSet's pods (in the Secret's namespace): a Node
    /// counts for quorum while its speaker pod is ready.
    #[arg(
        long,
        default_value = "app.kubernetes.io/name=herald,app.kubernetes.io/component=speaker"
    )]
    speaker_pod_selector: String,
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
    #[arg(long, default_value_t = GratuitousSettings::DEFAULT_BURST)]
    gratuitous_burst: u32,
    /// Milliseconds between the burst's announcements.
    #[arg(long, default_value_t = GratuitousSettings::DEFAULT_BURST_INTERVAL_MS)]
    gratuitous_interval_ms: u64,
    /// Seconds between periodic re-announcements of owned IPs; 0 disables them.
    #[arg(long, default_value_t = GratuitousSettings::DEFAULT_REFRESH_S)]
    gratuitous_refresh_s: u64,
    /// Log format.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

// Two workers whatever the node's size: the speaker's work is a few small tasks (heartbeats,
// socket readers, the election loop), and every extra thread costs memory (a malloc arena).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let settings = SpeakerSettings {
        node: NodeName::new(args.node_name.clone()),
        class: args.load_balancer_class.clone(),
        membership_address: args.membership_addr,
        membership_port: args.membership_port,
        timing: Timing {
            interval: Duration::from_millis(args.heartbeat_ms),
            withdraw_after: Duration::from_millis(args.withdraw_after_ms),
            dead_after: Duration::from_millis(args.dead_after_ms),
            hold_down: Duration::from_millis(args.hold_down_ms),
        },
        secret: (args.secret_namespace.clone(), args.secret_name.clone()),
        key_rotation: Duration::from_secs(args.key_rotation_window_s),
        speaker_pods: SpeakerPods {
            namespace: args.secret_namespace.clone(),
            selector: args.speaker_pod_selector.clone(),
        },
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
    // Refused before anything starts, with the reason (a timing that breaks the fencing
    // argument, a refresh that would overflow the clock).
    settings.check().context("refusing to start")?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    tracing::info!(?settings, "starting herald-speaker");
    let server = tokio::spawn(health::serve(args.metrics_addr, metrics.clone()));
    let shutdown_rx = signals::shutdown_flag().context("installing SIGTERM handler")?;
    runtime::run(client, settings, metrics, shutdown_rx)
        .await
        .context("speaker failed")?;
    server.abort();
    Ok(())
}
