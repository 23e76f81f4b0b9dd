//! The failover phase: fault trials (SIGKILL, SIGTERM, link down, membership traffic lost one way
//! into or out of the owner) against one owner at a time, each timed by the probe in the client
//! namespace.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Kill,
    Link,
    Term,
    /// Membership traffic into the owner dropped (it hears nobody; its heartbeats still go out).
    OneWayIn,
    /// Membership traffic out of the owner dropped (nobody hears it; it still hears them).
    OneWayOut,
}

impl Fault {
    pub(crate) const ALL: [Fault; 5] = [
        Fault::Kill,
        Fault::Link,
        Fault::Term,
        Fault::OneWayIn,
        Fault::OneWayOut,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::Kill => "sigkill",
            Fault::Link => "link-down",
            Fault::Term => "sigterm",
            Fault::OneWayIn => "one-way-in",
            Fault::OneWayOut => "one-way-out",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The nft table a one-way fault adds in the owner's namespace.
pub(crate) const CUT_TABLE: &str = "herald_bench_cut";

/// The nft table of a one-way fault: `membership` traffic dropped at `hook` (input or output).
pub(crate) fn cut_rule(hook: &str, membership: &str) -> String {
    format!(
        "table inet {CUT_TABLE} {{ chain c {{ type filter hook {hook} priority -10; {membership} drop; }}; }}"
    )
}

#[derive(Clone, Debug)]
pub(crate) struct Chosen {
    pub(crate) name: String,
    pub(crate) ip: String,
    pub(crate) owner: usize,
}

impl Bench {
    /// IPv4 Local Services until every node owns one; the chosen one per node.
    pub(crate) async fn failover_services(&mut self) -> anyhow::Result<Vec<Chosen>> {
        self.wait_quiet("setup").await;
        self.wait_members_settled(Duration::from_secs(120)).await?;
        let mut names = BTreeSet::new();
        for k in 0..FAILOVER_CANDIDATES {
            let name = format!("fo-{k:02}");
            let ip = format!("192.0.2.{}", 150 + u32::from(k));
            self.create_service(&name, false, "Local", Some(&ip))
                .await?;
            names.insert(name);
        }
        let ips = self.wait_ips(&names, Duration::from_secs(60)).await?;
        let set: BTreeSet<String> = ips.values().cloned().collect();
        let owners = self.wait_announced(&set, Duration::from_secs(60)).await?;
        let mut chosen: Vec<Chosen> = Vec::new();
        for (name, ip) in &ips {
            let owner = owners[ip];
            if !chosen.iter().any(|c| c.owner == owner) {
                chosen.push(Chosen {
                    name: name.clone(),
                    ip: ip.clone(),
                    owner,
                });
            }
        }
        chosen.sort_by_key(|c| c.owner);
        let unused: Vec<String> = names
            .iter()
            .filter(|n| !chosen.iter().any(|c| &c.name == *n))
            .cloned()
            .collect();
        self.delete_services(&unused).await;
        if chosen.len() < self.n() {
            self.anomaly(format!(
                "only {} of {} nodes own one of {FAILOVER_CANDIDATES} failover candidates",
                chosen.len(),
                self.n()
            ));
        }
        for c in &chosen {
            log(format!(
                "failover Service {} at {} owned by {}",
                c.name, c.ip, self.nodes[c.owner].name
            ));
            self.wait_http(
                &c.ip,
                &self.nodes[c.owner].name.clone(),
                Duration::from_secs(30),
            )
            .await?;
        }
        Ok(chosen)
    }

    /// Waits until `curl http://IP/` from the client is answered by `node`.
    pub(crate) async fn wait_http(
        &self,
        ip: &str,
        node: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < within {
            let url = format!("http://{ip}/");
            last = cmd(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.client_ns,
                    "curl",
                    "-s",
                    "--max-time",
                    "0.5",
                    &url,
                ],
            )
            .await
            .unwrap_or_else(|e| e.to_string());
            if last.trim() == node {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("http://{ip}/ never answered from {node} in {within:?}; last: {last:?}")
    }

    /// Waits until each chosen IP is announced by its original owner only, every speaker sees
    /// every member and has quorum, and at least the hold-down (+0.5 s) has passed since
    /// `since`, stably for 0.5 s. When that has not happened 2 s after the hold-down ended,
    /// nudges the speakers (see [`Bench::nudge`]) every 3 s and says so in the result.
    pub(crate) async fn wait_stable(
        &mut self,
        chosen: &[Chosen],
        since: Instant,
    ) -> anyhow::Result<Restore> {
        let start = Instant::now();
        let mut stable_since: Option<Instant> = None;
        let mut last = String::new();
        let mut nudges = 0u32;
        let mut last_nudge: Option<Instant> = None;
        let mut nobody_since: BTreeMap<String, Instant> = BTreeMap::new();
        let mut nobody_max = Duration::ZERO;
        let mut unsettled_at_nudge = Vec::new();
        loop {
            let views = self.views().await;
            let now = Instant::now();
            let mut ok = true;
            let mut why = Vec::new();
            for (i, v) in views.iter().enumerate() {
                match v {
                    None => {
                        ok = false;
                        why.push(format!("{}: no metrics", self.nodes[i].name));
                    }
                    Some(v) if !v.sees_everyone(self.n()) => {
                        ok = false;
                        why.push(format!(
                            "{}: members {:?} quorum {:?}",
                            self.nodes[i].name, v.members, v.quorum
                        ));
                    }
                    _ => {}
                }
            }
            for c in chosen {
                let by: Vec<usize> = views
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.as_ref().is_some_and(|v| v.announced.contains(&c.ip)))
                    .map(|(i, _)| i)
                    .collect();
                if by.len() > 1 {
                    self.anomaly(format!(
                        "{} announced by {:?} at once (speaker metrics)",
                        c.ip,
                        by.iter().map(|i| &self.nodes[*i].name).collect::<Vec<_>>()
                    ));
                }
                if by.is_empty() && views.iter().all(Option::is_some) {
                    let z = *nobody_since.entry(c.ip.clone()).or_insert(now);
                    nobody_max = nobody_max.max(now - z);
                } else {
                    nobody_since.remove(&c.ip);
                }
                if by != [c.owner] {
                    ok = false;
                    why.push(format!(
                        "{} announced by {:?}, expected {}",
                        c.ip,
                        by.iter().map(|i| &self.nodes[*i].name).collect::<Vec<_>>(),
                        self.nodes[c.owner].name
                    ));
                }
            }
            if ok {
                let s = *stable_since.get_or_insert(now);
                if now - s >= Duration::from_millis(500)
                    && now - since >= self.hold_down + Duration::from_millis(500)
                {
                    return Ok(Restore {
                        settled_ms: round((now - since).as_secs_f64() * 1000.0, 0),
                        nudges,
                        unsettled_at_first_nudge: unsettled_at_nudge,
                        longest_without_announcer_ms: round(nobody_max.as_secs_f64() * 1000.0, 0),
                    });
                }
            } else {
                stable_since = None;
                last = why.join("; ");
                let late =
                    now.saturating_duration_since(since) >= self.hold_down + Duration::from_secs(2);
                if late && last_nudge.is_none_or(|t| now - t >= Duration::from_secs(3)) {
                    if nudges == 0 {
                        unsettled_at_nudge = why.clone();
                    }
                    self.nudge().await;
                    nudges += 1;
                    last_nudge = Some(now);
                }
            }
            if start.elapsed() > Duration::from_secs(240) {
                bail!("the lab did not settle in 240 s: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes every speaker re-run its elections without changing any input: an annotation on
    /// the benchmark's L2Advertisement (every speaker watches them; MetalLB's reload their
    /// configuration). Needed because a node's hold-down ending does not reliably re-run the
    /// elections (see the results' anomalies).
    pub(crate) async fn nudge(&mut self) {
        let ads = self
            .system
            .api(&self.client, &self.system.advertisement_kind());
        let value = format!("{}", rand_u32());
        let patch = json!({"metadata": {"annotations": {"speaker-bench.herald.dev/nudge": value}}});
        if let Err(e) = ads
            .patch(POOL4, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            log(format!("nudge failed: {e}"));
        }
    }

    /// The two-MAC watch over the chosen VIPs, in the client namespace, until SIGTERM.
    pub(crate) fn start_macwatch(
        &mut self,
        chosen: &[Chosen],
    ) -> anyhow::Result<tokio::process::Child> {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.client_ns])
            .arg(&self.exe)
            .args([
                "macwatch",
                "--interval-ms",
                &self.opts.interval_ms.to_string(),
            ]);
        for ch in chosen {
            c.args(["--vip", &ch.ip]);
        }
        self.watch_touched = true;
        c.stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the two-MAC watch")
    }

    /// Stops the watch (`ip netns exec` execs it: its PID is the watch's) and reads its report.
    pub(crate) async fn stop_macwatch(child: tokio::process::Child) -> anyhow::Result<WatchReport> {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("the two-MAC watch did not stop"))??;
        serde_json::from_slice(&out.stdout).context("the two-MAC watch's report")
    }

    pub(crate) async fn phase_failover(&mut self, chosen: &[Chosen]) -> anyhow::Result<()> {
        let mut all: BTreeMap<String, FaultResults> = BTreeMap::new();
        let mut since = Instant::now() - self.hold_down * 2;
        let conflicts_before = self.conflicts_counted().await;
        self.wait_stable(chosen, since).await?;
        let faults: Vec<Fault> = self
            .opts
            .faults
            .iter()
            .filter_map(|f| Fault::parse(f))
            .collect();
        let watch = self.start_macwatch(chosen)?;
        let mut windows: BTreeMap<&'static str, Vec<(u64, u64)>> = BTreeMap::new();
        for fault in faults {
            let mut trials: Vec<Trial> = Vec::new();
            let mut invalid = 0;
            let mut t = 0;
            while trials.len() < self.opts.trials {
                let c = &chosen[t % chosen.len()];
                t += 1;
                self.wait_quiet("a failover trial").await;
                let window_start = mono_us();
                let (result, restored) = self.trial(fault, c).await;
                since = restored;
                let mut result = result?;
                // The fault undone: until the returning node is past its hold-down and has
                // its IPs back.
                let settle = self.wait_stable(chosen, since).await?;
                let window = (window_start, mono_us());
                result.window_us = window;
                windows.entry(fault.name()).or_default().push(window);
                if settle.nudges > 0 {
                    log(format!(
                        "after the {} trial: {}",
                        fault.name(),
                        compact(&settle)
                    ));
                }
                result.restore = settle;
                if result.herald_bench_overlap {
                    self.check_overlap(&format!("failover {} trial", fault.name()), true);
                }
                if result.valid {
                    log(format!(
                        "{} #{:>2} {} {}: {} -> {} in {} ms ({} failed requests)",
                        fault.name(),
                        trials.len() + 1,
                        c.name,
                        c.ip,
                        self.nodes[c.owner].name,
                        result.new_node.as_deref().unwrap_or("?"),
                        compact(&result.failover_ms),
                        result.failed_requests
                    ));
                    trials.push(result);
                } else {
                    invalid += 1;
                    log(format!(
                        "{} trial on {} invalid: {}",
                        fault.name(),
                        c.ip,
                        compact(&result.why)
                    ));
                    if invalid > self.opts.trials {
                        bail!("too many invalid {} trials", fault.name());
                    }
                }
            }
            let summary = summarize_fault(&trials, invalid);
            log(format!("{}: {}", fault.name(), compact(&summary)));
            all.insert(fault.name().into(), FaultResults { summary, trials });
        }
        self.wait_stable(chosen, since).await?;
        let watch = Self::stop_macwatch(watch).await?;
        let mut by_fault = BTreeMap::new();
        let mut doubles_in_trials = 0;
        for (fault, w) in &windows {
            let (doubles, changes) = in_windows(&watch.vips, w);
            doubles_in_trials += doubles;
            // One to the new owner, one back at the restore.
            let expected = 2 * w.len();
            by_fault.insert(
                fault.to_string(),
                TwoMacsOfFault {
                    trials: w.len(),
                    requests_answered_by_two_macs: doubles,
                    mac_changes: changes,
                    mac_changes_expected: expected,
                },
            );
            if let Some(entry) = all.get_mut(*fault) {
                entry.summary.requests_answered_by_two_macs = Some(doubles);
                entry.summary.mac_changes = Some(changes);
                entry.summary.mac_changes_expected = Some(expected);
            }
        }
        let (all_doubles, _) = in_windows(&watch.vips, &[(0, u64::MAX)]);
        if all_doubles > 0 {
            self.anomaly(format!(
                "{all_doubles} ARP requests of the two-MAC watch were answered by two MACs ({doubles_in_trials} during failover trials)"
            ));
        }
        let conflicts_after = self.conflicts_counted().await;
        self.results.failover = Some(FailoverPhase {
            interval_ms: Some(self.opts.interval_ms),
            failover_max_ms: Some(self.opts.failover_max.as_millis() as u64),
            timeout_ms: Some(self.opts.timeout_ms),
            trials_per_fault: Some(self.opts.trials),
            signal_faults_pause_the_kubelet: true,
            services: chosen
                .iter()
                .map(|c| FailoverService {
                    name: c.name.clone(),
                    ip: c.ip.clone(),
                    owner: self.nodes[c.owner].name.clone(),
                })
                .collect(),
            conflicts_counted_by_speakers: conflicts_after
                .zip(conflicts_before)
                .map(|(a, b)| a - b),
            two_macs: Some(TwoMacs {
                requests_answered_by_two_macs: Some(all_doubles),
                during_trials: Some(doubles_in_trials),
                by_fault,
                watch,
            }),
            faults: all,
        });
        Ok(())
    }

    /// One trial: the client probes, triggers the fault, and reports; then the fault is
    /// undone. Returns the evaluation and the moment the fault was undone.
    pub(crate) async fn trial(
        &mut self,
        fault: Fault,
        c: &Chosen,
    ) -> (anyhow::Result<Trial>, Instant) {
        let owner = c.owner;
        if matches!(fault, Fault::Kill | Fault::Term) {
            // The speaker stays down for the trial: no kubelet to restart its container.
            let node = (owner + 1).to_string();
            if let Err(e) = self
                .lab
                .script("nodes.sh", &["kubelet", "stop", &node])
                .await
            {
                return (Err(e.context("pausing the kubelet")), Instant::now());
            }
        }
        let fault_cmd: Vec<String> = match fault {
            Fault::Kill | Fault::Term => {
                let Some(pid) = self.speaker_pid(owner) else {
                    return (
                        Err(anyhow::anyhow!("no speaker on {}", self.nodes[owner].name)),
                        Instant::now(),
                    );
                };
                let sig = if fault == Fault::Kill {
                    "-KILL"
                } else {
                    "-TERM"
                };
                vec!["kill".into(), sig.into(), pid.to_string()]
            }
            Fault::Link => [
                "ip",
                "-n",
                &self.node_ns[owner],
                "link",
                "set",
                "eth0",
                "down",
            ]
            .map(String::from)
            .to_vec(),
            Fault::OneWayIn | Fault::OneWayOut => {
                let hook = if fault == Fault::OneWayIn {
                    "input"
                } else {
                    "output"
                };
                vec![
                    "ip".into(),
                    "netns".into(),
                    "exec".into(),
                    self.node_ns[owner].clone(),
                    "nft".into(),
                    cut_rule(hook, self.system.membership_match()),
                ]
            }
        };
        let overlap_seen = Arc::new(AtomicBool::new(false));
        let watcher = {
            let seen = overlap_seen.clone();
            tokio::spawn(async move {
                loop {
                    if !other_bench().is_empty() {
                        seen.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let probe = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.client_ns])
            .arg(&self.exe)
            .args([
                "probe",
                "--target",
                &format!("{}:80", c.ip),
                "--interval-ms",
                &self.opts.interval_ms.to_string(),
                "--timeout-ms",
                &self.opts.timeout_ms.to_string(),
                "--pre-ms",
                "500",
                "--after-ms",
                "1000",
                "--max-ms",
                &self.opts.failover_max.as_millis().to_string(),
                "--old",
                &self.nodes[owner].name,
                "--",
            ])
            .args(&fault_cmd)
            .kill_on_drop(true)
            .output();
        let out =
            tokio::time::timeout(self.opts.failover_max + Duration::from_secs(20), probe).await;
        watcher.abort();
        let restore = self.restore(fault, owner).await;
        let restored = Instant::now();
        let result = (|| -> anyhow::Result<Trial> {
            let out = out.map_err(|_| anyhow::anyhow!("the probe hung"))??;
            ensure!(
                out.status.success(),
                "probe failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            restore?;
            let probe: ProbeReport = serde_json::from_slice(&out.stdout).context("probe output")?;
            let mut r = evaluate(&probe, &self.nodes[owner].name);
            r.service = c.ip.clone();
            r.old_node = self.nodes[owner].name.clone();
            r.herald_bench_overlap = overlap_seen.load(Ordering::Relaxed);
            Ok(r)
        })();
        (result, restored)
    }

    pub(crate) async fn restore(&mut self, fault: Fault, owner: usize) -> anyhow::Result<()> {
        let node = (owner + 1).to_string();
        match fault {
            Fault::Kill | Fault::Term => {
                // Gone for sure, then the kubelet back, which starts it again.
                let action = if fault == Fault::Kill { "kill" } else { "stop" };
                let gone = self.speakers(action, &[owner]).await;
                self.lab
                    .script("nodes.sh", &["kubelet", "start", &node])
                    .await?;
                gone?;
                self.speakers("start", &[owner]).await?;
            }
            Fault::Link => {
                // Up, with the routes and address a link down removes.
                self.lab
                    .script("nodes.sh", &["link", "up", &(owner + 1).to_string()])
                    .await?;
                self.restore_v6(owner).await;
            }
            Fault::OneWayIn | Fault::OneWayOut => {
                cmd(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &self.node_ns[owner],
                        "nft",
                        &format!("delete table inet {CUT_TABLE}"),
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Puts back the global IPv6 addresses of eth0 that were there at the start (a link down
    /// removes them unless keep_addr_on_down is set).
    pub(crate) async fn restore_v6(&mut self, i: usize) {
        let now = self.global_v6(i).await;
        for addr in self.initial.v6[i].clone() {
            if !now.contains(&addr) {
                let r = cmd(
                    "ip",
                    &[
                        "-n",
                        &self.node_ns[i],
                        "addr",
                        "add",
                        &addr,
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                )
                .await;
                if let Err(e) = r {
                    self.anomaly(format!(
                        "could not restore {addr} on {}: {e}",
                        self.nodes[i].name
                    ));
                }
            }
        }
    }
}
