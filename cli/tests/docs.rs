//! The documentation in `docs/` cannot drift and stays well-formed:
//!
//! - the configuration reference names every field of `deploy/crds/herald.yaml`, every flag and
//!   environment variable of `herald-controller --help` and `herald-speaker --help`, and every
//!   Service annotation, and names nothing that does not exist;
//! - the metrics reference names every metric both components register, and nothing else;
//! - every page: relative links and anchors resolve, code fences are closed and say their
//!   language, Mermaid blocks parse structurally, no trailing blanks, headings in order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use herald_config::service::{
    ADDRESS_POOL, ALLOW_SHARED_IP, ANNOTATION_PREFIXES, LOAD_BALANCER_IPS,
};
use regex::Regex;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The text of `## heading` up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section '## {heading}'"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map(|e| e + 4).unwrap_or(rest.len());
    &rest[..end]
}

/// Backticked tokens of a text.
fn code_spans(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"`([^`\n]+)`").expect("regex");
    re.captures_iter(text).map(|c| c[1].to_string()).collect()
}

/// Field paths of a CRD schema. Inside a label selector or a condition only the field itself
/// counts: their insides are Kubernetes' own types.
fn schema_paths(
    schema: &Value,
    path: &str,
    documented: &mut Vec<String>,
    all: &mut BTreeSet<String>,
) {
    let Some(props) = schema.get("properties").and_then(Value::as_mapping) else {
        if let Some(items) = schema.get("items") {
            schema_paths(items, &format!("{path}[]"), documented, all);
        }
        return;
    };
    for (key, sub) in props {
        let key = key.as_str().unwrap_or_default();
        let p = if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        };
        all.insert(p.clone());
        documented.push(p.clone());
        let sub_props: BTreeSet<&str> = sub
            .get("items")
            .unwrap_or(sub)
            .get("properties")
            .and_then(Value::as_mapping)
            .map(|m| m.keys().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let selector = !sub_props.is_empty()
            && sub_props
                .iter()
                .all(|k| *k == "matchLabels" || *k == "matchExpressions");
        if selector || key == "conditions" {
            let mut ignored = Vec::new();
            schema_paths(sub, &p, &mut ignored, all);
            continue;
        }
        schema_paths(sub, &p, documented, all);
    }
}

