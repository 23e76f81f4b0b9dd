//! The benchmark run: the lab, the phases in order, the results and what they found.

use super::*;

/// The lab's state at the start, restored at the end.
#[derive(Debug, Default)]
pub(crate) struct Initial {
    pub(crate) speakers_running: Vec<bool>,
    pub(crate) links_up: Vec<bool>,
    /// Global IPv6 addresses on each node's eth0 (`ADDR/PREFIX`), which a link down removes.
    pub(crate) v6: Vec<Vec<String>>,
    /// Each speaker's pod, node, image, image ID and restarts.
    pub(crate) speaker_images: Vec<SpeakerImage>,
}

pub(crate) struct Bench {
    pub(crate) opts: Opts,
    /// The load balancer under test.
    pub(crate) system: System,
    /// Its speakers' hold-down.
    pub(crate) hold_down: Duration,
    /// A bearer token for its speakers' metrics, when they want one (MetalLB's).
    pub(crate) metrics_token: Option<String>,
    /// Its speakers' container logs since the start.
    pub(crate) logs: pods::Logs,
    pub(crate) lab: Lab,
    pub(crate) nodes: Vec<Node>,
    /// One backend pod per node, in the bench's namespace (placed by `setup`).
    pub(crate) backends: Vec<Backend>,
    pub(crate) node_ns: Vec<String>,
    pub(crate) client_ns: String,
    pub(crate) client: Client,
    pub(crate) ns: String,
    pub(crate) exe: PathBuf,
    pub(crate) speakers_sh: PathBuf,
    pub(crate) kubectl: PathBuf,
    pub(crate) kubeconfig: String,
    pub(crate) initial: Initial,
    pub(crate) results: Results,
    pub(crate) anomalies: Vec<String>,
    /// Measurements during which a `herald-bench` process was seen.
    pub(crate) overlaps: Vec<String>,
    /// The ARP phase touched these (node namespace) neighbour entries and bridge entries.
    pub(crate) arp_touched: BTreeSet<String>,
    /// The two-MAC watch taught the switch its MACs.
    pub(crate) watch_touched: bool,
    pub(crate) created: bool,
    pub(crate) clk_tck: f64,
}

pub(crate) async fn run(opts: Opts) -> anyhow::Result<()> {
    ensure!(
        is_root(),
        "needs root (network namespaces, AF_PACKET, signals to the speakers)"
    );
    let lab = Lab::load("herald-speaker-bench")?;
    let mut bench = Bench::new(lab, opts.clone()).await?;
    let max_total = opts.max_total;
    let outcome = {
        let body = bench.body();
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::time::timeout(max_total, body) => match r {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("the run exceeded --max-minutes")),
            },
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
            _ = sigterm.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
        }
    };
    if let Err(e) = &outcome {
        log(format!("error: {e:#}; cleaning up"));
        bench.results.error = Some(format!("{e:#}"));
    }
    bench.cleanup().await;
    bench.finish().await;
    let results = &bench.results;
    if let Some(path) = &bench.opts.results {
        std::fs::write(path, results.to_file_text()?)
            .with_context(|| format!("writing {}", path.display()))?;
        log(format!("results in {}", path.display()));
    }
    println!("{}", report(results));
    outcome
}

impl Bench {
    pub(crate) async fn new(lab: Lab, opts: Opts) -> anyhow::Result<Bench> {
        let nodes = lab.nodes()?;
        ensure!(nodes.len() >= 2, "the lab has fewer than two nodes");
        let node_ns = (1..=nodes.len())
            .map(|i| lab.var(&format!("HERALD_NODE{i}_NS")).map(str::to_string))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client_ns = lab.client_ns()?.to_string();
        let client = lab.client().await?;
        let kubeconfig = std::env::var("KUBECONFIG")
            .ok()
            .unwrap_or_else(|| lab.var("KUBECONFIG").unwrap_or_default().to_string());
        let kubectl = lab
            .var("HERALD_K8S_BIN")
            .map(|d| PathBuf::from(d).join("kubectl"))
            .unwrap_or_else(|_| PathBuf::from("kubectl"));
        let clk_tck = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        let system = opts.system;
        let mut bench = Bench {
            system,
            hold_down: opts.hold_down.unwrap_or(system.hold_down()),
            metrics_token: None,
            logs: pods::Logs::since(k8s_openapi::jiff::Timestamp::now()),
            ns: format!("speaker-bench-{:x}", rand_u32() & 0xffff),
            exe: std::env::current_exe()?,
            speakers_sh: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/lab/speakers.sh")),
            opts,
            nodes,
            backends: Vec::new(),
            node_ns,
            client_ns,
            client,
            kubectl,
            kubeconfig,
            initial: Initial::default(),
            results: Results::default(),
            anomalies: Vec::new(),
            overlaps: Vec::new(),
            arp_touched: BTreeSet::new(),
            watch_touched: false,
            created: false,
            clk_tck,
            lab,
        };
        if system == System::Metallb {
            bench.metrics_token = Some(bench.metallb_metrics_token().await?);
        }
        bench.record_initial().await?;
        Ok(bench)
    }

    pub(crate) fn n(&self) -> usize {
        self.nodes.len()
    }

