//! Bad flags are refused at start, before the controller touches the cluster, with a message
//! naming the flag and why.

use std::process::Command;

fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-controller"))
        .args(args)
        // No cluster: a controller that got past its flags would fail on this instead.
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("the binary runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} was not refused as a usage error: {out:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_election_timings_are_refused_naming_the_flags() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--lease-duration-seconds=15", "--renew-deadline-seconds=15"],
            "--renew-deadline-seconds (15s) must be less than --lease-duration-seconds (15s)",
        ),
        (
            &["--renew-deadline-seconds=30"],
            "--renew-deadline-seconds (30s) must be less than --lease-duration-seconds (15s)",
        ),
        (
            &["--lease-duration-seconds=0"],
            "--lease-duration-seconds must be at least 1 second",
        ),
        (
            &["--retry-period-seconds=0"],
            "--retry-period-seconds must be at least 1 second",
        ),
        (
            &["--api-timeout-seconds=0"],
            "--api-timeout-seconds must be at least 1 second",
        ),
        (
            &["--api-timeout-seconds=10"],
            "--api-timeout-seconds (10s) must be less than --renew-deadline-seconds (10s)",
        ),
        (
            &["--lease-duration-seconds=18446744073709551615"],
            "--lease-duration-seconds is 18446744073709551615s: at most 2147483647s",
        ),
        (&["--write-concurrency=0"], "--write-concurrency"),
    ];
    for (args, expected) in cases {
        let stderr = refused(args);
        assert!(
            stderr.contains(expected),
            "{args:?}: the refusal does not say {expected:?}:\n{stderr}"
        );
    }
}
