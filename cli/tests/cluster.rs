//! `herald status` and `herald check` against the lab's real API server, on objects this test
//! creates the way Herald's components do: a real in-process controller allocates and mirrors
//! the speakers' reports, written by the speaker's own writer
//! (`herald_speaker::edge::service_status::publish_report`), into the Announced condition and
//! the AnnouncerChanged Events; speaker pods and Nodes stand in for the kubelets.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_config::announcement;
use herald_speaker::edge::service_status;
use herald_tests::{TestEnv, init_tracing, pool_spec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const SPEAKER_LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/name", "herald"),
    ("app.kubernetes.io/component", "speaker"),
];

/// Runs `herald ARGS` against the lab; returns exit code, stdout, stderr.
fn herald(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .expect("herald runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn create_node(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
    ip: &str,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
    nodes.create(&PostParams::default(), &node).await?;
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
            ),
        )
        .await?;
    Ok(())
}

async fn delete_nodes(client: &Client, names: &[String]) {
    let nodes: Api<Node> = Api::all(client.clone());
    for n in names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
}

/// A speaker pod on `node`, Ready as the kubelet would report it.
async fn create_speaker(client: &Client, ns: &str, node: &str, ready: bool) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let labels: BTreeMap<&str, &str> = SPEAKER_LABELS.into_iter().collect();
    let name = format!("herald-speaker-{}", node.rsplit('-').next().unwrap_or(node));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "speaker", "image": "herald:test",
                 "ports": [{"name": "metrics", "containerPort": 7473}]}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let status = if ready { "True" } else { "False" };
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}})),
    )
    .await?;
    Ok(())
}

/// What the winning speaker does: its node's NodeL2Status report names the Service's IPs,
/// announced from now on; the controller mirrors it into the Service's Announced condition and
/// an AnnouncerChanged Event.
async fn announce(env: &TestEnv, service: &str, node: &str) -> anyhow::Result<()> {
    let since = MicroTime(Timestamp::now());
    let announced: BTreeMap<std::net::IpAddr, (String, MicroTime)> = env
        .ips_of(service)
        .await?
        .into_iter()
        .map(|ip| (ip, ("eth0".to_string(), since.clone())))
        .collect();
    service_status::publish_report(env.client.clone(), node, &announcement::report(&announced))
        .await?;
    Ok(())
}

fn ip_entry<'a>(report: &'a Value, service: &str) -> Option<&'a Value> {
    report["ips"].as_array()?.iter().find(|ip| {
        ip["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == service))
    })
}

