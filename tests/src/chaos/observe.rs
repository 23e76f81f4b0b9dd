//! What the chaos run records besides the client's watch: the Services' status IPs (every
//! second), Herald's container restarts (every 2 s), panics in Herald's pod logs (every 5 s,
//! from the log files the kubelets write) and each speaker's VmRSS (every 10 s). Every API
//! request has a timeout: while the API server is paused the other records go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::sync::watch;

use super::check::{PanicLine, Restart, RssSample, StatusSample};
use crate::bench::procfs::status_kib;
use crate::node_lab::{Lab, Node, process_in_node};

const SYSTEM: &str = "herald-system";
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// The records.
#[derive(Debug, Default)]
pub struct Recorded {
    pub status: Vec<StatusSample>,
    pub restarts: Vec<Restart>,
    pub panics: Vec<PanicLine>,
    pub memory: Vec<RssSample>,
}

/// The recorder, on its own task until stopped.
pub struct Recorder {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Recorded>,
}

impl Recorder {
    pub fn start(lab: Arc<Lab>, client: Client, namespace: String) -> anyhow::Result<Recorder> {
        let nodes = lab.nodes()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut state = State::new(&lab, nodes, client, namespace);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                state.status().await;
                if n.is_multiple_of(2) {
                    state.restarts().await;
                }
                if n.is_multiple_of(5) {
                    state.panics();
                }
                if n.is_multiple_of(10) {
                    state.memory();
                }
                n += 1;
            }
            // The last word: logs and memory at the end.
            state.restarts().await;
            state.panics();
            state.memory();
            state.recorded
        });
        Ok(Recorder { stop, task })
    }

    pub async fn stop(self) -> anyhow::Result<Recorded> {
        let _ = self.stop.send(true);
        Ok(self.task.await?)
    }
}

struct State {
    nodes: Vec<Node>,
    logs_of: Vec<PathBuf>,
    client: Client,
    namespace: String,
    last_status: BTreeMap<String, Vec<String>>,
    restart_counts: BTreeMap<(String, String), i32>,
    log_offsets: BTreeMap<PathBuf, u64>,
    recorded: Recorded,
}

impl State {
    fn new(lab: &Lab, nodes: Vec<Node>, client: Client, namespace: String) -> State {
        let logs_of = nodes
            .iter()
            .map(|n| lab.dir.join("nodes").join(&n.name).join("fs/var/log/pods"))
            .collect();
        State {
            nodes,
            logs_of,
            client,
            namespace,
            last_status: BTreeMap::new(),
            restart_counts: BTreeMap::new(),
            log_offsets: BTreeMap::new(),
            recorded: Recorded::default(),
        }
    }

    /// Each Service's status IPs, recorded when they differ from the last record.
    async fn status(&mut self) {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let Ok(Ok(list)) =
            tokio::time::timeout(API_TIMEOUT, services.list(&ListParams::default())).await
        else {
            return;
        };
        let at = Instant::now();
        for service in list.items {
            let name = service.metadata.name.clone().unwrap_or_default();
            let ips: Vec<String> = herald_config::service::status_ips(&service)
                .iter()
                .map(ToString::to_string)
                .collect();
            if self.last_status.get(&name) != Some(&ips) {
                self.last_status.insert(name.clone(), ips.clone());
                self.recorded.status.push(StatusSample {
                    at,
                    service: name,
                    ips,
                });
            }
        }
    }

