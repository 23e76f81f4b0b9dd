//! `make image` (deploy/build-image.sh, no Docker engine) and deploy/Dockerfile make the same
//! image: both agree with deploy/image.env on base, user, entrypoint, which binaries go where and
//! the source label. The Dockerfile's stages are parsed; build-image.sh packs two stand-in files
//! (HERALD_IMAGE_BINARIES, so no release build) and the OCI archive it writes is read back.
//! Needs umoci (deploy/oci-image.sh) and GNU tar; as root or not (umoci --rootless).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use herald_tests::node_lab::parse_env;
use herald_tests::tools::{json_at as at, output_of, repo_root};
use serde_json::{Value, json};

/// deploy/image.env: what build-image.sh puts in the image.
#[derive(Debug)]
struct ImageSpec {
    base: String,
    user: String,
    entrypoint: String,
    /// (cargo binary, path in the image)
    files: Vec<(String, String)>,
    source: String,
}

fn image_spec() -> anyhow::Result<ImageSpec> {
    let path = repo_root().join("deploy/image.env");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // build-image.sh sources the file; the test reads it literally, so no expansion.
        ensure!(
            line.split_once('=').is_some_and(
                |(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            ) && !line.contains(['$', '`', '\\']),
            "deploy/image.env: not a plain KEY=VALUE line: {line}"
        );
        lines.push(line);
    }
    let mut env = parse_env(&lines.join("\n"));
    let mut take = |key: &str| {
        env.remove(key)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("deploy/image.env has no {key}"))
    };
    let files = take("IMAGE_FILES")?
        .split_whitespace()
        .map(|f| {
            f.split_once(':')
                .filter(|(bin, dest)| !bin.is_empty() && dest.starts_with('/'))
                .map(|(bin, dest)| (bin.to_string(), dest.to_string()))
                .with_context(|| format!("IMAGE_FILES: {f} is not BINARY:/PATH"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = ImageSpec {
        base: take("IMAGE_BASE")?,
        user: take("IMAGE_USER")?,
        entrypoint: take("IMAGE_ENTRYPOINT")?,
        files,
        source: take("IMAGE_SOURCE")?,
    };
    ensure!(env.is_empty(), "deploy/image.env: unknown keys {env:?}");
    Ok(spec)
}

/// One stage of a Dockerfile: its base, its name, its instructions (keyword in capitals,
/// arguments).
#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// The stages of a Dockerfile: continuation lines joined, comments (and parser directives)
/// dropped. An `escape` directive, heredocs and instructions before the first FROM (ARG) are
/// refused: the file uses none.
fn dockerfile_stages(text: &str) -> anyhow::Result<Vec<Stage>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        ensure!(
            !trimmed
                .replace(' ', "")
                .to_ascii_lowercase()
                .starts_with("#escape="),
            "an escape directive is not supported: {trimmed}"
        );
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    ensure!(
        current.is_empty(),
        "the Dockerfile ends inside a continued line"
    );

    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        ensure!(!line.contains("<<"), "heredocs are not supported: {line}");
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let (base, name) = match words[..] {
                [base] => (base, None),
                [base, keyword_as, name] if keyword_as.eq_ignore_ascii_case("as") => {
                    (base, Some(name))
                }
                _ => bail!("FROM {args}: not `FROM IMAGE [AS NAME]`"),
            };
            stages.push(Stage {
                base: base.to_string(),
                name: name.map(str::to_string),
                instructions: Vec::new(),
            });
        } else {
            let stage = stages
                .last_mut()
                .with_context(|| format!("{keyword} before the first FROM"))?;
            stage.instructions.push((keyword, args));
        }
    }
    Ok(stages)
}

/// `KEY="value" KEY2=value2` of a LABEL instruction.
fn label_pairs(args: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .with_context(|| format!("LABEL {args}: not KEY=VALUE"))?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => quoted
                .split_once('"')
                .with_context(|| format!("LABEL {args}: unterminated quote"))?,
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        labels.insert(key.trim().to_string(), value.to_string());
        rest = after.trim();
    }
    Ok(labels)
}

