//! The Markdown tables of a results file.

use super::*;
use herald_tests::bench::table::Align::{Left as L, Right as R};
use herald_tests::bench::table::Table;

/// A figure with `digits` decimals, or a dash.
pub(crate) fn f(figure: impl Into<Figure>, digits: usize) -> String {
    match figure.into() {
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

/// Average cores used by other work on the machine during a window.
pub(crate) fn other_load(window: &CpuWindow) -> String {
    f(window.other_cores(), 2)
}

/// KiB as MiB.
pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub(crate) fn report(path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows: Vec<BenchResult> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str(line) {
            Ok(row) => rows.push(row),
            Err(e) => log(format!(
                "{}:{}: not a result, skipped: {e}",
                path.display(),
                i + 1
            )),
        }
    }
    let directs: Vec<&DirectRun> = rows
        .iter()
        .filter_map(|r| match r {
            BenchResult::Direct(d) => Some(d),
            _ => None,
        })
        .collect();
    let drains: Vec<&DrainRun> = rows
        .iter()
        .filter_map(|r| match r {
            BenchResult::Drain(d) => Some(d.as_ref()),
            _ => None,
        })
        .collect();
    // A drain pairs with the direct run of the same size and repetition (the default pool).
    let direct_of = |r: &DrainRun| -> Option<&DirectRun> {
        directs
            .iter()
            .copied()
            .find(|d| d.n == r.n && d.rep == r.rep && r.pool == DEFAULT_POOL)
    };
    let pairs: Vec<(&DirectRun, &DrainRun)> = drains
        .iter()
        .filter_map(|r| Some((direct_of(r)?, *r)))
        .collect();
    let mut sizes: Vec<usize> = pairs.iter().map(|(_, r)| r.n).collect();
    sizes.sort();
    sizes.dedup();

    if !pairs.is_empty() {
        println!("### Status writes: the controller's drain vs. the API server's limit\n");
        println!(
            "*Limit*: a fresh control plane with N Services of a class nobody serves; the N \
             status patches sent directly (the controller's patch, field manager and 32 in \
             flight). *Drain*: a fresh control plane with N Services of the served class; the \
             controller starts. One row per repetition; the two phases of a repetition run \
             back to back (odd repetitions: limit first; even: drain first). *Same-CP limit*: \
             the N patches sent again directly, on the drain's control plane right after the \
             drain (controller stopped), to the same N Services: a cross-check that does not \
             depend on two control planes being alike. *Other load*: CPU used by everything \
             else on the machine during each measurement (the lab, controller and bench \
             excluded), in cores out of 2.\n"
        );
        let mut t = Table::new(&[
            ("Services", R),
            ("rep", R),
            ("limit: N patches", R),
            ("limit rate", R),
            ("drain: start → ready", R),
            ("ready → last status", R),
            ("start → last status", R),
            ("drain rate (from ready)", R),
            ("drain / limit", R),
            ("same-CP limit rate", R),
            ("drain / same-CP limit", R),
            ("other load (cores): limit / drain / same-CP", L),
        ]);
        for (d, r) in &pairs {
            let x = &r.drain;
            let drain_rate = x.rate_from_ready_per_s.unwrap_or(0.0);
            let ratio = drain_rate / d.direct.throughput.rate_per_s.unwrap_or(f64::INFINITY);
            let same = r.direct_after.throughput.rate_per_s;
            t.row([
                r.n.to_string(),
                r.rep.to_string(),
                format!("{} s", f(d.direct.throughput.time_s, 2)),
                format!("{}/s", f(d.direct.throughput.rate_per_s, 0)),
                format!("{} s", f(x.start_to_ready_s, 2)),
                format!("{} s", f(x.ready_to_last_status_s, 2)),
                format!("{} s", f(x.start_to_last_status_s, 2)),
                format!("{}/s", f(x.rate_from_ready_per_s, 0)),
                format!("{:.0}%", 100.0 * ratio),
                same.map(|l| format!("{l:.0}/s"))
                    .unwrap_or_else(|| "–".into()),
                same.map(|l| format!("{:.0}%", 100.0 * drain_rate / l))
                    .unwrap_or_else(|| "–".into()),
                format!(
                    "{} / {} / {}",
                    other_load(&d.direct.window),
                    other_load(&x.window),
                    other_load(&r.direct_after.window)
                ),
            ]);
        }
        print!("{}", t.render());
        for n in &sizes {
            let of_n: Vec<&(&DirectRun, &DrainRun)> =
                pairs.iter().filter(|(_, r)| r.n == *n).collect();
            let limits: Vec<f64> = of_n
                .iter()
                .filter_map(|(d, _)| d.direct.throughput.rate_per_s)
                .collect();
            let drains: Vec<f64> = of_n
                .iter()
                .filter_map(|(_, r)| r.drain.rate_from_ready_per_s)
                .collect();
            let starts: Vec<f64> = of_n
                .iter()
                .filter_map(|(_, r)| r.drain.rate_from_start_per_s)
                .collect();
            let same: Vec<f64> = of_n
                .iter()
                .filter_map(|(_, r)| r.direct_after.throughput.rate_per_s)
                .collect();
            let (limit, drain) = (median(limits), median(drains));
            print!(
                "- **{n} Services** ({} repetitions): median limit {limit:.0}/s, median drain {drain:.0}/s from ready ({:.0}/s from process start): drain / limit **{:.0}%** (from start: {:.0}%)",
                of_n.len(),
                median(starts.clone()),
                100.0 * drain / limit,
                100.0 * median(starts) / limit,
            );
            if same.is_empty() {
                println!();
            } else {
                let same = median(same);
                println!(
                    "; median same-CP limit {same:.0}/s: drain / same-CP limit **{:.0}%**",
                    100.0 * drain / same
                );
            }
        }
    }

    let live: Vec<&LiveRun> = rows
        .iter()
        .filter_map(|r| match r {
            BenchResult::Live(l) => Some(l.as_ref()),
            _ => None,
        })
        .collect();
    if !live.is_empty() {
        println!("\n### Services created while the controller runs (live)\n");
        println!(
            "N Services created as fast as the API server takes them (32 in flight) while the \
             controller runs; its status writes compete with the creates.\n"
        );
        let mut t = Table::new(&[
            ("Services", R),
            ("creates (first → last)", R),
            ("first create → last status", R),
            ("last create → last status", R),
            ("rate (N / first create → last status)", R),
        ]);
        for r in &live {
            t.row([
                r.n.to_string(),
                format!(
                    "{} s ({}/s)",
                    f(r.create.time_s, 2),
                    f(r.create.rate_per_s, 0)
                ),
                format!("{} s", f(r.first_create_to_last_status_s, 2)),
                format!("{} s", f(r.last_create_to_last_status_s, 3)),
                format!("{}/s", f(r.rate_per_s, 0)),
            ]);
        }
        print!("{}", t.render());
    }

    println!("\n### Controller cost (the release binary, its own process)\n");
    println!(
        "CPU = utime + stime of the controller process since it started; *at last status* is \
         read the moment the last status write is seen, *incl. Events* once it has also \
         published its N `IPAllocated` Events (one at a time, after the status writes). API \
         server / etcd CPU: over the measured window (controller start, or first create, to \
         last status).\n"
    );
    let mut t = Table::new(&[
        ("phase", L),
        ("Services", R),
        ("peak RSS (VmHWM)", R),
        ("CPU at last status", R),
        ("CPU incl. Events", R),
        ("all Events published after", R),
        ("status write errors", R),
        ("WARN/ERROR log lines", R),
        ("API server CPU", R),
        ("etcd CPU", R),
    ]);
    // (phase, Services, what it cost, when its Events were all out, its window)
    let mut cost_rows: Vec<(String, usize, &ControllerCost, Figure, &CpuWindow)> = Vec::new();
    for (_, r) in &pairs {
        let d = &r.drain;
        cost_rows.push((
            format!("drain (rep {})", r.rep),
            r.n,
            &d.cost,
            d.events_done_after_start_s,
            &d.window,
        ));
    }
    for r in &live {
        cost_rows.push((
            "live".into(),
            r.n,
            &r.cost,
            r.events_done_after_first_create_s,
            &r.window,
        ));
    }
    for (name, n, cost, events, window) in cost_rows {
        let levels = &cost.controller_log.log_levels;
        let warn = levels.get("WARN").unwrap_or(&0) + levels.get("ERROR").unwrap_or(&0);
        t.row([
            name,
            n.to_string(),
            format!("{} MiB", mib(cost.controller_vmhwm_kb)),
            format!("{} s", f(cost.controller_cpu_s_at_last_status, 2)),
            format!("{} s", f(cost.controller_cpu_s_total, 2)),
            match events {
                None => "not within the wait".into(),
                Some(s) => format!("{} s", f(s, 1)),
            },
            cost.status_writes_error.to_string(),
            warn.to_string(),
            format!("{} s", f(window.apiserver_cpu_s, 1)),
            format!("{} s", f(window.etcd_cpu_s, 1)),
        ]);
    }
    print!("{}", t.render());

    let pools: Vec<&DrainRun> = drains
        .iter()
        .copied()
        .filter(|r| direct_of(r).is_none())
        .collect();
    if !pools.is_empty() {
        println!("\n### Drain by pool size (end to end)\n");
        let mut t = Table::new(&[
            ("pool", L),
            ("addresses", R),
            ("Services", R),
            ("start → ready", R),
            ("ready → last status", R),
            ("start → last status", R),
            ("drain rate (from ready)", R),
            ("same-CP limit rate", R),
            ("controller CPU at last status", R),
        ]);
        for r in &pools {
            let d = &r.drain;
            t.row([
                format!("`{}`", r.pool),
                pool_size(&r.pool),
                r.n.to_string(),
                format!("{} s", f(d.start_to_ready_s, 3)),
                format!("{} s", f(d.ready_to_last_status_s, 3)),
                format!("{} s", f(d.start_to_last_status_s, 3)),
                format!("{}/s", f(d.rate_from_ready_per_s, 0)),
                format!("{}/s", f(r.direct_after.throughput.rate_per_s, 0)),
                format!("{} s", f(d.cost.controller_cpu_s_at_last_status, 2)),
            ]);
        }
        print!("{}", t.render());
        let mut names: Vec<(&str, usize)> = pools.iter().map(|r| (r.pool.as_str(), r.n)).collect();
        let size = |pool: &str| IpRange::parse(pool).map_or(0, |r| r.end() - r.start());
        names.sort_by_key(|&(pool, n)| (n, size(pool)));
        names.dedup();
        for (pool, n) in names {
            let of_pool: Vec<&&DrainRun> = pools
                .iter()
                .filter(|r| r.pool == pool && r.n == n)
                .collect();
            let times: Vec<f64> = of_pool
                .iter()
                .filter_map(|r| r.drain.ready_to_last_status_s)
                .collect();
            let rates: Vec<f64> = of_pool
                .iter()
                .filter_map(|r| r.drain.rate_from_ready_per_s)
                .collect();
            println!(
                "- `{pool}` ({} addresses), {n} Services: median ready → last status {:.3} s, median {:.0}/s ({} runs)",
                pool_size(pool),
                median(times),
                median(rates),
                of_pool.len(),
            );
        }
    }

    let micro: Vec<&Micro> = rows
        .iter()
        .filter_map(|r| match r {
            BenchResult::Micro(m) => Some(m),
            _ => None,
        })
        .collect();
    if !micro.is_empty() {
        println!(
            "\n### Allocator micro-benchmark (`herald_controller::allocator::Allocator`, one IPv6 pool)\n"
        );
        println!(
            "*fill*: N Services allocated into an empty pool. *fragmented*: N allocated, every \
             other one released (N/2 one-address holes), then N/2 allocated again. Median over \
             the iterations; *first/last tenth*: the first and the last tenth of each fill.\n"
        );
        let mut t = Table::new(&[
            ("scenario", L),
            ("pool", L),
            ("addresses", R),
            ("Services", R),
            ("iterations", R),
            ("ns / allocation (median)", R),
            ("first tenth", R),
            ("last tenth", R),
            ("ns / release", R),
        ]);
        for r in &micro {
            let (scenario, pool, n, iterations, alloc, first, last, release) = match r {
                Micro::Fill {
                    pool,
                    n,
                    iterations,
                    ns_per_alloc,
                    ns_per_alloc_first_tenth,
                    ns_per_alloc_last_tenth,
                    ..
                } => (
                    "fill",
                    pool,
                    n,
                    iterations,
                    *ns_per_alloc,
                    *ns_per_alloc_first_tenth,
                    *ns_per_alloc_last_tenth,
                    None,
                ),
                Micro::Fragmented {
                    pool,
                    n,
                    iterations,
                    ns_per_release,
                    ns_per_alloc,
                } => (
                    "fragmented",
                    pool,
                    n,
                    iterations,
                    *ns_per_alloc,
                    None,
                    None,
                    *ns_per_release,
                ),
                Micro::Index { .. } => continue,
            };
            t.row([
                scenario.to_string(),
                format!("`{pool}`"),
                pool_size(pool),
                n.to_string(),
                iterations.to_string(),
                f(alloc, 0),
                f(first, 0),
                f(last, 0),
                f(release, 0),
            ]);
        }
        print!("{}", t.render());
        let index: Vec<&&Micro> = micro
            .iter()
            .filter(|r| matches!(r, Micro::Index { .. }))
            .collect();
        if !index.is_empty() {
            println!(
                "\n### Whole decision path (`herald_controller::index::ControllerIndex`: parse, allocate, decide the write)\n"
            );
            let mut t = Table::new(&[
                ("pool", L),
                ("addresses", R),
                ("Services", R),
                ("ns / Service applied (watch event)", R),
                ("ns / Service decided (activate)", R),
            ]);
            for r in index {
                let Micro::Index {
                    pool,
                    n,
                    ns_per_service_apply,
                    ns_per_service_activate,
                    ..
                } = r
                else {
                    continue;
                };
                t.row([
                    format!("`{pool}`"),
                    pool_size(pool),
                    n.to_string(),
                    f(*ns_per_service_apply, 0),
                    f(*ns_per_service_activate, 0),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}

pub(crate) fn pool_size(cidr: &str) -> String {
    match IpRange::parse(cidr) {
        Ok(r) => {
            let n = r.end() - r.start() + 1;
            match n.checked_ilog2() {
                Some(b) if n.is_power_of_two() && b > 20 => format!("2^{b}"),
                _ => n.to_string(),
            }
        }
        Err(_) => "?".into(),
    }
}
