//! The system's pods as the run sees them: the speakers' logs (container logs, read from each
//! node's `/var/log/pods`, which the lab keeps under `.lab/nodes/hl-node<i>/fs/`), and which
//! image each speaker runs, with its restarts.

use super::*;
use k8s_openapi::jiff::Timestamp;

/// One line of a CRI container log: `TIME STREAM P|F TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CriLine<'a> {
    pub(crate) time: &'a str,
    /// `false` for a partial line (`P`): the text continues in the next one.
    pub(crate) full: bool,
    pub(crate) text: &'a str,
}

pub(crate) fn parse_cri(line: &str) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    let full = match tag {
        "F" => true,
        "P" => false,
        _ => return None,
    };
    Some(CriLine { time, full, text })
}

/// Level and message of one log record, whichever way the system logs: Herald's JSON
/// (`level`, `message`), MetalLB's go-kit JSON (`level`, `msg` or `event` or `op`), or a plain
/// line (memberlist's `[WARN] memberlist: ...`).
pub(crate) fn level_and_message(text: &str) -> (String, String) {
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && v.is_object()
    {
        let level = v["level"].as_str().unwrap_or("?").to_uppercase();
        let mut m = ["message", "msg", "event", "op"]
            .iter()
            .find_map(|k| v[*k].as_str())
            .unwrap_or("?")
            .to_string();
        if let Some(e) = v["error"].as_str() {
            m = format!("{m}: {}", e.chars().take(100).collect::<String>());
        }
        if v["message"].as_str() == Some("quorum changed") {
            // A quorum flicker withdraws every IP of the node: worth seeing.
            m = format!("quorum changed to {}", v["quorum"]);
        }
        return (level, m);
    }
    let level = if text.contains("[ERR") {
        "ERROR"
    } else if text.contains("[WARN") {
        "WARN"
    } else if text.contains("[DEBUG]") {
        "DEBUG"
    } else {
        "INFO"
    };
    let m = text
        .split_once("] ")
        .map(|(_, m)| m)
        .unwrap_or(text)
        .chars()
        .take(120)
        .collect();
    (level.to_string(), m)
}

/// Whether a record is worth listing by message (not only counting by level).
pub(crate) fn notable(level: &str, message: &str) -> bool {
    level == "WARN" || level == "ERROR" || message.starts_with("quorum changed")
}

/// The speakers' container logs since the run started, read as they grow: pods the run replaces
/// take their log files with them, so the files are read before every such step.
#[derive(Debug, Default)]
pub(crate) struct Logs {
    /// From this time on (the records before it are left out).
    pub(crate) since: Option<Timestamp>,
    offsets: BTreeMap<PathBuf, u64>,
    partial: BTreeMap<PathBuf, String>,
    /// Per node: records by level, notable ones by message.
    pub(crate) levels: BTreeMap<String, BTreeMap<String, u64>>,
    pub(crate) messages: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Logs {
    /// The logs from `since` on.
    pub(crate) fn since(since: Timestamp) -> Logs {
        Logs {
            since: Some(since),
            ..Logs::default()
        }
    }

    /// Reads what was added to the speakers' log files of `system` under `lab_dir`.
    pub(crate) fn harvest(&mut self, lab_dir: &Path, system: System) {
        let prefix = format!("{}_", system.namespace());
        let pod_prefix = match system {
            System::Herald => "herald-speaker-",
            System::Metallb => "speaker-",
        };
        let Ok(nodes) = std::fs::read_dir(lab_dir.join("nodes")) else {
            return;
        };
        for node in nodes.flatten() {
            let node_name = node.file_name().to_string_lossy().into_owned();
            if !node_name.starts_with("hl-node") {
                continue;
            }
            let Ok(pods) = std::fs::read_dir(node.path().join("fs/var/log/pods")) else {
                continue;
            };
            for pod in pods.flatten() {
                let dir = pod.file_name().to_string_lossy().into_owned();
                let Some(rest) = dir.strip_prefix(&prefix) else {
                    continue;
                };
                if !rest.starts_with(pod_prefix) {
                    continue;
                }
                let Ok(containers) = std::fs::read_dir(pod.path()) else {
                    continue;
                };
                for container in containers.flatten() {
                    let Ok(files) = std::fs::read_dir(container.path()) else {
                        continue;
                    };
                    for file in files.flatten() {
                        let path = file.path();
                        if path.extension().is_some_and(|e| e == "log") {
                            self.read(&node_name, &path);
                        }
                    }
                }
            }
        }
    }

    fn read(&mut self, node: &str, path: &Path) {
        use std::io::{Read, Seek, SeekFrom};
        let offset = self.offsets.get(path).copied().unwrap_or(0);
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = if len < offset { 0 } else { offset };
        if f.seek(SeekFrom::Start(start)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_err() {
            return;
        }
        // Only whole lines; the rest is read next time.
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        self.offsets
            .insert(path.to_path_buf(), start + end as u64 + 1);
        let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
        for line in text.lines() {
            self.line(node, path, line);
        }
    }

    /// One CRI log line of `node`'s speaker (`path` keeps partial lines apart).
    pub(crate) fn line(&mut self, node: &str, path: &Path, line: &str) {
        let Some(cri) = parse_cri(line) else {
            return;
        };
        let before = |since: &Timestamp| cri.time.parse::<Timestamp>().map_or(true, |t| t < *since);
        if self.since.as_ref().is_some_and(before) {
            return;
        }
        let pending = self.partial.entry(path.to_path_buf()).or_default();
        pending.push_str(cri.text);
        if !cri.full {
            return;
        }
        let record = std::mem::take(pending);
        let (level, message) = level_and_message(&record);
        *self
            .levels
            .entry(node.to_string())
            .or_default()
            .entry(level.clone())
            .or_default() += 1;
        if notable(&level, &message) {
            *self
                .messages
                .entry(node.to_string())
                .or_default()
                .entry(format!("{level} {message}"))
                .or_default() += 1;
        }
    }

    /// As the results file keeps them: per node.
    pub(crate) fn by_node(&self) -> BTreeMap<String, NodeLogs> {
        self.levels
            .iter()
            .map(|(node, levels)| {
                let logs = NodeLogs {
                    levels: levels.clone(),
                    warnings_and_errors: self.messages.get(node).cloned().unwrap_or_default(),
                };
                (node.clone(), logs)
            })
            .collect()
    }
}

/// What runs as each speaker: pod, node, image, image ID and restarts. `pods` is `kubectl get
/// pods -o json` as it comes (a `Value`: only these few fields are read, each may be missing).
pub(crate) fn speaker_images(pods: &Value) -> Vec<SpeakerImage> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let mut out: Vec<SpeakerImage> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let status = &p["status"]["containerStatuses"][0];
            SpeakerImage {
                pod: text(&p["metadata"]["name"]),
                node: text(&p["spec"]["nodeName"]),
                image: text(&p["spec"]["containers"][0]["image"]),
                image_id: text(&status["imageID"]),
                restarts: status["restartCount"].as_i64(),
            }
        })
        .collect();
    out.sort_by_key(|v| v.node.clone().unwrap_or_default());
    out
}

