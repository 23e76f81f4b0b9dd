//! Access to the lab cluster (`tests/lab/lab.sh`, `nodes.sh`) for the root-only end-to-end
//! tests: its settings from `.lab/env`, backend pods on chosen nodes, commands in its
//! namespaces, and HTTP from the client namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kube::{Client, Config};

/// The lab's settings (`.lab/env`).
pub struct Lab {
    /// The variables.
    pub vars: BTreeMap<String, String>,
    /// The lab directory.
    pub dir: PathBuf,
}

/// One node of the lab.
#[derive(Clone, Debug)]
pub struct Node {
    /// 1-based, as in `hl-node<index>` and `HERALD_NODE<index>_*`.
    pub index: usize,
    pub name: String,
    pub mac: String,
    pub ip4: String,
    pub ip6: String,
}

impl Lab {
    /// The lab, or why it cannot be used. End-to-end tests are `#[ignore]`d, so `cargo test`
    /// reports them as ignored; run on purpose (`make e2e`, `-- --ignored`) without the lab,
    /// they fail with this reason rather than pass.
    pub fn load(test: &str) -> anyhow::Result<Lab> {
        let why = |why: String| {
            anyhow::anyhow!("{test}: needs root and the lab cluster (make lab-up as root); {why}")
        };
        if !is_root() {
            return Err(why("not running as root".into()));
        }
        let dir = lab_dir();
        let file = dir.join("env");
        let text =
            std::fs::read_to_string(&file).map_err(|e| why(format!("{}: {e}", file.display())))?;
        let vars = parse_env(&text);
        if !vars.contains_key("HERALD_CLIENT_NS") {
            return Err(why(format!(
                "{} has no HERALD_CLIENT_NS (the lab's nodes are not up)",
                file.display()
            )));
        }
        Ok(Lab { vars, dir })
    }

    pub fn var(&self, key: &str) -> anyhow::Result<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("{} has no {key}", self.dir.join("env").display()))
    }

    pub fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        let n: usize = self.var("HERALD_NODES")?.parse()?;
        (1..=n)
            .map(|i| {
                let v = |f: &str| self.var(&format!("HERALD_NODE{i}_{f}")).map(str::to_string);
                Ok(Node {
                    index: i,
                    name: v("NAME")?,
                    mac: v("MAC")?,
                    ip4: v("IP4")?,
                    ip6: v("IP6")?,
                })
            })
            .collect()
    }

    pub fn client_ns(&self) -> anyhow::Result<&str> {
        self.var("HERALD_CLIENT_NS")
    }

    /// The backend image the lab imported into every node (`tests/lab/images.sh`).
    pub fn backend_image(&self) -> anyhow::Result<&str> {
        self.var("HERALD_LAB_IMAGE_BACKEND")
    }

    /// Runs a lab script (`tests/lab/<script>`) for this lab, failing with its stderr.
    pub async fn script(&self, script: &str, args: &[&str]) -> anyhow::Result<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("lab")
            .join(script);
        let out = tokio::process::Command::new(&path)
            .args(args)
            .env("HERALD_LAB_DIR", &self.dir)
            .output()
            .await
            .with_context(|| format!("running {}", path.display()))?;
        ensure!(
            out.status.success(),
            "{script} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A client for the lab's API server: `KUBECONFIG` when set, else the lab's.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let path = match std::env::var_os("KUBECONFIG") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(self.var("KUBECONFIG")?),
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(Client::try_from(config)?)
    }
}

/// `HERALD_LAB_DIR`, else the directory of `KUBECONFIG` when it holds an `env`, else the
/// repository's `.lab`.
pub fn lab_dir() -> PathBuf {
    let dir = lab_dir_as_given();
    // Canonical, as the lab's scripts write it into the command lines of the processes they
    // start: a process is recognised as the lab's by that path (`tests/../.lab` matched
    // nothing, and every api-pause of a 30-minute chaos run failed to find kube-apiserver).
    dir.canonicalize().unwrap_or(dir)
}