#[test]
fn the_configuration_reference_names_every_crd_field_and_nothing_else() {
    let doc = read("docs/configuration.md");
    let crds = read("deploy/crds/herald.yaml");
    let mut kinds = 0;
    for crd in serde_yaml::Deserializer::from_str(&crds) {
        let crd = <Value as serde::Deserialize>::deserialize(crd).expect("CRD YAML");
        let Some(kind) = crd
            .get("spec")
            .and_then(|s| s.get("names"))
            .and_then(|n| n.get("kind"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        kinds += 1;
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut documented = Vec::new();
        let mut all = BTreeSet::new();
        schema_paths(schema, "", &mut documented, &mut all);
        let text = section(&doc, kind);
        let spans = code_spans(text);
        let missing: Vec<&String> = documented
            .iter()
            .filter(|p| *p != "spec" && *p != "status" && !spans.contains(*p))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md, section {kind}, misses {missing:?}"
        );
        let stale: Vec<&String> = spans
            .iter()
            .filter(|s| (s.starts_with("spec.") || s.starts_with("status.")) && !all.contains(*s))
            .collect();
        assert!(
            stale.is_empty(),
            "docs/configuration.md, section {kind}, names fields that do not exist: {stale:?}"
        );
    }
    assert_eq!(kinds, 3, "every CRD was read");
}

#[test]
fn the_configuration_reference_names_every_service_annotation() {
    let spans = code_spans(section(&read("docs/configuration.md"), "Service inputs"));
    for prefix in ANNOTATION_PREFIXES {
        for name in [LOAD_BALANCER_IPS, ADDRESS_POOL, ALLOW_SHARED_IP] {
            let key = format!("{prefix}{name}");
            assert!(
                spans.contains(&key),
                "docs/configuration.md misses the annotation {key}"
            );
        }
    }
}

/// A workspace binary, built by this `cargo test` run or before it (`make test` builds every
/// target first); refused when older than its crate's sources.
fn binary(name: &str, crate_dir: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_herald"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is not built: run `cargo build --workspace --bins` (make test does) before this test", path.display()));
    let newest_source = walk(&repo().join(crate_dir).join("src"))
        .iter()
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max()
        .expect("sources");
    assert!(
        built >= newest_source,
        "{} is older than {crate_dir}/src: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Flags and environment variables a binary's `--help` lists.
fn help_names(binary: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(binary)
        .arg("--help")
        .output()
        .expect("--help runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let flags = Regex::new(r"(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)").expect("regex");
    let envs = Regex::new(r"\[env: ([A-Z0-9_]+)=").expect("regex");
    (
        flags
            .captures_iter(&help)
            .map(|c| c[1].to_string())
            .collect(),
        envs.captures_iter(&help)
            .map(|c| c[1].to_string())
            .collect(),
    )
}

#[test]
fn the_configuration_reference_names_every_flag_and_nothing_else() {
    let doc = read("docs/configuration.md");
    let flag = Regex::new(r"--[a-z0-9-]+").expect("regex");
    for (name, crate_dir) in [
        ("herald-controller", "controller"),
        ("herald-speaker", "speaker"),
    ] {
        let (flags, envs) = help_names(&binary(name, crate_dir));
        assert!(flags.len() > 5, "{name} --help listed {flags:?}");
        let text = section(&doc, &format!("{name} flags"));
        let spans = code_spans(text);
        // A cell may hold several flags: `--help`, `--version`.
        let documented: BTreeSet<String> = flag
            .find_iter(&spans.iter().cloned().collect::<Vec<_>>().join(" "))
            .map(|m| m.as_str().to_string())
            .collect();
        let missing: Vec<_> = flags.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md, {name} flags, misses {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&flags).collect();
        assert!(
            stale.is_empty(),
            "docs/configuration.md, {name} flags, names flags that do not exist: {stale:?}"
        );
        for env in envs {
            assert!(
                spans.contains(&env),
                "docs/configuration.md, {name} flags, misses the environment variable {env}"
            );
        }
    }
}

/// Metric names as scraped: counters get `_total`.
fn registered(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next()?, parts.next()?);
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            })
        })
        .collect()
}

/// The controller's exposition with a series in every family (empty families print nothing).
pub fn controller_exposition() -> String {
    use herald_controller::metrics::{Metrics, PoolLabels, ReasonLabels};
    let m = Metrics::default();
    let pool = PoolLabels {
        pool: "p".into(),
        family: "ipv4",
    };
    m.addresses_total.get_or_create(&pool).set(1);
    m.addresses_in_use.get_or_create(&pool).set(1);
    m.allocation_failures
        .get_or_create(&ReasonLabels {
            reason: "exhausted",
        })
        .inc();
    m.count_write("event", true);
    m.encode()
}

/// The speaker's exposition with a series in every family.
pub fn speaker_exposition() -> String {
    use herald_speaker::metrics::{InterfaceLabels, IpLabels, Metrics, ReasonLabels};
    let m = Metrics::default();
    let ip = IpLabels {
        ip: "192.0.2.1".into(),
    };
    for family in [
        &m.requests_received,
        &m.responses_sent,
        &m.gratuitous_sent,
        &m.conflicts,
    ] {
        family.get_or_create(&ip).inc();
    }
    m.set_announced("192.0.2.1".parse().expect("an IP"), &["eth0".to_string()]);
    m.frames_dropped
        .get_or_create(&ReasonLabels { reason: "short" })
        .inc();
    m.heartbeats_rejected
        .get_or_create(&ReasonLabels { reason: "bad_tag" })
        .inc();
    m.key_problems
        .get_or_create(&ReasonLabels { reason: "missing" })
        .inc();
    m.packet_socket_errors
        .get_or_create(&InterfaceLabels {
            interface: "eth0".into(),
        })
        .inc();
    m.encode()
}

