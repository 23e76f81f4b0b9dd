//! The cluster phases: direct patches (the API server's limit), drain (a controller starting over N
//! pending Services) and live (N Services created while it runs).

use super::*;

/// The limit: N status patches of the controller's shape (`writer::status_patch`, field
/// manager `herald-controller`, strategic merge patch on `status`; without the UID and
/// resourceVersion preconditions, which these Services do not need), sent directly at the same
/// concurrency to the N Services of `NS_DIRECT`, whose class nobody serves.
///
/// `ns` is `NS_DIRECT`, or `NS` for the cross-check on the drain's control plane once the
/// controller has stopped (the IPs written are then outside the pool; nobody reads them).
pub(crate) async fn direct_patch(
    client: &Client,
    opts: &Opts,
    ns: &str,
) -> anyhow::Result<DirectPatch> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let base = ip_to_u128(DIRECT_BASE.parse()?);
    log(format!(
        "direct n={}: patching status, {} in flight",
        opts.n, opts.concurrency
    ));
    let cpu0 = sample_cpu();
    let patch = run_ops("patch", opts.n, opts.concurrency, |i| {
        let api = api.clone();
        let params = params.clone();
        let ip = u128_to_ip(Family::V6, base + i as u128 + 1);
        let write = StatusWrite {
            key: ServiceKey::new(ns.to_string(), svc_name(i)),
            uid: None,
            resource_version: None,
            ips: Some(vec![ip]),
            announced: None,
        };
        async move {
            api.patch_status(
                &svc_name(i),
                &params,
                &Patch::Strategic(status_patch(&write)),
            )
            .await
            .map(|_| ())
        }
    })
    .await?;
    let cpu1 = sample_cpu();
    log(format!(
        "direct n={}: {} patches in {:.2}s = {:.0}/s",
        opts.n,
        opts.n,
        patch.elapsed().as_secs_f64(),
        opts.n as f64 / patch.elapsed().as_secs_f64()
    ));
    Ok(DirectPatch {
        throughput: patch.throughput(opts.n),
        window: cpu_delta(&cpu0, &cpu1, 0.0),
    })
}

/// The drain: N Services wait when the controller starts. Times from its start, from
/// /readyz (caches synced) and from leadership to the last status written.
pub(crate) async fn drain(client: &Client, opts: &Opts, tag: &str) -> anyhow::Result<Drain> {
    let cpu0 = sample_cpu();
    let mut c = ControllerProc::spawn(opts, tag)?;
    let spawned = c.spawned;
    let (ready, leading) = c.wait_ready(opts.timeout()).await?;
    log(format!(
        "controller ready after {:.2}s, leading after {:.2}s",
        (ready - spawned).as_secs_f64(),
        (leading - spawned).as_secs_f64()
    ));
    let (last, _) = c
        .wait_status_writes(opts.n, spawned, opts.timeout())
        .await?;
    let at_last = c.sample();
    let cpu1 = sample_cpu();
    let from_start = last - spawned;
    let from_ready = last - ready;
    log(format!(
        "drain n={}: last status {:.2}s after start, {:.2}s after ready ({:.0}/s)",
        opts.n,
        from_start.as_secs_f64(),
        from_ready.as_secs_f64(),
        opts.n as f64 / from_ready.as_secs_f64()
    ));
    let (events_done, scrape) = c.wait_events(opts.n, opts.events_timeout).await?;
    let end = c.sample();
    let without = verify(client, opts).await?;
    let cost = controller_cost(&c, at_last, end, &scrape);
    c.stop().await?;
    Ok(Drain {
        start_to_ready_s: Some(secs(ready - spawned)),
        start_to_leading_s: Some(secs(leading - spawned)),
        start_to_last_status_s: Some(secs(from_start)),
        ready_to_last_status_s: Some(secs(from_ready)),
        rate_from_ready_per_s: fig(opts.n as f64 / from_ready.as_secs_f64(), 1),
        rate_from_start_per_s: fig(opts.n as f64 / from_start.as_secs_f64(), 1),
        events_done_after_start_s: events_done.map(|t| secs(t - spawned)),
        services_without_ip: without,
        window: cpu_delta(&cpu0, &cpu1, at_last.0),
        cost,
    })
}

