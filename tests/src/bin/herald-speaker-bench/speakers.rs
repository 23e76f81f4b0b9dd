//! The lab's speakers: their processes, their metrics, and waiting for them to settle.

use super::*;

/// What a speaker's /metrics says.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpeakerView {
    pub(crate) announced: BTreeSet<String>,
    /// Members and quorum, when the system publishes them (Herald).
    pub(crate) members: Option<f64>,
    pub(crate) quorum: Option<f64>,
    /// Counters by (metric, ip).
    pub(crate) per_ip: BTreeMap<(String, String), f64>,
    /// Other unlabelled values.
    pub(crate) plain: BTreeMap<String, f64>,
}

impl SpeakerView {
    /// Whether the speaker sees all `nodes` members and has quorum (true for a system that does
    /// not publish those: MetalLB).
    pub(crate) fn sees_everyone(&self, nodes: usize) -> bool {
        self.members.is_none_or(|m| m as usize == nodes) && self.quorum.is_none_or(|q| q == 1.0)
    }

    /// The view of one scrape of `system`'s speaker.
    pub(crate) fn parse(system: System, text: &str) -> SpeakerView {
        let mut v = SpeakerView::default();
        let announced = system.announced_metric();
        for s in Samples::parse(text).0 {
            match (s.name.as_str(), s.labels.get("ip")) {
                (name, Some(ip)) if name == announced => {
                    v.announced.extend((s.value == 1.0).then(|| ip.clone()));
                }
                ("herald_speaker_members", _) => v.members = Some(s.value),
                ("herald_speaker_quorum", _) => v.quorum = Some(s.value),
                (name, Some(ip)) => {
                    v.per_ip.insert((name.to_string(), ip.clone()), s.value);
                }
                (name, None) if s.labels.is_empty() => {
                    v.plain.insert(name.to_string(), s.value);
                }
                _ => {}
            }
        }
        v
    }

    pub(crate) fn counter(&self, name: &str, ip: &str) -> f64 {
        self.per_ip
            .get(&(name.to_string(), ip.to_string()))
            .copied()
            .unwrap_or(0.0)
    }

    pub(crate) fn total(&self, name: &str) -> f64 {
        self.per_ip
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

/// Processes whose command line contains `herald-bench ` (the controller benchmark).
pub(crate) fn other_bench() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains("herald-bench ") {
                out.push(pid);
            }
        }
    }
    out
}