    /// Herald's containers whose restart count rose, with how their last run ended.
    async fn restarts(&mut self) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM);
        let Ok(Ok(list)) = tokio::time::timeout(
            API_TIMEOUT,
            pods.list(&ListParams::default().labels("app.kubernetes.io/name=herald")),
        )
        .await
        else {
            return;
        };
        let at = Instant::now();
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let statuses = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            for c in statuses {
                let key = (name.clone(), c.name.clone());
                let before = self.restart_counts.insert(key, c.restart_count);
                if before.is_some_and(|b| c.restart_count > b) {
                    let ended = c.last_state.and_then(|s| s.terminated);
                    self.recorded.restarts.push(Restart {
                        at,
                        pod: name.clone(),
                        container: c.name,
                        exit_code: ended.as_ref().map_or(-1, |t| t.exit_code),
                        reason: ended.and_then(|t| t.reason).unwrap_or_default(),
                    });
                }
            }
        }
    }

    /// New lines of Herald's container logs that tell of a panic.
    fn panics(&mut self) {
        let at = Instant::now();
        for dir in &self.logs_of {
            for file in herald_logs(dir) {
                let offset = self.log_offsets.get(&file).copied().unwrap_or(0);
                let Some((text, end)) = read_from(&file, offset) else {
                    continue;
                };
                self.log_offsets.insert(file.clone(), end);
                let source = file
                    .strip_prefix(dir)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                self.recorded
                    .panics
                    .extend(panic_lines(&text).map(|line| PanicLine {
                        at,
                        source: source.clone(),
                        line: line.to_string(),
                    }));
            }
        }
    }

    /// Each node's speaker VmRSS.
    fn memory(&mut self) {
        for node in &self.nodes {
            let Some(pid) = process_in_node(&node.name, "herald-speaker") else {
                continue;
            };
            if let Some(kib) = status_kib(pid, "VmRSS") {
                self.recorded.memory.push(RssSample {
                    at: Instant::now(),
                    node: node.name.clone(),
                    pid,
                    kib,
                });
            }
        }
    }
}

/// Log files of Herald's containers under a kubelet's `/var/log/pods`
/// (`herald-system_<pod>_<uid>/<container>/<n>.log`).
fn herald_logs(pods_dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{SYSTEM}_herald-");
    let Ok(pods) = std::fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    pods.filter_map(Result::ok)
        .filter(|p| p.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|p| std::fs::read_dir(p.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|c| std::fs::read_dir(c.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|f| f.path())
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .collect()
}

/// The complete lines of `file` from `offset`, and the offset after them.
fn read_from(file: &Path, offset: u64) -> Option<(String, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).ok()?;
    let len = f.metadata().ok()?.len();
    // Rotated or truncated: start over.
    let offset = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = Vec::new();
    f.take(len - offset).read_to_end(&mut bytes).ok()?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(complete);
    Some((
        String::from_utf8_lossy(&bytes).into_owned(),
        offset + complete as u64,
    ))
}

/// The lines that tell of a panic: Rust's `thread '…' panicked at`.
pub fn panic_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| l.contains("panicked at"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_found_in_new_complete_lines_of_herald_logs_only() {
        let dir = std::env::temp_dir().join(format!("herald-chaos-logs-{}", crate::rand_u32()));
        let speaker = dir.join("herald-system_herald-speaker-abc_0000/speaker");
        let other = dir.join("kube-system_coredns-1_0000/coredns");
        std::fs::create_dir_all(&speaker).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let log = speaker.join("0.log");
        std::fs::write(
            &log,
            "2026-12-01T00:00:00Z stdout F {\"level\":\"INFO\"}\n2026-12-01T00:00:01Z stderr F thread 'main' panicked at speaker/src/main.rs:1:1:\n2026-12-01T00:00:02Z stderr P half",
        )
        .unwrap();
        std::fs::write(other.join("0.log"), "x stderr F thread 'a' panicked at b\n").unwrap();
        assert_eq!(herald_logs(&dir), vec![log.clone()]);
        let (text, end) = read_from(&log, 0).unwrap();
        assert_eq!(panic_lines(&text).count(), 1);
        assert!(!text.contains("half"));
        // Nothing new: nothing read again.
        let (again, same) = read_from(&log, end).unwrap();
        assert_eq!((again.as_str(), same), ("", end));
        assert_eq!(herald_logs(&dir.join("missing")), Vec::<PathBuf>::new());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
