//! The speaker's runtime: the tasks, the typed messages between them, and the main loop that
//! runs the election when anything it reads changed.
//!
//! ```text
//!  Kubernetes watches ──── () changed ──────────────┐
//!  (edge::watches: Nodes, Services, EndpointSlices, │
//!   pools, advertisements, the key's Secret)        │
//!                                                   ▼
//!  heartbeat task ─── () member joined/left/ ──► main loop ──► elect (election.rs):
//!  (edge::heartbeats:  links/fence changed,       (this      │  inputs → fence → hold-down →
//!   UDP every 100 ms,  own period began/ended      file)     │  cluster view → handover →
//!   judges the fence ──► Gate (deadline, period)    ▲  ▲     │  announcer
//!        │ tie: contend                             │  │     ├──► status writes, Events
//!        ▼                                          │  │     │    (status.rs, ≤ 4 in flight)
//!  witness task (edge::witness, the Lease)          │  │     └──► Arc<AnswerSnapshot> ──┐
//!                                                   │  │                                │
//!  rtnetlink events, scan timer ──── () ────────────┘  │  links.rs: sockets, groups     │
//!  socket readers (edge::responder) ── ConflictSeen ───┘                                │
//!        ▲  answer ARP/NDP themselves from the snapshot, while the Gate allows ◄────────┘
//!  timers in the loop: a member's silence, a hold-down ending, a hand-over due
//!  (→ elect); gratuitous announcements due (→ events.rs, send on links)
//! ```
//!
//! Heartbeats and ARP/NDP answers run on their own tasks, so neither waits for an election
//! over thousands of Services.

mod election;
mod events;
mod links;
mod status;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use herald_config::service::ServedClass;
use kube::Client;
use tokio::sync::{mpsc, watch};

use crate::decide::announcer::{Announcer, GratuitousSettings};
use crate::decide::election::NodeName;
use crate::decide::eligibility::HoldDown;
use crate::decide::fencing::{Gate, Timing, TimingError};
use crate::decide::handover::Handover;
use crate::decide::membership::MembershipDigest;
use crate::edge::heartbeats::{HeartbeatInputs, HeartbeatSettings, Heartbeats};
use crate::edge::node_events::NodeEvents;
use crate::edge::responder::ConflictSeen;
use crate::edge::watches::{self, SpeakerPods, Stores};
use crate::edge::witness::{Witness, WitnessSettings};
use crate::metrics::Metrics;
use links::Links;
use status::StatusReporter;

/// The key in the membership Secret's data.
pub use crate::edge::heartbeats::SECRET_KEY;

/// How the speaker runs.
#[derive(Clone, Debug)]
pub struct SpeakerSettings {
    /// This node's name (the Node object's).
    pub node: NodeName,
    /// The `spec.loadBalancerClass` served (as the controller's flag).
    pub class: Option<String>,
    /// Address the membership socket binds (`None`: every address).
    pub membership_address: Option<IpAddr>,
    /// UDP port of the membership.
    pub membership_port: u16,
    /// The membership's timings (heartbeat, withdraw, dead, hold-down), whose relations make
    /// fencing safe.
    pub timing: Timing,
    /// Namespace and name of the Secret holding the membership key (`secretkey`).
    pub secret: (String, String),
    /// How long both keys are accepted after the key changes.
    pub key_rotation: Duration,
    /// Where the speaker DaemonSet's pods are (the speakers that count for quorum).
    pub speaker_pods: SpeakerPods,
    /// Gratuitous announcements.
    pub gratuitous: GratuitousSettings,
    /// How often interfaces are re-read.
    pub interface_scan: Duration,
    /// A node taking an IP from a live owner announces it this much later (break before make).
    pub handover_delay: Duration,
    /// Name of the witness Lease (in the Secret's namespace) that breaks ties; `None`: ties
    /// never announce.
    pub witness_lease: Option<String>,
}