impl Bench {
    pub(crate) async fn global_v6(&self, i: usize) -> Vec<String> {
        cmd(
            "ip",
            &[
                "-n",
                &self.node_ns[i],
                "-6",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
                "scope",
                "global",
            ],
        )
        .await
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip_while(|w| *w != "inet6");
            w.next();
            w.next().map(str::to_string)
        })
        .collect()
    }

    /// The speaker process of node `i` (its pod's container, in the node's network namespace).
    pub(crate) fn speaker_pid(&self, i: usize) -> Option<u32> {
        herald_tests::node_lab::process_in_node(&self.node_ns[i], self.system.speaker_comm())
    }

    /// `tests/lab/speakers.sh ACTION` for the system's speakers on these nodes. Their logs are
    /// read first: a replaced pod takes its log files with it.
    pub(crate) async fn speakers(&mut self, action: &str, which: &[usize]) -> anyhow::Result<()> {
        self.logs.harvest(&self.lab.dir, self.system);
        let mut c = tokio::process::Command::new(&self.speakers_sh);
        c.env("HERALD_LAB_SYSTEM", self.system.name());
        c.arg(action);
        for i in which {
            c.arg((i + 1).to_string());
        }
        let out = c
            .env("HERALD_LAB_DIR", &self.lab.dir)
            .output()
            .await
            .context("running tests/lab/speakers.sh")?;
        ensure!(
            out.status.success(),
            "speakers.sh {action} {which:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    pub(crate) async fn speaker_view(&self, i: usize) -> Option<SpeakerView> {
        let text = metrics_in_node(
            &self.node_ns[i],
            self.system.speaker_metrics_url(),
            self.metrics_token.as_deref(),
        )
        .await
        .ok()?;
        // A speaker that serves its metrics before it has started says nothing useful yet.
        let started = match self.system {
            System::Herald => "herald_speaker_members",
            System::Metallb => "metallb_",
        };
        text.contains(started)
            .then(|| SpeakerView::parse(self.system, &text))
    }

    pub(crate) async fn views(&self) -> Vec<Option<SpeakerView>> {
        futures::future::join_all((0..self.n()).map(|i| self.speaker_view(i))).await
    }

    /// Waits (bounded by `within`) until every speaker has metrics, sees every member and has
    /// quorum, without a break for the hold-down plus a second: speakers that have just started
    /// (a resumed DaemonSet starts them all at once) join one by one, and the first to finish
    /// its hold-down would otherwise own every IP made meanwhile, to hand most of them on a few
    /// seconds later. Systems without those metrics (MetalLB) count as settled once every
    /// speaker answers.
    pub(crate) async fn wait_members_settled(&self, within: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let need = self.hold_down + Duration::from_secs(1);
        let mut settled_since: Option<Instant> = None;
        loop {
            let views = self.views().await;
            let settled = views
                .iter()
                .all(|v| v.as_ref().is_some_and(|v| v.sees_everyone(self.n())));
            if settled {
                let since = *settled_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= need {
                    return Ok(());
                }
            } else {
                settled_since = None;
            }
            if start.elapsed() > within {
                bail!(
                    "the speakers did not all see every member with quorum for {need:?} within {within:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits (bounded) until no `herald-bench` process runs.
    pub(crate) async fn wait_quiet(&mut self, what: &str) {
        let start = Instant::now();
        let mut said = false;
        loop {
            let pids = other_bench();
            if pids.is_empty() {
                if said {
                    log(format!(
                        "herald-bench gone after {:.0} s; measuring {what}",
                        start.elapsed().as_secs_f64()
                    ));
                }
                return;
            }
            if !said {
                log(format!(
                    "waiting for the controller benchmark (herald-bench, pids {pids:?}) to finish before {what}"
                ));
                said = true;
            }
            if start.elapsed() > Duration::from_secs(3 * 3600) {
                let note = format!("{what}: herald-bench still running after 3 h; measured anyway");
                log(&note);
                self.overlaps.push(note);
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// IPs gained and lost and conflicts counted, summed over the speakers; none for a system
    /// whose speakers do not count them (MetalLB).
    pub(crate) async fn churn(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        if self.system != System::Herald {
            return (None, None, None);
        }
        let views = self.views().await;
        let sum = |name: &str| -> f64 {
            views
                .iter()
                .flatten()
                .map(|v| v.plain.get(name).copied().unwrap_or(0.0))
                .sum()
        };
        (
            Some(sum("herald_speaker_ips_gained_total")),
            Some(sum("herald_speaker_ips_lost_total")),
            Some(conflicts_in(&views)),
        )
    }

    /// IPConflicts counted by every speaker, summed (Herald's speakers count them).
    pub(crate) async fn conflicts_counted(&self) -> Option<f64> {
        (self.system == System::Herald).then_some(conflicts_in(&self.views().await))
    }
}

/// IPConflicts counted in these speakers' metrics, summed.
fn conflicts_in(views: &[Option<SpeakerView>]) -> f64 {
    views
        .iter()
        .flatten()
        .map(|v| v.total("herald_speaker_conflicts_total"))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_systems_say_what_they_announce() {
        let herald = "herald_speaker_announced{ip=\"192.0.2.150\"} 1\nherald_speaker_announced{ip=\"192.0.2.151\"} 0\nherald_speaker_members 3\nherald_speaker_quorum 1\nherald_speaker_conflicts_total{ip=\"192.0.2.150\"} 2\n";
        let v = SpeakerView::parse(System::Herald, herald);
        assert_eq!(v.announced, BTreeSet::from(["192.0.2.150".to_string()]));
        assert_eq!(v.members, Some(3.0));
        assert_eq!(v.quorum, Some(1.0));
        assert_eq!(v.total("herald_speaker_conflicts_total"), 2.0);
        let metallb = "# TYPE metallb_speaker_announced gauge\nmetallb_speaker_announced{ip=\"2001:db8::1:5\",node=\"hl-node2\",protocol=\"layer2\",service=\"b/bulk-00005\"} 1\nmetallb_layer2_requests_received{ip=\"2001:db8::1:5\"} 7\n";
        let v = SpeakerView::parse(System::Metallb, metallb);
        assert_eq!(v.announced, BTreeSet::from(["2001:db8::1:5".to_string()]));
        assert_eq!(v.members, None);
        assert_eq!(
            v.counter("metallb_layer2_requests_received", "2001:db8::1:5"),
            7.0
        );
        // Herald's gauge means nothing to a MetalLB view and the other way round.
        assert!(
            SpeakerView::parse(System::Metallb, herald)
                .announced
                .is_empty()
        );
        assert!(
            SpeakerView::parse(System::Herald, metallb)
                .announced
                .is_empty()
        );
    }
}
