//! The controller under test as a subprocess: started, scraped (its metrics say how many writes it
//! made), stopped, and what it cost.

use super::*;

/// Counters read from the controller's /metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scrape {
    pub(crate) status_ok: u64,
    pub(crate) status_err: u64,
    pub(crate) event_ok: u64,
    pub(crate) event_err: u64,
    pub(crate) pool_ok: u64,
    pub(crate) pool_err: u64,
    pub(crate) leader: bool,
    pub(crate) reconcile_s: f64,
    pub(crate) reconciles: u64,
    pub(crate) failures: u64,
}

pub(crate) fn parse_metrics(text: &str) -> Scrape {
    const WRITES: &str = "herald_controller_api_writes_total";
    let m = Samples::parse(text);
    let writes =
        |kind: &str, result: &str| m.sum(WRITES, &[("kind", kind), ("result", result)]) as u64;
    let all_writes = |result: &str| m.sum(WRITES, &[("result", result)]) as u64;
    let (status_ok, status_err) = (
        writes("service_status", "ok"),
        writes("service_status", "error"),
    );
    let (event_ok, event_err) = (writes("event", "ok"), writes("event", "error"));
    Scrape {
        status_ok,
        status_err,
        event_ok,
        event_err,
        // Every other kind of write is a pool status write.
        pool_ok: all_writes("ok") - status_ok - event_ok,
        pool_err: all_writes("error") - status_err - event_err,
        leader: m.sum("herald_controller_leader", &[]) == 1.0,
        reconcile_s: m.sum("herald_controller_reconcile_duration_seconds_sum", &[]),
        reconciles: m.sum("herald_controller_reconcile_duration_seconds_count", &[]) as u64,
        failures: m.sum("herald_allocation_failures_total", &[]) as u64,
    }
}

pub(crate) struct ControllerProc {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) log_path: PathBuf,
    pub(crate) pid_file: PathBuf,
    pub(crate) spawned: Instant,
}

impl ControllerProc {
    /// Starts the release binary, logging to `OUT/TAG.controller.log`; its PID goes to
    /// `OUT/controller.pid` so that run.sh can kill it if this process dies first.
    pub(crate) fn spawn(opts: &Opts, tag: &str) -> anyhow::Result<ControllerProc> {
        let bin = opts.controller()?;
        std::fs::create_dir_all(&opts.out)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log_path = opts.out.join(format!("{tag}.controller.log"));
        let log_file = std::fs::File::create(&log_path)?;
        let spawned = Instant::now();
        let child = tokio::process::Command::new(bin)
            .args(["--load-balancer-class", CLASS])
            .args([
                "--pool-selector",
                &format!("{}={}", POOL_LABEL.0, POOL_LABEL.1),
            ])
            .args(["--metrics-addr", &addr.to_string()])
            .args([
                "--lease-namespace",
                LEASE_NS,
                "--lease-name",
                "herald-bench",
            ])
            .args(["--log-format", "json", "--write-concurrency", "32"])
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("controller exited at once")?;
        let pid_file = opts.out.join("controller.pid");
        std::fs::write(&pid_file, format!("{pid}\n"))?;
        log(format!(
            "controller started (pid {pid}, metrics {addr}, log {})",
            log_path.display()
        ));
        Ok(ControllerProc {
            child,
            pid,
            addr,
            log_path,
            pid_file,
            spawned,
        })
    }

