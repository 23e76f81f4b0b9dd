//! The index against a simulated object store: the writer's actions are applied to the store and
//! echoed back, as the real watch does.

use super::*;
use herald_config::pool::{CONDITION_OVERLAPPING, IPAddressPoolSpec, ServiceAllocation};
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proptest::prelude::*;

#[derive(Clone, Default)]
struct Store {
    services: BTreeMap<ServiceKey, Service>,
    pools: BTreeMap<String, IPAddressPool>,
    events: Vec<EventRecord>,
    clock: i64,
}

impl Store {
    fn add_service(&mut self, svc: Service) {
        let key = ServiceKey::of(&svc).unwrap();
        let mut svc = svc;
        self.clock += 1;
        if let Some(old) = self.services.get(&key) {
            svc.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
            svc.status = old.status.clone();
        } else {
            svc.metadata.creation_timestamp =
                Some(Time(Timestamp::from_second(self.clock).unwrap()));
        }
        self.services.insert(key, svc);
    }

    /// Boots a controller on the store's current content, as a restart does.
    fn boot(&self) -> ControllerIndex {
        let mut index = ControllerIndex::new(ServedClass(None));
        for p in self.pools.values() {
            index.apply_pool(p);
        }
        for s in self.services.values() {
            index.apply_service(s);
        }
        index
    }

    /// Applies actions and echoes the written objects until the index is quiet.
    fn settle(&mut self, index: &mut ControllerIndex, mut actions: Vec<Action>) {
        for _ in 0..100 {
            if actions.is_empty() {
                return;
            }
            for action in actions {
                match action {
                    Action::WriteStatus(w) => {
                        if let Some(svc) = self.services.get_mut(&w.key) {
                            let status = svc.status.get_or_insert_with(Default::default);
                            if let Some(ips) = &w.ips {
                                status.load_balancer = Some(LoadBalancerStatus {
                                    ingress: Some(
                                        ips.iter()
                                            .map(|ip| LoadBalancerIngress {
                                                ip: Some(ip.to_string()),
                                                ..Default::default()
                                            })
                                            .collect(),
                                    ),
                                });
                            }
                            if let Some(a) = &w.announced {
                                let conditions = status.conditions.get_or_insert_with(Vec::new);
                                conditions.retain(|c| c.type_ != announcement::CONDITION);
                                conditions.push(Condition {
                                    type_: announcement::CONDITION.into(),
                                    status: "True".into(),
                                    reason: "Elected".into(),
                                    message: a.message.clone(),
                                    last_transition_time: a.since.clone(),
                                    observed_generation: None,
                                });
                            }
                            index.apply_service(svc);
                        }
                    }
                    Action::Event(e) => self.events.push(e),
                    Action::CountFailure(_) => {}
                }
            }
            actions = index.reconcile();
        }
        panic!("index never settled");
    }

    fn status(&self, key: &ServiceKey) -> Vec<IpAddr> {
        self.services.get(key).map(status_ips).unwrap_or_default()
    }

    fn events_for(&self, name: &str, reason: &str) -> usize {
        self.events
            .iter()
            .filter(|e| {
                e.reason == reason
                    && matches!(&e.regarding, Regarding::Service { key, .. } if key.name == name)
            })
            .count()
    }
}

fn service(
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
    edit: impl FnOnce(&mut ServiceSpec),
) -> Service {
    herald_fixtures::service(ns, name)
        .uid(format!("uid-{ns}-{name}"))
        .annotations(annotations)
        .families(&["IPv4"])
        .spec_with(edit)
        .build()
}

fn pool(
    name: &str,
    addresses: &[&str],
    edit: impl FnOnce(&mut IPAddressPoolSpec),
) -> IPAddressPool {
    let mut p = herald_fixtures::pool(name, addresses, edit);
    p.metadata.generation = Some(1);
    p
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("n", name)
}

fn running(store: &mut Store) -> ControllerIndex {
    let mut index = store.boot();
    let actions = index.activate();
    store.settle(&mut index, actions);
    index
}

fn step(store: &mut Store, index: &mut ControllerIndex) {
    let actions = index.reconcile();
    store.settle(index, actions);
}

