//! What users are told: which IPs this node announces, and that another station answers for
//! an owned IP. The first is this node's `NodeL2Status` report, written on its own task once
//! per change of what the node announces (the newest report wins; a failed write is retried),
//! which the controller mirrors into each Service's condition; the second a Warning Event, at
//! most one a minute per IP however many stations claim it, with few writes in flight.
//!
//! elected IPs → this node's report → the report writer; conflicts seen → the limiter → Events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_config::announcement::{self, L2Announcements};
use herald_config::service::ServiceKey;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::{Semaphore, watch};

use crate::decide::cluster_view::Ownership;
use crate::decide::election::NodeName;
use crate::edge::responder::ConflictSeen;
use crate::edge::service_status;
use crate::wire::ethernet::MacAddr;

/// How long one IPConflict Event stands for an IP.
const CONFLICT_EVENT_EVERY: Duration = Duration::from_secs(60);

/// Stations named in one IPConflict Event at most (the others are counted).
const CONFLICT_MACS_NAMED: usize = 4;

/// IPConflict Event writes in flight at once; more are dropped (and the next minute's Event
/// tells of them).
const CONFLICT_WRITES_IN_FLIGHT: usize = 4;

/// A report write that failed is tried again after this long, doubling up to
/// [`REPORT_RETRY_MAX`] while it keeps failing (a Node deleted under its speaker, an API
/// server down).
const REPORT_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at a report write.
const REPORT_RETRY_MAX: Duration = Duration::from_secs(60);

/// What one IPConflict Event says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictReport {
    /// The owned IP.
    pub ip: IpAddr,
    /// The stations that claimed it since the last Event (at most a few).
    pub macs: Vec<MacAddr>,
    /// Claims by further stations, not named.
    pub unnamed: usize,
}

/// At most one IPConflict Event per IP per minute, however many stations claim it: the first
/// claim is reported at once, the others of the minute with the next one. Memory: a few MACs
/// per owned IP.
#[derive(Debug, Default)]
pub struct ConflictLimiter {
    per_ip: BTreeMap<IpAddr, IpConflicts>,
}

#[derive(Debug)]
struct IpConflicts {
    reported_at: Instant,
    macs: BTreeSet<MacAddr>,
    unnamed: usize,
}

impl ConflictLimiter {
    /// `mac` claimed `ip` at `now`: the Event to publish, if one is due.
    pub fn seen(&mut self, ip: IpAddr, mac: MacAddr, now: Instant) -> Option<ConflictReport> {
        let entry = self.per_ip.entry(ip).or_insert_with(|| IpConflicts {
            // Never reported: due at once.
            reported_at: now.checked_sub(CONFLICT_EVENT_EVERY).unwrap_or(now),
            macs: BTreeSet::new(),
            unnamed: 0,
        });
        if entry.macs.len() < CONFLICT_MACS_NAMED || entry.macs.contains(&mac) {
            entry.macs.insert(mac);
        } else {
            entry.unnamed = entry.unnamed.saturating_add(1);
        }
        let due = now.duration_since(entry.reported_at) >= CONFLICT_EVENT_EVERY
            || entry.reported_at == now;
        if !due {
            return None;
        }
        entry.reported_at = now;
        Some(ConflictReport {
            ip,
            macs: std::mem::take(&mut entry.macs).into_iter().collect(),
            unnamed: std::mem::take(&mut entry.unnamed),
        })
    }

    /// Forgets IPs this node no longer announces.
    pub fn retain(&mut self, owned: impl Fn(&IpAddr) -> bool) {
        self.per_ip.retain(|ip, _| owned(ip));
    }
}

/// The writer of this node's report and of the speaker's Events.
pub(super) struct StatusReporter {
    node: NodeName,
    recorder: Recorder,
    /// The report to write; the writer task writes the newest.
    report: watch::Sender<L2Announcements>,
    /// What this node announces: interface and since when, per IP.
    announced: BTreeMap<IpAddr, (String, MicroTime)>,
    /// Which Services use each owned IP (for Events).
    ip_services: BTreeMap<IpAddr, Vec<ServiceKey>>,
    conflicts: ConflictLimiter,
    conflict_writes: Arc<Semaphore>,
}

