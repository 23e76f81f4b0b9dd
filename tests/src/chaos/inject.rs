//! Applying and healing the chaos run's faults in the lab: thin, each through the lab's own
//! scripts and helpers (`speakers.sh`, `nodes.sh`, `control-plane.sh`, nft rules in a node's
//! namespace, the API).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use herald_config::pod::is_ready;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::schedule::{Applied, FaultKind, PlannedFault, Target};
use crate::lab_case::{Case, MembershipFault, remove_node, restore_third, speaker_pid, speakers};
use crate::node_lab::{Lab, Node};

/// Herald's namespace, its controller's Lease and its membership Secret (the install's
/// defaults).
const SYSTEM: &str = "herald-system";
const CONTROLLER_LEASE: &str = "herald-controller";
const MEMBERSHIP_SECRET: &str = "herald-memberlist";
const CONTROLLER_PODS: &str =
    "app.kubernetes.io/name=herald,app.kubernetes.io/component=controller";

/// What the faults act on.
pub struct Injector {
    pub lab: Arc<Lab>,
    pub case: Arc<Case>,
    pub nodes: Vec<Node>,
    /// The run's Services, whose backends are placed again on a Node that comes back.
    pub services: Vec<String>,
}

impl Injector {
    /// Applies `fault`, holds it, heals it; when each happened, from `t0`.
    pub async fn apply_and_heal(&self, fault: PlannedFault, t0: Instant) -> Applied {
        let applied = t0.elapsed();
        let result = self.run(fault).await;
        if let Err(e) = &result {
            tracing::warn!(fault = fault.id, kind = fault.kind.name(), error = %format!("{e:#}"), "fault failed");
        }
        Applied {
            fault,
            applied,
            healed: t0.elapsed(),
            error: result.err().map(|e| format!("{e:#}")),
        }
    }

    fn node(&self, index: usize) -> anyhow::Result<&Node> {
        self.nodes
            .get(index)
            .with_context(|| format!("no node {index} in a lab of {}", self.nodes.len()))
    }

    async fn run(&self, fault: PlannedFault) -> anyhow::Result<()> {
        let hold = || tokio::time::sleep(fault.hold);
        let lab = &*self.lab;
        match (fault.kind, fault.target) {
            (FaultKind::SpeakerKill, Target::Node(n)) => {
                let node = self.node(n)?;
                speakers(lab, "kill", node).await?;
                speakers(lab, "start", node).await
            }
            (FaultKind::SpeakerPause, Target::Node(n)) => {
                let pid = speaker_pid(lab, self.node(n)?).await?;
                signal(pid, libc::SIGSTOP)?;
                hold().await;
                signal(pid, libc::SIGCONT)
            }
            (FaultKind::LinkDown, Target::Node(n)) => {
                let i = self.node(n)?.index.to_string();
                lab.script("nodes.sh", &["link", "down", &i]).await?;
                hold().await;
                lab.script("nodes.sh", &["link", "up", &i]).await.map(drop)
            }
            (
                FaultKind::MembershipInto | FaultKind::MembershipOutOf | FaultKind::MembershipBoth,
                Target::Node(n),
            ) => {
                let node = self.node(n)?;
                let cut = match fault.kind {
                    FaultKind::MembershipInto => MembershipFault::into(node).await?,
                    FaultKind::MembershipOutOf => MembershipFault::out_of(node).await?,
                    _ => MembershipFault::both_ways(node).await?,
                };
                hold().await;
                cut.heal().await
            }
            (FaultKind::MembershipBetween, Target::Pair { from, to }) => {
                let cut = MembershipFault::between(self.node(from)?, self.node(to)?).await?;
                hold().await;
                cut.heal().await
            }
            (FaultKind::ApiPause, Target::Cluster) => {
                let pid = self.apiserver_pid()?;
                signal(pid, libc::SIGSTOP)?;
                hold().await;
                signal(pid, libc::SIGCONT)
            }
            (FaultKind::ApiRestart, Target::Cluster) => {
                hold().await;
                lab.script("control-plane.sh", &["restart", "kube-apiserver"])
                    .await
                    .map(drop)
            }
            (FaultKind::LeaderKill, Target::Cluster) => self.kill_leader().await,
            (FaultKind::KeyRotation, Target::Cluster) => {
                self.rotate_key().await?;
                // The rotation window: the fault lasts while both keys are accepted.
                hold().await;
                Ok(())
            }
            (FaultKind::NodeRemoval, Target::Node(n)) => {
                let node = self.node(n)?;
                remove_node(lab, &self.case.client, node).await?;
                hold().await;
                restore_third(lab, &self.case, node).await?;
                let all: Vec<&Node> = self.nodes.iter().collect();
                for service in &self.services {
                    self.case.endpoints(service, &all).await?;
                }
                Ok(())
            }
            (kind, target) => bail!("{} cannot target {target:?}", kind.name()),
        }
    }

    /// The lab's kube-apiserver: the live process of that name whose command line names the
    /// lab's directory (not the PID file: in the 30-minute run it named another process after
    /// a restart).
    fn apiserver_pid(&self) -> anyhow::Result<u32> {
        let dir = self.lab.dir.display().to_string();
        process_with(
            Path::new("/proc"),
            "kube-apiserver",
            "cmdline",
            &[dir.as_str()],
        )
        .with_context(|| format!("no kube-apiserver process of the lab in {dir}"))
    }