#[test]
fn restart_keeps_ips_even_with_pending_services() {
    // MetalLB #2443: on restart, pending Services took IPs that others held in status.
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.1-192.0.2.2"], |_| {}));
    store.add_service(service("n", "a", &[], |_| {}));
    store.add_service(service("n", "b", &[], |_| {}));
    let _ = running(&mut store);
    let before = (store.status(&key("a")), store.status(&key("b")));
    // A pending Service whose name sorts first and was created... the test makes it oldest.
    let mut early = service("n", "0early", &[], |_| {});
    early.metadata.creation_timestamp = Some(Time(Timestamp::from_second(0).unwrap()));
    store.services.insert(key("0early"), early);
    let _ = running(&mut store);
    assert_eq!((store.status(&key("a")), store.status(&key("b"))), before);
    assert!(store.status(&key("0early")).is_empty());
    assert_eq!(store.events_for("0early", reasons::ALLOCATION_FAILED), 1);
}

#[test]
fn pending_service_gets_freed_ip_and_pool_growth() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.1"], |_| {}));
    store.add_service(service("n", "a", &[], |_| {}));
    store.add_service(service("n", "b", &[], |_| {}));
    let mut index = running(&mut store);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.1")]);
    assert!(store.status(&key("b")).is_empty());
    // Failing again and again emits one event, not one per reconcile.
    for _ in 0..5 {
        let svc = store.services[&key("b")].clone();
        index.apply_service(&svc);
        step(&mut store, &mut index);
    }
    assert_eq!(store.events_for("b", reasons::ALLOCATION_FAILED), 1);
    store.services.remove(&key("a"));
    index.delete_service(&key("a"));
    step(&mut store, &mut index);
    assert_eq!(store.status(&key("b")), vec![ip("192.0.2.1")]);

    store.add_service(service("n", "c", &[], |_| {}));
    index.apply_service(&store.services[&key("c")].clone());
    step(&mut store, &mut index);
    assert!(store.status(&key("c")).is_empty());
    let grown = pool("p", &["192.0.2.1-192.0.2.2"], |_| {});
    store.pools.insert("p".into(), grown.clone());
    index.apply_pool(&grown);
    step(&mut store, &mut index);
    assert_eq!(store.status(&key("c")), vec![ip("192.0.2.2")]);
}

#[test]
fn invalid_status_ip_is_cleared_and_reallocated_with_event() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.8/30"], |_| {}));
    let mut svc = service("n", "a", &[], |_| {});
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.7".into()),
                ..Default::default()
            }]),
        }),
        conditions: None,
    });
    store.add_service(svc);
    store.services.get_mut(&key("a")).unwrap().status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.7".into()),
                ..Default::default()
            }]),
        }),
        conditions: None,
    });
    let _ = running(&mut store);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.8")]);
    assert_eq!(store.events_for("a", reasons::CLEAR_ASSIGNMENT), 1);
    assert_eq!(store.events_for("a", reasons::IP_ALLOCATED), 1);
}

#[test]
fn pool_shrink_moves_or_waits_and_deletion_frees() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.0/30"], |_| {}));
    store.add_service(service("n", "a", &[], |_| {}));
    let mut index = running(&mut store);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.0")]);
    let shrunk = pool("p", &["192.0.2.2/31"], |_| {});
    store.pools.insert("p".into(), shrunk.clone());
    index.apply_pool(&shrunk);
    step(&mut store, &mut index);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.2")]);
    store.pools.remove("p");
    index.delete_pool("p");
    step(&mut store, &mut index);
    assert!(store.status(&key("a")).is_empty());
    assert_eq!(store.events_for("a", reasons::ALLOCATION_FAILED), 1);
    // Type changed away from LoadBalancer: the IP is freed and status cleared.
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.0/30"], |_| {}));
    index.apply_pool(&store.pools["p"].clone());
    step(&mut store, &mut index);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.0")]);
    store.add_service(service("n", "a", &[], |s| {
        s.type_ = Some("ClusterIP".into())
    }));
    index.apply_service(&store.services[&key("a")].clone());
    step(&mut store, &mut index);
    assert!(store.status(&key("a")).is_empty());
}

#[test]
fn garbage_annotation_warns_and_keeps_held_ip() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.0/30"], |_| {}));
    store.add_service(service("n", "a", &[], |_| {}));
    store.add_service(service(
        "n",
        "bad",
        &[("herald.dev/loadBalancerIPs", "banana")],
        |_| {},
    ));
    let mut index = running(&mut store);
    assert!(store.status(&key("bad")).is_empty());
    assert_eq!(store.events_for("bad", reasons::INVALID_REQUEST), 1);
    let held = store.status(&key("a"));
    store.add_service(service(
        "n",
        "a",
        &[("herald.dev/address-pool", "")],
        |_| {},
    ));
    index.apply_service(&store.services[&key("a")].clone());
    step(&mut store, &mut index);
    assert_eq!(store.status(&key("a")), held);
    assert_eq!(store.events_for("a", reasons::INVALID_REQUEST), 1);
}