    /// A token of the lab's `metrics-reader` (tests/lab/metallb/metrics-reader.yaml): MetalLB's
    /// metrics endpoints take only bearer tokens the API server authorizes.
    pub(crate) async fn metallb_metrics_token(&self) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(&self.kubectl)
            .args([
                "--kubeconfig",
                &self.kubeconfig,
                "-n",
                System::Metallb.namespace(),
            ])
            .args(["create", "token", "metrics-reader", "--duration=24h"])
            .output()
            .await
            .context("kubectl create token")?;
        ensure!(
            out.status.success(),
            "kubectl create token metrics-reader (is MetalLB installed? tests/lab/systems.sh use metallb): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// What the run measures: the system, its version and images, and the lab's.
    pub(crate) fn versions(&self) -> Versions {
        let var = |k: &str| self.lab.var(k).ok().map(str::to_string);
        let commit = std::process::Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short=12",
                "HEAD",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Versions {
            herald: HeraldVersion {
                version: Some(env!("CARGO_PKG_VERSION").into()),
                commit,
                image: var("HERALD_IMAGE"),
                image_profile: var("HERALD_IMAGE_PROFILE"),
            },
            metallb: MetallbVersion {
                version: var("HERALD_METALLB_VERSION"),
                controller_image: var("HERALD_METALLB_IMAGE_CONTROLLER"),
                speaker_image: var("HERALD_METALLB_IMAGE_SPEAKER"),
            },
            kubernetes: std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/build-k8s.sh"),
            )
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("K8S_VERSION=\"")
                        .map(|v| v.trim_end_matches('"').to_string())
                })
            }),
            kube_proxy_mode: var("HERALD_KUBE_PROXY_MODE"),
        }
    }

    pub(crate) async fn record_initial(&mut self) -> anyhow::Result<()> {
        for i in 0..self.n() {
            self.initial
                .speakers_running
                .push(self.speaker_pid(i).is_some());
            let link = cmd(
                "ip",
                &["-n", &self.node_ns[i], "-o", "link", "show", "eth0"],
            )
            .await
            .unwrap_or_default();
            self.initial
                .links_up
                .push(link.contains(",UP") || link.contains("<UP"));
            self.initial.v6.push(self.global_v6(i).await);
        }
        self.initial.speaker_images = pods::speaker_images(&self.speaker_pods().await);
        let lab = LabAtStart {
            system: self.system.name().into(),
            speakers: self.initial.speaker_images.clone(),
            nodes: self.n(),
            speakers_running: self.initial.speakers_running.clone(),
            links_up: self.initial.links_up.clone(),
            eth0_global_ipv6: self.initial.v6.clone(),
        };
        log(format!("lab at start: {}", compact(&lab)));
        self.results.lab_at_start = Some(lab);
        Ok(())
    }

    pub(crate) async fn body(&mut self) -> anyhow::Result<()> {
        self.results.date = Some(now_utc());
        self.results.system = Some(self.system.name().into());
        self.results.versions = Some(self.versions());
        self.results.hold_down_ms = Some(self.hold_down.as_millis() as u64);
        self.results.command = Some(self.opts.command_line.clone());
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let kernel = cmd("uname", &["-r"]).await.unwrap_or_default();
        self.results.host = Some(Host {
            cpus: Some(cpus),
            kernel: Some(kernel.trim().to_string()),
        });
        if let Some(pid) = self.speaker_pid(0) {
            let line = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            self.results.speaker_command = Some(line.trim().to_string());
        }
        for i in 0..self.n() {
            ensure!(
                self.initial.speakers_running[i],
                "the speaker of {} is not running (tests/lab/speakers.sh start)",
                self.nodes[i].name
            );
            ensure!(
                self.initial.links_up[i],
                "eth0 of {} is down",
                self.nodes[i].name
            );
        }
        self.setup().await?;
        let phases: BTreeSet<String> = self.opts.phases.iter().cloned().collect();
        let mut chosen = Vec::new();
        if phases.contains("failover") || phases.contains("arp") {
            chosen = self.failover_services().await?;
        }
        if phases.contains("failover") {
            self.phase_failover(&chosen).await?;
        }
        if phases.contains("arp") {
            self.phase_arp(&chosen).await?;
        }
        if !chosen.is_empty() {
            let names: Vec<String> = chosen.iter().map(|c| c.name.clone()).collect();
            self.delete_services(&names).await;
        }
        if phases.contains("scale") {
            self.phase_scale().await?;
        }
        if phases.contains("resources") || phases.contains("api") {
            self.phase_bulk(phases.contains("resources"), phases.contains("api"))
                .await?;
        }
        Ok(())
    }

    pub(crate) fn anomaly(&mut self, what: String) {
        log(format!("ANOMALY: {what}"));
        if !self.anomalies.contains(&what) {
            self.anomalies.push(what);
        }
    }

    /// Notes that a measurement overlapped the controller benchmark.
    pub(crate) fn check_overlap(&mut self, what: &str, seen: bool) {
        if seen || !other_bench().is_empty() {
            self.overlaps
                .push(format!("{what}: herald-bench ran during the measurement"));
        }
    }

    /// Logs, images, anomalies and overlaps into the results.
    pub(crate) async fn finish(&mut self) {
        self.logs.harvest(&self.lab.dir, self.system);
        self.results.speaker_logs = Some(self.logs.by_node());
        let end = pods::speaker_images(&self.speaker_pods().await);
        let changed = pods::images_changed(&self.initial.speaker_images, &end);
        if !changed.is_empty() {
            self.anomaly(format!(
                "speakers ran other images at the end than at the start: {changed:?} (a new image was installed during the run)"
            ));
        }
        self.results.speaker_images = Some(SpeakerImages {
            start: self.initial.speaker_images.clone(),
            end,
        });
        self.results.anomalies = Some(self.anomalies.clone());
        self.results.overlaps_with_controller_bench = Some(self.overlaps.clone());
    }
}