    /// SIGKILL to the controller replica named in the leader Lease; done when the Lease has
    /// been written again (a replica leads). First waits until every replica is Ready: the
    /// kubelet restarts a killed container after a back-off that doubles with each restart
    /// (10 s, 20 s, 40 s, ...), so a kill every few minutes could otherwise find the standby
    /// still backing off, and kill the only replica (in the first 30-minute run, 4 of 12
    /// leader kills found no replica to take over).
    async fn kill_leader(&self) -> anyhow::Result<()> {
        self.wait_controllers_ready(Duration::from_secs(300))
            .await?;
        let leases: Api<Lease> = Api::namespaced(self.case.client.clone(), SYSTEM);
        let lease = leases.get(CONTROLLER_LEASE).await?;
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .context("the controller Lease has no holder")?;
        let pods: Api<Pod> = Api::namespaced(self.case.client.clone(), SYSTEM);
        let uid = pods
            .get(&holder)
            .await
            .with_context(|| format!("the leader's pod {holder}"))?
            .metadata
            .uid
            .context("a pod without a uid")?;
        let pid = process_of_pod(Path::new("/proc"), "herald-controller", &uid)
            .with_context(|| format!("no herald-controller process of pod {holder} ({uid})"))?;
        let version = lease.metadata.resource_version.clone();
        signal(pid, libc::SIGKILL)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = leases.get(CONTROLLER_LEASE).await?;
            let held = now
                .spec
                .as_ref()
                .is_some_and(|s| s.holder_identity.is_some());
            if held && now.metadata.resource_version != version {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "no replica took the Lease within 90 s of killing {holder}"
            );
        }
    }

    /// Waits (up to `within`) until every controller pod is Ready.
    async fn wait_controllers_ready(&self, within: Duration) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.case.client.clone(), SYSTEM);
        let lp = ListParams::default().labels(CONTROLLER_PODS);
        let deadline = Instant::now() + within;
        loop {
            let list = pods.list(&lp).await?;
            let ready = list.items.iter().filter(|p| is_ready(p)).count();
            if ready > 0 && ready == list.items.len() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{ready} of {} controller replicas Ready after {within:?}",
                list.items.len()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A new random key in the membership Secret.
    async fn rotate_key(&self) -> anyhow::Result<()> {
        let key = format!(
            "chaos-{:08x}{:08x}{:08x}{:08x}",
            crate::rand_u32(),
            crate::rand_u32(),
            crate::rand_u32(),
            crate::rand_u32()
        );
        let secrets: Api<Secret> = Api::namespaced(self.case.client.clone(), SYSTEM);
        secrets
            .patch(
                MEMBERSHIP_SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"secretkey": key}})),
            )
            .await?;
        Ok(())
    }
}

fn signal(pid: u32, sig: libc::c_int) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill(2) on a PID read from the lab; the result is checked.
    let rc = unsafe { libc::kill(pid, sig) };
    ensure!(
        rc == 0,
        "kill -{sig} {pid}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The live process named `comm` (its first 15 bytes) whose cgroup is pod `uid`'s (the
/// kubelet's cgroup path holds `pod<uid>`, with dashes or, under systemd, underscores).
pub fn process_of_pod(proc: &Path, comm: &str, uid: &str) -> Option<u32> {
    let dashed = format!("pod{uid}");
    let underscored = format!("pod{}", uid.replace('-', "_"));
    process_with(
        proc,
        comm,
        "cgroup",
        &[dashed.as_str(), underscored.as_str()],
    )
}

/// The live process named `comm` (its first 15 bytes) whose `/proc/PID/<file>` contains one
/// of `needles`.
pub fn process_with(proc: &Path, comm: &str, file: &str, needles: &[&str]) -> Option<u32> {
    let wanted: String = comm.chars().take(15).collect();
    std::fs::read_dir(proc)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let dir = proc.join(pid.to_string());
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if name.trim() != wanted {
                return false;
            }
            let text = std::fs::read(dir.join(file)).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            needles.iter().any(|n| text.contains(n))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_process_is_found_by_its_cgroup() {
        let dir = std::env::temp_dir().join(format!("herald-chaos-proc-{}", crate::rand_u32()));
        let uid = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";
        let proc = |pid: u32, comm: &str, cgroup: &str| {
            let d = dir.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(d.join("cgroup"), cgroup).unwrap();
        };
        proc(
            10,
            "herald-controll",
            "4:memory:/hl-node1/kubepods/burstable/podother/abc\n",
        );
        proc(
            11,
            "sh",
            &format!("4:memory:/hl-node1/kubepods/burstable/pod{uid}/abc\n"),
        );
        proc(
            12,
            "herald-controll",
            &format!("4:memory:/hl-node2/kubepods/burstable/pod{uid}/def\n"),
        );
        std::fs::create_dir_all(dir.join("self")).unwrap();
        assert_eq!(process_of_pod(&dir, "herald-controller", uid), Some(12));
        assert_eq!(process_of_pod(&dir, "herald-controller", "nope"), None);
        // By command line: the API server of one lab, not another's.
        for (pid, lab) in [(20, "/work/a/.lab"), (21, "/work/b/.lab")] {
            proc(pid, "kube-apiserver", "");
            let args = format!("/bin/kube-apiserver\0--cert-dir={lab}/pki\0");
            std::fs::write(dir.join(pid.to_string()).join("cmdline"), args).unwrap();
        }
        assert_eq!(
            process_with(&dir, "kube-apiserver", "cmdline", &["/work/b/.lab"]),
            Some(21)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