#[test]
fn deprecated_prefix_warns_once() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.0/30"], |_| {}));
    store.add_service(service(
        "n",
        "a",
        &[("metallb.universe.tf/address-pool", "p")],
        |_| {},
    ));
    let mut index = running(&mut store);
    index.apply_service(&store.services[&key("a")].clone());
    step(&mut store, &mut index);
    assert_eq!(store.events_for("a", reasons::DEPRECATED_ANNOTATION), 1);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.0")]);
}

#[test]
fn overlapping_pools_are_marked() {
    let mut store = Store::default();
    store
        .pools
        .insert("a".into(), pool("a", &["192.0.2.0/29"], |_| {}));
    store
        .pools
        .insert("b".into(), pool("b", &["192.0.2.4/30"], |_| {}));
    let index = running(&mut store);
    let reports = index.pool_reports();
    for r in &reports {
        let overlapping = r
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_OVERLAPPING)
            .unwrap();
        assert!(overlapping.status, "{r:?}");
    }
    assert_eq!(reports[0].total[0], 4);
    assert_eq!(reports[1].total[0], 0);
    assert_eq!(
        store
            .events
            .iter()
            .filter(|e| e.reason == reasons::POOL_OVERLAP)
            .count(),
        2
    );
}

// ---- Property test: random operations with restarts; invariants after every step. ----

#[derive(Clone, Debug)]
enum Op {
    CreateService {
        name: u8,
        ns: u8,
        port: u8,
        share: Option<u8>,
        request: Option<u8>,
        pool: Option<u8>,
        dual: bool,
        local: bool,
    },
    DeleteService(u8),
    MakeClusterIp(u8),
    SetPool {
        name: u8,
        start: u8,
        len: u8,
        auto: bool,
        ns_only: Option<u8>,
        v6: bool,
    },
    DeletePool(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 0u8..2, 0u8..3, proptest::option::of(0u8..2), proptest::option::of(0u8..24), proptest::option::of(0u8..3), any::<bool>(), any::<bool>())
            .prop_map(|(name, ns, port, share, request, pool, dual, local)| Op::CreateService { name, ns, port, share, request, pool, dual, local }),
        1 => (0u8..12).prop_map(Op::DeleteService),
        1 => (0u8..12).prop_map(Op::MakeClusterIp),
        2 => (0u8..3, 0u8..20, 1u8..8, any::<bool>(), proptest::option::of(0u8..2), any::<bool>())
            .prop_map(|(name, start, len, auto, ns_only, v6)| Op::SetPool { name, start, len, auto, ns_only, v6 }),
        1 => (0u8..3).prop_map(Op::DeletePool),
        1 => Just(Op::Restart),
    ]
}

fn apply_op(store: &mut Store, op: &Op) {
    match op {
        Op::CreateService {
            name,
            ns,
            port,
            share,
            request,
            pool,
            dual,
            local,
        } => {
            let share = share.map(|s| format!("key{s}"));
            let request = request.map(|r| format!("192.0.2.{r}"));
            let pool = pool.map(|p| format!("pool{p}"));
            let mut annotations: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = &share {
                annotations.push(("herald.dev/allow-shared-ip", s));
            }
            if let Some(r) = &request {
                annotations.push(("metallb.io/loadBalancerIPs", r));
            }
            if let Some(p) = &pool {
                annotations.push(("herald.dev/address-pool", p));
            }
            let svc = service(&format!("ns{ns}"), &format!("s{name}"), &annotations, |s| {
                s.ports.as_mut().unwrap()[0].port = 80 + i32::from(*port);
                if *dual {
                    s.ip_family_policy = Some("PreferDualStack".into());
                    s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
                }
                if *local {
                    s.external_traffic_policy = Some("Local".into());
                    s.selector = Some([("app".to_string(), format!("a{}", name % 2))].into());
                }
            });
            // A Service keeps its namespace: delete any same-named one elsewhere first.
            store
                .services
                .retain(|k, _| k.name != format!("s{name}") || k.namespace == format!("ns{ns}"));
            store.add_service(svc);
        }
        Op::DeleteService(name) => store.services.retain(|k, _| k.name != format!("s{name}")),
        Op::MakeClusterIp(name) => {
            for svc in store.services.values_mut() {
                if svc.metadata.name.as_deref() == Some(&format!("s{name}")) {
                    svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
                    // The API server clears load-balancer status with the type change.
                    svc.status = None;
                }
            }
        }
        Op::SetPool {
            name,
            start,
            len,
            auto,
            ns_only,
            v6,
        } => {
            let end = start.saturating_add(*len - 1);
            let mut addresses = vec![format!("192.0.2.{start}-192.0.2.{end}")];
            if *v6 {
                addresses.push(format!("2001:db8::{start:x}-2001:db8::{end:x}"));
            }
            let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
            let p = pool(&format!("pool{name}"), &refs, |s| {
                s.auto_assign = *auto;
                if let Some(ns) = ns_only {
                    s.service_allocation = Some(ServiceAllocation {
                        namespaces: vec![format!("ns{ns}")],
                        ..Default::default()
                    });
                }
            });
            let mut p = p;
            p.metadata.generation = Some(store.clock);
            store.clock += 1;
            store.pools.insert(format!("pool{name}"), p);
        }
        Op::DeletePool(name) => {
            store.pools.remove(&format!("pool{name}"));
        }
        Op::Restart => {}
    }
}

