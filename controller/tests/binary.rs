//! The real `herald-controller` binary against the lab's API server: health and readiness,
//! Prometheus metrics, JSON logs, and a SIGTERM that releases the Lease.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_config::pool::{IPAddressPool, IPAddressPoolSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

#[tokio::test]
async fn binary_serves_health_metrics_json_logs_and_stops_cleanly() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run through `make test`, which starts the lab's API server"
    );
    let client = kube::Client::try_default().await?;
    let suffix = std::process::id();
    let ns = format!("binary-{suffix}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &herald_fixtures::namespace(&ns))
        .await?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.patch(
        "ipaddresspools.herald.dev",
        &PatchParams::apply("herald-tests").force(),
        &Patch::Apply(<IPAddressPool as kube::CustomResourceExt>::crd()),
    )
    .await?;

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let class = format!("herald.dev/{ns}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-controller"))
        .args([
            "--load-balancer-class",
            &class,
            "--pool-selector",
            &format!("herald.dev/test={ns}"),
            "--metrics-addr",
            &addr.to_string(),
            "--lease-namespace",
            &ns,
            "--identity",
            "binary-test",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let logs = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let mut ready = false;
    for _ in 0..200 {
        if get(addr, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "/readyz never returned 200");
    assert_eq!(get(addr, "/healthz").await.map(|(c, _)| c), Some(200));

    let pools: Api<IPAddressPool> = Api::all(client.clone());
    let mut pool = IPAddressPool::new(
        &format!("{ns}-p"),
        IPAddressPoolSpec::new(&["192.0.2.184/30"]),
    );
    pool.metadata.labels = Some([("herald.dev/test".to_string(), ns.clone())].into());
    pools.create(&PostParams::default(), &pool).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": class, "ports": [{"port": 80}]}
            }))?,
        )
        .await?;
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = get(addr, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        if metrics.contains(&format!(
            "herald_allocator_addresses_in_use_total{{pool=\"{ns}-p\",family=\"ipv4\"}} 1"
        )) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for expected in [
        format!("herald_allocator_addresses_total{{pool=\"{ns}-p\",family=\"ipv4\"}} 4"),
        format!("herald_allocator_addresses_in_use_total{{pool=\"{ns}-p\",family=\"ipv4\"}} 1"),
        "herald_controller_leader 1".to_string(),
        "herald_controller_reconcile_duration_seconds_count".to_string(),
        "herald_controller_api_writes_total{kind=\"service_status\",result=\"ok\"}".to_string(),
    ] {
        assert!(
            metrics.contains(&expected),
            "missing {expected} in:\n{metrics}"
        );
    }

    // SIGTERM: a clean exit that hands the Lease back.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait()? {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = exited.ok_or_else(|| anyhow::anyhow!("no exit within 5 s of SIGTERM"))?;
    assert!(exited.success(), "{exited:?}");
    let lease: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = lease
        .get("herald-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease was released");

    let lines = logs
        .join()
        .map_err(|_| anyhow::anyhow!("log reader panicked"))?;
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("log line is not JSON ({e}): {line}"))?;
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }

    pools
        .delete(&format!("{ns}-p"), &DeleteParams::default())
        .await?;
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    Ok(())
}