    pub(crate) async fn scrape(&self) -> anyhow::Result<Scrape> {
        let (code, body) = http_get(self.addr, "/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(parse_metrics(&body))
    }

    pub(crate) fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the controller exited ({status}); see {}",
                self.log_path.display()
            );
        }
        Ok(())
    }

    /// Waits for /readyz and leadership; returns when each happened.
    pub(crate) async fn wait_ready(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(Instant, Instant)> {
        let deadline = Instant::now() + timeout;
        let mut ready = None;
        loop {
            self.alive()?;
            if ready.is_none()
                && let Ok((200, _)) = http_get(self.addr, "/readyz").await
            {
                ready = Some(Instant::now());
            }
            if let Some(r) = ready
                && let Ok(s) = self.scrape().await
                && s.leader
            {
                return Ok((r, Instant::now()));
            }
            if Instant::now() > deadline {
                bail!("controller not ready and leading after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls /metrics every 20 ms until `n` status writes succeeded; returns that moment.
    pub(crate) async fn wait_status_writes(
        &mut self,
        n: usize,
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<(Instant, Scrape)> {
        let addr = self.addr;
        poll_status_writes(addr, n, since, timeout, || self.alive()).await
    }

    /// Waits (bounded) until the controller has published `n` Events; returns when, if it did.
    pub(crate) async fn wait_events(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Option<Instant>, Scrape)> {
        let deadline = Instant::now() + timeout;
        let mut last_print = Instant::now();
        loop {
            self.alive()?;
            let s = self.scrape().await?;
            if (s.event_ok + s.event_err) as usize >= n {
                return Ok((Some(Instant::now()), s));
            }
            if Instant::now() > deadline {
                log(format!(
                    "  gave up waiting for Events: {}/{n} published",
                    s.event_ok + s.event_err
                ));
                return Ok((None, s));
            }
            if last_print.elapsed() > Duration::from_secs(5) {
                last_print = Instant::now();
                log(format!(
                    "  events published: {}/{n}",
                    s.event_ok + s.event_err
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn sample(&self) -> (f64, u64, u64) {
        (
            procfs::cpu_seconds(self.pid).unwrap_or(f64::NAN),
            procfs::status_kib(self.pid, "VmHWM").unwrap_or(0),
            procfs::status_kib(self.pid, "VmRSS").unwrap_or(0),
        )
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => log(format!("controller stopped ({})", status?)),
            Err(_) => {
                log("controller ignored SIGTERM for 15s; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }

    /// Warnings and errors from its JSON log: count and the first few distinct messages.
    pub(crate) fn log_summary(&self) -> LogSummary {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut samples: Vec<String> = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let level = v["level"].as_str().unwrap_or("").to_string();
            if level != "WARN" && level != "ERROR" {
                continue;
            }
            *counts.entry(level).or_default() += 1;
            let msg = format!(
                "{} {}",
                v["message"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or("")
            );
            if samples.len() < 5 && !samples.contains(&msg) {
                samples.push(msg);
            }
        }
        LogSummary {
            log_levels: counts,
            log_samples: samples,
            log: self.log_path.display().to_string(),
        }
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        // kill_on_drop takes care of the process.
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Polls the controller's /metrics at `addr` every 20 ms until `n` status writes succeeded
/// (checking `alive` each time, bounded by `timeout`); returns that moment and the scrape.
pub(crate) async fn poll_status_writes(
    addr: SocketAddr,
    n: usize,
    since: Instant,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Instant, Scrape)> {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        alive()?;
        if let Ok((200, body)) = http_get(addr, "/metrics").await {
            let s = parse_metrics(&body);
            if s.status_ok as usize >= n {
                return Ok((Instant::now(), s));
            }
            if last_print.elapsed() > Duration::from_secs(2) {
                last_print = Instant::now();
                log(format!(
                    "  status written: {}/{n} ({} errors, {:.1}s)",
                    s.status_ok,
                    s.status_err,
                    since.elapsed().as_secs_f64()
                ));
            }
        }
        if Instant::now() > deadline {
            bail!("not every Service got its status within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn controller_cost(
    c: &ControllerProc,
    at_last_status: (f64, u64, u64),
    end: (f64, u64, u64),
    s: &Scrape,
) -> ControllerCost {
    ControllerCost {
        controller_cpu_s_at_last_status: fig(at_last_status.0, 2),
        controller_cpu_s_total: fig(end.0, 2),
        controller_vmhwm_kb: end.1,
        controller_vmrss_kb_end: end.2,
        status_writes_ok: s.status_ok,
        status_writes_error: s.status_err,
        events_ok: s.event_ok,
        events_error: s.event_err,
        pool_status_writes: s.pool_ok + s.pool_err,
        allocation_failures: s.failures,
        reconciles: s.reconciles,
        reconcile_time_s: fig(s.reconcile_s, 3),
        controller_log: c.log_summary(),
    }
}
