//! What a run measured, typed: the results file (one [`Results`]), written by the phases and
//! read back by `report`, `versus-lines` and `versus-table`.
//!
//! The file keeps the field names and nesting it always had. Every struct reads leniently
//! (`#[serde(default)]`): older files, or a run that ended early, may lack fields, and the
//! readers show a missing figure as a dash. A field the run writes only sometimes is left out
//! when absent (`skip_serializing_if`), as before; one it always writes stays, as `null` when
//! unknown.
//!
//! No part of it is a free-form `serde_json::Value`: every part has a fixed shape. What stays a
//! `Value` is outside input the run reads a few fields of where it reads it (`kubectl get pods`
//! in `pods.rs`, audit log lines in `audit.rs`, speaker log records) and the Kubernetes objects
//! it sends.

use super::*;
use herald_tests::bench::stats::Summary;
use serde::{Deserialize, Serialize};

/// The whole run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct Results {
    /// When the run started (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) date: Option<String>,
    /// `herald` or `metallb`; older files have none and were Herald's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) versions: Option<Versions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hold_down_ms: Option<u64>,
    /// The benchmark's command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<Host>,
    /// The first speaker's command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speaker_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lab_at_start: Option<LabAtStart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failover: Option<FailoverPhase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) arp: Option<ArpPhase>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) scale: Vec<ScaleRun>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) creation: Vec<CreationRun>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) resources: Vec<ResourcesRun>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) api: Vec<ApiRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lab_at_end: Option<LabAtEnd>,
    /// Per node: the speaker's log records during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speaker_logs: Option<BTreeMap<String, NodeLogs>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speaker_images: Option<SpeakerImages>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) anomalies: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) overlaps_with_controller_bench: Option<Vec<String>>,
    /// Why the run ended early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Results {
    /// The system measured: `herald` when the file does not say.
    pub(crate) fn system(&self) -> &str {
        self.system.as_deref().unwrap_or("herald")
    }

    /// The results file's text: keys in alphabetical order, as the file has always had them
    /// (they went through a `serde_json` map), so files of old and new runs compare line by line.
    pub(crate) fn to_file_text(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(&serde_json::to_value(self)?)?)
    }
}

/// A value as compact JSON with sorted keys, for the log.
pub(crate) fn compact(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .map(|v| v.to_string())
        .unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// What the run measured: both systems' versions and images, and the lab's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct Versions {
    pub(crate) herald: HeraldVersion,
    pub(crate) metallb: MetallbVersion,
    pub(crate) kubernetes: Option<String>,
    pub(crate) kube_proxy_mode: Option<String>,
}

impl Versions {
    /// The version of `system` (`herald` or `metallb`).
    pub(crate) fn of(&self, system: &str) -> Option<&str> {
        match system {
            "herald" => self.herald.version.as_deref(),
            "metallb" => self.metallb.version.as_deref(),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct HeraldVersion {
    pub(crate) version: Option<String>,
    pub(crate) commit: Option<String>,
    pub(crate) image: Option<String>,
    pub(crate) image_profile: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct MetallbVersion {
    pub(crate) version: Option<String>,
    pub(crate) controller_image: Option<String>,
    pub(crate) speaker_image: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct Host {
    pub(crate) cpus: Option<usize>,
    pub(crate) kernel: Option<String>,
}

/// The lab as the run found it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct LabAtStart {
    pub(crate) system: String,
    pub(crate) speakers: Vec<SpeakerImage>,
    pub(crate) nodes: usize,
    pub(crate) speakers_running: Vec<bool>,
    pub(crate) links_up: Vec<bool>,
    /// Per node, eth0's global IPv6 addresses (`ADDR/PREFIX`).
    pub(crate) eth0_global_ipv6: Vec<Vec<String>>,
}

/// The lab as the run left it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct LabAtEnd {
    pub(crate) speakers_running: Vec<bool>,
    pub(crate) eth0_global_ipv6: Vec<Vec<String>>,
}

/// What runs as one speaker, as its pod says (any of it may be missing from the pod).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct SpeakerImage {
    pub(crate) pod: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) image: Option<String>,
    pub(crate) image_id: Option<String>,
    pub(crate) restarts: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct SpeakerImages {
    pub(crate) start: Vec<SpeakerImage>,
    pub(crate) end: Vec<SpeakerImage>,
}

/// One node's speaker log records: counts by level, and the notable ones by message.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct NodeLogs {
    pub(crate) levels: BTreeMap<String, u64>,
    pub(crate) warnings_and_errors: BTreeMap<String, u64>,
}

/// The failover phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct FailoverPhase {
    pub(crate) interval_ms: Option<u64>,
    pub(crate) failover_max_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) trials_per_fault: Option<usize>,
    pub(crate) signal_faults_pause_the_kubelet: bool,
    /// The Services the trials rotate over, one per owner.
    pub(crate) services: Vec<FailoverService>,
    /// IPConflict counted by the speakers during the phase (Herald's metric; MetalLB has none).
    pub(crate) conflicts_counted_by_speakers: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) two_macs: Option<TwoMacs>,
    /// By fault name (`sigkill`, `link-down`, ...).
    pub(crate) faults: BTreeMap<String, FaultResults>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct FailoverService {
    pub(crate) name: String,
    pub(crate) ip: String,
    /// The node that owned it when it was chosen.
    pub(crate) owner: String,
}

