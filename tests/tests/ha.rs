//! Two replicas, one Lease: only the leader writes; killing it hands over without moving any
//! assignment.

use std::time::Duration;

use herald_tests::{TestEnv, init_tracing, pool_spec};

#[tokio::test]
async fn leader_killed_follower_takes_over_and_moves_nothing() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("ha").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.152/29"])).await?;
    let a = env.start_controller();
    let b = env.start_controller();
    let mut leaders = 0;
    for _ in 0..100 {
        leaders = usize::from(a.is_leader()) + usize::from(b.is_leader());
        if leaders == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leaders, 1, "exactly one replica leads");
    let mut held = Vec::new();
    for i in 0..5 {
        env.apply_service(&format!("s{i}"), &[], |_| {}).await?;
    }
    for i in 0..5 {
        held.push(env.wait_any_ip(&format!("s{i}")).await?);
    }
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    let follower_writes = follower.metrics.encode();
    assert!(
        !follower_writes.contains("kind=\"service_status\""),
        "the follower wrote status:\n{follower_writes}"
    );
    // Hard kill: the Lease is not released; the follower waits for it to expire.
    leader.crash().await;
    for _ in 0..200 {
        if follower.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(follower.is_leader(), "the follower took over");
    // The new leader serves new Services...
    env.apply_service("after", &[], |_| {}).await?;
    let after = env.wait_any_ip("after").await?;
    // ...and changed no existing assignment.
    for (i, ips) in held.iter().enumerate() {
        assert_eq!(&env.ips_of(&format!("s{i}")).await?, ips, "s{i} moved");
        assert!(!ips.contains(&after[0]));
    }
    follower.stop().await;
    env.cleanup().await
}

#[tokio::test]
async fn graceful_stop_releases_the_lease_at_once() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("ha-graceful").await?;
    env.apply_pool("p", pool_spec(&["192.0.2.160/30"])).await?;
    // A long Lease: only a release (not expiry) can hand over within the test's wait.
    let mut slow = env.settings("first");
    slow.lease.lease_duration = Duration::from_secs(60);
    slow.lease.renew_deadline = Duration::from_secs(40);
    let first = env.start_controller_with(slow.clone());
    for _ in 0..100 {
        if first.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first.is_leader());
    slow.lease.identity = "second".into();
    let second = env.start_controller_with(slow);
    first.stop().await;
    for _ in 0..100 {
        if second.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second.is_leader(), "released Lease taken at once");
    env.apply_service("s", &[], |_| {}).await?;
    env.wait_any_ip("s").await?;
    second.stop().await;
    env.cleanup().await
}
