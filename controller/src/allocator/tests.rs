use super::*;
use herald_config::pool::{IPAddressPoolSpec, ServiceAllocation};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(name: &str, addresses: &[&str]) -> PoolPolicy {
    pool_with(name, addresses, |_| {})
}

fn pool_with(
    name: &str,
    addresses: &[&str],
    edit: impl FnOnce(&mut IPAddressPoolSpec),
) -> PoolPolicy {
    let mut spec = IPAddressPoolSpec::new(addresses);
    edit(&mut spec);
    PoolPolicy::from_spec(name, &spec)
}

fn request(families: FamilyPolicy) -> ServiceRequest {
    ServiceRequest {
        requested_ips: vec![],
        pool: None,
        sharing_key: None,
        families,
        ports: vec![ServicePort {
            protocol: "TCP".into(),
            port: 80,
        }],
        backend: BackendKey::Cluster,
        deprecated_annotations: vec![],
    }
}

fn v4() -> ServiceRequest {
    request(FamilyPolicy::Single(Family::V4))
}

struct Svc {
    key: ServiceKey,
    request: ServiceRequest,
    labels: Labels,
}

impl Svc {
    fn new(ns: &str, name: &str, request: ServiceRequest) -> Svc {
        Svc {
            key: ServiceKey::new(ns, name),
            request,
            labels: Labels::new(),
        }
    }
}

static NO_LABELS: std::sync::LazyLock<Labels> = std::sync::LazyLock::new(Labels::new);

fn ctx(s: &Svc) -> ServiceContext<'_> {
    ServiceContext {
        key: &s.key,
        request: &s.request,
        namespace_labels: &NO_LABELS,
        service_labels: &s.labels,
    }
}

#[test]
fn lowest_free_first_and_reuse_after_release() {
    let mut a = Allocator::new();
    a.set_pools(vec![pool("p", &["192.0.2.0/30"])]);
    let s1 = Svc::new("n", "a", v4());
    let s2 = Svc::new("n", "b", v4());
    assert_eq!(a.allocate(ctx(&s1)).unwrap(), vec![ip("192.0.2.0")]);
    assert_eq!(a.allocate(ctx(&s2)).unwrap(), vec![ip("192.0.2.1")]);
    assert_eq!(a.release(&s1.key), vec![ip("192.0.2.0")]);
    let s3 = Svc::new("n", "c", v4());
    assert_eq!(a.allocate(ctx(&s3)).unwrap(), vec![ip("192.0.2.0")]);
    let u = a.usage("p");
    assert_eq!((u.assigned[0], u.available[0], u.total[0]), (2, 2, 4));
}

