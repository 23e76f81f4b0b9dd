//! The resources and API phases: speaker memory and CPU with many Services, and the API requests
//! they cost at steady state.

use super::*;

/// The API server's own count of the requests it completed (its `/metrics`): how the run
/// sees that writes stopped.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiSnapshot {
    /// Completed requests by "VERB group/resource[/sub] (scope)".
    pub(crate) completed: BTreeMap<String, f64>,
}

impl ApiSnapshot {
    pub(crate) fn parse(text: &str) -> ApiSnapshot {
        let mut s = ApiSnapshot::default();
        for m in Samples::parse(text).0 {
            let key = |l: &BTreeMap<String, String>| {
                let g = l.get("group").map(String::as_str).unwrap_or("");
                let r = l.get("resource").map(String::as_str).unwrap_or("");
                let sub = l.get("subresource").map(String::as_str).unwrap_or("");
                let scope = l.get("scope").map(String::as_str).unwrap_or("");
                let verb = l.get("verb").map(String::as_str).unwrap_or("?");
                if r.is_empty() {
                    return format!("{verb} {sub} (non-resource)");
                }
                let mut k = format!(
                    "{verb} {}{r}",
                    if g.is_empty() {
                        String::new()
                    } else {
                        format!("{g}/")
                    },
                );
                if !sub.is_empty() {
                    k.push('/');
                    k.push_str(sub);
                }
                if !scope.is_empty() {
                    k.push_str(&format!(" ({scope})"));
                }
                k
            };
            if m.name == "apiserver_request_total" {
                *s.completed.entry(key(&m.labels)).or_default() += m.value
            }
        }
        s
    }

