//! The benchmark's objects in the lab's API server: namespaces, the pool, Services created at a
//! bounded concurrency, and the check that every Service got an IP.

use super::*;

pub(crate) async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

pub(crate) async fn apply_pool(client: &Client, cidr: &str) -> anyhow::Result<()> {
    let api: Api<IPAddressPool> = Api::all(client.clone());
    let mut pool = IPAddressPool::new("bench", pool_spec(&[cidr]));
    pool.metadata.labels = Some(BTreeMap::from([(
        POOL_LABEL.0.to_string(),
        POOL_LABEL.1.to_string(),
    )]));
    api.patch(
        "bench",
        &PatchParams::apply("herald-bench").force(),
        &Patch::Apply(&pool),
    )
    .await
    .context("applying the benchmark pool")?;
    Ok(())
}

/// Fresh cluster state for a phase: CRDs (via the harness), namespaces, the pool.
pub(crate) async fn setup(opts: &Opts) -> anyhow::Result<Client> {
    let client = lab_client().await?;
    for ns in [NS, NS_DIRECT, LEASE_NS] {
        ensure_namespace(&client, ns).await?;
        let existing: Api<Service> = Api::namespaced(client.clone(), ns);
        if !existing
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty()
        {
            bail!(
                "namespace {ns} already holds Services: run each phase on a fresh control plane (tests/bench/run.sh does)"
            );
        }
    }
    apply_pool(&client, &opts.pool).await?;
    Ok(client)
}

pub(crate) fn service(ns: &str, name: &str, class: &str) -> Service {
    herald_fixtures::service(ns, name)
        .class(class)
        // IPv6 single-stack: the lab's IPv4 Service range holds only ~253 ClusterIPs.
        .families(&["IPv6"])
        .selector(&[("app", name)])
        .spec_with(|spec| {
            spec.ip_family_policy = Some("SingleStack".into());
            // No NodePorts: the API server's default range holds only 2,768 of them, and
            // layer-2 announcement does not need them.
            spec.allocate_load_balancer_node_ports = Some(false);
        })
        .build()
}

pub(crate) fn svc_name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// What a batch of API calls did.
#[derive(Debug)]
pub(crate) struct Ops {
    /// When the first call was sent.
    pub(crate) first_start: Instant,
    /// When the last response arrived.
    pub(crate) last_end: Instant,
    /// Calls retried (429, 5xx, transport errors).
    pub(crate) retries: usize,
    /// Failed attempts by HTTP status (or "transport").
    pub(crate) errors: BTreeMap<String, usize>,
}

impl Ops {
    pub(crate) fn elapsed(&self) -> Duration {
        self.last_end - self.first_start
    }

    pub(crate) fn throughput(&self, n: usize) -> Throughput {
        let t = self.elapsed();
        Throughput {
            time_s: Some(secs(t)),
            rate_per_s: fig(n as f64 / t.as_secs_f64(), 1),
            retries: self.retries,
            errors: self.errors.clone(),
        }
    }
}