#[test]
fn exhaustion_names_pools_and_families() {
    let mut a = Allocator::new();
    a.set_pools(vec![pool("p", &["192.0.2.7"])]);
    a.allocate(ctx(&Svc::new("n", "a", v4()))).unwrap();
    let err = a.allocate(ctx(&Svc::new("n", "b", v4()))).unwrap_err();
    assert_eq!(err.to_string(), "no available IPs for IPv4 in pools p");
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_255() {
    let mut a = Allocator::new();
    a.set_pools(vec![pool_with(
        "p",
        &["198.51.100.255-198.51.101.1"],
        |s| s.avoid_buggy_ips = true,
    )]);
    let got = a.allocate(ctx(&Svc::new("n", "a", v4()))).unwrap();
    assert_eq!(got, vec![ip("198.51.101.1")]);
    assert!(a.allocate(ctx(&Svc::new("n", "b", v4()))).is_err());
    assert_eq!(a.usage("p").total[0], 1);
}

#[test]
fn requested_ip_and_pool() {
    let mut a = Allocator::new();
    a.set_pools(vec![
        pool("p", &["192.0.2.0/28"]),
        pool_with("manual", &["192.0.2.16/28"], |s| s.auto_assign = false),
    ]);
    let mut r = v4();
    r.requested_ips = vec![ip("192.0.2.20")];
    assert_eq!(
        a.allocate(ctx(&Svc::new("n", "a", r))).unwrap(),
        vec![ip("192.0.2.20")]
    );
    let mut r = v4();
    r.pool = Some("manual".into());
    assert_eq!(
        a.allocate(ctx(&Svc::new("n", "b", r))).unwrap(),
        vec![ip("192.0.2.16")]
    );
    // autoAssign false: never handed out unasked.
    for i in 0..16 {
        let got = a
            .allocate(ctx(&Svc::new("n", &format!("x{i}"), v4())))
            .unwrap();
        assert!(got[0] < ip("192.0.2.16"));
    }
    let mut r = v4();
    r.requested_ips = vec![ip("203.0.113.1")];
    let err = a.allocate(ctx(&Svc::new("n", "c", r))).unwrap_err();
    assert_eq!(err, AllocationError::NotInAnyPool(ip("203.0.113.1")));
    let mut r = v4();
    r.pool = Some("nope".into());
    assert_eq!(
        a.allocate(ctx(&Svc::new("n", "d", r))).unwrap_err(),
        AllocationError::UnknownPool("nope".into())
    );
    let mut r = v4();
    r.requested_ips = vec![ip("192.0.2.20")];
    assert!(matches!(
        a.allocate(ctx(&Svc::new("n", "e", r))),
        Err(AllocationError::InUse { .. })
    ));
}

#[test]
fn priorities_and_namespaces() {
    let mut a = Allocator::new();
    a.set_pools(vec![
        pool("general", &["192.0.2.0/28"]),
        pool_with("second", &["192.0.2.32/28"], |s| {
            s.service_allocation = Some(ServiceAllocation {
                priority: Some(20),
                ..Default::default()
            })
        }),
        pool_with("first", &["192.0.2.48/28"], |s| {
            s.service_allocation = Some(ServiceAllocation {
                priority: Some(10),
                namespaces: vec!["gold".into()],
                ..Default::default()
            })
        }),
    ]);
    assert_eq!(
        a.allocate(ctx(&Svc::new("gold", "a", v4()))).unwrap(),
        vec![ip("192.0.2.48")]
    );
    assert_eq!(
        a.allocate(ctx(&Svc::new("tin", "a", v4()))).unwrap(),
        vec![ip("192.0.2.32")]
    );
    let mut r = v4();
    r.pool = Some("first".into());
    assert_eq!(
        a.allocate(ctx(&Svc::new("tin", "b", r))).unwrap_err(),
        AllocationError::PoolNotAllowed("first".into())
    );
}

#[test]
fn dual_stack_policies() {
    let mut a = Allocator::new();
    a.set_pools(vec![
        pool("v4only", &["192.0.2.0/30"]),
        pool("dual", &["192.0.2.8/30", "2001:db8::/126"]),
    ]);
    let req = request(FamilyPolicy::RequireDual(Family::V4, Family::V6));
    let got = a.allocate(ctx(&Svc::new("n", "a", req))).unwrap();
    assert_eq!(got, vec![ip("192.0.2.8"), ip("2001:db8::")]);
    let mut a = Allocator::new();
    a.set_pools(vec![pool("v4only", &["192.0.2.0/30"])]);
    let req = request(FamilyPolicy::RequireDual(Family::V4, Family::V6));
    assert!(a.allocate(ctx(&Svc::new("n", "a", req))).is_err());
    let s = Svc::new(
        "n",
        "b",
        request(FamilyPolicy::PreferDual(Family::V4, Family::V6)),
    );
    assert_eq!(a.allocate(ctx(&s)).unwrap(), vec![ip("192.0.2.0")]);
    assert_eq!(a.extend(ctx(&s)), None);
    a.set_pools(vec![pool("v4only", &["192.0.2.0/30", "2001:db8::/126"])]);
    assert_eq!(a.extend(ctx(&s)), Some(ip("2001:db8::")));
    assert_eq!(a.ips_of(&s.key), &[ip("192.0.2.0"), ip("2001:db8::")]);
}

#[test]
fn sharing_rules() {
    let mut a = Allocator::new();
    a.set_pools(vec![pool("p", &["192.0.2.0/28"])]);
    let shared = |name: &str, port: i32, key: &str| {
        let mut r = v4();
        r.sharing_key = Some(key.into());
        r.ports = vec![ServicePort {
            protocol: "TCP".into(),
            port,
        }];
        Svc::new("n", name, r)
    };
    let a1 = shared("a", 80, "k");
    let b = shared("b", 443, "k");
    let c = shared("c", 443, "k");
    let d = shared("d", 22, "other");
    let ip_a = a.allocate(ctx(&a1)).unwrap();
    assert_eq!(
        a.allocate(ctx(&b)).unwrap(),
        ip_a,
        "same key, other port: shared"
    );
    assert_ne!(a.allocate(ctx(&c)).unwrap(), ip_a, "port clash: not shared");
    assert_ne!(a.allocate(ctx(&d)).unwrap(), ip_a, "other key: not shared");
    // Local policy sharers need the same selector.
    let mut e = shared("e", 8080, "k");
    e.request.backend = BackendKey::Local("app=x".into());
    assert_ne!(a.allocate(ctx(&e)).unwrap(), ip_a);
    // Releasing one sharer keeps the IP held for the other.
    assert!(a.release(&a1.key).is_empty());
    assert_eq!(a.holders(ip_a[0]), vec![&b.key]);
    assert_eq!(a.release(&b.key), ip_a);
}

#[test]
fn overlap_is_reported_and_never_handed_out() {
    let mut a = Allocator::new();
    a.set_pools(vec![
        pool("a", &["192.0.2.0/29"]),
        pool("b", &["192.0.2.4-192.0.2.11"]),
    ]);
    assert_eq!(a.overlaps("a")[0].range.to_string(), "192.0.2.4-192.0.2.7");
    assert_eq!(a.overlaps("b")[0].other, "a");
    for i in 0..8 {
        let got = a
            .allocate(ctx(&Svc::new("n", &format!("s{i}"), v4())))
            .unwrap();
        assert!(
            !(ip("192.0.2.4")..=ip("192.0.2.7")).contains(&got[0]),
            "{got:?}"
        );
    }
    let mut r = v4();
    r.requested_ips = vec![ip("192.0.2.5")];
    assert!(matches!(
        a.allocate(ctx(&Svc::new("n", "x", r))),
        Err(AllocationError::InOverlap { .. })
    ));
}

#[test]
fn held_ips_survive_pool_changes_and_are_rechecked() {
    let mut a = Allocator::new();
    a.set_pools(vec![pool("p", &["192.0.2.0/30"])]);
    let s = Svc::new("n", "a", v4());
    let got = a.allocate(ctx(&s)).unwrap();
    // The pool shrinks away from the IP: still held, but no longer valid.
    a.set_pools(vec![pool("p", &["192.0.2.8/30"])]);
    assert_eq!(a.ips_of(&s.key), got.as_slice());
    assert_eq!(
        a.check(ctx(&s), &got),
        Err(AllocationError::NotInAnyPool(got[0]))
    );
    assert_eq!(a.usage("p").assigned[0], 0);
    // Growing back: valid again and not handed to anyone else.
    a.set_pools(vec![pool("p", &["192.0.2.0/29"])]);
    assert_eq!(a.check(ctx(&s), &got), Ok(()));
    assert_eq!(a.usage("p").assigned[0], 1);
    assert_ne!(a.allocate(ctx(&Svc::new("n", "b", v4()))).unwrap(), got);
}

#[test]
fn per_allocation_work_is_independent_of_pool_size() {
    // A /64 pool: the free list stays one span however large the pool.
    let mut a = Allocator::new();
    a.set_pools(vec![pool("big", &["2001:db8::/64"])]);
    for i in 0..1000 {
        let s = Svc::new(
            "n",
            &format!("s{i}"),
            request(FamilyPolicy::Single(Family::V6)),
        );
        a.allocate(ctx(&s)).unwrap();
    }
    let u = a.usage("big");
    assert_eq!(u.assigned[1], 1000);
    assert_eq!(u.available[1], (1u128 << 64) - 1000);
}