/// `direct` alone: N Services of no served class, then the N patches.
pub(crate) async fn phase_direct(opts: &Opts) -> anyhow::Result<()> {
    let client = setup(opts).await?;
    let create = create_services(&client, Sets::Direct, opts).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patch = direct_patch(&client, opts, NS_DIRECT).await?;
    record(
        opts,
        &BenchResult::Direct(DirectRun {
            n: opts.n,
            rep: opts.rep,
            concurrency: opts.concurrency,
            create: create.throughput(opts.n),
            direct: patch,
        }),
    )
}

/// `drain` alone: N Services of the served class, then the controller starts.
pub(crate) async fn phase_drain(opts: &Opts) -> anyhow::Result<()> {
    opts.controller()?;
    let client = setup(opts).await?;
    log(format!(
        "drain n={} pool {}: creating Services with no controller running",
        opts.n, opts.pool
    ));
    let create = create_services(&client, Sets::Served, opts).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tag = format!(
        "drain-{}-rep{}-{}",
        opts.n,
        opts.rep,
        opts.pool.replace([':', '/'], "_")
    );
    let drained = drain(&client, opts, &tag).await?;
    // Cross-check of the limit on this very control plane, right after the drain: the same
    // N patches sent directly to the same N Services (the controller has stopped).
    tokio::time::sleep(Duration::from_secs(1)).await;
    log(format!(
        "drain n={}: limit on the same control plane",
        opts.n
    ));
    let after = direct_patch(&client, opts, NS).await?;
    record(
        opts,
        &BenchResult::Drain(Box::new(DrainRun {
            n: opts.n,
            rep: opts.rep,
            pool: opts.pool.clone(),
            create: create.throughput(opts.n),
            drain: drained,
            direct_after: after,
        })),
    )
}

/// Live: the controller runs; N Services are created as fast as possible (concurrency C);
/// time from the first create to the last status, and from the last create to it.
pub(crate) async fn phase_live(opts: &Opts) -> anyhow::Result<()> {
    opts.controller()?;
    let client = setup(opts).await?;
    let mut c = ControllerProc::spawn(opts, &format!("live-{}", opts.n))?;
    let (ready, _) = c.wait_ready(opts.timeout()).await?;
    log(format!(
        "controller ready after {:.2}s",
        (ready - c.spawned).as_secs_f64()
    ));
    // Let the initial pool status write land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu_ctl0, _, _) = c.sample();
    let cpu0 = sample_cpu();
    log(format!(
        "live n={}: creating Services, {} in flight",
        opts.n, opts.concurrency
    ));
    // The controller's counter is polled while the Services are being created.
    let addr = c.addr;
    let n = opts.n;
    let timeout = opts.timeout();
    let poller = tokio::spawn(async move {
        poll_status_writes(addr, n, Instant::now(), timeout, || Ok(()))
            .await
            .map(|(at, _)| at)
    });
    let create = match create_services(&client, Sets::Served, opts).await {
        Ok(c) => c,
        Err(e) => {
            poller.abort();
            return Err(e);
        }
    };
    let last = poller.await??;
    let at_last = c.sample();
    let cpu1 = sample_cpu();
    let total = last - create.first_start;
    let after_last_create = last.saturating_duration_since(create.last_end);
    log(format!(
        "live n={}: first create -> last status {:.2}s ({:.0}/s); last create -> last status {:.3}s",
        opts.n,
        total.as_secs_f64(),
        opts.n as f64 / total.as_secs_f64(),
        after_last_create.as_secs_f64()
    ));
    let (events_done, scrape) = c.wait_events(opts.n, opts.events_timeout).await?;
    let end = c.sample();
    let without = verify(&client, opts).await?;
    let cost = controller_cost(&c, at_last, end, &scrape);
    c.stop().await?;
    record(
        opts,
        &BenchResult::Live(Box::new(LiveRun {
            n: opts.n,
            pool: opts.pool.clone(),
            create: create.throughput(opts.n),
            first_create_to_last_status_s: Some(secs(total)),
            last_create_to_last_status_s: Some(secs(after_last_create)),
            rate_per_s: fig(opts.n as f64 / total.as_secs_f64(), 1),
            events_done_after_first_create_s: events_done.map(|t| secs(t - create.first_start)),
            controller_cpu_s_in_window: fig(at_last.0 - cpu_ctl0, 2),
            services_without_ip: without,
            window: cpu_delta(&cpu0, &cpu1, at_last.0 - cpu_ctl0),
            cost,
        })),
    )
}