fn lab_dir_as_given() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERALD_LAB_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(kc) = std::env::var_os("KUBECONFIG")
        && let Some(dir) = Path::new(&kc).parent()
        && dir.join("env").is_file()
    {
        return dir.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.lab")
}

/// `KEY=value` lines as the lab's scripts write them (bash `%q` or double quotes).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
            {
                v[1..v.len() - 1].to_string()
            } else {
                let mut out = String::new();
                let mut chars = v.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        out.extend(chars.next());
                    } else {
                        out.push(c);
                    }
                }
                out
            };
            (k.trim().to_string(), v)
        })
        .collect()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// What a backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The body: the serving node's name.
    pub node: String,
    /// The client address the backend saw (`X-Herald-Peer`).
    pub peer: String,
}

/// `curl --max-time 2` from the client namespace: the reply, or curl's complaint.
pub async fn fetch(lab: &Lab, url: &str) -> anyhow::Result<Result<Reply, String>> {
    fetch_within(lab, url, "2").await
}

/// Like [`fetch`] with another `--max-time`.
pub async fn fetch_within(
    lab: &Lab,
    url: &str,
    max_time: &str,
) -> anyhow::Result<Result<Reply, String>> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", lab.client_ns()?, "curl", "-sS", "-g"])
        .args(["--max-time", max_time, "-D", "-", url])
        .output()
        .await
        .context("running ip netns exec … curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Ok(Err(format!(
            "curl exit {}: {}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header in {text:?}"))?;
    let peer = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Herald-Peer: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(Ok(Reply {
        node: body.trim().to_string(),
        peer,
    }))
}

