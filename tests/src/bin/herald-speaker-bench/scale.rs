//! The scale phase: N Services created as fast as the API server takes them; time from the last
//! create to the last status written, for the status the controller writes (the IP in
//! `status.loadBalancer.ingress`) and for the speakers' record of who announces (Herald: the
//! `herald.dev/Announced` condition on the Service; MetalLB: a `ServiceL2Status` object). Both are
//! timed by watches opened before the first create, so a status is timed when the API server
//! sends it, not when a poll finds it.

use super::*;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use std::sync::Mutex;

/// When each Service's statuses arrived.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    pub(crate) ingress: BTreeMap<String, Instant>,
    pub(crate) announced: BTreeMap<String, Instant>,
}

/// Whether a Service carries Herald's Announced condition, true.
pub(crate) fn herald_announced(s: &Service) -> bool {
    s.status
        .as_ref()
        .and_then(|st| st.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == ANNOUNCED_CONDITION && c.status == "True")
        })
}

/// Seconds from `from` to the latest of `times`, if there is one.
pub(crate) fn last_after(times: &BTreeMap<String, Instant>, from: Instant) -> Option<f64> {
    times
        .values()
        .max()
        .map(|t| t.saturating_duration_since(from).as_secs_f64())
}

pub(crate) const SCALE_PREFIX: &str = "scale-";

impl Bench {
    pub(crate) async fn phase_scale(&mut self) -> anyhow::Result<()> {
        for n in self.opts.scale_sizes.clone() {
            self.wait_quiet("the scale phase").await;
            let r = self.scale_run(n).await?;
            log(format!("scale, {n} Services: {}", compact(&r)));
            // Kept before the clean-up, which takes minutes at 10,000: a run stopped meanwhile
            // still has the figure.
            self.results.scale.push(r);
            self.delete_set("scale").await;
        }
        Ok(())
    }

    async fn scale_run(&mut self, n: usize) -> anyhow::Result<ScaleRun> {
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let mut watches = Vec::new();
        {
            let arrivals = arrivals.clone();
            let herald = self.system == System::Herald;
            let stream = watcher(services.clone(), watcher::Config::default());
            watches.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event else {
                        continue;
                    };
                    let now = Instant::now();
                    let Some(name) = s.metadata.name.clone() else {
                        continue;
                    };
                    if !name.starts_with(SCALE_PREFIX) {
                        continue;
                    }
                    let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                    if !herald_config::service::status_ips(&s).is_empty() {
                        a.ingress.entry(name.clone()).or_insert(now);
                    }
                    if herald && herald_announced(&s) {
                        a.announced.entry(name).or_insert(now);
                    }
                }
            }));
        }
        if self.system == System::Metallb {
            let arrivals = arrivals.clone();
            let ns = self.ns.clone();
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                System::Metallb.namespace(),
                &System::l2_status_resource(),
            );
            let stream = watcher(api, watcher::Config::default());
            watches.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event else {
                        continue;
                    };
                    let now = Instant::now();
                    let Ok(v) = serde_json::to_value(&o) else {
                        continue;
                    };
                    let Some((service, _node)) = system::l2_status_announcer(&v) else {
                        continue;
                    };
                    let Some(name) = service.strip_prefix(&format!("{ns}/")) else {
                        continue;
                    };
                    if name.starts_with(SCALE_PREFIX) {
                        let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                        a.announced.entry(name.to_string()).or_insert(now);
                    }
                }
            }));
        }
        // Let the watches list and start watching.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (gained0, _, _) = self.churn().await;
        let first = Instant::now();
        let names: Vec<String> = (0..n).map(|k| format!("{SCALE_PREFIX}{k:05}")).collect();
        let this = &*self;
        let mut creates = futures::stream::iter(
            names
                .iter()
                .map(|name| async move { this.create_service(name, true, "Cluster", None).await }),
        )
        .buffer_unordered(32);
        let mut last_create = first;
        while let Some(r) = creates.next().await {
            r?;
            last_create = Instant::now();
        }
        drop(creates);
        // Bounded from the last create, not the first: at 10,000 Services this lab takes
        // about an hour to create them (a bound counted from the first create had expired
        // before the last one, and the run recorded a status count taken at that instant).
        let within = Duration::from_secs(300 + n as u64 / 10);
        let mut complete = false;
        while last_create.elapsed() < within {
            let (i, a) = {
                let a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                (a.ingress.len(), a.announced.len())
            };
            if i >= n && a >= n {
                complete = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for w in &watches {
            w.abort();
        }
        let (gained1, _, _) = self.churn().await;
        let r = {
            let a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
            let after = |times: &BTreeMap<String, Instant>, from: Instant| {
                last_after(times, from).map(|s| round(s, 3))
            };
            ScaleRun {
                services: n,
                creates_s: Some(round((last_create - first).as_secs_f64(), 2)),
                complete,
                ingress_written: a.ingress.len(),
                announcer_written: a.announced.len(),
                last_create_to_last_ingress_s: after(&a.ingress, last_create),
                last_create_to_last_announcer_s: after(&a.announced, last_create),
                first_create_to_last_ingress_s: after(&a.ingress, first),
                first_create_to_last_announcer_s: after(&a.announced, first),
                ips_gained: gained1.zip(gained0).map(|(b, a)| b - a),
            }
        };
        if !complete {
            self.anomaly(format!(
                "scale, {n} Services: not every status written within {within:?} of the last create: {}",
                compact(&r)
            ));
        }
        Ok(r)
    }

    /// Deletes the benchmark's Services and EndpointSlices of one set (`speaker-bench/set=SET`,
    /// as [`Bench::create_service`] labels them), and waits (bounded) until the Services are
    /// gone, so the next run can make Services of the same names. Services cannot be deleted
    /// as a collection (the API server refuses `deletecollection` on them), so one by one.
    pub(crate) async fn delete_set(&self, set: &str) {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().labels(&format!("{SET_LABEL}={set}"));
        let dp = DeleteParams::default();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(600) {
            let names: Vec<String> = match services.list_metadata(&lp).await {
                Ok(list) => list
                    .items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect(),
                Err(e) => {
                    log(format!("listing the {set} Services to delete them: {e}"));
                    Vec::new()
                }
            };
            if names.is_empty() {
                let _ = slices.delete_collection(&dp, &lp).await;
                return;
            }
            futures::stream::iter(names.iter().map(|name| {
                let services = services.clone();
                let dp = dp.clone();
                async move {
                    let _ = services.delete(name, &dp).await;
                }
            }))
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        log(format!(
            "Services of the set {set} still there after 10 min"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_arrival_counts() {
        let t0 = Instant::now();
        let mut times = BTreeMap::new();
        assert_eq!(last_after(&times, t0), None);
        times.insert("a".to_string(), t0 + Duration::from_millis(1500));
        times.insert("b".to_string(), t0 + Duration::from_millis(500));
        assert_eq!(last_after(&times, t0), Some(1.5));
        // An arrival before `from` counts as 0.
        assert_eq!(last_after(&times, t0 + Duration::from_secs(9)), Some(0.0));
    }

    #[test]
    fn the_announced_condition() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "status": {"conditions": [{"type": ANNOUNCED_CONDITION, "status": "False",
                "lastTransitionTime": "2026-12-01T00:00:00Z", "reason": "r", "message": "m"}]}
        }))
        .unwrap();
        assert!(!herald_announced(&s));
        s.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        assert!(herald_announced(&s));
    }
}
