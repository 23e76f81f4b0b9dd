//! Access to the node lab (`tests/lab/nodes.sh`) for the root-only end-to-end tests: its
//! settings from `.lab/env`, commands in its namespaces, and HTTP from the client namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    pub name: String,
    pub mac: String,
    pub ip4: String,
    pub ip6: String,
    pub pod_ip4: String,
    pub pod_ip6: String,
}

impl Lab {
    /// The lab, or `None` after saying why the test is skipped.
    pub fn load(test: &str) -> Option<Lab> {
        let skip = |why: String| {
            skipped(&format!(
                "{test}: needs root and the node lab (make lab-up as root); {why}"
            ));
            None
        };
        if !is_root() {
            return skip("not running as root".into());
        }
        let dir = lab_dir();
        let file = dir.join("env");
        let Ok(text) = std::fs::read_to_string(&file) else {
            return skip(format!("no {}", file.display()));
        };
        let vars = parse_env(&text);
        if !vars.contains_key("HERALD_CLIENT_NS") {
            return skip(format!(
                "{} has no HERALD_CLIENT_NS (the node lab is not up)",
                file.display()
            ));
        }
        Some(Lab { vars, dir })
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
                    name: v("NAME")?,
                    mac: v("MAC")?,
                    ip4: v("IP4")?,
                    ip6: v("IP6")?,
                    pod_ip4: v("POD_IP4")?,
                    pod_ip6: v("POD_IP6")?,
                })
            })
            .collect()
    }

    pub fn client_ns(&self) -> anyhow::Result<&str> {
        self.var("HERALD_CLIENT_NS")
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

/// Says a test is skipped, on the real stderr: `eprintln!` is captured by the test harness, so a
/// passing (skipped) test would otherwise say nothing.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
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
    run(
        "ip",
        &[
            "netns",
            "exec",
            node_ns,
            "curl",
            "-s",
            "--max-time",
            "1",
            "http://127.0.0.1:7473/metrics",
        ],
    )
    .await
}
