//! The controller works with nothing but the permissions `deploy/kustomize/rbac.yaml` grants.

use std::process::Command;
use std::time::Duration;

use herald_tests::{TestEnv, init_tracing, pool_spec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("kubectl").args(args).output().map_err(|e| {
        anyhow::anyhow!("running kubectl (the lab puts its own on PATH; run via `make test`): {e}")
    })?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A client that authenticates as the controller's ServiceAccount.
async fn service_account_client() -> anyhow::Result<Client> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kustomize");
    kubectl(&[
        "apply",
        "-f",
        &format!("{root}/namespace.yaml"),
        "-f",
        &format!("{root}/rbac.yaml"),
    ])?;
    let token = kubectl(&[
        "create",
        "token",
        "herald-controller",
        "-n",
        "herald-system",
        "--duration",
        "1h",
    ])?;
    let mut kubeconfig = serde_json::to_value(Kubeconfig::read()?)?;
    if let Some(users) = kubeconfig.get_mut("users").and_then(|u| u.as_array_mut()) {
        for user in users {
            user["user"] = serde_json::json!({ "token": token });
        }
    }
    let kubeconfig = Kubeconfig::from_yaml(&serde_json::to_string(&kubeconfig)?)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

#[tokio::test]
async fn controller_runs_with_only_its_service_account() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("rbac").await?;
    let client = service_account_client().await?;
    // It really is limited: no Secrets for it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &env.ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("the ServiceAccount may list Secrets: {other:?}"),
    }
    env.apply_pool("p", pool_spec(&["192.0.2.188/30"])).await?;
    let mut settings = env.settings("rbac");
    settings.lease.namespace = "herald-system".into();
    settings.lease.name = format!("rbac-{}", env.ns);
    let controller = env.start_controller_as(client, settings);
    env.apply_service("s", &[], |_| {}).await?;
    env.wait_ips("s", &["192.0.2.188"]).await?;
    env.wait_event("s", "IPAllocated").await?;
    let mut assigned = 0;
    for _ in 0..100 {
        assigned = env
            .pool("p")
            .await?
            .status
            .map(|s| s.assigned_ipv4)
            .unwrap_or(0);
        if assigned == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(assigned, 1, "pool status written");
    let writes = controller.metrics.encode();
    assert!(
        !writes.contains("result=\"error\""),
        "a write was refused:\n{writes}"
    );
    controller.stop().await;
    env.cleanup().await
}