/// The Dockerfile's final stage says what deploy/image.env says, and its build stage builds and
/// copies out the binaries image.env names.
#[test]
fn dockerfile_agrees_with_image_env() -> anyhow::Result<()> {
    let spec = image_spec()?;
    let text = std::fs::read_to_string(repo_root().join("deploy/Dockerfile"))?;
    let stages = dockerfile_stages(&text)?;
    let (last, builders) = stages.split_last().context("the Dockerfile has no FROM")?;
    ensure!(
        last.base == spec.base,
        "Dockerfile: final FROM {}, image.env IMAGE_BASE={}",
        last.base,
        spec.base
    );

    let mut copies = Vec::new();
    let mut user = None;
    let mut entrypoint = None;
    let mut labels = BTreeMap::new();
    for (keyword, args) in &last.instructions {
        match keyword.as_str() {
            "COPY" => {
                ensure!(
                    !args.starts_with('['),
                    "COPY in JSON form is not supported: {args}"
                );
                let words: Vec<&str> = args.split_whitespace().collect();
                let (flags, paths): (Vec<&str>, Vec<&str>) =
                    words.iter().partition(|w| w.starts_with("--"));
                let from = flags
                    .iter()
                    .find_map(|f| f.strip_prefix("--from="))
                    .with_context(|| format!("COPY {args}: not from a build stage"))?;
                ensure!(
                    builders.iter().any(|b| b.name.as_deref() == Some(from)),
                    "COPY {args}: no stage named {from}"
                );
                ensure!(
                    flags.iter().all(|f| f.starts_with("--from=")),
                    "COPY {args}: --chown/--chmod would differ from build-image.sh (root, 0755)"
                );
                let [source, dest] = paths[..] else {
                    bail!("COPY {args}: one source and one destination expected");
                };
                copies.push((source.to_string(), dest.to_string()));
            }
            "USER" => user = Some(args.clone()),
            "ENTRYPOINT" => {
                let exec: Vec<String> = serde_json::from_str(args).with_context(|| {
                    format!("ENTRYPOINT {args}: not the exec (JSON) form build-image.sh makes")
                })?;
                entrypoint = Some(exec);
            }
            "LABEL" => labels.extend(label_pairs(args)?),
            other => bail!(
                "Dockerfile final stage: {other} {args} has no counterpart in build-image.sh \
                 (add it to deploy/image.env and deploy/build-image.sh, then here)"
            ),
        }
    }
    let expected_copies: Vec<(String, String)> = spec
        .files
        .iter()
        .map(|(bin, dest)| (format!("/{bin}"), dest.clone()))
        .collect();
    ensure!(
        copies == expected_copies,
        "Dockerfile COPY {copies:?}, image.env IMAGE_FILES {:?}",
        spec.files
    );
    ensure!(
        user.as_deref() == Some(spec.user.as_str()),
        "Dockerfile USER {user:?}, image.env IMAGE_USER={}",
        spec.user
    );
    ensure!(
        entrypoint == Some(vec![spec.entrypoint.clone()]),
        "Dockerfile ENTRYPOINT {entrypoint:?}, image.env IMAGE_ENTRYPOINT={}",
        spec.entrypoint
    );
    ensure!(
        labels.get("org.opencontainers.image.source") == Some(&spec.source),
        "Dockerfile LABEL {labels:?}, image.env IMAGE_SOURCE={}",
        spec.source
    );

    // The build stage builds each binary (static) and puts it where the COPY takes it from.
    let build_text: String = builders
        .iter()
        .flat_map(|b| b.instructions.iter().map(|(_, args)| args.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        build_text.contains("+crt-static"),
        "the Dockerfile's build stage does not link statically"
    );
    for (bin, _) in &spec.files {
        let words: Vec<&str> = build_text.split_whitespace().collect();
        ensure!(
            words.windows(2).any(|w| w == ["-p", bin.as_str()]),
            "the Dockerfile's build stage does not build {bin} (-p {bin})"
        );
        ensure!(
            build_text.contains(&format!("release/{bin}\"")),
            "the Dockerfile's build stage does not copy out release/{bin}"
        );
    }
    Ok(())
}

/// The blob a `sha256:…` digest names in an OCI layout.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<PathBuf> {
    let digest = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .with_context(|| format!("no digest in {descriptor}"))?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("not a sha256 digest: {digest}"))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// Extracts a tar file (compressed or not) into a new directory, which it returns.