/// Feeds the store's current content to a running index, as watch events would.
fn sync(store: &Store, index: &mut ControllerIndex) {
    for p in store.pools.values() {
        index.apply_pool(p);
    }
    for name in index.pool_names() {
        if !store.pools.contains_key(&name) {
            index.delete_pool(&name);
        }
    }
    for s in store.services.values() {
        index.apply_service(s);
    }
    for key in index.service_keys() {
        if !store.services.contains_key(&key) {
            index.delete_service(&key);
        }
    }
}

/// Two Services show one IP only when they may share it.
fn check_shown_once(store: &Store) -> Result<(), TestCaseError> {
    let mut shown: HashMap<IpAddr, Vec<&Service>> = HashMap::new();
    for svc in store.services.values() {
        for ip in status_ips(svc) {
            shown.entry(ip).or_default().push(svc);
        }
    }
    for (ip, svcs) in shown {
        if svcs.len() < 2 {
            continue;
        }
        let keys: BTreeSet<Option<String>> = svcs
            .iter()
            .map(|s| parse_request(s).ok().and_then(|r| r.sharing_key))
            .collect();
        prop_assert!(
            keys.len() == 1 && keys.iter().all(Option::is_some),
            "{} shown by {:?} at once",
            ip,
            svcs.iter().map(|s| ServiceKey::of(s)).collect::<Vec<_>>()
        );
    }
    Ok(())
}

impl Store {
    /// As [`Store::settle`], but a write fails when `faults` says so (it is then handed back
    /// to the index, as the writer does), writes of one batch land in reverse order, and after
    /// every write that lands no IP may be shown by two Services that may not share it.
    fn settle_with_faults(
        &mut self,
        index: &mut ControllerIndex,
        mut actions: Vec<Action>,
        faults: &mut impl Iterator<Item = bool>,
    ) -> Result<(), TestCaseError> {
        for _ in 0..400 {
            let mut failed = Vec::new();
            let mut landed = false;
            for action in actions.into_iter().rev() {
                match action {
                    Action::WriteStatus(w) if faults.next().unwrap_or(false) => failed.push(w.key),
                    write @ Action::WriteStatus(_) => {
                        self.settle_once(index, write);
                        landed = true;
                        check_shown_once(self)?;
                    }
                    Action::Event(e) => self.events.push(e),
                    Action::CountFailure(_) => {}
                }
            }
            if failed.is_empty() && !landed && !index.has_work() {
                return Ok(());
            }
            for key in failed {
                index.write_failed(&key);
            }
            actions = index.reconcile();
        }
        prop_assert!(false, "index never settled");
        Ok(())
    }

    /// Applies one write and echoes it.
    fn settle_once(&mut self, index: &mut ControllerIndex, write: Action) {
        self.settle(index, vec![write]);
    }
}