/// A setting the speaker refuses to start with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The membership timings break the fencing argument.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// Port 0 would bind a random port no peer knows.
    #[error("--membership-port must not be 0: every speaker sends to the same port")]
    MembershipPort,
    /// A duration so long that adding it to the clock overflows, or that cannot be meant.
    #[error("{flag} is {value} s, more than the {max} s accepted")]
    TooLong {
        /// The flag.
        flag: &'static str,
        /// Its value in seconds.
        value: u64,
        /// The largest value accepted, in seconds.
        max: u64,
    },
}

/// The longest periodic re-announcement accepted (switch FDB ageing is minutes).
pub const MAX_GRATUITOUS_REFRESH: Duration = Duration::from_secs(24 * 3600);

impl SpeakerSettings {
    /// Refuses settings the speaker cannot run safely with, with the reason.
    pub fn check(&self) -> Result<(), SettingsError> {
        let margin = self.witness_lease.as_ref().map(|name| {
            let w = WitnessSettings::new(name.clone(), String::new(), self.node.clone());
            w.lease_duration.saturating_sub(w.renew_deadline)
        });
        self.timing.check(margin)?;
        if self.membership_port == 0 {
            return Err(SettingsError::MembershipPort);
        }
        let too_long = |flag, value: Duration, max: Duration| {
            (value > max).then_some(SettingsError::TooLong {
                flag,
                value: value.as_secs(),
                max: max.as_secs(),
            })
        };
        let hour = crate::decide::fencing::MAX_TIMING;
        if let Some(e) = [
            self.gratuitous
                .refresh
                .and_then(|r| too_long("--gratuitous-refresh-s", r, MAX_GRATUITOUS_REFRESH)),
            too_long(
                "--gratuitous-interval-ms",
                self.gratuitous.burst_interval,
                hour,
            ),
            too_long("--handover-delay-ms", self.handover_delay, hour),
            too_long("--key-rotation-window-s", self.key_rotation, hour),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(e);
        }
        Ok(())
    }
}

/// What the main loop holds: the decisions' state and the edges it drives.
struct Speaker {
    settings: SpeakerSettings,
    class: ServedClass,
    metrics: Arc<Metrics>,
    stores: Stores,
    heartbeats: Arc<Heartbeats>,
    hold: HoldDown,
    handover: Handover,
    announcer: Announcer,
    links: Links,
    status: StatusReporter,
    had_quorum: bool,
    /// The membership facts the last election used (to tell a death from a refresh).
    elected_digest: MembershipDigest,
    /// The fence period the announced IPs were elected in.
    period: u32,
}

fn sleep_until(at: Option<Instant>) -> tokio::time::Sleep {
    let at = at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
    tokio::time::sleep_until(tokio::time::Instant::from_std(at))
}

/// Distinguishes this run of the speaker from earlier ones in its heartbeats: random, never
/// the wall clock (a restart after the clock stepped back is a new incarnation like any
/// other; peers accept it once it echoes them).
fn incarnation() -> std::io::Result<u64> {
    getrandom::u64().map_err(std::io::Error::other)
}

