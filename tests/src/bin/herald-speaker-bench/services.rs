//! The benchmark's Services: pools, creation, deletion, and waiting for IPs and announcers.

use super::*;

impl Bench {
    pub(crate) async fn setup(&mut self) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": self.ns}}))?,
            )
            .await
            .with_context(|| format!("creating namespace {}", self.ns))?;
        self.created = true;
        // The same pools and advertisement in the system's API (the same fields in both).
        let apply = PatchParams::apply(MANAGER).force();
        let pools = self.system.api(&self.client, &self.system.pool_kind());
        for (name, range) in [(POOL4, RANGE4), (POOL6, RANGE6)] {
            pools
                .patch(name, &apply, &Patch::Apply(self.system.pool(name, range)))
                .await
                .with_context(|| format!("applying pool {name}"))?;
        }
        let ads = self
            .system
            .api(&self.client, &self.system.advertisement_kind());
        ads.patch(
            POOL4,
            &apply,
            &Patch::Apply(self.system.advertisement(POOL4, &[POOL4, POOL6])),
        )
        .await
        .context("applying the L2Advertisement")?;
        let image = self.lab.backend_image()?.to_string();
        let nodes: Vec<&Node> = self.nodes.iter().collect();
        self.backends = place_backends(&self.client, &image, &self.ns, "bench", &nodes)
            .await
            .context("placing a backend pod on every node")?;
        log(format!(
            "{}: namespace {}, pools {POOL4} ({RANGE4}) and {POOL6} ({RANGE6}), a backend pod per node",
            self.system.name(),
            self.ns
        ));
        Ok(())
    }

    /// A selector-less LoadBalancer Service and its EndpointSlice (every node's backend pod): no
    /// EndpointSlice controller work per Service, so the bench measures the speakers. MetalLB's
    /// annotations, which Herald honours too, so both systems get the very same Services; no
    /// NodePorts (neither needs them, and 10,000 Services would exhaust the range). Labelled
    /// [`SET_LABEL`] with the name's prefix (`fo`, `bulk`, `scale`).
    pub(crate) async fn create_service(
        &self,
        name: &str,
        v6: bool,
        policy: &str,
        ip: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut annotations = json!({"metallb.io/address-pool": if v6 { POOL6 } else { POOL4 }});
        if let Some(ip) = ip {
            annotations["metallb.io/loadBalancerIPs"] = json!(ip);
        }
        let set = name.split('-').next().unwrap_or(name);
        let labels = json!({SET_LABEL: set});
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        services
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": annotations, "labels": labels},
                    "spec": {
                        "type": "LoadBalancer", "externalTrafficPolicy": policy,
                        "allocateLoadBalancerNodePorts": false,
                        "ipFamilyPolicy": "SingleStack",
                        "ipFamilies": [if v6 { "IPv6" } else { "IPv4" }],
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
                    }
                }))?,
            )
            .await
            .with_context(|| format!("creating Service {name}"))?;
        let endpoints: Vec<Value> = self
            .backends
            .iter()
            .map(|b| {
                json!({
                    "addresses": [if v6 { &b.ip6 } else { &b.ip4 }],
                    "nodeName": b.node,
                    "conditions": {"ready": true}
                })
            })
            .collect();
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        slices
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {
                        "name": format!("{name}-{}", if v6 { "v6" } else { "v4" }),
                        "labels": {"kubernetes.io/service-name": name, SET_LABEL: set}
                    },
                    "addressType": if v6 { "IPv6" } else { "IPv4" },
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": endpoints
                }))?,
            )
            .await
            .with_context(|| format!("creating the EndpointSlice of {name}"))?;
        Ok(())
    }

    pub(crate) async fn delete_services(&self, names: &[String]) {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        for name in names {
            let _ = services.delete(name, &DeleteParams::default()).await;
            for suffix in ["v4", "v6"] {
                let _ = slices
                    .delete(&format!("{name}-{suffix}"), &DeleteParams::default())
                    .await;
            }
        }
    }

    /// Waits until every named Service has a status IP; name -> IP.
    pub(crate) async fn wait_ips(
        &self,
        names: &BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let start = Instant::now();
        loop {
            let list = services.list(&ListParams::default()).await?;
            let ips: BTreeMap<String, String> = list
                .items
                .iter()
                .filter_map(|s| {
                    let name = s.metadata.name.clone()?;
                    let ip = herald_config::service::status_ips(s).first()?.to_string();
                    names.contains(&name).then_some((name, ip))
                })
                .collect();
            if ips.len() == names.len() {
                return Ok(ips);
            }
            if start.elapsed() > within {
                bail!(
                    "{} of {} Services have an IP after {within:?} (is the lab's herald-controller running?)",
                    ips.len(),
                    names.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until each IP is announced by exactly one node; IP -> node index. Records any
    /// IP seen announced by two nodes at once.
    pub(crate) async fn wait_announced(
        &mut self,
        ips: &BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let start = Instant::now();
        let mut nudges = 0u32;
        let mut last_nudge: Option<Instant> = None;
        let mut missing_at_nudge = 0usize;
        loop {
            let views = self.views().await;
            let mut owners: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, v) in views.iter().enumerate() {
                if let Some(v) = v {
                    for ip in v.announced.intersection(ips) {
                        owners.entry(ip.clone()).or_default().push(i);
                    }
                }
            }
            let doubles: Vec<String> = owners
                .iter()
                .filter(|(_, o)| o.len() > 1)
                .map(|(ip, o)| format!("{ip} by {o:?}"))
                .collect();
            if !doubles.is_empty() {
                self.anomaly(format!(
                    "announced by two nodes at once (speaker metrics): {}",
                    doubles
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if owners.len() == ips.len() && doubles.is_empty() {
                if nudges > 0 {
                    self.anomaly(format!(
                        "{} IPs: all announced only after {nudges} nudge(s) ({:.1} s); before the first, {missing_at_nudge} had no announcer",
                        ips.len(),
                        start.elapsed().as_secs_f64()
                    ));
                }
                return Ok(owners.into_iter().map(|(ip, o)| (ip, o[0])).collect());
            }
            let late = start.elapsed() >= self.hold_down + Duration::from_secs(10);
            if late && last_nudge.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(5)) {
                if nudges == 0 {
                    missing_at_nudge = ips.len() - owners.len();
                }
                self.nudge().await;
                nudges += 1;
                last_nudge = Some(Instant::now());
            }
            if start.elapsed() > within {
                bail!(
                    "{} of {} IPs announced by exactly one node after {within:?}",
                    owners.values().filter(|o| o.len() == 1).count(),
                    ips.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub(crate) async fn cleanup(&mut self) {
        log("restoring the lab");
        for i in 0..self.n() {
            // A trial's kubelet pause (a no-op when it runs).
            let _ = self
                .lab
                .script("nodes.sh", &["kubelet", "start", &(i + 1).to_string()])
                .await;
        }
        for i in 0..self.n() {
            // A one-way membership fault left behind (absent: an error, ignored).
            let _ = cmd(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.node_ns[i],
                    "nft",
                    &format!("delete table inet {CUT_TABLE}"),
                ],
            )
            .await;
            if self.initial.links_up.get(i) == Some(&true) {
                let _ = self
                    .lab
                    .script("nodes.sh", &["link", "up", &(i + 1).to_string()])
                    .await;
                self.restore_v6(i).await;
            }
        }
        let running: Vec<usize> = (0..self.n())
            .filter(|i| self.initial.speakers_running.get(*i) == Some(&true))
            .collect();
        if let Err(e) = self.speakers("start", &running).await {
            log(format!("could not restart the speakers: {e:#}"));
            self.anomaly(format!("cleanup: could not restart the speakers: {e:#}"));
        }
        if self.created {
            let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
            let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
            let events: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(self.client.clone(), &self.ns);
            let core_events: Api<k8s_openapi::api::core::v1::Event> =
                Api::namespaced(self.client.clone(), &self.ns);
            let dp = DeleteParams::default();
            let lp = ListParams::default();
            let _ = services.delete_collection(&dp, &lp).await;
            let _ = slices.delete_collection(&dp, &lp).await;
            let _ = events.delete_collection(&dp, &lp).await;
            let _ = core_events.delete_collection(&dp, &lp).await;
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let _ = namespaces.delete(&self.ns, &dp).await;
            let ads = self
                .system
                .api(&self.client, &self.system.advertisement_kind());
            let _ = ads.delete(POOL4, &dp).await;
            let pools = self.system.api(&self.client, &self.system.pool_kind());
            let _ = pools.delete(POOL4, &dp).await;
            let _ = pools.delete(POOL6, &dp).await;
        }
        for ns in self.arp_touched.clone() {
            let _ = cmd(
                "ip",
                &[
                    "-n",
                    &ns,
                    "neigh",
                    "del",
                    &ARP_SENDER.to_string(),
                    "dev",
                    "eth0",
                ],
            )
            .await;
        }
        let mut macs: Vec<MacAddr> = Vec::new();
        if !self.arp_touched.is_empty() {
            macs.extend((0..ARP_SLOTS).map(slot_mac));
        }
        if self.watch_touched {
            macs.extend((0..WATCH_SLOTS).map(watch_slot_mac));
        }
        if !macs.is_empty()
            && let Ok(switch) = self.lab.var("HERALD_SWITCH_NS")
        {
            let port = self
                .lab
                .var("HERALD_CLIENT_SWITCH_PORT")
                .unwrap_or("client")
                .to_string();
            let batch: String = macs
                .iter()
                .map(|m| format!("fdb del {m} dev {port} master\n"))
                .collect();
            let file =
                std::env::temp_dir().join(format!("speaker-bench-fdb-{}", std::process::id()));
            if std::fs::write(&file, batch).is_ok() {
                // Entries that already aged out make some lines fail: -force goes on.
                let _ = cmd(
                    "bridge",
                    &[
                        "-n",
                        switch,
                        "-force",
                        "-batch",
                        file.to_str().unwrap_or_default(),
                    ],
                )
                .await;
                let _ = std::fs::remove_file(&file);
            }
        }
        // The client's neighbour entries for the benchmark's VIPs.
        for k in 0..FAILOVER_CANDIDATES {
            let ip = format!("192.0.2.{}", 150 + u32::from(k));
            let _ = cmd(
                "ip",
                &["-n", &self.client_ns, "neigh", "del", &ip, "dev", "eth0"],
            )
            .await;
        }
        // Let the speakers settle, then report what the lab looks like.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            let views = self.views().await;
            if views.iter().all(|v| {
                v.as_ref()
                    .is_some_and(|v| v.members.is_none_or(|m| m as usize == self.n()))
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let end = LabAtEnd {
            speakers_running: (0..self.n())
                .map(|i| self.speaker_pid(i).is_some())
                .collect(),
            eth0_global_ipv6: futures::future::join_all((0..self.n()).map(|i| self.global_v6(i)))
                .await,
        };
        log(format!("lab at the end: {}", compact(&end)));
        self.results.lab_at_end = Some(end);
    }
}
