//! Micro-benchmarks of the allocator and the index, without a cluster.

use super::*;

pub(crate) fn v6_request() -> ServiceRequest {
    ServiceRequest {
        requested_ips: vec![],
        pool: None,
        sharing_key: None,
        families: FamilyPolicy::Single(Family::V6),
        ports: vec![ServicePort {
            protocol: "TCP".into(),
            port: 80,
        }],
        backend: BackendKey::Cluster,
        deprecated_annotations: vec![],
    }
}

pub(crate) fn allocator_with(cidr: &str) -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(vec![PoolPolicy::from_spec("bench", &pool_spec(&[cidr]))]);
    a
}

pub(crate) fn allocate_one(
    a: &mut Allocator,
    key: &ServiceKey,
    request: &ServiceRequest,
    labels: &Labels,
) {
    let ctx = ServiceContext {
        key,
        request,
        namespace_labels: labels,
        service_labels: labels,
    };
    if let Err(e) = a.allocate(ctx) {
        panic!("allocation failed: {e}");
    }
}

/// What the allocator micro-benchmarks allocate: `n` Service keys, an IPv6 request, no labels,
/// and how many iterations make a stable median for `n`.
pub(crate) fn fill_inputs(n: usize) -> (Vec<ServiceKey>, ServiceRequest, Labels, usize) {
    let keys = (0..n)
        .map(|i| ServiceKey::new("bench", svc_name(i)))
        .collect();
    (
        keys,
        v6_request(),
        Labels::new(),
        (200_000 / n).clamp(10, 2000),
    )
}

/// Allocates `n` Services into a fresh allocator over `cidr`, `iterations` times; ns per
/// allocation (median over iterations), and ns per allocation of the first and the last tenth.
pub(crate) fn micro_fill(cidr: &str, n: usize) -> Micro {
    let (keys, request, labels, iterations) = fill_inputs(n);
    let tenth = (n / 10).max(1);
    let mut per_iter = Vec::new();
    let (mut first, mut last) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..iterations {
        let mut a = allocator_with(cidr);
        let start = Instant::now();
        let mut first_end = start;
        let mut last_start = start;
        for (i, key) in keys.iter().enumerate() {
            if i == n - tenth {
                last_start = Instant::now();
            }
            allocate_one(&mut a, key, &request, &labels);
            if i + 1 == tenth {
                first_end = Instant::now();
            }
        }
        let end = Instant::now();
        per_iter.push((end - start).as_nanos() as f64 / n as f64);
        first += first_end - start;
        last += end - last_start;
        std::hint::black_box(&a);
    }
    let per_tenth = |d: Duration| fig(d.as_nanos() as f64 / (iterations * tenth) as f64, 0);
    Micro::Fill {
        pool: cidr.to_string(),
        n,
        iterations,
        ns_per_alloc: fig(median(per_iter.clone()), 0),
        ns_per_alloc_min: fig(per_iter.iter().copied().fold(f64::INFINITY, f64::min), 0),
        ns_per_alloc_first_tenth: per_tenth(first),
        ns_per_alloc_last_tenth: per_tenth(last),
    }
}

/// Allocates `n`, frees every other one (n/2 single-address holes: a free list of ~n/2
/// spans), then allocates n/2 again: the holes are taken lowest first.
pub(crate) fn micro_fragmented(cidr: &str, n: usize) -> Micro {
    let (keys, request, labels, iterations) = fill_inputs(n);
    let (mut release_ns, mut alloc_ns) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let mut a = allocator_with(cidr);
        for key in &keys {
            allocate_one(&mut a, key, &request, &labels);
        }
        let start = Instant::now();
        for key in keys.iter().step_by(2) {
            std::hint::black_box(a.release(key));
        }
        let released = Instant::now();
        for key in keys.iter().step_by(2) {
            allocate_one(&mut a, key, &request, &labels);
        }
        let end = Instant::now();
        let half = keys.iter().step_by(2).count() as f64;
        release_ns.push((released - start).as_nanos() as f64 / half);
        alloc_ns.push((end - released).as_nanos() as f64 / half);
        std::hint::black_box(&a);
    }
    Micro::Fragmented {
        pool: cidr.to_string(),
        n,
        iterations,
        ns_per_release: fig(median(release_ns), 0),
        ns_per_alloc: fig(median(alloc_ns), 0),
    }
}

pub(crate) fn index_service(i: usize) -> Service {
    let mut svc = service(NS, &svc_name(i), CLASS);
    svc.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
    svc
}

/// The controller's whole decision path (the index: Service parsing, allocation, what to
/// write) for N new Services seen before activation, as on a leader's start (the drain).
pub(crate) fn micro_index(cidr: &str, n: usize) -> Micro {
    let services: Vec<Service> = (0..n).map(index_service).collect();
    let mut pool = IPAddressPool::new("bench", pool_spec(&[cidr]));
    pool.metadata.uid = Some("pool-uid".into());
    let iterations = (100_000 / n).clamp(5, 500);
    let (mut apply_ns, mut activate_ns) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let mut index = ControllerIndex::new(ServedClass(Some(CLASS.into())));
        index.apply_pool(&pool);
        let start = Instant::now();
        for svc in &services {
            index.apply_service(svc);
        }
        let applied = Instant::now();
        let actions = index.activate();
        let end = Instant::now();
        let writes = actions
            .iter()
            .filter(|a| matches!(a, Action::WriteStatus(_)))
            .count();
        assert_eq!(writes, n, "every Service gets a status write");
        apply_ns.push((applied - start).as_nanos() as f64 / n as f64);
        activate_ns.push((end - applied).as_nanos() as f64 / n as f64);
        std::hint::black_box(actions);
    }
    Micro::Index {
        pool: cidr.to_string(),
        n,
        iterations,
        ns_per_service_apply: fig(median(apply_ns), 0),
        ns_per_service_activate: fig(median(activate_ns), 0),
    }
}

pub(crate) fn phase_micro(opts: &Opts) -> anyhow::Result<()> {
    let runs: Vec<Box<dyn Fn() -> Micro>> = vec![
        Box::new(|| micro_fill("2001:db8:100::/120", 250)),
        Box::new(|| micro_fill("2001:db8:100::/112", 250)),
        Box::new(|| micro_fill("2001:db8:100::/64", 250)),
        Box::new(|| micro_fill("2001:db8:100::/112", 10_000)),
        Box::new(|| micro_fill("2001:db8:100::/64", 10_000)),
        Box::new(|| micro_fill("2001:db8:100::/112", 65_536)),
        Box::new(|| micro_fill("2001:db8:100::/64", 65_536)),
        Box::new(|| micro_fragmented("2001:db8:100::/120", 250)),
        Box::new(|| micro_fragmented("2001:db8:100::/112", 10_000)),
        Box::new(|| micro_fragmented("2001:db8:100::/64", 10_000)),
        Box::new(|| micro_index("2001:db8:100::/120", 250)),
        Box::new(|| micro_index("2001:db8:100::/112", 10_000)),
        Box::new(|| micro_index("2001:db8:100::/64", 10_000)),
    ];
    for run in runs {
        let result = run();
        let (scenario, pool, n) = match &result {
            Micro::Fill { pool, n, .. } => ("fill", pool, n),
            Micro::Fragmented { pool, n, .. } => ("fragmented", pool, n),
            Micro::Index { pool, n, .. } => ("index", pool, n),
        };
        log(format!("micro {scenario} {pool} n={n}"));
        record(opts, &BenchResult::Micro(result))?;
    }
    Ok(())
}
