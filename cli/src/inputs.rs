//! Reading the input of `herald migrate`: files, directories (their `.yaml`, `.yml` and `.json`
//! files, in name order, recursively) or standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One input's name and text.
pub struct InputText {
    /// The path, or `<stdin>`.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// Reads every input; no path or `-` reads standard input.
pub fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<InputText>> {
    if paths.is_empty() {
        return Ok(vec![read_stdin()?]);
    }
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            out.push(read_stdin()?);
        } else if path.is_dir() {
            for file in yaml_files(path)? {
                out.push(read_file(&file)?);
            }
        } else {
            out.push(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_stdin() -> anyhow::Result<InputText> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading standard input")?;
    Ok(InputText {
        name: "<stdin>".into(),
        text,
    })
}

fn read_file(path: &Path) -> anyhow::Result<InputText> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(InputText {
        name: path.display().to_string(),
        text,
    })
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            found.extend(yaml_files(&path)?);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            found.push(path);
        }
    }
    Ok(found)
}