#[test]
fn the_metrics_reference_names_every_metric_and_nothing_else() {
    let controller = registered(&controller_exposition());
    let speaker = registered(&speaker_exposition());
    assert!(
        controller.len() >= 6 && speaker.len() >= 11,
        "{controller:?} {speaker:?}"
    );
    let doc = read("docs/metrics.md");
    let spans = code_spans(&doc);
    let named: BTreeSet<String> = spans
        .iter()
        .filter(|s| s.starts_with("herald_"))
        .cloned()
        .collect();
    let all: BTreeSet<String> = controller.union(&speaker).cloned().collect();
    let missing: Vec<_> = all.difference(&named).collect();
    assert!(missing.is_empty(), "docs/metrics.md misses {missing:?}");
    let stale: Vec<_> = named.difference(&all).collect();
    assert!(
        stale.is_empty(),
        "docs/metrics.md names metrics that are not registered: {stale:?}"
    );
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(&repo().join("docs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(repo().join("README.md"));
    files.sort();
    files
}

/// GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A heading: its level and text.
type Heading = (usize, String);
/// A code block: its first line, info string and body.
type CodeBlock = (usize, String, String);

/// Headings outside code blocks, and the code blocks with their info strings.
fn outline(text: &str) -> (Vec<Heading>, Vec<CodeBlock>) {
    let mut headings = Vec::new();
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match open.take() {
                None => open = Some((i + 1, info.trim().to_string(), String::new())),
                Some(block) => blocks.push(block),
            }
            continue;
        }
        if let Some(block) = open.as_mut() {
            block.2.push_str(line);
            block.2.push('\n');
        } else if line.starts_with('#') {
            let level = line.chars().take_while(|c| *c == '#').count();
            headings.push((level, line[level..].trim().to_string()));
        }
    }
    if let Some((line, ..)) = open {
        blocks.push((line, "UNCLOSED".into(), String::new()));
    }
    (headings, blocks)
}