#[tokio::test]
async fn status_shows_who_announces_each_ip_since_when_and_the_last_change() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("cli-status").await?;
    let ns = env.ns.clone();
    let nodes = [format!("{ns}-a"), format!("{ns}-b")];
    let result = async {
        env.apply_pool("p", pool_spec(&["203.0.113.16/30"])).await?;
        let controller = env.start_controller();
        env.apply_service("web", &[], |_| {}).await?;
        let ips = env.wait_any_ip("web").await?;
        for (i, n) in nodes.iter().enumerate() {
            create_node(&env.client, n, &[], &format!("192.0.2.{}", 200 + i)).await?;
            create_speaker(&env.client, &ns, n, true).await?;
        }
        // node-a announced first, then node-b took over.
        announce(&env, "web", &nodes[0]).await?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        announce(&env, "web", &nodes[1]).await?;

        let service = format!("{ns}/web");
        let mut report = Value::Null;
        // Events land a moment after the condition.
        for _ in 0..50 {
            let (code, stdout, stderr) =
                herald(&["status", "-n", &ns, "--herald-namespace", &ns, "-o", "json"]);
            assert_eq!(code, Some(0), "stderr: {stderr}");
            report = serde_json::from_str(&stdout)?;
            if ip_entry(&report, &service)
                .is_some_and(|e| e["lastChange"]["from"] == nodes[0].as_str())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let entry = ip_entry(&report, &service)
            .ok_or_else(|| anyhow::anyhow!("no entry for {service}: {report:#}"))?;
        assert_eq!(entry["ip"], ips[0].to_string());
        assert_eq!(entry["pools"], json!([env.pool_name("p")]));
        assert_eq!(entry["node"], nodes[1].as_str());
        assert_eq!(entry["interface"], "eth0");
        assert!(entry["since"].is_string(), "{entry:#}");
        assert_eq!(entry["lastChange"]["from"], nodes[0].as_str(), "{entry:#}");
        assert_eq!(entry["lastChange"]["to"], nodes[1].as_str(), "{entry:#}");
        assert_eq!(report["controller"]["leader"], controller.identity.as_str());
        let pool = report["pools"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == env.pool_name("p").as_str()));
        let pool = pool.ok_or_else(|| anyhow::anyhow!("pool missing: {report:#}"))?;
        assert_eq!(pool["ipv4"], json!([1, 3]), "{pool:#}");
        let node_b = report["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == nodes[1].as_str()));
        let node_b = node_b.ok_or_else(|| anyhow::anyhow!("node missing: {report:#}"))?;
        assert_eq!(node_b["speakerReady"], true);
        assert_eq!(node_b["announces"], 1);
        // No kubelet serves these pods: their metrics cannot be read through the pod proxy,
        // and status says so rather than guessing.
        assert_eq!(node_b["canAnswer"]["answer"], "unknown", "{node_b:#}");
        assert!(node_b["metricsError"].is_string(), "{node_b:#}");

        // The table, and YAML.
        let (code, table, _) = herald(&["status", "-n", &ns, "--herald-namespace", &ns]);
        assert_eq!(code, Some(0));
        assert!(
            table.contains(&format!("Controller leader: {}", controller.identity)),
            "{table}"
        );
        let row = table
            .lines()
            .find(|l| l.starts_with(&ips[0].to_string()))
            .unwrap_or_default();
        for cell in [
            service.as_str(),
            &env.pool_name("p"),
            &nodes[1],
            "eth0",
            &format!("{} -> {}", nodes[0], nodes[1]),
        ] {
            assert!(row.contains(cell), "{cell:?} missing from {row:?}\n{table}");
        }
        let (code, yaml, _) =
            herald(&["status", "-n", &ns, "--herald-namespace", &ns, "-o", "yaml"]);
        assert_eq!(code, Some(0));
        let from_yaml: Value = serde_yaml::from_str(&yaml)?;
        assert_eq!(
            ip_entry(&from_yaml, &service).map(|e| &e["node"]),
            Some(&json!(nodes[1]))
        );

        // --watch prints again when the owner changes.
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "status",
                "-n",
                &ns,
                "--herald-namespace",
                &ns,
                "-o",
                "json",
                "--watch",
                "--interval",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        // A tokio channel: blocking this (current-thread) runtime on a std receiver would also
        // stop the in-process controller, which must mirror the new owner meanwhile.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        std::thread::spawn(move || {
            for doc in
                serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>()
            {
                match doc {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("--watch ended"))?;
        assert_eq!(
            ip_entry(&first, &service).map(|e| &e["node"]),
            Some(&json!(nodes[1]))
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        announce(&env, "web", &nodes[0]).await?;
        let mut moved = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let Ok(Some(next)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
            else {
                continue;
            };
            if ip_entry(&next, &service).is_some_and(|e| e["node"] == nodes[0].as_str()) {
                moved = true;
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(moved, "--watch did not print the new owner");

        // As a kubectl plugin: `kubectl herald status` (the lab's kubectl is on PATH).
        let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-herald"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = format!(
            "{}:{}",
            plugin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("kubectl")
            .args(["herald", "status", "-n", &ns, "--herald-namespace", &ns])
            .env("PATH", path)
            .output()?;
        let plugin_table = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl herald: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(plugin_table.contains(&ips[0].to_string()), "{plugin_table}");
        controller.stop().await;
        anyhow::Ok(())
    }
    .await;
    delete_nodes(&env.client, &nodes).await;
    env.cleanup().await?;
    result
}

fn findings_about<'a>(findings: &'a Value, needle: &str) -> Vec<&'a Value> {
    findings
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| f["message"].as_str().is_some_and(|m| m.contains(needle)))
                .collect()
        })
        .unwrap_or_default()
}