/// Runs the speaker until `shutdown` turns true; then hands its IPs over and returns.
pub async fn run(
    client: Client,
    settings: SpeakerSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (stores, mut changes) = watches::start(&client, &settings.secret, &settings.speaker_pods);
    let started = Instant::now();
    let gate = Arc::new(Gate::new(started));
    let witness = settings.witness_lease.as_ref().map(|name| {
        Witness::new(WitnessSettings::new(
            name.clone(),
            settings.secret.0.clone(),
            settings.node.clone(),
        ))
    });
    let witness_task = witness.clone().map(|w| tokio::spawn(w.run(client.clone())));
    let heartbeats = Arc::new(Heartbeats::bind(
        HeartbeatSettings {
            node: settings.node.clone(),
            address: settings.membership_address,
            port: settings.membership_port,
            timing: settings.timing,
            secret: settings.secret.clone(),
            key_rotation: settings.key_rotation,
            incarnation: incarnation()?,
        },
        HeartbeatInputs {
            nodes: stores.nodes.clone(),
            secrets: stores.secrets.clone(),
            speaker_pods: stores.speaker_pods.clone(),
        },
        gate.clone(),
        metrics.clone(),
        witness.clone(),
        NodeEvents::new(client.clone(), settings.node.as_str().to_string()),
    )?);
    let (membership_tx, mut membership_changed) = mpsc::channel::<()>(1);
    let heartbeat_task = tokio::spawn(heartbeats.clone().run(membership_tx));
    let (conflicts_tx, mut conflicts_rx) = mpsc::channel::<ConflictSeen>(256);
    let mut speaker = Speaker {
        class: ServedClass(settings.class.clone()),
        hold: HoldDown::new(settings.timing.hold_down),
        handover: Handover::new(settings.handover_delay),
        announcer: Announcer::new(settings.gratuitous),
        links: Links::new(metrics.clone(), gate.clone(), conflicts_tx),
        status: StatusReporter::new(settings.node.clone(), client.clone()),
        settings,
        metrics,
        stores,
        heartbeats: heartbeats.clone(),
        had_quorum: false,
        elected_digest: Vec::new(),
        period: 0,
    };
    tracing::info!(node = %speaker.settings.node, "speaker starting");
    let mut scan = tokio::time::interval(speaker.settings.interface_scan);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Interface changes arrive as rtnetlink events; the periodic scan is only a safety net.
    let mut link_events: std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send>> =
        match crate::edge::link_events::subscribe() {
            Ok(events) => Box::pin(events),
            Err(e) => {
                tracing::warn!(error = %e, "no rtnetlink events; interfaces are only polled");
                Box::pin(futures::stream::pending())
            }
        };

    let mut last_election = Instant::now();
    // Silences already judged up to here (see the expiry arm).
    let mut expiries_checked = last_election;
    loop {
        // Deadlines are taken from the last election, not from now: one that passes while
        // another event is handled must still fire (at once), or the election never re-runs.
        let expiry = heartbeats
            .lock()
            .membership
            .next_expiry(last_election.max(expiries_checked));
        let hold_change = speaker.hold.next_change(last_election);
        let handover_due = speaker.handover.next_due();
        let due = speaker.announcer.next_due();
        let mut dirty = false;
        tokio::select! {
            Some(()) = changes.next() => {
                dirty = true;
                while let Some(Some(())) = changes.next().now_or_never() {}
            }
            Some(()) = membership_changed.recv() => { dirty = true; }
            Some(seen) = conflicts_rx.recv() => {
                speaker.on_conflict(seen);
            }
            _ = scan.tick() => {
                dirty = speaker.on_links().await;
            }
            Some(()) = link_events.next() => {
                while let Some(Some(())) = link_events.next().now_or_never() {}
                dirty = speaker.on_links().await;
            }
            _ = sleep_until(expiry) => {
                // The earliest possible silence; usually the node was heard meanwhile. Only a
                // member actually gone re-runs the election (not every dead_after at idle).
                let now = Instant::now();
                dirty = heartbeats.lock().membership.digest(now) != speaker.elected_digest;
                expiries_checked = now;
            }
            _ = sleep_until(hold_change) => { dirty = true; }
            _ = sleep_until(handover_due) => { dirty = true; }
            _ = sleep_until(due) => {
                speaker.send_due().await;
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
        if dirty {
            last_election = Instant::now();
            speaker.elect();
            speaker.send_due().await;
        }
    }
    // Graceful handover: stop answering, then tell the others at once (a few times, UDP).
    tracing::info!("shutting down: handing IPs over");
    heartbeat_task.abort();
    speaker
        .announcer
        .set_owned(Default::default(), Instant::now());
    speaker.links.publish(&speaker.announcer, speaker.period);
    if let Some(w) = &witness {
        if let Some(task) = witness_task {
            task.abort();
        }
        w.release(client.clone(), Duration::from_millis(500)).await;
    }
    for _ in 0..3 {
        heartbeats.send(true).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
