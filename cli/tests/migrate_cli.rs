//! `herald migrate` as an operator runs it: files, a directory, standard input, an output
//! file; exit status 0 (complete), 1 (incomplete) or 2 (bad input, nothing written).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metallb")
}

fn herald(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("herald finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory under the target directory, removed first.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn a_complete_migration_exits_0_and_prints_herald_objects() {
    let file = fixtures().join("layer2-simple.yaml");
    let out = herald(&["migrate", file.to_str().expect("utf-8 path")], None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("apiVersion: herald.dev/v1beta1"),
        "{stdout}"
    );
    assert!(stdout.contains("kind: L2Advertisement"), "{stdout}");
    assert!(!stdout.contains("metallb"), "{stdout}");
    assert!(text(&out.stderr).contains("the migration is complete"));
}

#[test]
fn a_directory_with_bgp_exits_1_and_names_every_object_left_out() {
    let out = herald(&["migrate", fixtures().to_str().expect("utf-8 path")], None);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    for expected in [
        "not migrated: BGPPeer metallb-system/sample",
        "not migrated: BGPAdvertisement metallb-system/local",
        "not migrated: Community metallb-system/communities",
        "not migrated: BFDProfile metallb-system/fast",
        "L2Advertisement metallb-system/newer",
        "spec.futureField",
        "Service shop/web: metallb.io/loadBalancerIPs: honoured as it is",
        "Service shop/legacy: metallb.universe.tf/address-pool: honoured as it is, with a DeprecatedAnnotation",
        "INCOMPLETE",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    // What has an equivalent is still written.
    let stdout = text(&out.stdout);
    assert!(stdout.contains("name: bgp-pool"), "{stdout}");
    assert!(stdout.contains("name: production"), "{stdout}");
}

#[test]
fn standard_input_and_an_output_file() {
    let dir = scratch("migrate-stdin");
    let target = dir.join("herald.yaml");
    let input =
        std::fs::read_to_string(fixtures().join("pools-and-advertisements.yaml")).expect("fixture");
    let out = herald(
        &["migrate", "-o", target.to_str().expect("utf-8 path")],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&target).expect("output written");
    assert_eq!(written.matches("kind: IPAddressPool").count(), 3);
    assert_eq!(written.matches("kind: L2Advertisement").count(), 2);
}

#[test]
fn garbage_exits_2_and_writes_nothing() {
    let dir = scratch("migrate-garbage");
    let target = dir.join("herald.yaml");
    for garbage in [
        "{not: [yaml",
        "hello",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: x}\nspec: {addresses: [banana]}\n",
    ] {
        // A good document first: nothing of it may be written either.
        let input = format!(
            "{}\n---\n{garbage}\n",
            std::fs::read_to_string(fixtures().join("layer2-simple.yaml")).expect("fixture")
        );
        let out = herald(
            &["migrate", "-o", target.to_str().expect("utf-8 path")],
            Some(&input),
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{garbage:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
        assert!(!target.exists(), "{garbage:?}: an output file was written");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("error: ") && stderr.contains("<stdin>"),
            "{stderr}"
        );
        assert!(stderr.contains("nothing was written"), "{stderr}");
    }
    let missing = herald(&["migrate", "/nonexistent/metallb.yaml"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/metallb.yaml"));
}

#[test]
fn the_kubectl_plugin_is_the_same_tool() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-herald"))
        .arg("--help")
        .output()
        .expect("kubectl-herald runs");
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("kubectl herald"), "{help}");
    assert!(help.contains("migrate"), "{help}");
}