fn check_invariants(store: &Store) -> Result<(), TestCaseError> {
    let policies: Vec<PoolPolicy> = store
        .pools
        .values()
        .map(|p| PoolPolicy::from_spec(p.metadata.name.as_deref().unwrap(), &p.spec))
        .collect();
    let mut holders: HashMap<IpAddr, Vec<&Service>> = HashMap::new();
    for svc in store.services.values() {
        let ips = status_ips(svc);
        if svc.spec.as_ref().unwrap().type_.as_deref() != Some("LoadBalancer") {
            prop_assert!(ips.is_empty());
        }
        let key = ServiceKey::of(svc).unwrap();
        for ip in &ips {
            holders.entry(*ip).or_default().push(svc);
            // The IP lies in a pool this Service may use.
            let ok = policies.iter().any(|p| {
                p.ranges.iter().any(|r| r.contains(*ip))
                    && p.allows(&key.namespace, &Labels::new(), &Labels::new())
            });
            prop_assert!(ok, "{key} holds {ip} outside every pool it may use");
        }
    }
    for (ip, svcs) in holders {
        if svcs.len() < 2 {
            continue;
        }
        let requests: Vec<ServiceRequest> =
            svcs.iter().map(|s| parse_request(s).unwrap()).collect();
        let first_key = requests[0].sharing_key.clone();
        prop_assert!(
            first_key.is_some(),
            "{ip} held by several Services without a sharing key"
        );
        let mut ports = BTreeSet::new();
        for r in &requests {
            prop_assert_eq!(&r.sharing_key, &first_key, "{} shared across keys", ip);
            prop_assert_eq!(&r.backend, &requests[0].backend);
            for p in &r.ports {
                prop_assert!(ports.insert(p.clone()), "{} shared with a port clash", ip);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_across_random_changes_and_restarts(ops in proptest::collection::vec(op(), 1..40)) {
        let mut store = Store::default();
        let mut index = running(&mut store);
        for op in &ops {
            apply_op(&mut store, op);
            if matches!(op, Op::Restart) {
                let before: BTreeMap<ServiceKey, Vec<IpAddr>> =
                    store.services.keys().map(|k| (k.clone(), store.status(k))).collect();
                index = running(&mut store);
                // A restart with nothing else changed takes no held IP away.
                for (k, ips) in before {
                    let after = store.status(&k);
                    for ip in ips {
                        prop_assert!(after.contains(&ip), "restart moved {} off {}", k, ip);
                    }
                }
            } else {
                sync(&store, &mut index);
                step(&mut store, &mut index);
            }
            check_invariants(&store)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Writes fail and land out of order; after every write that lands, no IP is shown by two
    /// Services that may not share it (a failed write that takes an IP away never lets the
    /// write that gives it to another Service be made).
    #[test]
    fn no_ip_is_shown_twice_whatever_writes_fail(
        ops in proptest::collection::vec(op(), 1..40),
        faults in proptest::collection::vec(proptest::bool::weighted(0.3), 0..200),
    ) {
        let mut store = Store::default();
        let mut index = running(&mut store);
        let mut faults = faults.into_iter();
        for op in &ops {
            apply_op(&mut store, op);
            if matches!(op, Op::Restart) {
                index = store.boot();
                let actions = index.activate();
                store.settle_with_faults(&mut index, actions, &mut faults)?;
            } else {
                sync(&store, &mut index);
                let actions = index.reconcile();
                store.settle_with_faults(&mut index, actions, &mut faults)?;
            }
            check_shown_once(&store)?;
        }
    }
}

#[test]
fn an_ip_taken_away_is_given_to_another_only_once_its_status_no_longer_shows_it() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.1-192.0.2.9"], |_| {}));
    let wants = |ip: &'static str| [("herald.dev/loadBalancerIPs", ip)];
    store.add_service(service("n", "a", &wants("192.0.2.1"), |_| {}));
    let mut index = running(&mut store);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.1")]);
    // b asks for a's IP: refused while a holds it.
    store.add_service(service("n", "b", &wants("192.0.2.1"), |_| {}));
    index.apply_service(&store.services[&key("b")].clone());
    step(&mut store, &mut index);
    assert!(store.status(&key("b")).is_empty());
    // a moves to .2: a's write takes .1 away; the write fails (not echoed).
    store.add_service(service("n", "a", &wants("192.0.2.2"), |_| {}));
    index.apply_service(&store.services[&key("a")].clone());
    let actions = index.reconcile();
    let writes: Vec<&StatusWrite> = actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteStatus(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(
        writes
            .iter()
            .map(|w| (w.key.name.as_str(), w.ips.clone()))
            .collect::<Vec<_>>(),
        [("a", Some(vec![ip("192.0.2.2")]))],
        "b must not be given .1 while a's status still shows it"
    );
    index.write_failed(&key("a"));
    for _ in 0..3 {
        let again = index.reconcile();
        assert!(
            !again
                .iter()
                .any(|a| matches!(a, Action::WriteStatus(w) if w.key.name == "b")),
            "b given .1 after a's write failed: {again:?}"
        );
        index.write_failed(&key("a"));
    }
    // a's write lands at last and the watch shows it: b gets .1.
    let actions = index.reconcile();
    store.settle(&mut index, actions);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.2")]);
    assert_eq!(store.status(&key("b")), vec![ip("192.0.2.1")]);
}

fn report(node_ips: &[(&str, i64)]) -> L2Announcements {
    let announced = node_ips
        .iter()
        .map(|(ip_, second)| {
            (
                ip(ip_),
                (
                    "eth0".to_string(),
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                        Timestamp::from_second(*second).unwrap(),
                    ),
                ),
            )
        })
        .collect();
    announcement::report(&announced)
}

#[test]
fn the_announcer_the_speakers_report_is_mirrored_into_the_condition_once_per_change() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.1-192.0.2.9"], |_| {}));
    store.add_service(service("n", "a", &[], |_| {}));
    // The owner reported the IP before the controller started.
    let mut index = store.boot();
    index.apply_node_report("hl-node1", Some(&report(&[("192.0.2.1", 10)])));
    let actions = index.activate();
    store.settle(&mut index, actions);
    let shown = |store: &Store| announcement::current(&store.services[&key("a")]);
    assert_eq!(
        shown(&store).as_deref(),
        Some("announced by node hl-node1 on interface eth0")
    );
    assert_eq!(store.events_for("a", reasons::ANNOUNCER_CHANGED), 1);

    // The same report again (a resync): nothing written.
    index.apply_node_report("hl-node1", Some(&report(&[("192.0.2.1", 10)])));
    assert!(index.reconcile().is_empty());

    // Failover: hl-node2 takes the IP while hl-node1's report (dead node) still claims it.
    index.apply_node_report("hl-node2", Some(&report(&[("192.0.2.1", 20)])));
    step(&mut store, &mut index);
    assert_eq!(
        shown(&store).as_deref(),
        Some("announced by node hl-node2 on interface eth0")
    );
    assert_eq!(store.events_for("a", reasons::ANNOUNCER_CHANGED), 2);
    let condition = store.services[&key("a")]
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.first())
        .cloned()
        .expect("the condition");
    assert_eq!(
        condition.last_transition_time.0,
        Timestamp::from_second(20).unwrap(),
        "since when the new node announces"
    );

    // A write that fails is made again.
    index.apply_node_report("hl-node3", Some(&report(&[("192.0.2.1", 30)])));
    let actions = index.reconcile();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::WriteStatus(w) if w.announced.is_some()))
    );
    index.write_failed(&key("a"));
    let again = index.reconcile();
    assert!(
        again
            .iter()
            .any(|a| matches!(a, Action::WriteStatus(w) if w.announced.is_some())),
        "{again:?}"
    );
}