/// The levels of the findings whose message contains `needle`.
fn levels(findings: &Value, needle: &str) -> Vec<String> {
    findings_about(findings, needle)
        .iter()
        .map(|f| f["level"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn check(ns: &str) -> anyhow::Result<(Option<i32>, Value)> {
    let (code, stdout, stderr) = herald(&["check", "--herald-namespace", ns, "-o", "json"]);
    anyhow::ensure!(code.is_some_and(|c| c < 2), "check failed: {stderr}");
    Ok((code, serde_json::from_str(&stdout)?))
}

#[tokio::test]
async fn check_finds_each_problem_and_clears_it_when_fixed() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("cli-check").await?;
    let ns = env.ns.clone();
    let nodes = [format!("{ns}-a"), format!("{ns}-c")];
    let ad_name = format!("{ns}-edge");
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), "kube-system");
    let ads: Api<herald_config::L2Advertisement> = Api::all(env.client.clone());
    let result = async {
        // Nodes labelled for this test; a speaker on one only. The pool holds node a's IP and
        // one address of the lab's Service CIDR (198.51.100.0/24).
        create_node(&env.client, &nodes[0], &[("herald-test-role", &ns)], "203.0.113.33").await?;
        create_node(&env.client, &nodes[1], &[("herald-test-role", &ns)], "192.0.2.230").await?;
        create_speaker(&env.client, &ns, &nodes[0], true).await?;
        let pool = env.pool_name("p");
        env.apply_pool("p", pool_spec(&["203.0.113.32/29", "198.51.100.250/32"])).await?;
        let ad: herald_config::L2Advertisement = serde_json::from_value(json!({
            "apiVersion": "herald.dev/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": ad_name, "labels": {herald_tests::TEST_LABEL: ns}},
            "spec": {"ipAddressPools": [pool], "nodeSelectors": [{"matchLabels": {"herald-test-role": "nobody"}}]}
        }))?;
        ads.create(&PostParams::default(), &ad).await?;
        configmaps.delete("kube-proxy", &DeleteParams::default()).await.ok();
        configmaps
            .create(&PostParams::default(), &serde_json::from_value(json!({
                "metadata": {"name": "kube-proxy"}, "data": {"config.conf": "mode: ipvs\nipvs:\n  strictARP: false\n"}
            }))?)
            .await?;

        let (code, findings) = check(&ns)?;
        assert_eq!(code, Some(1), "{findings:#}");
        let level = |needle: &str| levels(&findings, needle);
        assert_eq!(level("IPVS mode without strictARP"), ["error"]);
        assert!(level(&format!("pool {pool} entry 203.0.113.32/29 overlaps node {}'s InternalIP 203.0.113.33", nodes[0])).contains(&"error".to_string()), "{findings:#}");
        assert_eq!(level(&format!("pool {pool} entry 198.51.100.250/32 overlaps the Service CIDR")), ["error"], "{findings:#}");
        assert_eq!(level(&format!("L2Advertisement {ad_name} selects no node")), ["error"]);
        assert_eq!(level(&format!("Secret {ns}/herald-memberlist does not exist")), ["error"]);
        assert!(findings_about(&findings, "does not exist").iter().any(|f| f["fix"].as_str().is_some_and(|x| x.contains("openssl rand -hex 32"))));

        // Fix everything but the missing speaker on node c: select the nodes, fix the pool,
        // set strictARP, create the Secret.
        ads.patch(&ad_name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"nodeSelectors": [{"matchLabels": {"herald-test-role": ns}}]}}))).await?;
        env.apply_pool("p", pool_spec(&["203.0.113.40/29"])).await?;
        configmaps.patch("kube-proxy", &PatchParams::default(), &Patch::Merge(json!({"data": {"config.conf": "mode: ipvs\nipvs:\n  strictARP: true\n"}}))).await?;
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
        let mut data = BTreeMap::new();
        data.insert("secretkey".to_string(), ByteString(b"0123456789abcdef".to_vec()));
        secrets.create(&PostParams::default(), &Secret {
            metadata: kube::api::ObjectMeta { name: Some("herald-memberlist".into()), ..Default::default() },
            data: Some(data),
            ..Default::default()
        }).await?;
        let (_, findings) = check(&ns)?;
        let level = |needle: &str| levels(&findings, needle);
        assert_eq!(level("kube-proxy mode ipvs with strictARP"), ["ok"], "{findings:#}");
        assert!(findings_about(&findings, &format!("pool {pool}")).is_empty(), "{findings:#}");
        assert!(findings_about(&findings, &ad_name).is_empty(), "{findings:#}");
        assert_eq!(level(&format!("Secret {ns}/herald-memberlist has a secretkey")), ["ok"]);
        // The eligible node without a speaker is named; the one with a Ready speaker is not.
        let speakers = findings_about(&findings, "no speaker on eligible node");
        let message = speakers.first().and_then(|f| f["message"].as_str()).unwrap_or_default();
        assert!(message.contains(&nodes[1]) && !message.contains(&format!("{},", nodes[0])) && !message.ends_with(&nodes[0]), "{message}");
        anyhow::Ok(())
    }
    .await;
    let _ = configmaps
        .delete("kube-proxy", &DeleteParams::default())
        .await;
    let _ = ads.delete(&ad_name, &DeleteParams::default()).await;
    delete_nodes(&env.client, &nodes).await;
    env.cleanup().await?;
    result
}