/// Polls until the URL answers (kube-proxy syncs at most once a second).
pub async fn fetch_eventually(lab: &Lab, url: &str) -> anyhow::Result<Reply> {
    let start = Instant::now();
    loop {
        match fetch_within(lab, url, "0.5").await? {
            Ok(reply) => {
                eprintln!("{url}: first answer after {:?}", start.elapsed());
                return Ok(reply);
            }
            Err(e) if start.elapsed() > Duration::from_secs(20) => {
                bail!("{url} never answered in 20 s; last: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Polls until the URL stops answering; returns curl's complaint.
pub async fn fetch_fails_eventually(lab: &Lab, url: &str) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        match fetch(lab, url).await? {
            Err(e) => return Ok(e),
            Ok(reply) if start.elapsed() > Duration::from_secs(20) => {
                bail!("{url} still answers after 20 s: {reply:?}")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The live process named `comm` (its first 15 bytes, as the kernel keeps it) in network
/// namespace `netns`: a hostNetwork container's process in a lab node.
pub fn process_in_node(netns: &str, comm: &str) -> Option<u32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .ok()?;
    let wanted: String = comm.chars().take(15).collect();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            name.trim() == wanted && !zombie
        })
}

/// Runs a command, failing with its stderr.
pub async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `/metrics` text of the speaker running in node namespace `node_ns` (1 s at most).
pub async fn speaker_metrics(node_ns: &str) -> anyhow::Result<String> {
    metrics_in_node(node_ns, "http://127.0.0.1:7473/metrics", None).await
}

/// GET `url` from inside node namespace `node_ns` (1 s at most), with a bearer token when given
/// (an HTTPS endpoint's certificate is not checked: the lab's are self-signed).
pub async fn metrics_in_node(
    node_ns: &str,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["netns", "exec", node_ns, "curl", "-sfk", "--max-time", "1"];
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    args.push(url);
    run("ip", &args).await
}

/// A backend pod (`tests/lab/backend`): answers HTTP on port 8080 with its node's name.
#[derive(Clone, Debug)]
pub struct Backend {
    pub pod: String,
    pub node: String,
    pub ip4: String,
    pub ip6: String,
}

/// The pod of app `app` on `node`: the lab's backend image, pinned to the node, Ready when it
/// answers HTTP.
pub fn backend_pod(image: &str, app: &str, node: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{app}-{node}"), "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "backend", "image": image, "args": ["8080"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                "securityContext": {
                    "allowPrivilegeEscalation": false, "runAsNonRoot": true,
                    "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    })
}

/// Makes the backend pods of app `app` in namespace `ns` exactly one per node of `nodes`
/// (creating the missing, deleting the others) and waits until every one is Ready, so the
/// EndpointSlice controller lists them. Returns them in the order of `nodes`.
pub async fn place_backends(
    client: &Client,
    image: &str,
    ns: &str,
    app: &str,
    nodes: &[&Node],
) -> anyhow::Result<Vec<Backend>> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, PostParams};
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let wanted: Vec<String> = nodes.iter().map(|n| format!("{app}-{}", n.name)).collect();
    let existing = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    for pod in &existing.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if !wanted.contains(&name) {
            pods.delete(&name, &DeleteParams::default()).await?;
        }
    }
    for node in nodes {
        let name = format!("{app}-{}", node.name);
        if pods.get_opt(&name).await?.is_none() {
            pods.create(
                &PostParams::default(),
                &serde_json::from_value(backend_pod(image, app, &node.name))?,
            )
            .await?;
        }
    }
    let start = Instant::now();
    loop {
        let mut ready = Vec::new();
        for (node, name) in nodes.iter().zip(&wanted) {
            let pod = pods.get(name).await?;
            let status = pod.status.unwrap_or_default();
            let is_ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ips: Vec<String> = status
                .pod_ips
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.ip)
                .collect();
            let ip4 = ips.iter().find(|ip| !ip.contains(':'));
            let ip6 = ips.iter().find(|ip| ip.contains(':'));
            if let (true, Some(ip4), Some(ip6)) = (is_ready, ip4, ip6) {
                ready.push(Backend {
                    pod: name.clone(),
                    node: node.name.clone(),
                    ip4: ip4.clone(),
                    ip6: ip6.clone(),
                });
            }
        }
        // Deleted pods gone too: their endpoints must have left the slices.
        let others = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?
            .items
            .len();
        if ready.len() == nodes.len() && others == nodes.len() {
            return Ok(ready);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(90),
            "backends {app} in {ns}: {} of {} Ready after 90 s",
            ready.len(),
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until Node `name` exists and is Ready (its kubelet reports).
pub async fn wait_node_ready(client: &Client, name: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node as NodeObject;
    let nodes: kube::Api<NodeObject> = kube::Api::all(client.clone());
    let start = Instant::now();
    loop {
        let ready = nodes.get_opt(name).await?.is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "Node {name} not Ready after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a [`Prober`] saw.
#[derive(Clone, Debug, Default)]
pub struct ProbeReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered.
    pub answered: u64,
    /// The longest time between two answered requests (or from the last answer to the end).
    pub longest_gap: Duration,
    /// The nodes that answered.
    pub nodes: BTreeSet<String>,
    /// When each answer arrived, in order.
    pub answers: Vec<Instant>,
}

/// A client on the LAN sending an HTTP request every `interval` from the client namespace, as
/// a user would keep doing through an upgrade or a fault. It runs on its own thread, which
/// enters the client's network namespace, so a request costs a connection, not a process.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<ProbeReport>>,
}

impl Prober {
    /// Starts probing `target` (a VIP and port).
    pub fn start(lab: &Lab, target: SocketAddr, interval: Duration) -> anyhow::Result<Prober> {
        let netns = PathBuf::from("/run/netns").join(lab.client_ns()?);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || -> anyhow::Result<ProbeReport> {
            enter_netns(&netns)?;
            let timeout = Duration::from_millis(200);
            let mut report = ProbeReport::default();
            let mut last_answer = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                let began = Instant::now();
                report.sent += 1;
                if let Ok(node) = http_get_node(target, timeout) {
                    let now = Instant::now();
                    report.answered += 1;
                    report.longest_gap = report.longest_gap.max(now - last_answer);
                    last_answer = now;
                    report.answers.push(now);
                    report.nodes.insert(node);
                }
                if let Some(rest) = interval.checked_sub(began.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            report.longest_gap = report.longest_gap.max(last_answer.elapsed());
            Ok(report)
        });
        Ok(Prober { stop, thread })
    }

    /// Stops and reports.
    pub fn stop(self) -> anyhow::Result<ProbeReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the prober thread panicked"))?
    }
}

/// Moves the calling thread into the network namespace at `path` (sockets it opens afterwards
/// live there).
pub fn enter_netns(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid namespace fd; it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(
        rc == 0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// One HTTP/1.0 GET: the body's first line (the backend's node name).
fn http_get_node(target: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    let node = body.lines().next().unwrap_or_default().trim().to_string();
    ensure!(!node.is_empty(), "empty answer");
    Ok(node)
}

/// The nodes whose speaker reports announcing `ip`.
pub async fn announcers(lab: &Lab, ip: &str) -> anyhow::Result<Vec<Node>> {
    Ok(announcing_interfaces(lab, ip)
        .await?
        .into_iter()
        .map(|(node, _)| node)
        .collect())
}

/// The nodes whose speaker reports announcing `ip`, each with the interfaces it names
/// (`herald_speaker_announced{ip, interface="eth0,eth1"}`).
pub async fn announcing_interfaces(
    lab: &Lab,
    ip: &str,
) -> anyhow::Result<Vec<(Node, Vec<String>)>> {
    let mut out = Vec::new();
    let prefix = format!("herald_speaker_announced{{ip=\"{ip}\",interface=\"");
    for node in lab.nodes()? {
        let metrics = speaker_metrics(&node.name).await.unwrap_or_default();
        let interfaces = metrics.lines().find_map(|l| {
            let (on, value) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            (value.trim() == "1").then(|| on.split(',').map(str::to_string).collect())
        });
        if let Some(interfaces) = interfaces {
            out.push((node, interfaces));
        }
    }
    Ok(out)
}

/// Waits until exactly one node announces `ip` (and, if given, a node other than `not`).
pub async fn one_announcer(lab: &Lab, ip: &str, not: Option<&str>) -> anyhow::Result<Node> {
    let mut last = Vec::new();
    for _ in 0..150 {
        last = announcers(lab, ip).await?;
        if let [one] = last.as_slice()
            && not != Some(one.name.as_str())
        {
            return Ok(one.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{ip}: expected one announcer, have {:?}",
        last.iter().map(|n| &n.name).collect::<Vec<_>>()
    )
}

/// One `arping` probe from the client: the MACs that replied.
pub async fn arping_once(lab: &Lab, ip: &str) -> anyhow::Result<BTreeSet<String>> {
    arping_from(lab.client_ns()?, "eth0", ip).await
}

/// One `arping` probe from namespace `ns` out of `interface`: the MACs that replied (none
/// within a second: empty).
pub async fn arping_from(ns: &str, interface: &str, ip: &str) -> anyhow::Result<BTreeSet<String>> {
    let out = tokio::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "arping", "-c", "1", "-w", "1", "-I", interface, ip,
        ])
        .output()
        .await
        .context("arping")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_lowercase()))
        .collect())
}

/// `ndisc6` from the client: the MAC that answered.
pub async fn ndisc_mac(lab: &Lab, ip: &str) -> anyhow::Result<String> {
    ndisc_from(lab.client_ns()?, "eth0", ip)
        .await?
        .with_context(|| format!("no answer for {ip}"))
}

/// `ndisc6` from namespace `ns` out of `interface` (three tries, 500 ms each): the MAC that
/// answered, if any.
pub async fn ndisc_from(ns: &str, interface: &str, ip: &str) -> anyhow::Result<Option<String>> {
    let out = tokio::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "ndisc6", "-r", "3", "-w", "500", ip, interface,
        ])
        .output()
        .await
        .context("ndisc6")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Target link-layer address: "))
        .map(|m| m.trim().to_lowercase()))
}
