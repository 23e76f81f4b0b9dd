//! The speaker's `herald.dev/Announced` condition against the real API server: written with the
//! Service's UID, so a write that races a deletion never recreates the Service and a write
//! meant for an older Service of the same name never touches the new one.

use std::time::Duration;

use herald_config::service::ServiceKey;
use herald_speaker::service_status::{self, FIELD_MANAGER};
use herald_tests::{TestEnv, init_tracing};
use kube::api::DeleteParams;
use kube::runtime::events::{Recorder, Reporter};

/// What the speaker does when it wins `key`: write the condition for the Service with `uid`.
async fn announce(env: &TestEnv, key: &ServiceKey, uid: &str, message: &str) {
    let recorder = Recorder::new(
        env.client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        },
    );
    service_status::announce(
        env.client.clone(),
        recorder,
        key.clone(),
        uid.to_string(),
        "hl-node2".into(),
        message.to_string(),
    )
    .await;
}

#[tokio::test]
async fn the_announced_condition_is_written_only_to_the_service_it_was_meant_for()
-> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("speaker-status").await?;
    let key = ServiceKey::new(env.ns.clone(), "web".to_string());
    let message = service_status::message("hl-node2", "eth0");

    // The right UID: the condition is written.
    let first = env.apply_service("web", &[], |_| {}).await?;
    let first_uid = first
        .metadata
        .uid
        .clone()
        .expect("a created Service has a UID");
    announce(&env, &key, &first_uid, &message).await;
    let svc = env.services().get("web").await?;
    assert_eq!(
        service_status::current(&svc).as_deref(),
        Some(message.as_str())
    );

    // Deleted meanwhile: the write does not bring it back.
    env.services()
        .delete("web", &DeleteParams::default())
        .await?;
    for _ in 0..50 {
        if env.services().get_opt("web").await?.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    announce(&env, &key, &first_uid, &message).await;
    assert!(
        env.services().get_opt("web").await?.is_none(),
        "a condition write recreated a deleted Service"
    );

    // Recreated under the same name: the old owner's write does not touch the new Service.
    let second = env.apply_service("web", &[], |_| {}).await?;
    assert_ne!(second.metadata.uid.as_deref(), Some(first_uid.as_str()));
    announce(&env, &key, &first_uid, &message).await;
    let svc = env.services().get("web").await?;
    assert_eq!(
        service_status::current(&svc),
        None,
        "a write for the old Service landed on the new one"
    );
    Ok(())
}
