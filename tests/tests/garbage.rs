//! Garbage in Service annotations: a Warning naming the problem, the Service waits, everyone
//! else is served.

use herald_tests::{TestEnv, init_tracing, pool_spec};

#[tokio::test]
async fn garbage_annotations_warn_and_never_stop_the_controller() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("garbage").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.148/30", "2001:db8::94/126"]))
        .await?;
    let controller = env.start_controller();
    let unknown_pool = "no-such-pool".to_string();
    // (Service, annotations, Event reason, words the note must contain)
    const INPUT: &str = "LoadBalancerFailed";
    const ALLOCATION: &str = "AllocationFailed";
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not-an-ip",
            vec![("herald.dev/loadBalancerIPs", "banana")],
            INPUT,
            "is not an IP address",
        ),
        (
            "three-ips",
            vec![(
                "herald.dev/loadBalancerIPs",
                "192.0.2.148,192.0.2.149,2001:db8::94",
            )],
            INPUT,
            "at most 2 IPs",
        ),
        (
            "two-v4",
            vec![("herald.dev/loadBalancerIPs", "192.0.2.148,192.0.2.149")],
            INPUT,
            "two IPv4 addresses",
        ),
        (
            "unknown-pool",
            vec![("herald.dev/address-pool", unknown_pool.as_str())],
            ALLOCATION,
            "does not exist",
        ),
        (
            "outside",
            vec![("herald.dev/loadBalancerIPs", "203.0.113.77")],
            ALLOCATION,
            "not in any IPAddressPool",
        ),
        (
            "disagree",
            vec![
                ("herald.dev/address-pool", "x"),
                ("metallb.io/address-pool", "y"),
            ],
            INPUT,
            "disagree",
        ),
    ];
    for (name, annotations, _, _) in &cases {
        env.apply_service(name, annotations, |_| {}).await?;
    }
    env.apply_service("fine", &[], |_| {}).await?;
    env.wait_any_ip("fine").await?;
    for (name, _, reason, expected) in &cases {
        let note = env.wait_event(name, reason).await?;
        assert!(note.contains(expected), "{name}: {note}");
        assert!(env.ips_of(name).await?.is_empty(), "{name} must wait");
    }
    // Still serving after all that.
    env.apply_service("after", &[], |_| {}).await?;
    env.wait_any_ip("after").await?;
    controller.stop().await;
    env.cleanup().await
}