/// One fault's trials and their summary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct FaultResults {
    pub(crate) summary: FaultSummary,
    /// The valid trials (invalid ones are retried and not kept).
    pub(crate) trials: Vec<Trial>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct FaultSummary {
    pub(crate) restores_needing_a_nudge: Option<usize>,
    pub(crate) restore_longest_without_announcer_ms: Summary,
    pub(crate) restore_settled_ms: Summary,
    pub(crate) failover_ms: Summary,
    pub(crate) failed_requests: Summary,
    pub(crate) fault_exec_ms: Summary,
    pub(crate) flaps: Option<u64>,
    pub(crate) no_failover_within_max: Option<usize>,
    pub(crate) invalid_trials_retried: Option<usize>,
    /// Trials by the node that took over (`none`: no failover).
    pub(crate) new_owner: BTreeMap<String, usize>,
    /// From the two-MAC watch, inside this fault's trials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) requests_answered_by_two_macs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mac_changes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mac_changes_expected: Option<usize>,
}

/// One failover trial: the verdict on the probe's answers, and how the lab came back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct Trial {
    /// How long the fault command took.
    pub(crate) fault_exec_ms: f64,
    /// Requests answered before the fault.
    pub(crate) pre_fault_requests: usize,
    /// The fault command's exit status.
    pub(crate) exit: Option<i64>,
    pub(crate) valid: bool,
    /// Why the trial is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) why: Option<String>,
    /// Fault to the first answer from another node; `None`: none within the limit.
    pub(crate) failover_ms: Option<f64>,
    pub(crate) new_node: Option<String>,
    /// Requests that failed between the fault and the failover (or the limit).
    pub(crate) failed_requests: usize,
    /// Only when another node answered.
    #[serde(flatten)]
    pub(crate) after_failover: Option<AfterFailover>,
    /// The VIP.
    pub(crate) service: String,
    pub(crate) old_node: String,
    pub(crate) herald_bench_overlap: bool,
    /// The trial's span on `CLOCK_MONOTONIC`, µs (the two-MAC watch's clock).
    pub(crate) window_us: (u64, u64),
    pub(crate) restore: Restore,
}

/// What a trial saw once another node answered. No `#[serde(default)]`: a trial without these
/// fields had no failover, and reads as `None`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub(crate) struct AfterFailover {
    /// Fault to the sending of the first request another node answered.
    pub(crate) first_new_request_sent_ms: f64,
    pub(crate) failed_after_failover: usize,
    /// Fault to the old node's last answer, if it answered after the fault.
    #[serde(default)]
    pub(crate) last_old_answer_ms: Option<f64>,
    /// Requests answered by the old node again after the failover.
    pub(crate) flaps: u64,
    /// The nodes other than the old one that answered after the failover.
    pub(crate) nodes_after: BTreeSet<String>,
}

/// How the lab settled after a trial's fault was undone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct Restore {
    /// From the fault undone until every VIP was back with its owner, stably.
    pub(crate) settled_ms: f64,
    /// Times the speakers had to be nudged into re-running their elections.
    pub(crate) nudges: u32,
    pub(crate) unsettled_at_first_nudge: Vec<String>,
    /// The longest a chosen VIP had no announcer meanwhile.
    pub(crate) longest_without_announcer_ms: f64,
}

/// The two-MAC watch over the whole phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct TwoMacs {
    pub(crate) requests_answered_by_two_macs: Option<usize>,
    pub(crate) during_trials: Option<usize>,
    pub(crate) by_fault: BTreeMap<String, TwoMacsOfFault>,
    pub(crate) watch: WatchReport,
}

/// The two-MAC watch inside one fault's trials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct TwoMacsOfFault {
    pub(crate) trials: usize,
    pub(crate) requests_answered_by_two_macs: usize,
    pub(crate) mac_changes: usize,
    /// One change to the new owner and one back at the restore, per trial.
    pub(crate) mac_changes_expected: usize,
}

/// What the two-MAC watch (`macwatch`) reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct WatchReport {
    pub(crate) vips: Vec<VipWatch>,
    pub(crate) started_us: u64,
    pub(crate) stopped_us: u64,
    pub(crate) interval_ms: u64,
}

/// The watch's findings for one VIP.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct VipWatch {
    pub(crate) vip: String,
    pub(crate) asked: u64,
    pub(crate) answered: u64,
    pub(crate) answered_by_two_or_more: usize,
    pub(crate) doubles: Vec<Double>,
    pub(crate) mac_changes: Vec<MacChange>,
    pub(crate) macs: BTreeSet<String>,
}

/// A request answered by two or more MACs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct Double {
    /// When the request was sent.
    pub(crate) t_us: u64,
    pub(crate) macs: Vec<String>,
}