#[test]
fn a_nodes_address_in_a_pool_is_never_handed_out_and_is_reported() {
    let mut store = Store::default();
    store
        .pools
        .insert("p".into(), pool("p", &["192.0.2.1-192.0.2.3"], |_| {}));
    store.add_service(service("n", "a", &[], |_| {}));
    let mut index = running(&mut store);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.1")]);
    // .1 turns out to be a node's InternalIP: a moves off it, the pool says why.
    index.apply_node("hl-node1", Some(vec![ip("192.0.2.1")]));
    step(&mut store, &mut index);
    assert_eq!(store.status(&key("a")), vec![ip("192.0.2.2")]);
    assert_eq!(store.events_for("a", reasons::CLEAR_ASSIGNMENT), 1);
    let reported: Vec<&EventRecord> = store
        .events
        .iter()
        .filter(|e| e.reason == reasons::NODE_ADDRESS_IN_POOL)
        .collect();
    assert_eq!(reported.len(), 1);
    assert!(
        reported[0].message.contains("192.0.2.1 (node hl-node1)"),
        "{}",
        reported[0].message
    );
    // Never handed out, even when asked for by name.
    store.add_service(service(
        "n",
        "b",
        &[("herald.dev/loadBalancerIPs", "192.0.2.1")],
        |_| {},
    ));
    index.apply_service(&store.services[&key("b")].clone());
    step(&mut store, &mut index);
    assert!(store.status(&key("b")).is_empty());
    let usage = index.pool_reports();
    assert_eq!(
        usage[0].total[0], 2,
        "the node's address is not counted as usable"
    );
    // The node goes away: the address is usable again, and b gets it.
    index.apply_node("hl-node1", None);
    step(&mut store, &mut index);
    assert_eq!(store.status(&key("b")), vec![ip("192.0.2.1")]);
}