/// Runs `op(i)` for `0..n` with `concurrency` calls in flight, retrying 429/5xx/transport
/// errors (bounded), printing progress. `AlreadyExists` on a retried create counts as done.
pub(crate) async fn run_ops<F, Fut>(
    label: &str,
    n: usize,
    concurrency: usize,
    op: F,
) -> anyhow::Result<Ops>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let done = Arc::new(AtomicUsize::new(0));
    let progress = {
        let done = done.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                log(format!(
                    "  {label}: {}/{n} ({:.1}s)",
                    done.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                ));
            }
        })
    };
    // Failed attempts are logged as they happen (the first few); after a call failed for
    // good, the rest are skipped, so that a broken phase ends quickly.
    let logged = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let first_start = Instant::now();
    let results: Vec<(usize, Vec<String>, Result<(), kube::Error>)> = futures::stream::iter(0..n)
        .map(|i| {
            let done = done.clone();
            let op = &op;
            let (logged, failed) = (&logged, &failed);
            async move {
                let mut failures = Vec::new();
                let mut attempt = 0;
                loop {
                    if failed.load(Ordering::Relaxed) > 0 {
                        break (0, failures, Ok(()));
                    }
                    attempt += 1;
                    let result = op(i).await;
                    if let Err(e) = &result
                        && logged.fetch_add(1, Ordering::Relaxed) < 5
                    {
                        log(format!("  {label} #{i} attempt {attempt}: {e}"));
                    }
                    let retryable = match &result {
                        Ok(()) => false,
                        Err(kube::Error::Api(e)) if e.code == 409 && attempt > 1 => {
                            // Created by an attempt whose response was lost.
                            break (attempt - 1, failures, Ok(()));
                        }
                        Err(kube::Error::Api(e)) => {
                            failures.push(e.code.to_string());
                            e.code == 429 || e.code >= 500
                        }
                        Err(_) => {
                            failures.push("transport".into());
                            true
                        }
                    };
                    if !retryable || attempt >= 5 {
                        done.fetch_add(1, Ordering::Relaxed);
                        if result.is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        break (attempt - 1, failures, result);
                    }
                    tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let last_end = Instant::now();
    progress.abort();
    let mut ops = Ops {
        first_start,
        last_end,
        retries: 0,
        errors: BTreeMap::new(),
    };
    let mut failed = Vec::new();
    for (retries, failures, result) in results {
        ops.retries += retries;
        for f in failures {
            *ops.errors.entry(f).or_default() += 1;
        }
        if let Err(e) = result {
            failed.push(e.to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{label}: {} calls failed, first: {}",
            failed.len(),
            failed[0]
        );
    }
    Ok(ops)
}

/// Which Services a phase creates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sets {
    /// N of the served class, in `NS`.
    Served,
    /// N of a class nobody serves, in `NS_DIRECT`.
    Direct,
    /// Both (2N), interleaved, so that neither set is the older one in etcd.
    Both,
}

pub(crate) async fn create_services(
    client: &Client,
    sets: Sets,
    opts: &Opts,
) -> anyhow::Result<Ops> {
    let served: Api<Service> = Api::namespaced(client.clone(), NS);
    let direct: Api<Service> = Api::namespaced(client.clone(), NS_DIRECT);
    let total = if sets == Sets::Both {
        2 * opts.n
    } else {
        opts.n
    };
    let ops = run_ops("create", total, opts.concurrency, |i| {
        let (is_served, i) = match sets {
            Sets::Served => (true, i),
            Sets::Direct => (false, i),
            Sets::Both => (i % 2 == 0, i / 2),
        };
        let (api, svc) = if is_served {
            (served.clone(), service(NS, &svc_name(i), CLASS))
        } else {
            (
                direct.clone(),
                service(NS_DIRECT, &svc_name(i), UNSERVED_CLASS),
            )
        };
        async move { api.create(&PostParams::default(), &svc).await.map(|_| ()) }
    })
    .await?;
    log(format!(
        "created {total} Services in {:.2}s ({:.0}/s)",
        ops.elapsed().as_secs_f64(),
        total as f64 / ops.elapsed().as_secs_f64()
    ));
    Ok(ops)
}

/// Checks that every benchmark Service holds exactly one distinct IP from the pool.
pub(crate) async fn verify(client: &Client, opts: &Opts) -> anyhow::Result<usize> {
    let api: Api<Service> = Api::namespaced(client.clone(), NS);
    let range =
        IpRange::parse(&opts.pool).map_err(|e| anyhow::anyhow!("--pool {}: {e}", opts.pool))?;
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut without = 0;
    let mut continue_token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(1000);
        if let Some(t) = &continue_token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        for svc in &page.items {
            let got = ips(svc);
            match got.as_slice() {
                [] => without += 1,
                [ip] => {
                    let n = ip_to_u128(*ip);
                    if Family::of(*ip) != range.family() || n < range.start() || n > range.end() {
                        bail!(
                            "{}: IP {ip} is outside the pool {}",
                            svc.metadata.name.as_deref().unwrap_or("?"),
                            opts.pool
                        );
                    }
                    if !seen.insert(*ip) {
                        bail!("IP {ip} is held by two Services");
                    }
                }
                more => bail!(
                    "{}: several IPs {more:?}",
                    svc.metadata.name.as_deref().unwrap_or("?")
                ),
            }
        }
        continue_token = page.metadata.continue_.filter(|t| !t.is_empty());
        if continue_token.is_none() {
            break;
        }
    }
    if seen.len() + without != opts.n {
        bail!(
            "expected {} Services, found {}",
            opts.n,
            seen.len() + without
        );
    }
    Ok(without)
}