/// The MAC answering for or claiming a VIP changed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct MacChange {
    pub(crate) t_us: u64,
    pub(crate) mac: String,
    /// `reply` or `claim`.
    pub(crate) by: String,
}

/// The ARP phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ArpPhase {
    pub(crate) vip: String,
    /// The VIP's owner, whose kernel answers for its own address.
    pub(crate) node: String,
    pub(crate) node_ip: String,
    pub(crate) rps_per_target: u64,
    pub(crate) seconds: u64,
    /// The owner's ARP and neighbour sysctls, by path under `/proc/sys/net/ipv4`.
    pub(crate) node_sysctls: BTreeMap<String, String>,
    pub(crate) runs: Vec<ArpRun>,
}

/// One run of the ARP load generator (`arpload`), with the speaker's own counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ArpRun {
    pub(crate) requests: usize,
    pub(crate) sender_seconds: f64,
    pub(crate) achieved_rps_total: f64,
    pub(crate) duplicate_replies: u64,
    pub(crate) mismatched_replies: u64,
    pub(crate) speaker: ArpTarget,
    pub(crate) kernel: ArpTarget,
    /// From the owner's speaker metrics (Herald's; 0 for MetalLB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speaker_requests_received: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speaker_responses_sent: Option<f64>,
    /// The owner's speaker's CPU over the run, when its process was there throughout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speaker_cpu_s: Option<f64>,
}

/// The requests to one target (the VIP or the node's own address) in an ARP run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ArpTarget {
    pub(crate) sent: usize,
    pub(crate) answered: usize,
    pub(crate) unanswered: usize,
    pub(crate) latency_us: Summary,
    /// The MACs that answered.
    pub(crate) macs: BTreeSet<String>,
}

/// Speaker memory and CPU over a quiet window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ResourcesRun {
    pub(crate) services: usize,
    /// `running`, or `after restart` (every speaker pod replaced).
    pub(crate) when: String,
    pub(crate) window_s: u64,
    pub(crate) clk_tck: f64,
    pub(crate) speakers: Vec<SpeakerUsage>,
    /// From the first create until every Service was announced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) announce_all_s: Option<f64>,
}

/// One speaker's memory (from `/proc/PID/status`) and CPU.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct SpeakerUsage {
    pub(crate) node: String,
    pub(crate) pid: u32,
    pub(crate) vmhwm_kib: Option<u64>,
    pub(crate) vmrss_kib: Option<u64>,
    pub(crate) threads: Option<u64>,
    pub(crate) cpu_s: Option<f64>,
    pub(crate) cpu_percent: Option<f64>,
    pub(crate) max_1s_percent: Option<f64>,
    /// IPs its metrics say it announces.
    pub(crate) announced: Option<usize>,
}

/// Creating the Services of the resources and API phases.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct CreationRun {
    /// Services there after the creation.
    pub(crate) services: usize,
    pub(crate) created: usize,
    pub(crate) all_announced_s: Option<f64>,
    /// From the speakers' metrics (Herald's; `None` for MetalLB).
    pub(crate) ips_gained: Option<f64>,
    pub(crate) ips_lost: Option<f64>,
    pub(crate) conflicts_counted: Option<f64>,
}

/// The scale phase's run with N Services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ScaleRun {
    pub(crate) services: usize,
    pub(crate) creates_s: Option<f64>,
    /// Whether every status arrived within the bound.
    pub(crate) complete: bool,
    pub(crate) ingress_written: usize,
    pub(crate) announcer_written: usize,
    pub(crate) last_create_to_last_ingress_s: Option<f64>,
    pub(crate) last_create_to_last_announcer_s: Option<f64>,
    pub(crate) first_create_to_last_ingress_s: Option<f64>,
    pub(crate) first_create_to_last_announcer_s: Option<f64>,
    pub(crate) ips_gained: Option<f64>,
}

/// The API requests with N Services: a window at steady state, then a restart of every speaker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ApiRun {
    pub(crate) services: usize,
    pub(crate) window_s: Option<f64>,
    pub(crate) running: ApiWindow,
    pub(crate) per_min: Option<f64>,
    pub(crate) speakers_per_min: Option<f64>,
    pub(crate) controller_per_min: Option<f64>,
    pub(crate) restart: ApiRestart,
}

/// The requests of a window, from the audit log.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ApiWindow {
    pub(crate) seconds: f64,
    pub(crate) requests: u64,
    pub(crate) per_min: f64,
    /// By component (`speaker`, `controller`).
    pub(crate) components: BTreeMap<String, ComponentWindow>,
}

/// One component's requests in a window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ComponentWindow {
    pub(crate) requests: u64,
    pub(crate) per_min: f64,
    /// By `VERB group/resource[/sub] (scope)`.
    pub(crate) by_request: BTreeMap<String, u64>,
}

/// The first minute after every speaker pod was replaced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ApiRestart {
    pub(crate) all_announced_s: Option<f64>,
    pub(crate) first_s: Option<f64>,
    pub(crate) requests: Option<u64>,
    pub(crate) speaker_requests: Option<u64>,
    pub(crate) by_request: Option<BTreeMap<String, u64>>,
}

#[cfg(test)]
mod tests;