impl StatusReporter {
    /// A reporter for `node` writing through `client`; its report writer runs on a task.
    pub fn new(node: NodeName, client: Client) -> StatusReporter {
        let (report, desired) = watch::channel(L2Announcements::default());
        tokio::spawn(write_reports(
            client.clone(),
            node.as_str().to_string(),
            desired,
        ));
        StatusReporter {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: service_status::FIELD_MANAGER.into(),
                    instance: Some(node.as_str().to_string()),
                },
            ),
            node,
            report,
            announced: BTreeMap::new(),
            ip_services: BTreeMap::new(),
            conflicts: ConflictLimiter::default(),
            conflict_writes: Arc::new(Semaphore::new(CONFLICT_WRITES_IN_FLIGHT)),
        }
    }

    /// Reports which IPs this node announces now, and on which interface (the first of those
    /// `announced_on` it, in the interfaces' order): a new report only when that changed.
    pub fn report_owned(
        &mut self,
        elected: &[Ownership],
        announced_on: &BTreeMap<IpAddr, Vec<String>>,
    ) {
        self.ip_services = elected.iter().map(|o| (o.ip, o.services.clone())).collect();
        let now = MicroTime(Timestamp::now());
        let mut announced = BTreeMap::new();
        for o in elected {
            let interface = announced_on
                .get(&o.ip)
                .and_then(|on| on.first())
                .cloned()
                .unwrap_or_else(|| "none".into());
            let since = match self.announced.get(&o.ip) {
                Some((before, since)) if *before == interface => since.clone(),
                _ => now.clone(),
            };
            announced.insert(o.ip, (interface, since));
        }
        self.conflicts.retain(|ip| announced.contains_key(ip));
        if announced != self.announced {
            self.announced = announced;
            self.report
                .send_replace(announcement::report(&self.announced));
        }
    }

    /// Another station answered for an IP this node announces (`seen`, already checked to be
    /// owned): a Warning Event on every Service using the IP, at most once a minute per IP.
    pub fn conflict(&mut self, services: &[Arc<Service>], seen: &ConflictSeen) {
        let ConflictSeen { ip, mac, interface } = seen;
        let Some(report) = self.conflicts.seen(*ip, *mac, Instant::now()) else {
            return;
        };
        let uids: BTreeMap<ServiceKey, Option<String>> = services
            .iter()
            .filter_map(|s| Some((ServiceKey::of(s)?, s.metadata.uid.clone())))
            .collect();
        let stations = report
            .macs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let more = match report.unnamed {
            0 => String::new(),
            n => format!(" (and {n} more claims by other stations)"),
        };
        let note = format!(
            "{stations} also answers for {ip}, announced by node {} on {interface}{more}",
            self.node
        );
        tracing::warn!(%ip, %interface, "another station claims an IP this node announces: {note}");
        for key in self.ip_services.get(ip).cloned().unwrap_or_default() {
            let Ok(permit) = self.conflict_writes.clone().try_acquire_owned() else {
                tracing::warn!(%ip, service = %key, "IPConflict event dropped: too many in flight");
                continue;
            };
            let write = service_status::conflict(
                self.recorder.clone(),
                key.clone(),
                uids.get(&key).cloned().flatten(),
                note.clone(),
            );
            tokio::spawn(async move {
                write.await;
                drop(permit);
            });
        }
    }

    /// An interface's packet sockets did not open: a Warning Event on this node's Node, so
    /// `kubectl describe node` says why its speaker answers nothing there.
    pub fn socket_failure(&self, interface: &str, error: &str) {
        let note = format!(
            "herald-speaker cannot open packet sockets on {interface}: {error}; this node \
             answers no ARP/NDP there and is not elected for IPs it would announce on it \
             (the speaker needs CAP_NET_RAW in its effective set: run it as the manifests do)"
        );
        tokio::spawn(service_status::node_warning(
            self.recorder.clone(),
            self.node.as_str().to_string(),
            "PacketSocketsFailed",
            note,
        ));
    }
}

/// Writes the newest report whenever it changes; retries one that failed, backing off.
async fn write_reports(
    client: Client,
    node: String,
    mut desired: watch::Receiver<L2Announcements>,
) {
    let mut written: Option<L2Announcements> = None;
    let mut retry = REPORT_RETRY;
    loop {
        let report = desired.borrow_and_update().clone();
        if written.as_ref() != Some(&report) {
            match service_status::publish_report(client.clone(), &node, &report).await {
                Ok(()) => {
                    written = Some(report);
                    retry = REPORT_RETRY;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?retry, "could not report what this node announces; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(REPORT_RETRY_MAX);
                    continue;
                }
            }
        }
        if desired.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn a_flood_of_claiming_stations_makes_one_event_a_minute_per_ip() {
        let mut limiter = ConflictLimiter::default();
        let ip: IpAddr = "192.0.2.5".parse().expect("an IP");
        let other: IpAddr = "192.0.2.6".parse().expect("an IP");
        let start = Instant::now();
        let mut reports = Vec::new();
        for n in 0..10_000 {
            let now = start + Duration::from_millis(u64::from(n) * 5);
            reports.extend(limiter.seen(ip, mac(n), now));
        }
        // 50 s of claims by 10,000 stations: one Event, naming the first.
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].macs, [mac(0)]);
        // Another IP is reported on its own.
        assert!(limiter.seen(other, mac(1), start).is_some());
        // A minute after the first: the next claim brings the minute's summary, bounded.
        let later = limiter
            .seen(ip, mac(20_000), start + Duration::from_secs(61))
            .expect("due again");
        assert_eq!(later.macs.len(), CONFLICT_MACS_NAMED);
        assert_eq!(later.unnamed, 10_000 - CONFLICT_MACS_NAMED);
        // Memory is bounded by the IPs owned: forgetting the others empties it.
        limiter.retain(|i| *i == other);
        assert_eq!(limiter.per_ip.len(), 1);
    }
}