#[test]
fn every_page_is_well_formed_and_its_links_resolve() {
    let link = Regex::new(r"\]\(([^)\s]+)\)").expect("regex");
    let mut problems = Vec::new();
    let mut mermaid_blocks = 0;
    for file in markdown_files() {
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).expect("readable");
        let (headings, blocks) = outline(&text);
        if headings.first().map(|h| h.0) != Some(1)
            || headings.iter().filter(|h| h.0 == 1).count() != 1
        {
            problems.push(format!("{name}: must start with its one `# ` heading"));
        }
        for pair in headings.windows(2) {
            if pair[1].0 > pair[0].0 + 1 {
                problems.push(format!("{name}: heading {:?} skips a level", pair[1].1));
            }
        }
        for (i, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.contains('\t') {
                problems.push(format!("{name}:{}: trailing blank or tab", i + 1));
            }
        }
        for (line, info, body) in &blocks {
            if info.is_empty() || info == "UNCLOSED" {
                problems.push(format!(
                    "{name}:{line}: code fence {}",
                    if info.is_empty() {
                        "without a language"
                    } else {
                        "never closed"
                    }
                ));
            }
            if info == "mermaid" {
                mermaid_blocks += 1;
                if let Err(e) = check_mermaid(body) {
                    problems.push(format!("{name}:{line}: Mermaid: {e}"));
                }
            }
        }
        // Links, outside code blocks.
        let prose: String = {
            let mut inside = false;
            text.lines()
                .filter(|l| {
                    if l.trim_start().starts_with("```") {
                        inside = !inside;
                        return false;
                    }
                    !inside
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        for cap in link.captures_iter(&prose) {
            let target = &cap[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target
                .split_once('#')
                .map_or((target, None), |(p, f)| (p, Some(f)));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().map(|d| d.join(path)).unwrap_or_default()
            };
            if !resolved.exists() {
                problems.push(format!(
                    "{name}: link to {target}: {} does not exist",
                    resolved.display()
                ));
                continue;
            }
            if let Some(fragment) = fragment {
                let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                let anchors: BTreeSet<String> = outline(&target_text)
                    .0
                    .iter()
                    .map(|(_, h)| anchor(h))
                    .collect();
                if !anchors.contains(fragment) {
                    problems.push(format!("{name}: link to {target}: no heading #{fragment}"));
                }
            }
        }
    }
    assert!(mermaid_blocks >= 3, "the concepts page has its diagrams");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_readme_links_the_docs_and_the_cli() {
    let readme = read("README.md");
    for target in [
        "docs/README.md",
        "docs/cli.md",
        "docs/migrating-from-metallb.md",
        "docs/troubleshooting.md",
    ] {
        assert!(
            readme.contains(&format!("]({target})")),
            "README.md does not link {target}"
        );
    }
}

/// A structural parse of a Mermaid block: a known diagram type, balanced brackets and quotes on
/// every line, blocks (`subgraph`, `alt`, `loop`, …) closed by `end`, and each statement of a
/// form the diagram type has (an edge, a node, a message, a transition, a note).
fn check_mermaid(body: &str) -> Result<(), String> {
    let mut lines = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("%%"));
    let header = lines.next().ok_or("empty block")?;
    let kind = header.split_whitespace().next().unwrap_or_default();
    let statement: Regex = match kind {
        "flowchart" | "graph" => {
            if !matches!(header.split_whitespace().nth(1), Some("TB" | "TD" | "BT" | "RL" | "LR")) {
                return Err(format!("{header:?}: a flowchart needs a direction"));
            }
            Regex::new(r"^(subgraph\b.*|end|direction (TB|TD|BT|RL|LR)|classDef .+|class .+|style .+|[A-Za-z0-9_]+(\[.*\]|\(.*\)|\{.*\})?(\s*(-->|---|-\.->|==>|<-->)(\|[^|]*\|)?\s*[A-Za-z0-9_]+(\[.*\]|\(.*\)|\{.*\})?)*)$")
        }
        "sequenceDiagram" => Regex::new(r"^(participant .+|actor .+|autonumber|(Note (over|left of|right of) [^:]+): .+|(alt|else|opt|loop|par|and|critical|break|rect)\b.*|end|[A-Za-z0-9_]+\s*(->>|-->>|->|-->|-x|--x|-\)|--\))\s*[A-Za-z0-9_]+\s*: .+)$"),
        "stateDiagram-v2" | "stateDiagram" => Regex::new(r"^((\[\*\]|[A-Za-z0-9_]+)\s*-->\s*(\[\*\]|[A-Za-z0-9_]+)(\s*: .+)?|state .+|note .+|end note|[A-Za-z0-9_]+\s*: .+|\}|direction .+)$"),
        other => return Err(format!("unknown diagram type {other:?}")),
    }
    .expect("regex");
    let mut depth = 0i32;
    for line in lines {
        let mut stack = Vec::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                '[' | '(' | '{' if !quoted => stack.push(c),
                ']' | ')' | '}' if !quoted => {
                    let want = match c {
                        ']' => '[',
                        ')' => '(',
                        _ => '{',
                    };
                    // A lone `}` closes a composite state; arrows like `-)` are not brackets.
                    if stack.pop() != Some(want)
                        && !(c == ')' && line.contains("-)"))
                        && !(c == '}' && line == "}")
                    {
                        return Err(format!("unbalanced {c:?} in {line:?}"));
                    }
                }
                _ => {}
            }
        }
        if quoted || !stack.is_empty() {
            return Err(format!("unclosed bracket or quote in {line:?}"));
        }
        if !statement.is_match(line) {
            return Err(format!("not a {kind} statement: {line:?}"));
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        if matches!(
            first,
            "subgraph" | "alt" | "opt" | "loop" | "par" | "critical" | "break" | "rect"
        ) {
            depth += 1;
        } else if line == "end" {
            depth -= 1;
            if depth < 0 {
                return Err("`end` without a block".into());
            }
        }
    }
    if depth != 0 {
        return Err(format!("{depth} block(s) not closed by `end`"));
    }
    Ok(())
}

#[test]
fn the_mermaid_check_rejects_broken_diagrams() {
    assert!(check_mermaid("flowchart LR\n  a[x] --> b\n").is_ok());
    for broken in [
        "pie\n a: 1\n",
        "flowchart\n a --> b\n",
        "flowchart LR\n subgraph s\n a --> b\n",
        "flowchart LR\n a[x --> b\n",
        "flowchart LR\n a --> b]\n",
        "sequenceDiagram\n A->>B hello\n",
        "stateDiagram-v2\n A -> B\n",
    ] {
        assert!(check_mermaid(broken).is_err(), "{broken:?} passed");
    }
}