fn untar(archive: &Path, into: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir(into)?;
    output_of(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(into),
    )?;
    Ok(into.to_path_buf())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// build-image.sh, given stand-ins for the binaries, writes an OCI archive whose config and
/// single layer are what image.env says: the files at their paths (root-owned, 0755, the
/// bytes given), user, entrypoint, no Cmd, the labels; and the same archive every time.
#[test]
fn build_image_packs_what_image_env_says() -> anyhow::Result<()> {
    let spec = image_spec()?;
    let scratch = tempfile::tempdir()?;
    let bins = scratch.path().join("bins");
    std::fs::create_dir(&bins)?;
    let mut contents = BTreeMap::new();
    for (bin, dest) in &spec.files {
        let body = format!("stand-in for {bin}, pid {}\n", std::process::id());
        let path = bins.join(bin);
        std::fs::write(&path, &body)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        contents.insert(dest.trim_start_matches('/').to_string(), body);
    }
    let pack = |archive: &Path| -> anyhow::Result<Vec<u8>> {
        let printed = output_of(
            Command::new(repo_root().join("deploy/build-image.sh"))
                .env("HERALD_IMAGE_BINARIES", &bins)
                .env("HERALD_IMAGE_OUT", archive)
                .env("HERALD_IMAGE_TAG", "stand-in"),
        )?;
        ensure!(
            printed.trim() == format!("{} stand-in", archive.display()),
            "build-image.sh printed {printed:?}, not \"ARCHIVE TAG\""
        );
        Ok(std::fs::read(archive)?)
    };
    let archive = scratch.path().join("herald.oci.tar");
    let first = pack(&archive)?;
    // oci-image.sh promises that the same files give the same image (file times included).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = pack(&scratch.path().join("again.oci.tar"))?;
    ensure!(
        first == second,
        "packing the same files twice gave two different archives"
    );

    let layout = untar(&archive, &scratch.path().join("layout"))?;
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .context("index.json has no manifests")?;
    let [descriptor] = &manifests[..] else {
        bail!("index.json should name one image: {index}");
    };
    ensure!(
        descriptor.pointer("/annotations/org.opencontainers.image.ref.name")
            == Some(&json!("stand-in")),
        "the image is not tagged stand-in: {descriptor}"
    );
    let manifest = read_json(&blob(&layout, descriptor)?)?;
    let config = read_json(&blob(&layout, at(&manifest, "/config")?)?)?;

    ensure!(at(&config, "/os")? == "linux", "os: {config}");
    ensure!(
        at(&config, "/config/User")? == &json!(spec.user),
        "User: {config}"
    );
    ensure!(
        at(&config, "/config/Entrypoint")? == &json!([spec.entrypoint]),
        "Entrypoint: {config}"
    );
    ensure!(
        config.pointer("/config/Cmd").is_none_or(Value::is_null),
        "the Dockerfile has no CMD, the image has one: {config}"
    );
    let version = std::fs::read_to_string(repo_root().join("Cargo.toml"))?
        .lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_string)
        })
        .context("no version in Cargo.toml")?;
    ensure!(
        at(&config, "/config/Labels")?
            == &json!({
                "org.opencontainers.image.source": spec.source,
                "org.opencontainers.image.version": version,
            }),
        "Labels: {config}"
    );

    // One layer on an empty base, holding exactly the files, as root, executable.
    let layers = at(&manifest, "/layers")?
        .as_array()
        .context("layers is not a list")?;
    let [layer] = &layers[..] else {
        bail!("expected one layer on an empty base: {manifest}");
    };
    let layer = blob(&layout, layer)?;
    let listing = output_of(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&layer),
    )?;
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [mode, owner, _size, _date, _time, name] = fields[..] else {
            bail!("unexpected layer listing line: {line}");
        };
        let name = name.trim_start_matches("./").trim_end_matches('/');
        match mode.chars().next() {
            Some('d') if name.is_empty() || name == "." => continue, // the root itself
            Some('-') => {
                files.insert(name.to_string(), (mode.to_string(), owner.to_string()));
            }
            _ => bail!("the layer holds more than the files: {line}"),
        }
    }
    let expected: BTreeMap<String, (String, String)> = contents
        .keys()
        .map(|name| (name.clone(), ("-rwxr-xr-x".to_string(), "0/0".to_string())))
        .collect();
    ensure!(
        files == expected,
        "layer files (mode, owner) {files:?}, expected {expected:?}"
    );
    let unpacked = untar(&layer, &scratch.path().join("rootfs"))?;
    for (name, body) in &contents {
        let got = std::fs::read_to_string(unpacked.join(name))?;
        ensure!(&got == body, "{name} in the image is not the file given");
    }
    Ok(())
}
