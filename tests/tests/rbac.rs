//! The controller works with nothing but the permissions `deploy/kustomize/rbac.yaml` grants;
//! the speaker, with `deploy/kustomize/speaker-rbac.yaml`, cannot change any Service's status.

use std::process::Command;
use std::time::Duration;

use herald_tests::{TestEnv, init_tracing, pool_spec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
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

/// Applies the kustomize base's namespace and one of its RBAC files.
fn apply_rbac(file: &str) -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kustomize");
    kubectl(&[
        "apply",
        "-f",
        &format!("{root}/namespace.yaml"),
        "-f",
        &format!("{root}/{file}"),
    ])?;
    Ok(())
}

/// A client that authenticates as the controller's ServiceAccount.
async fn service_account_client() -> anyhow::Result<Client> {
    apply_rbac("rbac.yaml")?;
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

/// A client that acts as the speaker's ServiceAccount, by impersonation (as
/// `kubectl --as system:serviceaccount:herald-system:herald-speaker`), with the speaker's
/// RBAC and admission policy from `deploy/kustomize/speaker-rbac.yaml` applied. On `node`,
/// its user carries the node name as a pod-bound token's does.
async fn speaker_client(node: Option<&str>) -> anyhow::Result<Client> {
    apply_rbac("speaker-rbac.yaml")?;
    let mut config = Config::infer().await?;
    config.auth_info.impersonate =
        Some("system:serviceaccount:herald-system:herald-speaker".into());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        "system:serviceaccounts:herald-system".into(),
        "system:authenticated".into(),
    ]);
    config.auth_info.impersonate_user_extra = node.map(|n| {
        [(
            "authentication.kubernetes.io/node-name".to_string(),
            vec![n.to_string()],
        )]
        .into()
    });
    Ok(Client::try_from(config)?)
}

/// What `client` reports for `node`: that it announces `ip` on eth0 from now on.
async fn report(client: &Client, node: &str, ip: &str) -> anyhow::Result<()> {
    let announced = std::collections::BTreeMap::from([(
        ip.parse()?,
        (
            "eth0".to_string(),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        ),
    )]);
    herald_speaker::edge::service_status::publish_report(
        client.clone(),
        node,
        &herald_config::announcement::report(&announced),
    )
    .await?;
    Ok(())
}

async fn create_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?,
        )
        .await?;
    Ok(())
}

async fn delete_nodes(client: &Client, names: &[&str]) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for name in names {
        let _ = nodes.delete(name, &Default::default()).await;
    }
}

#[tokio::test]
async fn a_speaker_writes_only_its_own_nodes_report() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("rbac-own-node").await?;
    let (a, b) = (format!("{}-a", env.ns), format!("{}-b", env.ns));
    create_node(&env.client, &a).await?;
    create_node(&env.client, &b).await?;
    let result = async {
        let on_a = speaker_client(Some(&a)).await?;
        let on_b = speaker_client(Some(&b)).await?;
        report(&on_b, &b, "192.0.2.250").await?;
        // The policy takes a moment to apply after it is created.
        let mut refused = false;
        for _ in 0..100 {
            // Neither creating another node's report nor rewriting one is allowed.
            let other = format!("{}-c", env.ns);
            create_node(&env.client, &other).await?;
            let create = report(&on_a, &other, "192.0.2.250").await;
            delete_nodes(&env.client, &[&other]).await;
            let rewrite = report(&on_a, &b, "192.0.2.250").await;
            if let (Err(create), Err(rewrite)) = (create, rewrite) {
                for e in [create, rewrite] {
                    let why = format!("{e:#}");
                    anyhow::ensure!(
                        why.contains(
                            "a speaker may write only the NodeL2Status of the node it runs on"
                        ),
                        "refused for another reason: {why}"
                    );
                }
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(refused, "a speaker wrote another node's report");
        report(&on_a, &a, "192.0.2.251").await?;
        report(&on_b, &b, "192.0.2.252").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    delete_nodes(&env.client, &[&a, &b]).await;
    result?;
    env.cleanup().await
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{what}: {e:?}"),
        other => panic!("the speaker may {what}: {other:?}"),
    }
}

#[tokio::test]
async fn the_speaker_cannot_change_any_ingress_ip() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("rbac-speaker").await?;
    let speaker = speaker_client(None).await?;
    env.apply_pool("p", pool_spec(&["192.0.2.236/30"])).await?;
    let controller = env.start_controller();
    env.apply_service("s", &[], |_| {}).await?;
    env.wait_ips("s", &["192.0.2.236"]).await?;

    // Every way of writing a Service's status or spec is refused.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(speaker.clone(), &env.ns);
    let redirect =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.66"}]}}});
    for (what, patch) in [
        ("merge-patch the status", Patch::Merge(redirect.clone())),
        (
            "strategic-patch the status",
            Patch::Strategic(redirect.clone()),
        ),
    ] {
        forbidden(
            what,
            services
                .patch_status("s", &PatchParams::default(), &patch)
                .await,
        );
    }
    let mut applied = redirect.clone();
    applied["apiVersion"] = "v1".into();
    applied["kind"] = "Service".into();
    applied["metadata"] = serde_json::json!({"name": "s", "namespace": env.ns});
    forbidden(
        "apply the status",
        services
            .patch_status(
                "s",
                &PatchParams::apply("herald-speaker").force(),
                &Patch::Apply(&applied),
            )
            .await,
    );
    let mut current = env.services().get("s").await?;
    current.status = serde_json::from_value(redirect["status"].clone())?;
    forbidden(
        "replace the status",
        services
            .replace_status("s", &Default::default(), &current)
            .await,
    );
    forbidden(
        "patch the Service",
        services
            .patch("s", &PatchParams::default(), &Patch::Merge(redirect))
            .await,
    );
    forbidden(
        "delete the Service",
        services.delete("s", &Default::default()).await,
    );
    env.wait_ips("s", &["192.0.2.236"]).await?;

    // What it needs still works: its node's report of what it announces.
    let node = format!("{}-node", env.ns);
    create_node(&env.client, &node).await?;
    let reported = report(&speaker, &node, "192.0.2.236").await;
    delete_nodes(&env.client, &[&node]).await;
    reported?;
    controller.stop().await;
    env.cleanup().await
}
