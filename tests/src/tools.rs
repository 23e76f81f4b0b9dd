//! The command-line tools the packaging tests run (helm, kubectl), built by the lab's scripts,
//! and a way to run them. No API server: these tests render, lint and pack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `binary` from the bin directory that `tests/lab/<script>` builds (cached in
/// `~/.cache/herald`; the first run builds it, which takes minutes) and prints on stdout. Fails,
/// with the script's last lines, when it cannot be built: a packaging test never passes without
/// its tools. One script run per process, whatever the number of tests asking.
pub fn lab_tool(script: &str, binary: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<BTreeMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bin_dir = built
        .entry(script.to_string())
        .or_insert_with(|| build(script).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)?;
    let path = bin_dir.join(binary);
    if !path.is_file() {
        bail!(
            "tests/lab/{script} printed {} but there is no {binary} in it",
            bin_dir.display()
        );
    }
    Ok(path)
}

fn build(script: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join("tests/lab").join(script);
    let out = Command::new(&path)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "tests/lab/{script} could not build the tools this test needs ({}); its last lines:\n{}",
            out.status,
            tail.join("\n")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .with_context(|| format!("tests/lab/{script} printed no bin directory"))?;
    Ok(PathBuf::from(dir))
}

/// Runs a command in the repository's root: its stdout, or an error with its stderr.
pub fn output_of(command: &mut Command) -> anyhow::Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {:?} failed ({}): {}",
            command.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{program} printed no UTF-8"))
}

/// The value at a JSON pointer, or an error naming the pointer and the document.
pub fn json_at<'a>(
    value: &'a serde_json::Value,
    pointer: &str,
) -> anyhow::Result<&'a serde_json::Value> {
    value
        .pointer(pointer)
        .with_context(|| format!("no {pointer} in {value}"))
}