/// The images (by ID) that ran at the end but not at the start.
pub(crate) fn images_changed(start: &[SpeakerImage], end: &[SpeakerImage]) -> Vec<String> {
    let ids = |v: &[SpeakerImage]| -> BTreeSet<String> {
        v.iter()
            .filter_map(|s| s.image_id.clone())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let before = ids(start);
    ids(end).difference(&before).cloned().collect()
}

impl Bench {
    /// The system's speaker pods (`kubectl get pods -o json`).
    pub(crate) async fn speaker_pods(&self) -> Value {
        let out = tokio::process::Command::new(&self.kubectl)
            .args([
                "--kubeconfig",
                &self.kubeconfig,
                "-n",
                self.system.namespace(),
            ])
            .args([
                "get",
                "pods",
                "-l",
                self.system.speaker_selector(),
                "-o",
                "json",
            ])
            .output()
            .await;
        out.ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_and_partials() {
        let l = parse_cri("2026-12-01T00:00:01.5Z stdout F {\"level\":\"INFO\"}").unwrap();
        assert!(l.full);
        assert_eq!(l.text, "{\"level\":\"INFO\"}");
        assert!(
            !parse_cri("2026-12-01T00:00:01.5Z stderr P part")
                .unwrap()
                .full
        );
        assert!(parse_cri("garbage").is_none());
        let mut logs = Logs::since("2026-12-01T00:00:01Z".parse().unwrap());
        let p = Path::new("/x/0.log");
        // Before the run: not counted.
        logs.line(
            "hl-node1",
            p,
            r#"2026-12-01T00:00:00Z stdout F {"level":"WARN","message":"old"}"#,
        );
        logs.line(
            "hl-node1",
            p,
            r#"2026-12-01T00:00:02Z stdout P {"level":"WARN","#,
        );
        logs.line(
            "hl-node1",
            p,
            r#"2026-12-01T00:00:02Z stdout F "message":"another station claims an IP"}"#,
        );
        logs.line("hl-node1", p, r#"2026-12-01T00:00:03Z stdout F {"level":"INFO","message":"quorum changed","quorum":true}"#);
        logs.line("hl-node2", p, r#"2026-12-01T00:00:03Z stderr F {"caller":"main.go:1","level":"error","msg":"failed","error":"boom"}"#);
        logs.line("hl-node2", p, "2026-12-01T00:00:04Z stderr F 2026/12/01 00:00:04 [WARN] memberlist: Refuting a suspect message");
        let j = logs.by_node();
        assert_eq!(j["hl-node1"].levels["WARN"], 1);
        assert_eq!(j["hl-node1"].levels["INFO"], 1);
        assert_eq!(
            j["hl-node1"].warnings_and_errors["WARN another station claims an IP"],
            1
        );
        assert_eq!(
            j["hl-node1"].warnings_and_errors["INFO quorum changed to true"],
            1
        );
        assert_eq!(j["hl-node2"].warnings_and_errors["ERROR failed: boom"], 1);
        assert_eq!(
            j["hl-node2"].warnings_and_errors["WARN memberlist: Refuting a suspect message"],
            1
        );
    }

    #[test]
    fn images_and_their_changes() {
        let pods = json!({"items": [
            {"metadata": {"name": "s-b"}, "spec": {"nodeName": "hl-node2", "containers": [{"image": "i:1"}]},
             "status": {"containerStatuses": [{"imageID": "sha256:aa", "restartCount": 2}]}},
            {"metadata": {"name": "s-a"}, "spec": {"nodeName": "hl-node1", "containers": [{"image": "i:1"}]},
             "status": {"containerStatuses": [{"imageID": "sha256:aa", "restartCount": 0}]}},
            {"metadata": {"name": "s-old", "deletionTimestamp": "x"}, "spec": {"nodeName": "hl-node1", "containers": [{"image": "i:0"}]},
             "status": {}}
        ]});
        let start = speaker_images(&pods);
        assert_eq!(start.len(), 2);
        assert_eq!(start[0].node.as_deref(), Some("hl-node1"));
        assert_eq!(start[1].restarts, Some(2));
        assert!(images_changed(&start, &start).is_empty());
        let mut end = start.clone();
        end[1].image_id = Some("sha256:bb".into());
        assert_eq!(images_changed(&start, &end), ["sha256:bb"]);
    }
}