    /// Service status, Event and ServiceL2Status writes (what the speakers write when owners
    /// change).
    pub(crate) fn writes(&self) -> f64 {
        self.completed
            .iter()
            .filter(|(k, _)| {
                k.contains("services/status")
                    || ((k.contains("events") || k.contains("servicel2statuses"))
                        && !k.starts_with("GET")
                        && !k.starts_with("LIST")
                        && !k.starts_with("WATCH"))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

impl Bench {
    pub(crate) async fn phase_bulk(&mut self, resources: bool, api: bool) -> anyhow::Result<()> {
        if resources {
            let r = self.resources(0, "running").await?;
            self.results.resources.push(r);
        }
        let mut created = 0;
        for target in [self.opts.services_small, self.opts.services] {
            self.wait_quiet("creating Services").await;
            let (gained0, lost0, conflicts0) = self.churn().await;
            let started = Instant::now();
            let names: Vec<String> = (created..target).map(|k| format!("bulk-{k:05}")).collect();
            let this = &*self;
            let mut creates =
                futures::stream::iter(names.iter().map(|name| async move {
                    this.create_service(name, true, "Cluster", None).await
                }))
                .buffer_unordered(16);
            while let Some(r) = creates.next().await {
                r?;
            }
            drop(creates);
            let new = target - created;
            created = target;
            let all: BTreeSet<String> = (0..target).map(|k| format!("bulk-{k:05}")).collect();
            let within = Duration::from_secs(120 + target as u64 / 5);
            let ips: BTreeSet<String> = self.wait_ips(&all, within).await?.into_values().collect();
            self.wait_announced(&ips, within).await?;
            let announced_after = started.elapsed();
            self.wait_conditions(target, within).await?;
            log(format!(
                "{target} Services: all announced {:.1} s after the first create, conditions written after {:.1} s",
                announced_after.as_secs_f64(),
                started.elapsed().as_secs_f64()
            ));
            self.wait_writes_quiet().await?;
            let (gained1, lost1, conflicts1) = self.churn().await;
            let delta = |b: Option<f64>, a: Option<f64>| b.zip(a).map(|(b, a)| b - a);
            let (gained, lost, conflicts) = (
                delta(gained1, gained0),
                delta(lost1, lost0),
                delta(conflicts1, conflicts0),
            );
            let creation = CreationRun {
                services: target,
                created: new,
                all_announced_s: Some(round(announced_after.as_secs_f64(), 1)),
                ips_gained: gained,
                ips_lost: lost,
                conflicts_counted: conflicts,
            };
            log(format!("creating {new} Services: {}", compact(&creation)));
            if gained.is_some_and(|g| g > new as f64) || conflicts.is_some_and(|c| c > 0.0) {
                self.anomaly(format!(
                    "creating {new} Services: {gained:?} IPs gained and {lost:?} lost (ideal {new} and 0), {conflicts:?} conflicts counted"
                ));
            }
            self.results.creation.push(creation);
            if resources {
                let mut r = self.resources(target, "running").await?;
                r.announce_all_s = Some(round(announced_after.as_secs_f64(), 1));
                self.results.resources.push(r);
            }
            if api {
                let a = self.api_windows(target, &ips).await?;
                self.results.api.push(a);
                if resources {
                    let r = self.resources(target, "after restart").await?;
                    self.results.resources.push(r);
                }
            }
        }
        Ok(())
    }

    /// How many bulk Services have their announcer written: Herald's Announced condition (the
    /// speakers' reports, mirrored by the controller), or a MetalLB ServiceL2Status with its
    /// node.
    pub(crate) async fn announcers_written(&self) -> anyhow::Result<usize> {
        let bulk = |n: &str| n.starts_with("bulk-");
        match self.system {
            System::Herald => {
                let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
                let list = services.list(&ListParams::default()).await?;
                Ok(list
                    .items
                    .iter()
                    .filter(|s| s.metadata.name.as_deref().is_some_and(bulk))
                    .filter(|s| scale::herald_announced(s))
                    .count())
            }
            System::Metallb => {
                let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
                    self.client.clone(),
                    System::Metallb.namespace(),
                    &System::l2_status_resource(),
                );
                let list = api.list(&ListParams::default()).await?;
                let prefix = format!("{}/", self.ns);
                let names: BTreeSet<String> = list
                    .items
                    .iter()
                    .filter_map(|o| serde_json::to_value(o).ok())
                    .filter_map(|v| system::l2_status_announcer(&v))
                    .filter_map(|(s, _)| s.strip_prefix(&prefix).map(str::to_string))
                    .filter(|n| bulk(n))
                    .collect();
                Ok(names.len())
            }
        }
    }

    /// Waits until every bulk Service has its announcer written.
    pub(crate) async fn wait_conditions(
        &self,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let done = self.announcers_written().await?;
            if done >= count {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!("{done} of {count} Services have their announcer written after {within:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub(crate) async fn scrape(&self) -> anyhow::Result<ApiSnapshot> {
        let out = tokio::process::Command::new(&self.kubectl)
            .args(["--kubeconfig", &self.kubeconfig, "get", "--raw", "/metrics"])
            .output()
            .await
            .context("kubectl get --raw /metrics")?;
        ensure!(
            out.status.success(),
            "kubectl get --raw /metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(ApiSnapshot::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Waits until no Service status or Event write happened for 15 s (bounded: 3 min).
    pub(crate) async fn wait_writes_quiet(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = self.scrape().await?;
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = self.scrape().await?;
            let writes = now.writes() - last.writes();
            last = now;
            if writes > 0.0 {
                quiet_since = Instant::now();
            }
            if quiet_since.elapsed() >= Duration::from_secs(15) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(180) {
                log("Service status / Event writes did not stop within 3 min; measuring anyway");
                return Ok(());
            }
        }
    }

    pub(crate) async fn resources(
        &mut self,
        services: usize,
        when: &str,
    ) -> anyhow::Result<ResourcesRun> {
        self.wait_quiet("speaker CPU").await;
        let n = self.n();
        let pids: Vec<u32> = (0..n)
            .map(|i| {
                self.speaker_pid(i)
                    .with_context(|| format!("no speaker on {}", self.nodes[i].name))
            })
            .collect::<anyhow::Result<_>>()?;
        let window = self.opts.cpu_window;
        let first: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).collect();
        let mut prev = first.clone();
        let mut max_1s = vec![0u64; n];
        let mut seen = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..window.as_secs() {
            tick.tick().await;
            seen |= !other_bench().is_empty();
            for (i, p) in pids.iter().enumerate() {
                let t = cpu_ticks(*p).unwrap_or(prev[i]);
                max_1s[i] = max_1s[i].max(t.saturating_sub(prev[i]));
                prev[i] = t;
            }
        }
        let views = self.views().await;
        let speakers: Vec<SpeakerUsage> = (0..n)
            .map(|i| {
                let ticks = prev[i].saturating_sub(first[i]) as f64;
                let cpu_s = ticks / self.clk_tck;
                SpeakerUsage {
                    node: self.nodes[i].name.clone(),
                    pid: pids[i],
                    vmhwm_kib: status_kib(pids[i], "VmHWM"),
                    vmrss_kib: status_kib(pids[i], "VmRSS"),
                    threads: status_kib(pids[i], "Threads"),
                    cpu_s: Some(round(cpu_s, 2)),
                    cpu_percent: Some(round(100.0 * cpu_s / window.as_secs_f64(), 3)),
                    max_1s_percent: Some(round(100.0 * max_1s[i] as f64 / self.clk_tck, 1)),
                    announced: views[i].as_ref().map(|v| v.announced.len()),
                }
            })
            .collect();
        let label = format!("resources with {services} Services ({when})");
        self.check_overlap(&label, seen);
        log(format!("{label}: {}", compact(&speakers)));
        Ok(ResourcesRun {
            services,
            when: when.to_string(),
            window_s: window.as_secs(),
            clk_tck: self.clk_tck,
            speakers,
            announce_all_s: None,
        })
    }

    /// The audit log's requests of the system's components in `[from_us, to_us)`.
    pub(crate) fn audited(
        &self,
        from_us: i64,
        to_us: i64,
    ) -> anyhow::Result<BTreeMap<&'static str, audit::ComponentRequests>> {
        let path = self
            .lab
            .var("HERALD_AUDIT_LOG")
            .context("the lab's API server keeps no audit log (bring the lab up again: tests/lab/control-plane.sh writes one)")?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        Ok(audit::count(self.system, &text, from_us, to_us))
    }

    /// A window at steady state: the requests of the system's components.
    pub(crate) async fn api_window(&mut self, label: &str) -> anyhow::Result<ApiWindow> {
        self.wait_quiet(label).await;
        let window = self.opts.api_window;
        log(format!(
            "{label}: counting API requests for {} s",
            window.as_secs()
        ));
        let from = audit::unix_us();
        let started = Instant::now();
        let mut seen = false;
        while started.elapsed() < window {
            seen |= !other_bench().is_empty();
            let left = window.saturating_sub(started.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(5))).await;
        }
        let to = audit::unix_us();
        self.check_overlap(label, seen);
        let counts = self.audited(from, to)?;
        Ok(audit::window(&counts, (to - from) as f64 / 1e6))
    }

    pub(crate) async fn api_windows(
        &mut self,
        services: usize,
        ips: &BTreeSet<String>,
    ) -> anyhow::Result<ApiRun> {
        let all: Vec<usize> = (0..self.n()).collect();
        let running = self
            .api_window(&format!("API, {services} Services"))
            .await?;
        // Every speaker pod replaced; the first minute shows what a (re)start costs.
        let from = audit::unix_us();
        let t = Instant::now();
        self.speakers("delete", &all).await?;
        self.speakers("start", &all).await?;
        let within = Duration::from_secs(120 + services as u64 / 5);
        self.wait_announced(ips, within).await?;
        let announced_s = t.elapsed().as_secs_f64();
        let left = Duration::from_secs(60).saturating_sub(t.elapsed());
        tokio::time::sleep(left).await;
        let to = audit::unix_us();
        let restart = audit::window(&self.audited(from, to)?, (to - from) as f64 / 1e6);
        self.wait_writes_quiet().await?;
        let per_min = |c: &str| running.components.get(c).map(|c| c.per_min);
        let speaker_restart = restart.components.get("speaker");
        let r = ApiRun {
            services,
            window_s: Some(running.seconds),
            per_min: Some(running.per_min),
            speakers_per_min: per_min("speaker"),
            controller_per_min: per_min("controller"),
            restart: ApiRestart {
                all_announced_s: Some(round(announced_s, 1)),
                first_s: Some(restart.seconds),
                requests: Some(restart.requests),
                speaker_requests: speaker_restart.map(|c| c.requests),
                by_request: speaker_restart.map(|c| c.by_request.clone()),
            },
            running,
        };
        log(format!(
            "API with {services} Services: {} requests/min (speakers {}, controller {})",
            compact(&r.per_min),
            compact(&r.speakers_per_min),
            compact(&r.controller_per_min)
        ));
        Ok(r)
    }
}
